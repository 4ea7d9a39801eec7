"""Resume tokens encrypted at rest with AES-256-GCM; the key id travels with the ciphertext.

The first configured key encrypts, every configured key decrypts, so an operator rotates by
prepending a new key and dropping the old one once no open wait uses it, and, while no
``security.url_keys`` are set, no claim-check URL signed with a key derived from it is still
valid either (a wait's expiry plus ``blobs.url_grace_s``, even after the wait resolved).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.errors import SecretError

NONCE_BYTES = 12


@dataclass(frozen=True, slots=True)
class SealedToken:
    key_id: str
    blob: bytes  # nonce || ciphertext+tag


class TokenCipher:
    """Seals and opens resume tokens; ``aad`` binds a ciphertext to its tenant."""

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise SecretError("at least one token key is required")
        self._primary = keys[0][0]
        self._keys = {kid: AESGCM(key) for kid, key in keys}

    def seal(self, token: str, aad: str) -> SealedToken:
        nonce = os.urandom(NONCE_BYTES)
        ct = self._keys[self._primary].encrypt(nonce, token.encode(), aad.encode())
        return SealedToken(self._primary, nonce + ct)

    def open(self, sealed: SealedToken, aad: str) -> str:
        aead = self._keys.get(sealed.key_id)
        if aead is None:
            raise SecretError(f"token key {sealed.key_id!r} is not configured")
        nonce, ct = sealed.blob[:NONCE_BYTES], sealed.blob[NONCE_BYTES:]
        try:
            return aead.decrypt(nonce, ct, aad.encode()).decode()
        except InvalidTag:
            raise SecretError(f"token does not decrypt with key {sealed.key_id!r}") from None


def token_digest(token: str) -> str:
    """A one-way fingerprint of a token, used to recognise a repeated registration."""
    return hashlib.sha256(b"resume-gateway/token\0" + token.encode()).hexdigest()


def generate_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)
