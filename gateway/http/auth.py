"""Tenant API keys: the key a connector presents names its tenant."""

from __future__ import annotations

import hashlib

from aiohttp import web

from gateway.config.settings import TenantSettings
from gateway.errors import Unauthorized


class ApiKeys:
    """Looks keys up by their SHA-256, so no secret is compared byte by byte."""

    def __init__(self, tenants: list[TenantSettings]) -> None:
        self._by_digest = {
            _digest(key.get_secret_value()): tenant for tenant in tenants for key in tenant.api_keys
        }

    def tenant_for(self, request: web.Request) -> TenantSettings:
        key = _presented_key(request)
        tenant = self._by_digest.get(_digest(key)) if key else None
        if tenant is None:
            raise Unauthorized("a valid API key is required (Authorization: Bearer <key>)")
        return tenant


def _presented_key(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.headers.get("X-API-Key")


def _digest(key: str) -> bytes:
    # aiohttp decodes header bytes that are not UTF-8 to lone surrogates: a plain encode()
    # raised on them, and a key that cannot match answered 500 instead of 401
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
