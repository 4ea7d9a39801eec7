"""The settings model. Units are in the names; defaults are named constants."""

from __future__ import annotations

import hashlib
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from gateway.config.base import Section as _Section
from gateway.config.blobs import BlobSettings
from gateway.config.connections import ConnectionSettings
from gateway.config.kafka import KafkaSettings
from gateway.config.keys import TokenKey, UrlKey
from gateway.config.presets import DATA_CENTERS
from gateway.config.secrets import HeaderSecret, HeaderValue, Secret
from gateway.config.sources import SourceSettings
from gateway.config.urls import http_url
from gateway.messages import MANAGED_USER

DEFAULT_PORT = 8080
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_REQUEST_BYTES = 50_000_000
DEFAULT_RATE_LIMIT_PER_MINUTE = 60
MAX_WAIT_S = 60 * 24 * 3600  # Workato keeps a suspended job at most 60 days
DEFAULT_EVENT_BUFFER_TTL_S = 24 * 3600
DEFAULT_SQLITE_CACHE_MB = 64
DEFAULT_SPOOL_THRESHOLD_BYTES = 1024 * 1024
DEFAULT_MAX_EVENT_BODY_BYTES = 1024 * 1024 * 1024


def _repeated(values: list[str]) -> tuple[int, int] | None:
    """The positions of the first value seen twice: where it was first, and again."""
    seen: dict[str, int] = {}
    for n, value in enumerate(values):
        if value in seen:
            return seen[value], n
        seen[value] = n
    return None


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, gt=0)
    shutdown_timeout_s: float = Field(default=10.0, gt=0)


class StoreSettings(_Section):
    url: str = "sqlite:///.data/gateway.db"
    sqlite_synchronous: Literal["full", "normal"] = "full"
    sqlite_cache_mb: int = Field(default=DEFAULT_SQLITE_CACHE_MB, ge=1)
    """Page cache of the writer's connection, in MiB. SQLite's own default (2 MiB) holds a
    fraction of the indexes an intake of a few hundred thousand events touches at random; each
    miss is a read and a copy on the event loop."""

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        if not url.startswith("sqlite:///"):
            raise ValueError("only sqlite:///path is supported so far")
        return url

    @property
    def sqlite_path(self) -> str:
        return self.url.removeprefix("sqlite:///")


class IngestSettings(_Section):
    event_buffer_ttl_s: float = Field(default=DEFAULT_EVENT_BUFFER_TTL_S, gt=0)
    max_wait_s: float = Field(default=MAX_WAIT_S, gt=0, le=MAX_WAIT_S)
    spool_threshold_bytes: int = Field(default=DEFAULT_SPOOL_THRESHOLD_BYTES, gt=0)
    """HTTP bodies above this are streamed to disk (hashed and measured on the way), never
    held in memory; their event data goes to the blob store."""
    max_body_bytes: int = Field(default=DEFAULT_MAX_EVENT_BODY_BYTES, gt=0)
    """The hard cap of an event body on ``POST /v1/events`` (413 above it)."""
    spool_dir: str = ".data/spool"


class DeliverySettings(_Section):
    request_timeout_s: float = Field(default=20.0, gt=0)
    lease_s: float = Field(default=60.0, gt=0)
    max_in_flight: int = Field(default=16, ge=1)
    backoff_base_s: float = Field(default=1.0, gt=0)
    backoff_cap_s: float = Field(default=300.0, gt=0)
    auth_pause_s: float = Field(default=300.0, gt=0)
    poll_interval_s: float = Field(default=1.0, gt=0)
    sweep_interval_s: float = Field(default=5.0, gt=0)
    rate_window_s: float = Field(default=60.0, gt=0)
    rate_margin_s: float = Field(default=0.5, ge=0)

    @model_validator(mode="after")
    def _lease_outlives_request(self) -> Self:
        if self.lease_s <= self.request_timeout_s:
            raise ValueError("lease_s must be longer than request_timeout_s")
        return self


class PollingSettings(_Section):
    """How the watch loop runs; per-connection intervals live on each connection."""

    max_concurrency: int = Field(default=8, ge=1)
    tick_s: float = Field(default=1.0, gt=0)
    lease_s: float = Field(default=30.0, gt=0)
    """A poll ends within 80 % of it, its requests included (one is refused as failed, and
    retried after a backoff); a crashed poller's watches wait this long."""


