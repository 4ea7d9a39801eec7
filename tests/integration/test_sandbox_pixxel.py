"""Integration tests of the Pixxel sandbox over real HTTP on loopback.

The sandbox's clock is a fake one the tests move, so lifecycles are exercised in milliseconds.
Every HTTP call is bounded by the session timeout, every wait by asyncio.timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gateway.sandbox.pixxel import PixxelSandbox, PixxelSandboxSettings, create_app, serve
from tests.integration.sandbox_harness import (
    T0,
    FakeClock,
    Reply,
    SandboxClient,
    raw_status,
    sandbox_process,
    served,
    serving,
)

API_KEY = "pixxel-api-key-0123"
OTHER_KEY = "pixxel-api-key-4567"
AUTH = {"Authorization": API_KEY}
WORKFLOW = "wf-7f1c"
# The fields of seed 004's response, job and task.
JOB_FIELDS = {
    "created_by", "status", "time_taken", "id", "tasks", "val_errors", "spec", "cost",
    "workflow_id", "updated_at", "finished_at", "exec_created_at", "exec_updated_at",
    "created_at", "estimated_duration", "progress",
}  # fmt: skip
TASK_FIELDS = {
    "id", "info_logs", "created_at", "updated_at", "finished_at", "estimated_time_duration",
    "time_taken", "status", "state_msg", "inputs", "result", "depends_on", "name", "progress",
    "disclaimer", "recv_time", "send_time", "block_inf_start_time", "block_inf_end_time",
    "block_info", "err_msg", "failure_type",
}  # fmt: skip


class Harness(SandboxClient):
    async def new_job(self, **script: Any) -> str:
        created: dict[str, Any] = await self.control(
            "POST", "/jobs", {"workflow_id": WORKFLOW} | script
        )
        return str(created["job_id"])

    async def get_job(
        self, job_id: str, headers: dict[str, str] | None = None, workflow_id: str = WORKFLOW
    ) -> Reply:
        path = f"/v0/workflows/{workflow_id}/jobs/{job_id}"
        return await self.call("GET", path, headers=AUTH if headers is None else headers)

    async def job_at(self, job_id: str, offset_s: float) -> dict[str, Any]:
        self.clock.now = T0 + offset_s
        reply = await self.get_job(job_id)
        assert reply.status == 200, reply.body
        job: dict[str, Any] = reply.body
        return job


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    clock = FakeClock()
    settings = PixxelSandboxSettings(api_keys=[API_KEY, OTHER_KEY], created_by="user-9")
    sandbox = PixxelSandbox(settings, clock=clock)
    async with served(create_app(sandbox)) as (url, http):
        yield Harness(url, http, clock)


def by_name(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {task["name"]: task for task in job["tasks"]}


# --- serving -------------------------------------------------------------------------------


async def test_serve_announces_its_url_without_keys_and_runs_until_cancelled() -> None:
    async with serving(serve, "127.0.0.1", 0, [API_KEY]) as lines:
        url = lines[0].rsplit(" ", 1)[-1]
        async with (
            aiohttp.ClientSession() as http,
            http.get(url + "/v0/workflows/w/jobs/j", headers=AUTH) as r,
        ):
            assert r.status == 404
    assert any("/v0/workflows/{workflow_id}/jobs/{job_id}" in line for line in lines)
    assert all(API_KEY not in line for line in lines)


@pytest.mark.e2e
async def test_cli_runs_the_pixxel_sandbox_with_the_given_key() -> None:
    async with sandbox_process("pixxel", "--port", "0", "--api-key", API_KEY) as first:
        assert first.startswith("Pixxel sandbox listening on http://127.0.0.1:")
        url = first.split()[-1]
        async with aiohttp.ClientSession() as http:
            async with http.post(url + "/_sandbox/jobs", json={"workflow_id": "w"}) as r:
                job_id = (await r.json())["job_id"]
            path = f"/v0/workflows/w/jobs/{job_id}"
            async with http.get(url + path, headers=AUTH) as r:
                assert r.status == 200
            async with http.get(url + path, headers={"Authorization": "other"}) as r:
                assert r.status == 401


# --- auth ----------------------------------------------------------------------------------


async def test_api_key_as_the_whole_authorization_header_is_accepted(harness: Harness) -> None:
    job_id = await harness.new_job()
    assert (await harness.get_job(job_id)).status == 200
    assert (await harness.get_job(job_id, {"Authorization": OTHER_KEY})).status == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "wrong-key"},
        {"Authorization": f"Bearer {API_KEY}"},
        {"Authorization": API_KEY[:-1]},
        {"X-Api-Key": API_KEY},
    ],
)
async def test_missing_or_wrong_api_key_gets_401(harness: Harness, headers: dict[str, str]) -> None:
    job_id = await harness.new_job()
    reply = await harness.get_job(job_id, headers)
    assert (reply.status, reply.body) == (401, {"message": "Unauthorized"})
    assert (await harness.control("GET", f"/jobs/{job_id}"))["poll_count"] == 0


async def test_an_api_key_that_is_not_utf8_gets_401_not_500(harness: Harness) -> None:
    job_id = await harness.new_job()
    path = f"/v0/workflows/{WORKFLOW}/jobs/{job_id}".encode()
    request = b"GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: \xff\xfe\r\nConnection: close\r\n\r\n"
    assert await raw_status(harness.url, request % path) == 401


async def test_settings_can_rotate_keys_and_show_no_key(harness: Harness) -> None:
    job_id = await harness.new_job()
    shown = await harness.control("PUT", "/settings", {"api_keys": [OTHER_KEY]})
    assert shown["api_key_ids"] == [hashlib.sha256(OTHER_KEY.encode()).hexdigest()[:8]]
    assert OTHER_KEY not in json.dumps(await harness.control("GET", "/settings"))
    assert (await harness.get_job(job_id)).status == 401
    assert (await harness.get_job(job_id, {"Authorization": OTHER_KEY})).status == 200
    invalid = await harness.call("PUT", "/_sandbox/settings", json={"api_keys": "one"})
    assert invalid.status == 422


# --- job shape and lifecycle ---------------------------------------------------------------


async def test_job_has_every_field_of_the_seed(harness: Harness) -> None:
    job_id = await harness.new_job(queued_s=1, running_s=4, tasks=["a", "b"])
    job = await harness.job_at(job_id, 2)
    assert set(job) == JOB_FIELDS
    assert all(set(task) == TASK_FIELDS for task in job["tasks"])
    assert (job["id"], job["workflow_id"], job["created_by"]) == (job_id, WORKFLOW, "user-9")
    assert (job["cost"], job["spec"], job["val_errors"], job["estimated_duration"]) == (
        0,
        [],
        [],
        4,
    )
    assert job["created_at"] == "2023-11-14T22:13:20.000Z"
    assert isinstance(job["progress"], str)
    first, second = job["tasks"]
    assert (first["depends_on"], second["depends_on"]) == ([], [first["id"]])
    assert first["block_info"] == {"id": "block-a", "name": "a", "version": "1.0.0"}


async def test_job_goes_queued_running_completed_as_the_clock_moves(harness: Harness) -> None:
    job_id = await harness.new_job(queued_s=5, running_s=10)
    timeline = [(0, "queued"), (4.9, "queued"), (5, "running"), (14.9, "running")]
    timeline += [(15, "completed"), (99, "completed")]
    statuses = [(await harness.job_at(job_id, t))["status"] for t, _ in timeline]
    assert statuses == [status for _, status in timeline]


async def test_progress_grows_while_running_and_is_100_when_completed(harness: Harness) -> None:
    job_id = await harness.new_job(queued_s=2, running_s=10)
    offsets = [0, 1.9, 2, 4.5, 7, 9.5, 11.99, 12]
    progress = [(await harness.job_at(job_id, t))["progress"] for t in offsets]
    assert progress == ["0", "0", "0", "25", "50", "75", "99", "100"]


async def test_tasks_run_in_turn_with_their_own_progress(harness: Harness) -> None:
    job_id = await harness.new_job(queued_s=0, running_s=9, tasks=["fetch", "ndvi", "export"])
    tasks = by_name(await harness.job_at(job_id, 4.5))
    assert [(t["status"], t["progress"]) for t in tasks.values()] == [
        ("completed", 100),
        ("running", 50),
        ("queued", 0),
    ]
    assert tasks["fetch"]["finished_at"] == "2023-11-14T22:13:23.000Z"
    assert tasks["fetch"]["time_taken"] == "3s"
    assert (tasks["ndvi"]["finished_at"], tasks["export"]["recv_time"]) == ("", "")
    done = await harness.job_at(job_id, 9)
    assert all((t["status"], t["progress"]) == ("completed", 100) for t in done["tasks"])
    assert all((t["err_msg"], t["failure_type"]) == ("", "") for t in done["tasks"])


async def test_time_fields_are_empty_until_reached(harness: Harness) -> None:
    job_id = await harness.new_job(queued_s=3, running_s=4.5)
    queued = await harness.job_at(job_id, 1)
    assert (queued["exec_created_at"], queued["finished_at"], queued["time_taken"]) == ("", "", "")
    running = await harness.job_at(job_id, 4)
    assert running["exec_created_at"] == "2023-11-14T22:13:23.000Z"
    assert (running["finished_at"], running["time_taken"]) == ("", "")
    done = await harness.job_at(job_id, 60)
    assert (done["finished_at"], done["time_taken"]) == ("2023-11-14T22:13:27.500Z", "4.5s")
    assert done["updated_at"] == done["finished_at"]


# --- failed jobs ---------------------------------------------------------------------------


async def test_failed_job_reports_err_msg_and_failure_type_of_failing_tasks(
    harness: Harness,
) -> None:
    failing = [{"name": "ndvi", "err_msg": "band B8 missing", "failure_type": "input_error"}]
    job_id = await harness.new_job(
        queued_s=0, running_s=6, outcome="failed", tasks=["fetch", "ndvi", "export"],
        failing_tasks=failing,
    )  # fmt: skip
    job = await harness.job_at(job_id, 6)
    assert job["status"] == "failed"
    tasks = by_name(job)
    assert tasks["ndvi"]["status"] == "failed"
    assert (tasks["ndvi"]["err_msg"], tasks["ndvi"]["failure_type"]) == (
        "band B8 missing",
        "input_error",
    )
    assert tasks["ndvi"]["state_msg"] == "band B8 missing"
    others = [tasks["fetch"], tasks["export"]]
    assert all(
        (t["status"], t["err_msg"], t["failure_type"]) == ("completed", "", "") for t in others
    )
    assert job["progress"] == "66"  # two of three tasks completed


async def test_failed_job_without_failing_tasks_fails_its_last_task(harness: Harness) -> None:
    job_id = await harness.new_job(queued_s=0, running_s=0, outcome="failed", tasks=["a", "b"])
    tasks = by_name(await harness.job_at(job_id, 0))
    assert (tasks["a"]["status"], tasks["b"]["status"]) == ("completed", "failed")
    assert (tasks["b"]["err_msg"], tasks["b"]["failure_type"]) == (
        "task b failed",
        "execution_error",
    )


async def test_failing_task_names_are_added_to_the_tasks(harness: Harness) -> None:
    job_id = await harness.new_job(
        queued_s=0, running_s=0, outcome="failed", tasks=["a"], failing_tasks=["upload"]
    )
    job = await harness.job_at(job_id, 0)
    assert [t["name"] for t in job["tasks"]] == ["a", "upload"]
    assert by_name(job)["upload"]["status"] == "failed"


async def test_failing_task_stays_running_until_the_job_fails(harness: Harness) -> None:
    job_id = await harness.new_job(
        queued_s=0, running_s=10, outcome="failed", tasks=["a", "b"], failing_tasks=["a"]
    )
    running = await harness.job_at(job_id, 9)
    assert (running["status"], by_name(running)["a"]["status"]) == ("running", "running")
    assert by_name(running)["a"]["err_msg"] == ""
    failed = await harness.job_at(job_id, 10)
    assert (failed["status"], by_name(failed)["a"]["status"]) == ("failed", "failed")


@pytest.mark.parametrize(
    "script",
    [
        {"outcome": "completed", "failing_tasks": ["a"]},
        {"outcome": "cancelled"},
        {"running_s": -1},
        {"tasks": []},
        {"failing_tasks": [{"name": ""}], "outcome": "failed"},
        {"no_such_field": True},
    ],
)
async def test_invalid_job_scripts_get_422(harness: Harness, script: dict[str, Any]) -> None:
    reply = await harness.call("POST", "/_sandbox/jobs", json=script)
    assert (reply.status, reply.body["message"]) == (422, "Invalid request")


# --- lookups and polls ---------------------------------------------------------------------


async def test_unknown_job_or_other_workflow_gets_404(harness: Harness) -> None:
    job_id = await harness.new_job()
    assert (await harness.get_job("no-such-job")).status == 404
    reply = await harness.get_job(job_id, workflow_id="another-workflow")
    assert (reply.status, reply.body) == (404, {"message": "job not found"})


async def test_poll_count_counts_api_reads_only(harness: Harness) -> None:
    job_id = await harness.new_job()
    for _ in range(4):
        await harness.get_job(job_id)
    await harness.get_job(job_id, {})
    await harness.get_job(job_id, workflow_id="other")
    state = await harness.control("GET", f"/jobs/{job_id}")
    assert state["poll_count"] == 4
    assert (await harness.control("GET", "/stats"))["polls_total"] == 4


async def test_control_state_shows_status_progress_and_the_api_view(harness: Harness) -> None:
    created = await harness.control("POST", "/jobs", {"queued_s": 1, "running_s": 2})
    harness.clock.advance(2)
    state = await harness.control("GET", f"/jobs/{created['job_id']}")
    assert (state["status"], state["progress"]) == ("running", "50")
    assert state["workflow_id"] == created["workflow_id"]
    assert created["tasks"] == ["ingest", "process", "publish"]
    assert (state["running_at"], state["finished_at"]) == (T0 + 1, T0 + 3)
    assert state["job"]["id"] == created["job_id"]
    assert [s["job_id"] for s in await harness.control("GET", "/jobs")] == [created["job_id"]]


# --- faults --------------------------------------------------------------------------------


async def test_status_fault_answers_without_counting_a_poll(harness: Harness) -> None:
    job_id = await harness.new_job()
    await harness.faults(scripted=[{"kind": "status", "status": 502, "count": 2}])
    assert [(await harness.get_job(job_id)).status for _ in range(3)] == [502, 502, 200]
    assert (await harness.control("GET", f"/jobs/{job_id}"))["poll_count"] == 1


async def test_drop_fault_closes_the_connection(harness: Harness) -> None:
    job_id = await harness.new_job()
    # aiohttp retries an idempotent request once when the connection closes: drop both tries.
    await harness.faults(scripted=[{"kind": "drop", "count": 2}])
    with pytest.raises(aiohttp.ClientConnectionError):
        await harness.get_job(job_id)
    assert [e["fault"] for e in await harness.requests_log()] == ["drop", "drop"]
    await harness.control("DELETE", "/faults")
    assert (await harness.get_job(job_id)).status == 200


async def test_processed_then_error_counts_the_poll_but_answers_500(harness: Harness) -> None:
    job_id = await harness.new_job()
    await harness.faults(scripted=[{"kind": "processed_then_error"}])
    assert (await harness.get_job(job_id)).status == 500
    assert (await harness.control("GET", f"/jobs/{job_id}"))["poll_count"] == 1
    entry = (await harness.requests_log())[-1]
    assert (entry["fault"], entry["status"], entry["processed_status"]) == (
        "processed_then_error",
        500,
        200,
    )


async def test_latency_fault_delays_the_answer(harness: Harness) -> None:
    job_id = await harness.new_job()
    await harness.faults(scripted=[{"kind": "latency", "seconds": 0.2}])
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await harness.get_job(job_id)).status == 200
    assert loop.time() - started >= 0.2


# --- request log, stats, reset -------------------------------------------------------------


async def test_request_log_records_api_requests_without_the_key(harness: Harness) -> None:
    job_id = await harness.new_job()
    harness.clock.advance(3)
    await harness.get_job(job_id)
    await harness.get_job(job_id, {"Authorization": "nope"})
    log = await harness.requests_log()
    path = f"/v0/workflows/{WORKFLOW}/jobs/{job_id}"
    assert [(e["method"], e["path"], e["status"]) for e in log] == [
        ("GET", path, 200),
        ("GET", path, 401),
    ]
    assert [e["credential_id"] for e in log] == [
        hashlib.sha256(API_KEY.encode()).hexdigest()[:8],
        None,
    ]
    assert log[0]["at"] == T0 + 3
    assert API_KEY not in json.dumps(log)


async def test_stats_count_jobs_by_status_and_requests(harness: Harness) -> None:
    await harness.new_job(queued_s=0, running_s=0)
    failed = await harness.new_job(queued_s=0, running_s=0, outcome="failed")
    await harness.new_job(queued_s=5)
    await harness.get_job(failed)
    await harness.get_job(failed, {})
    stats = await harness.control("GET", "/stats")
    assert stats["jobs_total"] == 3
    assert stats["jobs_by_status"] == {"completed": 1, "failed": 1, "queued": 1}
    assert stats["requests_by_status"] == {"200": 1, "401": 1}


async def test_reset_forgets_jobs_and_restores_settings(harness: Harness) -> None:
    job_id = await harness.new_job()
    await harness.control("PUT", "/settings", {"api_keys": []})
    await harness.faults(scripted=[{"kind": "drop"}])
    await harness.control("POST", "/reset")
    assert (await harness.get_job(job_id)).status == 404
    assert (await harness.requests_log())[-1]["fault"] is None
    assert await harness.control("GET", "/jobs") == []


async def test_unknown_routes_answer_json_404(harness: Harness) -> None:
    reply = await harness.call("GET", "/v0/nothing", headers=AUTH)
    assert (reply.status, reply.body) == (404, {"message": "Not found"})
