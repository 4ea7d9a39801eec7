"""Webhook verification: does this request come from the source's sender?

Pure: the request's headers, the exact body bytes (whole, or as the chunks of a spooled body,
so a large one is never held in memory) and the clock's reading go in; nothing comes out, or
``BadSignature`` with a stable ``reason`` (never a secret, never the expected value).
Every comparison of a presented credential is ``hmac.compare_digest`` against every accepted
secret, without stopping at the first match, so timing says nothing about which one matched.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, Protocol

from gateway.config.sources import (
    BearerVerify,
    HmacSha256Verify,
    NoVerify,
    StandardWebhooksVerify,
    VerifySettings,
    whsec_key,
)
from gateway.errors import BadSignature

WIRE = "surrogateescape"
"""How aiohttp decoded header bytes that are not UTF-8: encoding back so gives the bytes the
sender sent (and signed), where a plain ``encode()`` raised on them."""
MAX_DIGITS = 20
"""A Unix timestamp is 10 digits; ``int()`` of thousands of them is slow, then refused."""
Headers = Mapping[str, str]
"""Case-insensitive in practice: aiohttp's request headers (or a ``multidict.CIMultiDict``)."""
BodyBytes = bytes | Iterable[bytes]
"""The body, or its chunks in order."""


class Verifier(Protocol):
    reads_body: bool
    """False when the credential is in the headers alone: it is checked before any body is read."""
    challenge: str
    """The ``WWW-Authenticate`` of its 401 (RFC 9110 asks one of every 401): the scheme, and
    for a signature the header it is read from."""

    def verify(self, headers: Headers, body: BodyBytes, now: float) -> None:
        """Return if the request is authentic; raise ``BadSignature`` otherwise."""


def verifier_for(settings: VerifySettings) -> Verifier:
    """The verifier a source's ``verify`` settings describe, its keys decoded once."""
    if isinstance(settings, StandardWebhooksVerify):
        secrets = [whsec_key(s.get_secret_value()) for s in settings.secrets]
        return StandardWebhooks(secrets, settings.tolerance_s)
    if isinstance(settings, HmacSha256Verify):
        keys = [s.get_secret_value().encode() for s in settings.all_secrets]
        return HmacSha256(settings.header, settings.prefix, settings.encoding, keys)
    if isinstance(settings, BearerVerify):
        return Bearer([t.get_secret_value() for t in settings.tokens])
    assert isinstance(settings, NoVerify)
    return NoVerification()


def rejected(reason: str, detail: str) -> BadSignature:
    return BadSignature(detail, reason=reason)


def any_equal(presented: Iterable[bytes], accepted: Sequence[bytes]) -> bool:
    """Constant-time: every pair is compared, whatever matched before."""
    matched = False
    for candidate in presented:
        for expected in accepted:
            matched |= hmac.compare_digest(candidate, expected)
    return matched


class StandardWebhooks:
    """https://www.standardwebhooks.com: ``v1`` HMAC-SHA256 of ``id.timestamp.body``.

    The ``standardwebhooks`` library's ``verify`` is not used: it reads the wall clock with a
    fixed 5-minute tolerance, lets malformed headers escape as ``ValueError`` or
    ``binascii.Error``, and needs the whole body in memory. The MAC is computed here, chunk by
    chunk (the tests check it against the library's signatures and published test vector).
    """

    reads_body = True
    challenge = 'Standard-Webhooks header="webhook-signature"'

    def __init__(self, secrets: Sequence[bytes], tolerance_s: float) -> None:
        self._secrets = list(secrets)
        self._tolerance_s = tolerance_s

    def verify(self, headers: Headers, body: BodyBytes, now: float) -> None:
        msg_id, timestamp, signatures = _standard_headers(headers)
        _check_timestamp(timestamp, now, self._tolerance_s)
        signed = f"{msg_id}.{timestamp}.".encode("utf-8", WIRE)
        macs = [hmac.new(key, signed, hashlib.sha256) for key in self._secrets]
        # over the bytes as they came: a body that is not UTF-8 but signed is the mapping's to
        # refuse (422); refused here, a good secret was counted and reported as a bad one
        for chunk in _chunks(body):
            for mac in macs:
                mac.update(chunk)
        expected = [mac.digest() for mac in macs]
        if not any_equal(_v1_signatures(signatures), expected):
            raise rejected("bad_signature", "no webhook-signature matches")


