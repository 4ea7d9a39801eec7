"""Secret values written inline, as ``env:NAME`` or as ``file:/path``.

The environment mapping arrives through the pydantic validation context, so the process
environment is read in exactly one place (the loader).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, SecretStr, ValidationInfo


def resolve_secret(value: Any, info: ValidationInfo) -> Any:
    """Dereference ``env:`` and ``file:`` secrets; other values pass through unchanged."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not isinstance(value, str):
        return value
    for scheme in ("env:", "file:"):  # mistyped, it was taken (and masked) as the secret itself
        if value[: len(scheme)].lower() == scheme and not value.startswith(scheme):
            raise ValueError(f"write {value[: len(scheme)]!r} as {scheme!r}: in lower case")
    if value.startswith("env:"):
        environ: Mapping[str, str] = (info.context or {}).get("environ", {})
        name = value[4:]
        if name not in environ:
            raise ValueError(f"environment variable {name} is not set")
        return environ[name]
    if value.startswith("file:"):
        path = Path(value[5:])
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None
    return value


def _usable(value: SecretStr) -> SecretStr:
    """An empty credential never matches, or is sent as none: a variable set to nothing, an
    empty file, ``""`` left in a list. Refused, it names its field; accepted, it failed
    later and quietly (an API key nobody can send, a tenant described as legacy)."""
    secret = value.get_secret_value()
    if not secret:
        raise ValueError("must not be empty (an unset variable, or an empty file?)")
    try:  # an environment in another encoding leaves lone surrogates, which nothing can send
        secret.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not UTF-8 (a variable or a file in another encoding?)") from None
    return value


Secret = Annotated[SecretStr, BeforeValidator(resolve_secret), AfterValidator(_usable)]
"""A credential: masked when printed or dumped, resolvable from env or file; never empty."""


def header_safe(value: str) -> str:
    """A value sent as an HTTP header must hold no control character: aiohttp refuses such a
    header on every request (a ``ValueError`` that ended the poller, and the gateway)."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("holds a control character (a line break?): it is sent as a header")
    return value


def _header_safe_secret(value: SecretStr) -> SecretStr:
    header_safe(value.get_secret_value())
    return value


HeaderSecret = Annotated[Secret, AfterValidator(_header_safe_secret)]
"""A credential sent as (part of) an HTTP header value."""
HeaderValue = Annotated[str, AfterValidator(header_safe)]
"""A plain value sent as (part of) an HTTP header value."""
