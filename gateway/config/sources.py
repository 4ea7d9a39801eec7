"""``[[sources]]``: named webhook endpoints, ``POST /v1/hooks/{name}`` (DESIGN 5.4)."""

from __future__ import annotations

from pydantic import Field

from gateway.config.base import Section


class SourceSettings(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    tenant: str
