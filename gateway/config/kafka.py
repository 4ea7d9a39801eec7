"""``[kafka]``: the consumer of ``resume.events``/``resume.waits`` (DESIGN 5.2). Off without
bootstrap servers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gateway.config.base import Section
from gateway.config.secrets import Secret


class KafkaSettings(Section):
    bootstrap_servers: list[str] = Field(default_factory=list)
    events_topic: str = "resume.events"
    waits_topic: str = "resume.waits"
    dlq_topic: str = "resume.dlq"
    outcomes_topic: str | None = None
    group_id: str = "resume-gateway"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.bootstrap_servers)
