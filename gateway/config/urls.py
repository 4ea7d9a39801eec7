"""The URLs the gateway sends requests to (Workato, the polled job systems): checked at load,
where a bad one otherwise failed every request, or raised in the HTTP client."""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit


def http_url(url: str, credentials: str) -> SplitResult:
    """``url``'s parts, if it is an http(s) URL with a host and no credentials, query or
    fragment; ValueError saying which it is not (``credentials``: where they go instead)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        # the HTTP client refuses them beside an Authorization header: a ValueError no
        # request expects
        raise ValueError(f"must not hold credentials: {credentials}")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or a fragment")
    return parts
