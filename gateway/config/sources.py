"""``[[sources]]``: named webhook endpoints, ``POST /v1/hooks/{name}`` (DESIGN 5.4).

A source says which tenant its events belong to, how a request proves it comes from the sender
(``verify``: Standard Webhooks, an HMAC-SHA256 header, a bearer token, or — only when written
out — ``none``), and where the event's fields are in the body (``mapping``: RFC 6901 pointers).
Pointers, templates and secrets are checked here, so a bad one stops the gateway at start with
an error naming the field instead of refusing every webhook later.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator

from gateway.config.base import Section
from gateway.config.secrets import Secret
from gateway.jsonpointer import parse_pointer

DEFAULT_TOLERANCE_S = 300.0
"""Standard Webhooks: how far ``webhook-timestamp`` may be from now, either way (±5 min)."""
DEFAULT_SOURCE_MAX_BODY_BYTES = 1024 * 1024
STANDARD_WEBHOOKS_ID_HEADER = "webhook-id"
WHSEC_PREFIX = "whsec_"
KEY_TEMPLATE_FIELD = "{value}"
RESERVED_SOURCE_NAMES = frozenset({"api", "kafka"})
"""Event sources the gateway names itself; a webhook source may not share their dedupe space."""
HMAC_PRESETS: dict[str, dict[str, str]] = {
    "github": {"header": "X-Hub-Signature-256", "prefix": "sha256=", "encoding": "hex"},
}
PRESET_ID_HEADERS = {"github": "X-GitHub-Delivery"}
"""The header that identifies a delivery, per preset: the default event id."""

HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
"""An HTTP field name (RFC 9110 token): anything else never arrives, and every request was
refused as missing its signature or id."""

EventStatusName = Literal["succeeded", "failed"]
StatusTarget = Literal["succeeded", "failed", "ignore"]
"""What a sender's status value becomes. ``ignore``: a report that is not a completion (a
job "requested" or "in_progress", sent to the same URL as its end) is acknowledged and not
stored; mapped to ``failed`` instead, it resolved the wait before the job had ended."""


def whsec_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (``whsec_`` + base64); ValueError if none."""
    encoded = secret.removeprefix(WHSEC_PREFIX)
    encoded += "=" * (-len(encoded) % 4)  # unpadded, as the reference library accepts it
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        # never quote the value: it is a secret
        raise ValueError("must be whsec_ followed by a non-empty base64 key")
    return key


class StandardWebhooksVerify(Section):
    """``webhook-id`` / ``webhook-timestamp`` / ``webhook-signature``; several secrets rotate."""

    scheme: Literal["standard_webhooks"]
    secrets: list[Secret] = Field(min_length=1)
    tolerance_s: float = Field(default=DEFAULT_TOLERANCE_S, gt=0)

    @field_validator("secrets")
    @classmethod
    def _whsec(cls, secrets: list[SecretStr]) -> list[SecretStr]:
        for index, secret in enumerate(secrets):
            try:
                whsec_key(secret.get_secret_value())
            except ValueError as exc:
                raise ValueError(f"secrets[{index}] {exc}") from None
        return secrets

    def secret_values(self) -> list[str]:
        values = [s.get_secret_value() for s in self.secrets]
        return values + [v.removeprefix(WHSEC_PREFIX) for v in values]

    @property
    def id_header(self) -> str | None:
        return STANDARD_WEBHOOKS_ID_HEADER


