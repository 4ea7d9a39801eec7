"""``resume-gateway dev --kafka`` as a newcomer meets it: a local broker starts with the
gateway, and the printed walk-through — a wait over HTTP, its completion sent with
``resume-gateway publish`` — resumes the sandbox job once, pasted into bash as printed."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import Process, free_port
from tests.e2e.test_dev_mode import LAST_LINE, bash, json_documents

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]
KAFKA_STEP = "# 5."


def start_dev(tmp: Path, processes: list[Process], ports: list[str]) -> tuple[Process, str]:
    args = ["dev", "--port", ports[0], "--sandbox-port", ports[1], "--data-dir", "dev-data"]
    process = Process([*args, "--kafka", "--kafka-port", ports[2]], tmp / "dev.log")
    processes.append(process)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        output = process.log_path.read_text()
        if LAST_LINE in output:
            return process, output
        assert process.proc.poll() is None, output
        time.sleep(0.05)
    raise AssertionError(f"dev --kafka printed no instructions:\n{process.log_path.read_text()}")


def kafka_steps(output: str) -> str:
    """The Kafka block, from its first step up to the closing line, as printed."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(KAFKA_STEP))
    end = next(i for i, line in enumerate(lines) if line.strip() == LAST_LINE)
    return "\n".join(lines[start:end]) + "\n"


def sandbox_job(sandbox_url: str, job_id: str) -> dict[str, object]:
    with urllib.request.urlopen(f"{sandbox_url}/_sandbox/jobs/{job_id}", timeout=5) as answer:
        job: dict[str, object] = json.load(answer)
        return job


def test_dev_kafka_walkthrough_resumes_the_job_through_the_local_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, processes: list[Process]
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("RESUME_GATEWAY_"):
            monkeypatch.delenv(name)
    if shutil.which("curl") is None:
        pytest.fail("curl is not on PATH: the dev-mode instructions are curl commands")
    venv = str(Path(sys.executable).parent)  # pasted into another shell: no venv on its PATH
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv)
    env = {**os.environ, "PATH": path}
    ports = [str(free_port()) for _ in range(3)]
    dev, output = start_dev(tmp_path, processes, ports)
    script = kafka_steps(output)
    assert f"{venv}/resume-gateway publish --bootstrap 127.0.0.1:{ports[2]}" in script

    documents = json_documents(bash(script, env))
    registered, published = documents[0], documents[1]
    assert registered["outcome"] == "created"
    assert (published["topic"], published["id"][:4]) == ("resume.events", "evt-")
    job = documents[-1]
    deadline = time.monotonic() + 20
    while job.get("resume_count") != 1:
        assert time.monotonic() < deadline, f"the job was not resumed: {job}"
        time.sleep(0.2)
        job = sandbox_job(f"http://127.0.0.1:{ports[1]}", str(job["job_id"]))
    assert (job["status"], job["resume_attempts"]) == ("succeeded", 1)
    assert dev.terminate() == 0, "Ctrl-C / SIGTERM stops the gateway and the broker cleanly"
