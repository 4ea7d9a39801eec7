"""OAuth2 access tokens of the Alteryx sandbox: issued per client, expiring, revocable.

Alteryx Server v3 hands out bearer tokens through the client-credentials grant. Clients must
cache them and fetch a new one when the API answers 401, so the sandbox makes tokens expire on
its (injectable) clock and lets tests revoke them all at once.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass


@dataclass(frozen=True)
class IssuedToken:
    """One access token; valid while the clock is before ``expires_at``."""

    value: str
    client_id: str
    expires_at: float


class TokenCheck(enum.Enum):
    """Why a bearer token was accepted or refused."""

    VALID = "valid"
    MISSING = "missing"
    UNKNOWN = "unknown"
    EXPIRED = "expired"


class TokenBook:
    """Every token issued and not yet pruned, with lifetime totals."""

    def __init__(self) -> None:
        self._tokens: dict[str, IssuedToken] = {}
        self.issued_total = 0

    def issue(self, client_id: str, now: float, lifetime_s: float) -> IssuedToken:
        """A fresh token for ``client_id``; expired tokens are forgotten on the way."""
        self._tokens = {k: t for k, t in self._tokens.items() if t.expires_at > now}
        token = IssuedToken(secrets.token_urlsafe(32), client_id, now + lifetime_s)
        self._tokens[token.value] = token
        self.issued_total += 1
        return token

    def check(self, value: str, now: float) -> TokenCheck:
        """Whether ``value`` is a live token at ``now``."""
        if not value:
            return TokenCheck.MISSING
        token = self._tokens.get(value)
        if token is None:
            return TokenCheck.UNKNOWN
        return TokenCheck.VALID if now < token.expires_at else TokenCheck.EXPIRED

    def revoke_all(self) -> int:
        """Forget every token (clients then get 401 and must fetch a new one); how many."""
        count = len(self._tokens)
        self._tokens.clear()
        return count

    def live(self, now: float) -> int:
        """How many tokens are valid at ``now``."""
        return sum(token.expires_at > now for token in self._tokens.values())

    def clear(self) -> None:
        """Forget every token and the totals."""
        self._tokens.clear()
        self.issued_total = 0