class TenantSettings(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    base_url: str | None = None
    data_center: str | None = None
    api_token: HeaderSecret | None = None
    email: HeaderValue | None = None
    token: HeaderSecret | None = None
    rate_limit_per_minute: int = Field(default=DEFAULT_RATE_LIMIT_PER_MINUTE, ge=1)
    api_keys: list[Secret] = Field(default_factory=list)
    managed_user_id: str | None = Field(default=None, pattern=MANAGED_USER)
    """An embedded customer's id (numeric or ``E`` + external id) for Jobs API lookups of
    waits whose job reference names none."""
    raw_mode: bool = False
    max_request_bytes: int = Field(default=DEFAULT_MAX_REQUEST_BYTES, gt=0)

    @field_validator("base_url")
    @classmethod
    def _workato_origin(cls, url: str | None) -> str | None:
        """Where ``/api/job/resume`` is appended: anything else was taken, and every resume
        went to ``not a url/api/job/resume`` or ``…/api/api/job/resume``."""
        if url is None:
            return None
        parts = http_url(url, "the tenant's token authenticates")
        if parts.path.rstrip("/"):  # e.g. /api or /en: every resume a route 404, ended dead
            raise ValueError("must be an origin with no path, e.g. https://www.workato.com")
        return url

    @field_validator("data_center")
    @classmethod
    def _known_data_center(cls, name: str | None) -> str | None:
        if name is not None and name.lower() not in DATA_CENTERS:
            raise ValueError(f"must be one of {', '.join(DATA_CENTERS)}")
        return name

    @model_validator(mode="after")
    def _one_endpoint_one_credential(self) -> Self:
        if (self.base_url is None) == (self.data_center is None):
            raise ValueError("give exactly one of base_url or data_center")
        legacy = (self.email, self.token)
        if self.api_token is not None and legacy != (None, None):
            raise ValueError("give api_token, or legacy email and token, not both")
        if self.api_token is None and None in legacy:
            missing = "token" if self.email is not None else "email"
            missing = "email and token" if legacy == (None, None) else missing
            raise ValueError(f"give api_token, or legacy email and token ({missing} missing)")
        return self

    @property
    def resolved_base_url(self) -> str:
        if self.base_url is not None:
            return self.base_url.rstrip("/")
        return DATA_CENTERS[(self.data_center or "").lower()]

    @property
    def credential_id(self) -> str:
        """A stable, non-secret name for the credential; the rate window is kept per credential."""
        secret = self.api_token or self.token
        raw = secret.get_secret_value() if secret else ""
        url = _lower_origin(self.resolved_base_url)  # one Workato host, in any case
        return hashlib.sha256(f"{url}\0{raw}".encode()).hexdigest()[:16]

    def auth_headers(self) -> dict[str, str]:
        if self.api_token is not None:
            return {"Authorization": f"Bearer {self.api_token.get_secret_value()}"}
        assert self.email is not None
        assert self.token is not None
        return {"x-user-email": self.email, "x-user-token": self.token.get_secret_value()}


class SecuritySettings(_Section):
    token_keys: list[TokenKey] = Field(default_factory=list)
    """The first key encrypts; all of them decrypt, so keys can rotate."""
    admin_tokens: list[Secret] = Field(default_factory=list)
    """Reserved for the operators' API (DESIGN 5.1, not served yet): accepted and redacted."""
    url_keys: list[UrlKey] = Field(default_factory=list)
    """Blob-URL signing keys; the first signs, all verify, and so do the keys derived from the
    token keys (the only ones while none is set), under the token keys' ids."""

    @model_validator(mode="after")
    def _unique_ids(self) -> Self:
        """A sealed token or a URL names its key by id: two keys under one id, and the cipher
        kept the last (the list says the first encrypts), so tokens sealed with the other
        no longer opened."""
        for kind, keys in (("token_keys", self.token_keys), ("url_keys", self.url_keys)):
            repeat = _repeated([key.id for key in keys])
            if repeat is not None:
                first, again = repeat
                raise ValueError(
                    f"security.{kind}.{again}.id: {keys[again].id!r} is the id of "
                    f"security.{kind}.{first} too; ids must be unique"
                )
        return self


class LoggingSettings(_Section):
    format: Literal["json", "console"] = "json"
    level: Literal["debug", "info", "warning", "error"] = "info"


class Settings(_Section):
    env: Literal["prod", "dev"] = "prod"
    server: ServerSettings = ServerSettings()
    store: StoreSettings = StoreSettings()
    ingest: IngestSettings = IngestSettings()
    delivery: DeliverySettings = DeliverySettings()
    tenants: list[TenantSettings] = Field(default_factory=list)
    kafka: KafkaSettings = KafkaSettings()
    sources: list[SourceSettings] = Field(default_factory=list)
    connections: list[ConnectionSettings] = Field(default_factory=list)
    polling: PollingSettings = PollingSettings()
    blobs: BlobSettings = BlobSettings()
    security: SecuritySettings = SecuritySettings()
    logging: LoggingSettings = LoggingSettings()

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = [t.name for t in self.tenants]
        for kind, items in (
            ("tenants", self.tenants),
            ("sources", self.sources),
            ("connections", self.connections),
        ):
            repeat = _repeated([item.name for item in items])
            if repeat is not None:
                first, again = repeat
                raise ValueError(
                    f"{kind}.{again}.name: {items[again].name!r} is the name of {kind}.{first} "
                    "too; names must be unique"
                )
        owners = [(n, k.get_secret_value()) for n, t in enumerate(self.tenants) for k in t.api_keys]
        repeat = _repeated([key for _, key in owners])
        if repeat is not None:  # named by where it is, never by its value
            first, again = (owners[i][0] for i in repeat)
            where = "twice" if first == again else f"and in tenants.{first}"
            raise ValueError(
                f"tenants.{again}.api_keys: a key is in it {where}; a key belongs to one tenant"
            )
        tenant_names = set(names)
        for n, source in enumerate(self.sources):
            if source.tenant not in tenant_names:
                raise ValueError(f"sources.{n}.tenant: no tenant is named {source.tenant!r}")
        for n, conn in enumerate(self.connections):
            unknown = sorted(set(conn.tenants or ()) - tenant_names)
            if unknown:
                raise ValueError(f"connections.{n}.tenants: no tenant is named {unknown[0]!r}")
        if self.env != "dev" and not self.security.token_keys:
            raise ValueError(
                "security.token_keys is required outside dev (resume tokens are encrypted)"
            )
        return self

    def tenant(self, name: str) -> TenantSettings | None:
        return next((t for t in self.tenants if t.name == name), None)


def _lower_origin(url: str) -> str:
    """``url`` with its scheme and host in lower case and its default port dropped, the rest
    as written (so that the credential ids of URLs written in lower case stay what they were):
    ``https://www.workato.com:443`` and the ``us`` preset are one credential, one window."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    scheme, authority = scheme.lower(), authority.lower()
    default = {"https": ":443", "http": ":80"}.get(scheme)
    if default is not None and authority.endswith(default):
        authority = authority.removesuffix(default)
    return f"{scheme}{sep}{authority}{slash}{path}"
