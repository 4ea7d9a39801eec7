"""``resume-gateway dev`` as a newcomer meets it: the printed shell steps, pasted as printed, work.

The steps are taken from the process's own output and run with ``bash``; the sandbox's job
must end resumed exactly once with the data, and the gateway must show the delivery. A
restart on the same data directory keeps the token key and the stored waits.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from gateway.devmode import DEV_API_KEY
from tests.e2e.conftest import Process, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

STARTUP_TIMEOUT_S = 20.0
SHELL_TIMEOUT_S = 20.0
FIRST_STEP, LAST_LINE = "# 1.", "Stop with Ctrl-C."
CHECK_STEP = "# 4."
DATA_DIR = "dev-data"  # relative on purpose: ``dev`` runs in a scratch working directory


class Dev:
    """One ``dev`` process on fresh ports, started in the current working directory."""

    def __init__(self, tmp: Path, processes: list[Process], name: str) -> None:
        self.port, self.sandbox_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.sandbox_url = f"http://127.0.0.1:{self.sandbox_port}"
        args = ["dev", "--port", str(self.port), "--sandbox-port", str(self.sandbox_port)]
        self.process = Process([*args, "--data-dir", DATA_DIR], tmp / f"{name}.log")
        processes.append(self.process)
        self.output = self._wait_for_instructions()

    def _wait_for_instructions(self) -> str:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            output = self.process.log_path.read_text()
            if LAST_LINE in output:
                return output
            if self.process.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"dev printed no instructions:\n{self.process.log_path.read_text()}")

    def shell_steps(self) -> str:
        """The copy-paste block exactly as printed, from step 1 up to the closing line."""
        lines = self.output.splitlines()
        start = next(i for i, line in enumerate(lines) if line.strip().startswith(FIRST_STEP))
        end = next(i for i, line in enumerate(lines) if line.strip() == LAST_LINE)
        return "\n".join(lines[start:end]) + "\n"

    def call(self, method: str, url: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if url.startswith(self.url):
            request.add_header("Authorization", f"Bearer {DEV_API_KEY}")
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response)


def bash(script: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        ["bash", "-e", "-c", script],
        capture_output=True,
        text=True,
        timeout=SHELL_TIMEOUT_S,
        env=env,
        check=False,
    )
    assert result.returncode == 0, f"the printed steps failed:\n{script}\n{result.stderr}"
    return result.stdout


def json_documents(text: str) -> list[Any]:
    """The answers of consecutive ``curl -s`` calls, which print no newline between them."""
    decoder, documents, at = json.JSONDecoder(), [], 0
    while (at := _skip_space(text, at)) < len(text):
        document, at = decoder.raw_decode(text, at)
        documents.append(document)
    return documents


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


def settled_check(script: str, job_id: str, env: dict[str, str]) -> tuple[Any, Any]:
    """Step 4 as printed, re-run until the resume has landed (delivery is asynchronous), then
    once more: the step reads the job before the wait, so the run that first sees the delivery
    finished may hold the job as it was just before."""
    step = script[script.index(CHECK_STEP) :]
    deadline = time.monotonic() + 10
    while True:
        step_env = {**env, "JOB_ID": job_id, "KEY": f"order-{job_id}"}  # as step 1 sets them
        job, wait = json_documents(bash(step, step_env))
        delivery = wait.get("delivery") or {}
        if delivery.get("state") not in (None, "pending", "sending"):
            job, wait = json_documents(bash(step, step_env))
            return job, wait
        assert time.monotonic() < deadline, f"not delivered in time: {wait}"
        time.sleep(0.1)


def test_printed_steps_resume_the_sandbox_job_once_and_a_restart_keeps_state(
    workdir: Path, shell: dict[str, str], processes: list[Process]
) -> None:
    first = Dev(workdir, processes, "dev-1")
    assert f"data             SQLite and the dev token key under {DATA_DIR}" in first.output
    script = first.shell_steps()
    assert "curl" in script
    assert first.sandbox_url in script
    assert first.url in script

    registered, accepted, job, wait = json_documents(bash(script, shell))
    job, wait = settled_check(script, job["job_id"], shell)

    assert (registered["outcome"], accepted["outcome"]) == ("created", "matched")
    assert (job["status"], job["resume_count"], job["resume_attempts"]) == ("succeeded", 1, 1)
    assert job["resumed_data"]["payload"] == {"total": 42.5}
    assert wait["state"] == "resolved"
    assert wait["delivery"]["state"] == "delivered"
    assert "resume_token" not in wait

    # A wait left open across the restart: its token is sealed with the dev key on disk.
    pending = first.call("POST", f"{first.sandbox_url}/_sandbox/jobs", {})
    first.call(
        "POST",
        f"{first.url}/v1/waits",
        {"key": "order-43", "resume_token": pending["resume_token"]},
    )
    key_file = workdir / DATA_DIR / "dev-token.key"
    key_before = key_file.read_bytes()
    # not run's default store: a gateway run beside it with other keys failed the dev waits
    assert (workdir / DATA_DIR / "dev.db").exists()
    assert not (workdir / DATA_DIR / "gateway.db").exists()
    assert first.process.terminate() == 0

    second = Dev(workdir, processes, "dev-2")
    assert key_file.read_bytes() == key_before, "the token key was regenerated"
    assert key_file.stat().st_mode & 0o777 == 0o600
    kept = second.call("GET", f"{second.url}/v1/waits/order-{job['job_id']}")
    assert (kept["state"], kept["delivery"]["state"]) == ("resolved", "delivered")
    assert_old_token_still_decrypts(second)
    # The printed steps work again over the kept data: with a fixed key, the wait was a 409
    # and the event a duplicate, and the new job stayed pending.
    again, accepted_again, new_job, _ = json_documents(bash(second.shell_steps(), shell))
    assert (again["outcome"], accepted_again["outcome"]) == ("created", "matched")
    new_job, _ = settled_check(second.shell_steps(), new_job["job_id"], shell)
    assert (new_job["resume_count"], new_job["resume_attempts"]) == (1, 1)
    assert second.process.terminate() == 0


def assert_old_token_still_decrypts(dev: Dev) -> None:
    """The new sandbox never issued the token, so it answers 404 "not found". A 404 proves
    the gateway decrypted and sent it; a lost key would end as ``token_key_missing``."""
    event = {"id": "evt-43", "key": "order-43", "status": "succeeded", "data": {}}
    assert dev.call("POST", f"{dev.url}/v1/events", event)["outcome"] == "matched"
    deadline = time.monotonic() + 10
    while (wait := dev.call("GET", f"{dev.url}/v1/waits/order-43"))["delivery"]["state"] in (
        "pending",
        "sending",
    ):
        assert time.monotonic() < deadline, wait
        time.sleep(0.1)
    assert (wait["delivery"]["state"], wait["delivery"]["reason"]) == ("dead", "http_404")


def test_a_second_dev_gateway_on_the_same_data_directory_is_refused(
    workdir: Path, processes: list[Process]
) -> None:
    """Two dev gateways shared one database, each with its own in-memory sandbox, and took
    each other's deliveries: resumes went to the sandbox that never issued their tokens."""
    first = Dev(workdir, processes, "dev-1")
    args = ["dev", "--port", str(free_port()), "--sandbox-port", str(free_port())]
    rival = Process([*args, "--data-dir", DATA_DIR], workdir / "rival.log")
    processes.append(rival)
    assert rival.proc.wait(timeout=STARTUP_TIMEOUT_S) == 2
    said = rival.log_path.read_text()
    assert f"another 'resume-gateway dev' uses {DATA_DIR}: stop it, or give this one" in said
    assert first.call("GET", f"{first.url}/healthz") == {"status": "ok"}  # the first runs on
    assert first.process.terminate() == 0
