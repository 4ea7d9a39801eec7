"""``[kafka]``: the consumer of ``resume.events``/``resume.waits`` and the optional
``resume.outcomes`` publisher (DESIGN 5.2). Off without bootstrap servers.

The flow-control values bound what the consumer holds in memory: at most
``max_batches_in_flight`` batches of ``max_batch_records`` records of at most
``max_message_bytes`` each, plus what aiokafka prefetches (``max_partition_fetch_bytes`` per
partition).
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from gateway.config.base import Section
from gateway.config.secrets import Secret

DEFAULT_MAX_MESSAGE_BYTES = 1_048_576  # Kafka's own default message.max.bytes, roughly
DEFAULT_MAX_BATCH_RECORDS = 1000
DEFAULT_MAX_BATCHES_IN_FLIGHT = 16
DEFAULT_DLQ_MAX_REQUEST_BYTES = 16 * 1_048_576
SASL_FIELDS = ("sasl_mechanism", "sasl_username", "sasl_password")
SSL_FIELDS = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")


class KafkaSettings(Section):
    bootstrap_servers: list[str] = Field(default_factory=list)
    events_topic: str = "resume.events"
    waits_topic: str = "resume.waits"
    dlq_topic: str = "resume.dlq"
    outcomes_topic: str | None = None
    """Publish one message per finished delivery here; off when unset."""
    group_id: str = "resume-gateway"
    client_id: str = "resume-gateway"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    """Where a new consumer group starts: ``earliest`` so nothing published before the first
    start is skipped."""
    session_timeout_s: float = Field(default=10.0, gt=0)
    heartbeat_interval_s: float = Field(default=3.0, gt=0)
    max_poll_interval_s: float = Field(default=300.0, gt=0)
    fetch_wait_s: float = Field(default=0.5, gt=0)
    """How long one fetch waits for records before the loop looks around again."""
    max_batch_records: int = Field(default=DEFAULT_MAX_BATCH_RECORDS, ge=1)
    """Records per fetched batch, persisted in one store transaction."""
    max_message_bytes: int = Field(default=DEFAULT_MAX_MESSAGE_BYTES, ge=1)
    """A larger value goes to the dead-letter topic as ``oversized``."""
    max_partition_fetch_bytes: int = Field(default=DEFAULT_MAX_MESSAGE_BYTES, ge=1)
    max_batches_in_flight: int = Field(default=DEFAULT_MAX_BATCHES_IN_FLIGHT, ge=1)
    """Fetched batches not yet committed; at this many the consumer stops fetching. Enough
    for the records fetched ahead to keep the loop busy while the store commits."""
    pause_after_s: float = Field(default=5.0, gt=0)
    """When the oldest batch in flight is this old, the store is behind: pause the partitions
    until the backlog is down to half of ``max_batches_in_flight``."""
    dlq_max_request_bytes: int = Field(default=DEFAULT_DLQ_MAX_REQUEST_BYTES, ge=1)
    """Largest dead-letter record sent with its value; a larger one is sent without it."""
    retry_backoff_s: float = Field(default=1.0, gt=0)
    """Pause between attempts when a dead-letter or outcome publish fails."""
    outcomes_max_queued: int = Field(default=10_000, ge=1)
    """Outcomes waiting to be published; past this the oldest are dropped (and counted)."""

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if self.heartbeat_interval_s >= self.session_timeout_s:
            raise ValueError("heartbeat_interval_s must be shorter than session_timeout_s")
        if self.pause_after_s >= self.max_poll_interval_s:
            raise ValueError("pause_after_s must be shorter than max_poll_interval_s")
        if self.sasl_mechanism is not None and None in (self.sasl_username, self.sasl_password):
            raise ValueError("sasl_mechanism needs sasl_username and sasl_password")
        self._security_is_used()
        topics = [self.events_topic, self.waits_topic, self.dlq_topic, self.outcomes_topic]
        named = [t for t in topics if t is not None]
        if len(named) != len(set(named)):
            raise ValueError("the events, waits, dlq and outcomes topics must differ")
        return self

    def _security_is_used(self) -> None:
        """What the protocol does not use is a mistake, not ignored: credentials or
        certificates that are never sent leave an operator believing they are."""
        protocol = self.security_protocol
        if protocol.startswith("SASL_") and self.sasl_mechanism is None:
            raise ValueError(f"security_protocol {protocol} needs sasl_mechanism")
        unused = []
        if not protocol.startswith("SASL_"):
            unused += [n for n in SASL_FIELDS if getattr(self, n) is not None]
        if not protocol.endswith("SSL"):
            unused += [n for n in SSL_FIELDS if getattr(self, n) is not None]
        if unused:
            raise ValueError(f"{unused[0]} is set, but security_protocol {protocol} ignores it")

    @property
    def enabled(self) -> bool:
        return bool(self.bootstrap_servers)

    @property
    def topics(self) -> list[str]:
        """The topics the consumer reads."""
        return [self.events_topic, self.waits_topic]
