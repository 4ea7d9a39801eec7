"""Signed, expiring blob download URLs: the claim check the resumed Workato action redeems.

The signature is an HMAC-SHA256 over ``{sha256}.{expires}.{type}`` and is prefixed with the
signing key's id, so keys rotate: the first configured key signs, every key verifies. ``type``
is the content type the event declared: one stored blob may be the payload of events that
declared different types, and each download is served with its own. URLs signed before the
type was part of them (over ``{sha256}.{expires}``, no ``type`` parameter) still verify, and
are served with the stored type. A URL is a credential; it is never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
from collections.abc import Sequence
from urllib.parse import quote

from gateway.blobs.base import is_blob_id

_EXPIRES = re.compile(r"[0-9]{1,12}")


class UrlSigner:
    """HMAC-SHA256 signed, expiring download URLs; the first key signs, every key verifies."""

    def __init__(self, keys: Sequence[tuple[str, bytes]], base_url: str) -> None:
        if not keys:
            raise ValueError("a UrlSigner needs at least one key")
        self._signing_id, self._signing_key = keys[0]
        self._keys: dict[str, list[bytes]] = {}
        for key_id, key in keys:  # one id may name several keys (a configured and a derived)
            self._keys.setdefault(key_id, []).append(key)
        self._base_url = base_url.rstrip("/")

    def url(self, sha256: str, expires_at: float, content_type: str | None = None) -> str:
        """The download URL of blob ``sha256``, valid until ``expires_at`` (epoch seconds) and
        served as ``content_type`` (without one: the old form, served as stored)."""
        if not is_blob_id(sha256):
            raise ValueError("a blob id is 64 lowercase hex digits")
        expires = str(math.ceil(expires_at))
        sig = f"{self._signing_id}.{_mac(self._signing_key, sha256, expires, content_type)}"
        typed = "" if content_type is None else f"&type={quote(content_type, safe='')}"
        return f"{self._base_url}/v1/blobs/{sha256}?expires={expires}{typed}&sig={sig}"

    def verify(
        self,
        sha256: str,
        expires: str | None,
        sig: str | None,
        now: float,
        content_type: str | None = None,
    ) -> bool:
        """Whether the URL's parts (``content_type`` is its ``type`` parameter, if any) were
        signed by a configured key and have not expired. Any malformed part is simply False."""
        if expires is None or sig is None or not sig.isascii() or not _EXPIRES.fullmatch(expires):
            return False
        key_id, _, mac = sig.rpartition(".")
        keys = self._keys.get(key_id)
        if keys is None or not is_blob_id(sha256):
            return False
        matched = False
        for key in keys:  # every one compared, whichever matched
            expected = _mac(key, sha256, expires, content_type)
            matched |= hmac.compare_digest(expected.encode(), mac.encode())
        return matched and now <= int(expires)


def _mac(key: bytes, sha256: str, expires: str, content_type: str | None) -> str:
    # neither the id nor the expiry holds a dot: the three parts cannot be confused
    message = (
        f"{sha256}.{expires}" if content_type is None else f"{sha256}.{expires}.{content_type}"
    )
    digest = hmac.new(key, message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
