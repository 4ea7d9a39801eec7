"""Prometheus metrics, on a registry owned by the app (no process-global collectors)."""

from __future__ import annotations

import functools

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


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
        self.latency = Histogram(
            "gateway_resume_request_seconds",
            "Duration of resume requests.",
            ["tenant"],
            registry=r,
        )
        self.paused = Gauge(
            "gateway_tenant_paused",
            "1 while a tenant's deliveries are paused.",
            ["tenant"],
            registry=r,
        )
        self.rows = Gauge(
            "gateway_rows", "Stored rows by kind and state.", ["kind", "state"], registry=r
        )

    @functools.cache  # noqa: B019 - one Metrics per app, a handful of label sets; hot path
    def event_counter(self, tenant: str, source: str, outcome: str) -> Counter:
        return self.events.labels(tenant, source, outcome)

    def render(self) -> bytes:
        return generate_latest(self.registry)
