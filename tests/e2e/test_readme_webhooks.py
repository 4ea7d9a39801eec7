"""The README's webhook examples, pasted as written, resume ``resume-gateway dev``'s sandbox jobs.

The shell blocks of the README section "Webhooks" are run with ``bash`` against a ``dev``
process (only the gateway's address is swapped for this run's port): each signs its body
with ``openssl`` and must wake its job exactly once with the body's bytes as the payload.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.devmode import DEV_STANDARD_WEBHOOKS_SECRET, DEV_WEBHOOK_SECRET
from tests.e2e.conftest import Process
from tests.e2e.test_dev_mode import Dev, bash, json_documents

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

README = Path(__file__).resolve().parents[2] / "README.md"
README_GATEWAY_URL = "http://127.0.0.1:8080"


def webhook_shell_blocks() -> list[str]:
    text = README.read_text()
    start = text.index("\n## Webhooks\n")
    section = text[start : text.index("\n## ", start + 1)]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def resumed_job(dev: Dev, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        job: dict[str, Any] = dev.call("GET", f"{dev.sandbox_url}/_sandbox/jobs/{job_id}")
        if job["resume_count"]:
            return job
        assert time.monotonic() < deadline, f"job {job_id} was not resumed: {job}"
        time.sleep(0.1)


def test_readme_webhook_examples_resume_the_dev_sandbox_jobs_once(
    workdir: Path, shell: dict[str, str], processes: list[Process]
) -> None:
    dev = Dev(workdir, processes, "dev")
    blocks = webhook_shell_blocks()
    assert len(blocks) == 2, "expected the HMAC and the Standard Webhooks example"
    order = 4200 + int(time.time()) % 1000  # what the steps before set: a new one each run
    orders = {"ORDER": str(order), "KEY": f"order-{order}"}
    runs = {"KEY": f"run-{order}"}
    expected = {
        "orders": (orders, f"dlv-{order}", {"id": order, "state": "shipped", "total": 42.50}),
        "jobs": (runs, None, {"job_id": f"run-{order}", "status": "completed", "rows": 3}),
    }
    for block, (source, (env, event_id, payload)) in zip(blocks, expected.items(), strict=True):
        assert README_GATEWAY_URL in block
        job = dev.call("POST", f"{dev.sandbox_url}/_sandbox/jobs", {})
        wait = {"key": env["KEY"], "resume_token": job["resume_token"]}
        assert dev.call("POST", f"{dev.url}/v1/waits", wait)["outcome"] == "created"

        script = block.replace(README_GATEWAY_URL, dev.url)
        [answer] = json_documents(bash(script, shell | env))

        assert (answer["outcome"], answer["key"]) == ("matched", env["KEY"])
        assert event_id is None or answer["event_id"] == event_id
        resumed = resumed_job(dev, job["job_id"])
        assert (resumed["resume_count"], resumed["status"]) == (1, "succeeded")
        assert resumed["resume_attempts"] == 1  # one request, not a refused second one
        data = resumed["resumed_data"]
        assert (data["source"], data["event_id"], data["payload"]) == (
            source,
            answer["event_id"],
            payload,
        )
    log = (workdir / "dev.log").read_text()
    assert [s for s in (DEV_WEBHOOK_SECRET, DEV_STANDARD_WEBHOOKS_SECRET) if s in log] == []
