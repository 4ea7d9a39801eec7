"""The keys that sign claim-check URLs: configured, or derived from the token keys.

Deriving them (HKDF-SHA256, a purpose-bound ``info``) spares operators a second secret to
manage while keeping the two uses cryptographically apart; rotating the token keys rotates them.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.config.settings import SecuritySettings

URL_KEY_INFO = b"resume-gateway blob-url signing key v1"


def url_signing_keys(security: SecuritySettings) -> list[tuple[str, bytes]]:
    """``(key_id, key)`` pairs, the signing key first: the configured keys, then the ones
    derived from the token keys, which keep verifying the URLs they signed before any key
    was configured (a URL lives as long as its wait, up to 60 days), under the same ids as
    their token keys, even where a configured key has the same id."""
    configured = [(k.id, k.key_bytes) for k in security.url_keys]
    return configured + [(k.id, _derive(k.key_bytes)) for k in security.token_keys]


def _derive(token_key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=URL_KEY_INFO).derive(
        token_key
    )
