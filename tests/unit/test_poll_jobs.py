"""Reading polled job answers: validation, terminal statuses, spelling variants, data."""

from __future__ import annotations

import json
import random

import pytest
from pydantic import ValidationError

from gateway.errors import InvalidInput
from gateway.poll.clients import PollError, segment
from gateway.poll.jobs import alteryx_state, pixxel_state
from gateway.poll.poller import backoff_s


def alteryx(status: str, disposition: str | None = None) -> bytes:
    return json.dumps(
        {
            "id": "j1",
            "status": status,
            "disposition": disposition,
            "outputs": [{"id": "o1", "fileName": "out.csv"}],
            "messages": [{"status": 1, "text": "done", "toolId": 3}],
        }
    ).encode()


@pytest.mark.parametrize("status", ["Queued", "Initializing", "Running"])
def test_alteryx_job_still_running_has_no_status(status: str) -> None:
    state = alteryx_state(alteryx(status))
    assert (state.status, state.data, state.job_status) == (None, None, status)


@pytest.mark.parametrize("status", ["Complete", "Completed", "complete", " COMPLETED "])
def test_alteryx_complete_in_any_spelling_is_terminal(status: str) -> None:
    assert alteryx_state(alteryx(status, "Success")).status == "succeeded"


@pytest.mark.parametrize("disposition", ["Error", "Cancelled", None, "Warning"])
def test_alteryx_disposition_other_than_success_fails(disposition: str | None) -> None:
    assert alteryx_state(alteryx("Complete", disposition)).status == "failed"


@pytest.mark.parametrize("status", ["Failed", "Error", "Cancelled", "canceled"])
def test_alteryx_status_that_says_the_job_ended_badly_is_terminal_and_failed(status: str) -> None:
    """Only Complete was terminal: such a job was polled until its wait expired."""
    state = alteryx_state(alteryx(status))
    assert (state.status, state.job_status) == ("failed", status)


def test_alteryx_data_is_the_answer_byte_exact() -> None:
    raw = b'{"id": "j1", "status": "Complete", "disposition": "Success", "n": 1.10}'
    assert alteryx_state(raw).data == raw


def test_alteryx_answer_without_status_is_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        alteryx_state(b'{"id": "j1"}')


def pixxel(status: str, tasks: list[dict[str, object]] | None = None) -> bytes:
    return json.dumps(
        {"id": "p1", "status": status, "progress": "40", "tasks": tasks or []}
    ).encode()


def test_pixxel_running_reports_progress() -> None:
    state = pixxel_state(pixxel("running"))
    assert (state.status, state.progress) == (None, "40")


@pytest.mark.parametrize("status", ["completed", "COMPLETED", "succeeded", "success"])
def test_pixxel_success_statuses(status: str) -> None:
    state = pixxel_state(pixxel(status))
    assert state.status == "succeeded"
    assert state.data is not None
    assert json.loads(state.data)["failed_tasks"] == []


def test_a_completed_pixxel_job_carries_its_failed_tasks_too() -> None:
    """A job that completed with a failed task resumed with an empty failed_tasks."""
    tasks = [
        {"id": "t1", "name": "ingest", "status": "completed"},
        {"id": "t2", "name": "thumbnails", "status": "failed", "err_msg": "disk full"},
    ]
    state = pixxel_state(pixxel("completed", tasks))
    assert state.status == "succeeded"
    assert state.data is not None
    assert json.loads(state.data)["failed_tasks"] == [
        {"task": "thumbnails", "err_msg": "disk full", "failure_type": None}
    ]


def test_pixxel_failure_carries_the_failing_tasks() -> None:
    tasks = [
        {"id": "t1", "name": "ingest", "status": "completed"},
        {
            "id": "t2",
            "name": "classify",
            "status": "failed",
            "err_msg": "bad band",
            "failure_type": "user_error",
        },
    ]
    raw = pixxel("failed", tasks)
    state = pixxel_state(raw)
    assert state.status == "failed"
    assert state.data is not None
    data = json.loads(state.data)
    assert data["failed_tasks"] == [
        {"task": "classify", "err_msg": "bad band", "failure_type": "user_error"}
    ]
    assert state.data.startswith(b'{"job":' + raw)


@pytest.mark.parametrize("finished_at", ["2026-11-23T05:00:00Z", 0, None])
def test_pixxel_unknown_status_is_polled_on_whatever_its_time_fields_say(
    finished_at: object,
) -> None:
    """Seed 004 lists no status values; a job reported failed could not be taken back."""
    raw = json.dumps({"id": "p1", "status": "in-progress", "finished_at": finished_at}).encode()
    state = pixxel_state(raw)
    assert (state.status, state.job_status) == (None, "in-progress")


def test_pixxel_tasks_null_reads_as_none() -> None:
    state = pixxel_state(b'{"id": "p1", "status": "failed", "tasks": null}')
    assert state.data is not None
    assert (state.status, json.loads(state.data)["failed_tasks"]) == ("failed", [])


def test_pixxel_answer_that_is_not_json_is_refused() -> None:
    with pytest.raises(InvalidInput, match="not JSON"):
        pixxel_state(b"<html>")


def test_the_poll_backoff_is_jittered_capped_and_survives_any_number_of_failures() -> None:
    rng = random.Random(2)
    for failures in (1, 5, 1_023, 1_024, 100_000):
        delays = [backoff_s(failures, 10.0, 300.0, rng) for _ in range(500)]
        ceiling = min(300.0, 10.0 * 2**failures) if failures < 32 else 300.0
        assert all(5.0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.9 * ceiling


def test_an_answer_becomes_data_without_the_whitespace_around_it() -> None:
    """A raw-mode tenant's data must begin with '{': an Alteryx answer with a leading line
    break was refused at every poll, as a transient failure, until its wait expired."""
    answer = b"\n  " + alteryx("Complete", "Success") + b"\r\n"
    assert alteryx_state(answer).data == alteryx("Complete", "Success")
    pixxel = b'\n{"id": "p1", "status": "failed", "tasks": null}\n'
    assert (
        pixxel_state(pixxel).data
        == b'{"job":{"id": "p1", "status": "failed", "tasks": null},"failed_tasks":[]}'
    )


@pytest.mark.parametrize("read", [alteryx_state, pixxel_state])
@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity"])
def test_an_answer_that_is_not_strict_json_is_refused(read: object, number: bytes) -> None:
    """pydantic's parser takes NaN, which reached the resume body as it was; Workato refuses
    such a body, and every other intake answers 422 for it."""
    answer = b'{"id": "j1", "status": "Complete", "disposition": "Success", "cost": %s}' % number
    with pytest.raises(InvalidInput, match="not valid JSON"):
        read(answer)  # type: ignore[operator]


@pytest.mark.parametrize("job_id", [".", ".."])
def test_an_id_that_is_a_dot_segment_never_reaches_a_url(job_id: str) -> None:
    """Refused at registration since 0.2.11; a watch stored before may hold one, and its URL
    resolved to the API's root, where a cancellation's DELETE went too."""
    with pytest.raises(PollError, match="cannot be a segment"):
        segment(job_id)
    assert segment("a/..") == "a%2F.."
