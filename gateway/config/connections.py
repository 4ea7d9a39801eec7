"""``[[connections]]``: job systems the gateway polls for waits registered with ``watch``."""

from __future__ import annotations

from pydantic import Field

from gateway.config.base import Section


class ConnectionSettings(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