class HmacSha256Verify(Section):
    """HMAC-SHA256 of the raw body in ``header``, after an optional ``prefix``.

    ``preset = "github"`` means ``X-Hub-Signature-256: sha256=<hex>``; explicit values win.
    ``secret`` and ``secrets`` may both be given: every one of them is accepted (rotation).
    """

    scheme: Literal["hmac_sha256"]
    preset: Literal["github"] | None = None
    header: str = Field(pattern=HEADER_NAME)
    prefix: str = ""
    encoding: Literal["hex", "base64"] = "hex"
    secret: Secret | None = None
    secrets: list[Secret] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _preset_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") in HMAC_PRESETS:
            return {**HMAC_PRESETS[data["preset"]], **data}
        return data

    @model_validator(mode="after")
    def _has_secrets(self) -> Self:
        if not self.all_secrets:  # (an empty one is refused as any empty Secret is)
            raise ValueError("give secret or secrets")
        return self

    @property
    def all_secrets(self) -> list[SecretStr]:
        return ([self.secret] if self.secret is not None else []) + list(self.secrets)

    def secret_values(self) -> list[str]:
        return [s.get_secret_value() for s in self.all_secrets]

    @property
    def id_header(self) -> str | None:
        return PRESET_ID_HEADERS.get(self.preset or "")


class BearerVerify(Section):
    """``Authorization: Bearer <token>`` with one of ``tokens`` (several: rotation)."""

    scheme: Literal["bearer"]
    tokens: list[Secret] = Field(min_length=1)

    def secret_values(self) -> list[str]:
        return [t.get_secret_value() for t in self.tokens]

    @property
    def id_header(self) -> str | None:
        return None


class NoVerify(Section):
    """Anyone who can reach the endpoint may post: only when written out in the config."""

    scheme: Literal["none"]

    def secret_values(self) -> list[str]:
        return []

    @property
    def id_header(self) -> str | None:
        return None


VerifySettings = Annotated[
    StandardWebhooksVerify | HmacSha256Verify | BearerVerify | NoVerify,
    Field(discriminator="scheme"),
]


class MappingSettings(Section):
    """Where the event's fields are: RFC 6901 pointers into the JSON body, or headers."""

    key: str
    key_template: str | None = None
    """E.g. ``alteryx:{value}``: the correlation key built around the pointed-to value."""
    event_id: str | None = None
    event_id_header: str | None = Field(default=None, pattern=HEADER_NAME)
    status: str | None = None
    status_map: dict[str, StatusTarget] = Field(default_factory=dict)
    """Sender's value (strings as they are, other JSON values as JSON text) → our status."""
    default_status: StatusTarget | None = None
    """The status of a value that is not in ``status_map``; without it such a value is a 422."""
    data: str = ""

    @field_validator("key", "event_id", "status", "data")
    @classmethod
    def _pointer(cls, pointer: str | None) -> str | None:
        if pointer is not None:
            parse_pointer(pointer)
        return pointer

    @field_validator("key_template")
    @classmethod
    def _template(cls, template: str | None) -> str | None:
        if template is not None and KEY_TEMPLATE_FIELD not in template:
            raise ValueError(f"the template must contain {KEY_TEMPLATE_FIELD}")
        return template

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.event_id is not None and self.event_id_header is not None:
            raise ValueError("give event_id or event_id_header, not both")
        if self.status is None and self.default_status is None:
            raise ValueError("give status (a pointer) or default_status")
        if self.status is None and self.default_status == "ignore":  # every webhook answered
            raise ValueError("default_status ignore needs a status pointer: it would ignore all")
        return self


class SourceSettings(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    tenant: str
    verify: VerifySettings
    mapping: MappingSettings
    max_body_bytes: int = Field(default=DEFAULT_SOURCE_MAX_BODY_BYTES, gt=0)

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name in RESERVED_SOURCE_NAMES:
            raise ValueError(f"{name!r} is reserved for the gateway's own event sources")
        return name

    @model_validator(mode="after")
    def _event_id_known(self) -> Self:
        if self.mapping.event_id is None and self.event_id_header is None:
            raise ValueError(
                "mapping.event_id or mapping.event_id_header is required for this verify "
                "scheme (the event id deduplicates retries)"
            )
        return self

    @property
    def event_id_header(self) -> str | None:
        """The header holding the event id: configured, or the scheme's delivery id."""
        if self.mapping.event_id is not None:
            return None
        return self.mapping.event_id_header or self.verify.id_header