def _standard_headers(headers: Headers) -> tuple[str, int, str]:
    msg_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not (msg_id and timestamp and signatures):
        raise rejected(
            "missing_signature", "webhook-id, webhook-timestamp and webhook-signature are required"
        )
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= MAX_DIGITS):
        raise rejected("bad_timestamp", "webhook-timestamp must be integer Unix seconds")
    return msg_id, int(timestamp), signatures


def _check_timestamp(timestamp: int, now: float, tolerance_s: float) -> None:
    """Replays of old messages fail here; the event id dedupes those inside the window."""
    if timestamp < now - tolerance_s:
        raise rejected("stale_timestamp", "webhook-timestamp is too old")
    if timestamp > now + tolerance_s:
        raise rejected("future_timestamp", "webhook-timestamp is too far in the future")


def _v1_signatures(header: str) -> list[bytes]:
    """The ``v1,<base64>`` entries of a space-separated list; other versions are skipped."""
    found = []
    for entry in header.split():
        version, _, encoded = entry.partition(",")
        if version == "v1":
            try:
                found.append(base64.b64decode(encoded, validate=True))
            except (binascii.Error, ValueError):
                continue
    return found


class HmacSha256:
    """``<header>: <prefix><hex or base64 of HMAC-SHA256(secret, body)>`` (GitHub, and many)."""

    reads_body = True

    def __init__(
        self,
        header: str,
        prefix: str,
        encoding: Literal["hex", "base64"],
        secrets: Sequence[bytes],
    ) -> None:
        self._header = header
        self._prefix = prefix
        self._encoding = encoding
        self._secrets = list(secrets)
        self.challenge = f'HMAC-SHA256 header="{header}"'

    def verify(self, headers: Headers, body: BodyBytes, now: float) -> None:
        value = headers.get(self._header)
        if value is None:
            raise rejected("missing_signature", f"the {self._header} header is required")
        presented = self._decode(value.strip())
        macs = [hmac.new(key, digestmod=hashlib.sha256) for key in self._secrets]
        for chunk in _chunks(body):
            for mac in macs:
                mac.update(chunk)
        expected = [mac.digest() for mac in macs]
        if presented is None or not any_equal([presented], expected):
            raise rejected("bad_signature", f"the {self._header} signature does not match")

    def _decode(self, value: str) -> bytes | None:
        if not value.startswith(self._prefix):
            return None
        encoded = value[len(self._prefix) :]
        try:
            if self._encoding == "hex":
                return bytes.fromhex(encoded)
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            return None


class Bearer:
    """``Authorization: Bearer <token>``; tokens are compared as SHA-256 digests, so their
    lengths do not show either."""

    reads_body = False
    challenge = "Bearer"

    def __init__(self, tokens: Sequence[str]) -> None:
        self._digests = [_sha256(token) for token in tokens]

    def verify(self, headers: Headers, body: BodyBytes, now: float) -> None:
        value = headers.get("Authorization", "")
        if value[:7].lower() != "bearer ":
            raise rejected("missing_signature", "Authorization: Bearer <token> is required")
        if not any_equal([_sha256(value[7:].strip())], self._digests):
            raise rejected("bad_signature", "the bearer token is not accepted")


def _chunks(body: BodyBytes) -> Iterable[bytes]:
    return (body,) if isinstance(body, bytes) else body


def _sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", WIRE)).digest()


class NoVerification:
    """``verify = { scheme = "none" }``: the configuration chose to trust the network."""

    reads_body = False
    challenge = ""  # it refuses nothing

    def verify(self, headers: Headers, body: BodyBytes, now: float) -> None:
        return None
