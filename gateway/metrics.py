"""Prometheus metrics, on a registry owned by the app (no process-global collectors)."""

from __future__ import annotations

import functools

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REQUEST_BUCKETS_S = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
"""Up to the longest ``request_timeout_s`` worth telling apart (20 s by default): the client
library's default buckets end at 10 s, where a slow Workato would hide in ``+Inf``."""


class Metrics:
    """Every metric the gateway exports. Labels never carry tokens or credentials."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.waits = Counter(
            "gateway_waits_total",
            "Wait registrations by outcome.",
            ["tenant", "outcome"],
            registry=r,
        )
        self.events = Counter(
            "gateway_events_total",
            "Events by source and outcome.",
            ["tenant", "source", "outcome"],
            registry=r,
        )
        self.attempts = Counter(
            "gateway_resume_attempts_total",
            "Resume requests by result.",
            ["tenant", "result"],
            registry=r,
        )
        self.outcomes = Counter(
            "gateway_deliveries_finished_total",
            "Finished deliveries by final state.",
            ["tenant", "state"],
            registry=r,
        )
        self.refused = Counter(
            "gateway_requests_refused_total",
            "Requests answered with a 4xx problem, by route template and status.",
            ["route", "status"],
            registry=r,
        )
        self.swept = Counter(
            "gateway_swept_total",
            "What the sweep ended: leases reclaimed (a request that may have reached Workato "
            "outlived its lease), waits expired, buffered events unmatched.",
            ["kind"],
            registry=r,
        )
        self.latency = Histogram(
            "gateway_resume_request_seconds",
            "Duration of resume requests.",
            ["tenant"],
            registry=r,
            buckets=REQUEST_BUCKETS_S,
        )
        self.paused = Gauge(
            "gateway_tenant_paused",
            "1 while a tenant's deliveries are paused.",
            ["tenant"],
            registry=r,
        )
        self.polls = Counter(
            "gateway_polls_total",
            "Polls of watched jobs by connection and result.",
            ["connection", "result"],
            registry=r,
        )
        self.rows = Gauge(
            "gateway_rows",
            "Rows in flight by kind and state: open waits, buffered events, pending and "
            "sending deliveries, active watches (finished ones: the *_total counters).",
            ["kind", "state"],
            registry=r,
        )
        self.kafka_records = Counter(
            "gateway_kafka_records_total",
            "Consumed Kafka records by topic and result (ingested, dead_lettered).",
            ["topic", "result"],
            registry=r,
        )
        self.kafka_paused = Gauge(
            "gateway_kafka_paused",
            "1 while the consumer's partitions are paused because the store is behind.",
            registry=r,
        )
        self.kafka_dlq_failing = Gauge(
            "gateway_kafka_dlq_failing",
            "1 once a batch's dead letters were refused three times in a row; commits wait.",
            registry=r,
        )
        self.kafka_batch = Histogram(
            "gateway_kafka_batch_seconds",
            "Fetched batch to committed offsets.",
            registry=r,
        )
        self.outcomes_published = Counter(
            "gateway_outcomes_published_total",
            "Finished deliveries sent to the outcomes topic, by result (sent, dropped).",
            ["result"],
            registry=r,
        )
        self.outcomes_queued = Gauge(
            "gateway_outcomes_queued",
            "Finished deliveries not yet acknowledged by the outcomes topic (queued or sent).",
            registry=r,
        )

        self.webhooks_rejected = Counter(
            "gateway_webhooks_rejected_total",
            "Webhooks refused by verification, by source and reason (e.g. bad_signature).",
            ["source", "reason"],
            registry=r,
        )
        self.claim_checks = Counter(
            "gateway_claim_checks_total",
            "Resume requests that carried a payload_ref instead of the payload, by cause.",
            ["tenant", "cause"],
            registry=r,
        )
        self.blobs_collected = Counter(
            "gateway_blobs_collected_total",
            "Blobs deleted once nothing needed them any more.",
            registry=r,
        )

    @functools.cache  # noqa: B019 - one Metrics per app, a handful of label sets; hot path
    def event_counter(self, tenant: str, source: str, outcome: str) -> Counter:
        return self.events.labels(tenant, source, outcome)

    def render(self) -> bytes:
        return generate_latest(self.registry)
