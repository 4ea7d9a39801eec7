"""Workato data centers, so a tenant can say ``data_center = "eu"`` instead of a URL."""

from __future__ import annotations

DATA_CENTERS: dict[str, str] = {
    "us": "https://www.workato.com",
    "eu": "https://app.eu.workato.com",
    "jp": "https://app.jp.workato.com",
    "sg": "https://app.sg.workato.com",
    "au": "https://app.au.workato.com",
    "il": "https://app.il.workato.com",
    "kr": "https://app.kr.workato.com",
    "cn": "https://app.workatoapp.cn",
    "trial": "https://app.trial.workato.com",
}
"""Base URLs without the ``/api`` suffix; ``trial`` is the developer sandbox."""
