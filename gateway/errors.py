"""The one exception root of resume-gateway.

    GatewayError
    ├── ConfigError            a configuration value is invalid (names the field)
    ├── StoreError             the database failed; the driver error is chained
    │   ├── BlobCollected      a collector is deleting the blob being recorded; retry
    │   └── MigrationError     the schema cannot be brought to the expected version
    ├── ListenError            a server cannot listen on its address (taken, or not allowed)
    ├── SecretError            a resume token cannot be encrypted or decrypted
    ├── BrokerError            Kafka cannot be reached or refused; the client error is chained
    └── IngestError            an input was refused; carries an RFC 9457 problem
        ├── InvalidInput       the body or a field does not validate (422)
        ├── Unauthorized       the API key is missing or wrong (401)
        │   └── BadSignature   a webhook does not verify against its source (401)
        ├── Forbidden          a signed URL is missing, wrong or expired (403)
        ├── NotFound           the named resource does not exist (404)
        ├── Conflict           the request contradicts stored state (409)
        ├── PayloadTooLarge    the body is over the cap (413)
        ├── UnsupportedMediaType  the Content-Type is not a media type (415)
        └── Unavailable        the blob store or the disk failed; retry (503)

Each class's docstring is its default message.
"""

from __future__ import annotations

import os
from typing import Any


class GatewayError(Exception):
    """resume-gateway failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(GatewayError):
    """The configuration is invalid."""


class StoreError(GatewayError):
    """The store failed."""


class BlobCollected(StoreError):
    """A collector is deleting the blob being recorded; store it again once it is gone."""


class MigrationError(StoreError):
    """The database schema cannot be migrated."""


class ListenError(GatewayError):
    """A server cannot listen on its address."""


def listen_error(host: str, port: int, exc: OSError) -> ListenError:
    """``cannot listen on host:port: address already in use`` (from the bind's own error)."""
    code = exc.errno or 0  # a resolver's error (negative) has only its own text
    reason = os.strerror(code) if code > 0 else exc.strerror or str(exc)
    reason = reason.rsplit(": ", 1)[-1]
    return ListenError(f"cannot listen on {host}:{port}: {reason[:1].lower()}{reason[1:]}")


class SecretError(GatewayError):
    """A resume token cannot be decrypted with any configured key."""


class BrokerError(GatewayError):
    """The Kafka broker cannot be reached or refused a request."""


class IngestError(GatewayError):
    """The request was refused."""

    status = 400
    problem_type = "about:blank"
    title = "Bad request"
    headers: tuple[tuple[str, str], ...] = ()
    """Response headers the status calls for."""

    def __init__(self, detail: str | None = None, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = str(self)
        self.extensions = extensions


class InvalidInput(IngestError):
    """The request body does not validate."""

    status = 422
    problem_type = "/problems/invalid-input"
    title = "Invalid input"


class Unauthorized(IngestError):
    """A valid API key is required."""

    status = 401
    problem_type = "/problems/unauthorized"
    title = "Unauthorized"
    headers = (("WWW-Authenticate", "Bearer"),)  # a 401 names a scheme (RFC 9110, 15.5.2)


class BadSignature(Unauthorized):
    """The webhook does not verify against its source's configuration."""

    problem_type = "/problems/bad-signature"
    title = "Bad signature"


class Forbidden(IngestError):
    """Access to this resource is not allowed."""

    status = 403
    problem_type = "/problems/forbidden"
    title = "Forbidden"


class NotFound(IngestError):
    """The resource does not exist."""

    status = 404
    problem_type = "/problems/not-found"
    title = "Not found"


class Conflict(IngestError):
    """The request conflicts with the stored state."""

    status = 409
    problem_type = "/problems/conflict"
    title = "Conflict"


class PayloadTooLarge(IngestError):
    """The request body is larger than allowed."""

    status = 413
    problem_type = "/problems/too-large"
    title = "Payload too large"


class UnsupportedMediaType(IngestError):
    """The Content-Type is not a valid media type."""

    status = 415
    problem_type = "/problems/media-type"
    title = "Unsupported media type"


class Unavailable(IngestError):
    """A backing service (the blob store, the disk) failed; nothing was accepted. Retry."""

    status = 503
    problem_type = "/problems/unavailable"
    title = "Service unavailable"


def described(exc: BaseException) -> str:
    """What an error says, with what its cause said: a store's error wraps the client's (an
    S3 ``AccessDenied``), and its own message alone names only the blob."""
    cause = exc.__cause__
    said = str(exc)
    return f"{said}: {cause}" if cause is not None and str(cause) else said
