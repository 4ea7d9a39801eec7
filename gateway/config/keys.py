"""Named secret keys in ``[security]``: base64 in the configuration, ids so that keys rotate
(the first key of a list is used, every key listed is accepted)."""

from __future__ import annotations

import base64
import binascii

from pydantic import Field, field_validator

from gateway.config.base import Section
from gateway.config.secrets import Secret

AES256_KEY_BYTES = 32
MIN_URL_KEY_BYTES = 32


class _Key(Section):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    key: Secret

    @field_validator("key")
    @classmethod
    def _decodes(cls, key: Secret) -> Secret:
        try:
            raw = base64.b64decode(key.get_secret_value(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("key must be base64") from None
        cls._check_length(len(raw))
        return key

    @classmethod
    def _check_length(cls, length: int) -> None:
        raise NotImplementedError

    @property
    def key_bytes(self) -> bytes:
        return base64.b64decode(self.key.get_secret_value())


class TokenKey(_Key):
    """An AES-256-GCM key sealing resume tokens at rest."""

    @classmethod
    def _check_length(cls, length: int) -> None:
        if length != AES256_KEY_BYTES:
            raise ValueError("key must decode to 32 bytes (AES-256)")


class UrlKey(_Key):
    """An HMAC-SHA256 key signing claim-check URLs."""

    @classmethod
    def _check_length(cls, length: int) -> None:
        if length < MIN_URL_KEY_BYTES:
            raise ValueError(f"key must decode to at least {MIN_URL_KEY_BYTES} bytes")
