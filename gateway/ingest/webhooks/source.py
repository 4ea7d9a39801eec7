"""A configured webhook source, built once at start: its verifier and its parsed mapping."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config.sources import SourceSettings
from gateway.ingest.webhooks.mapping import EventMapping
from gateway.ingest.webhooks.verify import Verifier, verifier_for


@dataclass(frozen=True)
class WebhookSource:
    name: str
    tenant: str
    max_body_bytes: int
    verifier: Verifier
    mapping: EventMapping

    @classmethod
    def from_settings(cls, settings: SourceSettings) -> WebhookSource:
        return cls(
            name=settings.name,
            tenant=settings.tenant,
            max_body_bytes=settings.max_body_bytes,
            verifier=verifier_for(settings.verify),
            mapping=EventMapping.from_settings(settings),
        )
