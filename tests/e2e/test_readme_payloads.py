"""The README's claim-check example, pasted as written, against ``resume-gateway dev``: the CSV
goes by claim check and its signed URL serves the exact bytes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.e2e.conftest import Process
from tests.e2e.test_dev_mode import Dev, bash
from tests.e2e.test_readme_webhooks import README

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]
README_SANDBOX_URL = "http://127.0.0.1:8081"
README_GATEWAY_URL = "http://127.0.0.1:8080"
CSV = "id,total\n1,42.50\n"


def payload_shell_blocks() -> list[str]:
    text = README.read_text()
    start = text.index("\n## Payloads of any size\n")
    section = text[start : text.index("\n## ", start + 1)]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def test_readme_claim_check_example_serves_the_csv(
    workdir: Path, shell: dict[str, str], processes: list[Process]
) -> None:
    dev = Dev(workdir, processes, "dev")
    [block] = payload_shell_blocks()
    script = block.replace(README_GATEWAY_URL, dev.url).replace(README_SANDBOX_URL, dev.sandbox_url)

    output = bash(script, shell)

    decoder = json.JSONDecoder()
    registered, at = decoder.raw_decode(output)
    accepted, at = decoder.raw_decode(output, at)
    assert (registered["outcome"], accepted["outcome"]) == ("created", "matched")
    assert output[at:] == CSV, "the signed URL serves the exact bytes"
    jobs = dev.call("GET", f"{dev.sandbox_url}/_sandbox/jobs")
    [resumed] = [j for j in jobs if j["resume_count"]]
    data = resumed["resumed_data"]
    assert data["payload"] is None
    assert (data["payload_ref"]["content_type"], data["payload_ref"]["size"]) == (
        "text/csv",
        len(CSV),
    )
