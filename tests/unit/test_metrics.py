"""Every metric the gateway exports is in the README's table, and the table names no other."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.metrics import Metrics

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_documents_every_metric_and_only_those() -> None:
    exported = {
        line.split()[2]
        for line in Metrics().render().decode().splitlines()
        if line.startswith("# HELP ") and not line.split()[2].endswith("_created")
    }  # (an unlabelled counter's creation time is exported as a family of its own)
    table = README.read_text().split("What `/metrics` tells", 1)[1].split("\n\n", 2)[1]
    documented = set(re.findall(r"`(gateway_[a-z_]+)", table))
    assert documented == exported


def test_a_resume_request_slower_than_ten_seconds_is_told_apart_from_one_that_hung() -> None:
    """The default buckets end at 10 s, below the 20 s request timeout: a 15 s request and
    one that timed out both counted only in ``+Inf``."""
    metrics = Metrics()
    metrics.latency.labels("t").observe(15.0)

    def bucket(le: str) -> float | None:
        return metrics.registry.get_sample_value(
            "gateway_resume_request_seconds_bucket", {"tenant": "t", "le": le}
        )

    assert (bucket("10.0"), bucket("20.0")) == (0.0, 1.0)
