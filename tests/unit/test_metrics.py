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
