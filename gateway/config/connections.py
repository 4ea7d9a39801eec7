"""``[[connections]]``: job systems the gateway polls for waits registered with ``watch``.

Polling is the fallback for systems without webhooks (Alteryx Server v3, Pixxel): intervals
are per connection, and concurrency is bounded so a slow system cannot take every slot.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from gateway.config.base import Section
from gateway.config.secrets import HeaderSecret, Secret
from gateway.config.urls import http_url


class _Polling(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    base_url: str
    poll_interval_s: float = Field(default=15.0, gt=0)
    max_backoff_s: float = Field(default=300.0, gt=0)
    request_timeout_s: float = Field(default=20.0, gt=0)
    max_answer_bytes: int = Field(default=16 * 2**20, gt=0)
    """A job's answer is held in memory and becomes the event's data: larger is an error."""
    tenants: list[str] | None = None
    """The tenants whose waits may watch jobs here: such a wait reads any job the credential
    can read, and with ``cancel_on_close`` cancels it. Unset: every tenant."""

    @field_validator("base_url")
    @classmethod
    def _http_origin(cls, url: str) -> str:
        """Every poll goes to it: anything else failed each poll, or (credentials in it)
        ended the poller."""
        http_url(url, "give them as the connection's own")
        return url

    def serves(self, tenant: str) -> bool:
        return self.tenants is None or tenant in self.tenants

    @property
    def root(self) -> str:
        return self.base_url.rstrip("/")


class AlteryxConnection(_Polling):
    """Alteryx Server: OAuth2 client credentials; ``base_url`` is the server root."""

    kind: Literal["alteryx"]
    client_id: str
    client_secret: Secret
    api_path: str = Field(default="/webapi", pattern=r"^/")
    token_path: str = Field(default="/webapi/oauth2/token", pattern=r"^/")

    @field_validator("client_id")
    @classmethod
    def _basic_user_id(cls, value: str) -> str:
        if not value or ":" in value:  # it is sent as HTTP Basic's user-id (RFC 7617)
            raise ValueError("must be non-empty and hold no ':' (the token request's user-id)")
        return value

    def secret_values(self) -> list[str]:
        return [self.client_secret.get_secret_value()]


class PixxelConnection(_Polling):
    """Pixxel: the API key goes in ``Authorization`` as it is."""

    kind: Literal["pixxel"]
    api_key: HeaderSecret

    def secret_values(self) -> list[str]:
        return [self.api_key.get_secret_value()]


ConnectionSettings = Annotated[AlteryxConnection | PixxelConnection, Field(discriminator="kind")]
