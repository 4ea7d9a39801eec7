"""A structlog processor that removes secrets from every log line.

Two nets: fields whose *name* says secret are masked whatever they hold, and any known secret
value (credentials from the config, registered at start) is cut out of every string, so an
exception message that quotes a header cannot carry it out either.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, MutableMapping
from typing import Any

MASK = "[redacted]"
SECRET_FIELD = re.compile(r"(token|secret|password|authorization|api[_-]?key|credential)", re.I)
URL_CREDENTIALS = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^\s/?#\"<>]*(@)")
"""A URL's ``user:password@``, up to the authority's last ``@`` (a password may hold one)."""
INLINE_SECRETS = [
    re.compile(r'("(?:resume_)?token"\s*:\s*")(?:[^"\\]|\\.)*(")'),  # JSON, escapes and all
    re.compile(r"('(?:resume_)?token'\s*:\s*')(?:[^'\\]|\\.)*(')"),  # a Python repr's
    re.compile(r"((?:Bearer|Basic)\s+)[^\s\"',]+()", re.I),
    re.compile(r"([?&]sig=)[^&\s\"'#]+()"),  # a claim-check URL's signature
    URL_CREDENTIALS,
]


def without_url_credentials(text: str) -> str:
    return URL_CREDENTIALS.sub(rf"\g<1>{MASK}\g<2>", text)


class Redactor:
    """Callable structlog processor; ``add`` teaches it more secret values."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        known = set(self._secrets) | {s for s in secrets if len(s) >= 4}
        # longest first: a secret that contains another must be cut out whole, not leave a tail
        self._secrets = sorted(known, key=len, reverse=True)

    def __call__(self, _logger: Any, _method: str, event: MutableMapping[str, Any]) -> Any:
        for name in list(event):
            event[name] = self._clean(name, event[name])
        return event

    def _clean(self, name: str, value: Any) -> Any:
        if SECRET_FIELD.search(name) and value is not None and not isinstance(value, bool | int):
            return MASK
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {k: self._clean(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean("", v) for v in value]
        if value is None or isinstance(value, bool | int | float):
            return value
        return self.scrub(repr(value))  # bytes, an exception, a set: rendered as their repr

    def scrub(self, text: str) -> str:
        for pattern in INLINE_SECRETS:
            text = pattern.sub(rf"\g<1>{MASK}\g<2>", text)
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text
