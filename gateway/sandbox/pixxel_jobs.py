"""Pixxel workflow jobs as the sandbox scripts them, and their JSON shape (seed 004).

Seed 004 types ``status`` as a bare string; Pixxel's documentation gives "running, completed,
failed" as examples. The sandbox uses those three plus ``queued`` (invented) for the time before
the job runs. A job's tasks run one after another, each over an equal share of ``running_s``;
a failing task stays ``running`` until the job ends, then shows ``failed`` with its
``err_msg`` / ``failure_type``. ``progress`` is a string (as the seed types it) holding a whole
percentage: it grows from "0" while running, is "100" when completed, and on failure reports
the share of tasks that completed. Time fields not reached yet are empty strings.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.sandbox.lifecycle import MAX_SCRIPTED_S, Lifecycle, Phase
from gateway.sandbox.timestamps import iso

Outcome = Literal["completed", "failed"]
QUEUED = "queued"
RUNNING = "running"
DEFAULT_TASKS = ("ingest", "process", "publish")
DEFAULT_QUEUED_S = 2.0
DEFAULT_RUNNING_S = 10.0
DEFAULT_FAILURE_TYPE = "execution_error"
# While a job runs its progress never reads 100: only a completed job does.
RUNNING_PROGRESS_CAP = 99


class FailingTask(BaseModel):
    """A task that fails, and what the job reports about it."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(min_length=1)
    err_msg: str = ""
    failure_type: str = DEFAULT_FAILURE_TYPE

    @model_validator(mode="after")
    def _default_message(self) -> FailingTask:
        if not self.err_msg:
            self.err_msg = f"task {self.name} failed"
        return self


class JobScript(BaseModel):
    """Body of ``POST /_sandbox/jobs``: how the job will unfold.

    ``failing_tasks`` items are task names or :class:`FailingTask` objects; names missing from
    ``tasks`` are appended to it. A ``failed`` job without failing tasks fails its last task.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    workflow_id: str = Field(default_factory=lambda: str(uuid.uuid4()), min_length=1)
    queued_s: float = Field(default=DEFAULT_QUEUED_S, ge=0.0, le=MAX_SCRIPTED_S)
    running_s: float = Field(default=DEFAULT_RUNNING_S, ge=0.0, le=MAX_SCRIPTED_S)
    outcome: Outcome = "completed"
    tasks: list[str] = Field(default_factory=lambda: list(DEFAULT_TASKS), min_length=1)
    failing_tasks: list[FailingTask] = Field(default_factory=list)

    @field_validator("failing_tasks", mode="before")
    @classmethod
    def _names_to_objects(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value

    @model_validator(mode="after")
    def _failures_fit_the_outcome(self) -> JobScript:
        if self.outcome == "completed" and self.failing_tasks:
            raise ValueError("a completed job has no failing_tasks")
        if self.outcome == "failed" and not self.failing_tasks:
            self.failing_tasks = [FailingTask(name=self.tasks[-1])]
        self.tasks += [f.name for f in self.failing_tasks if f.name not in self.tasks]
        return self

    def failure_of(self, task: str) -> FailingTask | None:
        """How ``task`` fails, if it does."""
        return next((f for f in self.failing_tasks if f.name == task), None)


@dataclass(frozen=True)
class TaskView:
    """One task at one instant."""

    status: str
    progress: int
    started_at: float | None
    finished_at: float | None

    @property
    def taken_s(self) -> float | None:
        """Seconds from start to finish, once finished."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


@dataclass
class PixxelJob:
    """One scripted job, plus how often clients read it."""

    id: str
    script: JobScript
    lifecycle: Lifecycle
    created_by: str
    task_ids: list[str] = field(default_factory=list)
    poll_count: int = 0

    def status(self, now: float) -> str:
        """The job's ``status`` at ``now``."""
        phase = self.lifecycle.phase(now)
        if phase is Phase.TERMINAL:
            return self.script.outcome
        return QUEUED if phase is Phase.QUEUED else RUNNING

    def progress(self, now: float) -> str:
        """The job's ``progress`` at ``now``: a whole percentage as a string."""
        phase = self.lifecycle.phase(now)
        if phase is Phase.QUEUED:
            return "0"
        if phase is Phase.RUNNING:
            fraction = self.lifecycle.running_fraction(now)
            return str(min(RUNNING_PROGRESS_CAP, math.floor(fraction * 100)))
        tasks = self.script.tasks
        completed = sum(self.script.failure_of(name) is None for name in tasks)
        return str(math.floor(100 * completed / len(tasks)))

    def task_view(self, index: int, now: float) -> TaskView:
        """Task ``index`` at ``now``: tasks run in turn, each over an equal share of the run."""
        life, count = self.lifecycle, len(self.script.tasks)
        share_s = life.running_s / count
        start, end = life.running_at + index * share_s, life.running_at + (index + 1) * share_s
        failure = self.script.failure_of(self.script.tasks[index])
        if life.phase(now) is Phase.TERMINAL:
            status = "failed" if failure else "completed"
            return TaskView(status, 100, start, life.finished_at if failure else end)
        if now < start or life.phase(now) is Phase.QUEUED:
            return TaskView(QUEUED, 0, None, None)
        if now >= end and failure is None:
            return TaskView("completed", 100, start, end)
        done = (now - start) / share_s if share_s else 1.0
        return TaskView(RUNNING, min(RUNNING_PROGRESS_CAP, math.floor(done * 100)), start, None)


def new_job(script: JobScript, now: float, created_by: str) -> PixxelJob:
    """A job created at ``now`` that will follow ``script``."""
    return PixxelJob(
        id=str(uuid.uuid4()),
        script=script,
        lifecycle=Lifecycle(now, script.queued_s, script.running_s),
        created_by=created_by,
        task_ids=[str(uuid.uuid4()) for _ in script.tasks],
    )


def detail(job: PixxelJob, now: float) -> dict[str, Any]:
    """``GET /v0/workflows/{workflow_id}/jobs/{job_id}``."""
    life = job.lifecycle
    started = life.phase(now) is not Phase.QUEUED
    finished = life.phase(now) is Phase.TERMINAL
    return {
        "created_by": job.created_by,
        "status": job.status(now),
        "time_taken": _duration(life.running_s) if finished else "",
        "id": job.id,
        "tasks": [_task(job, index, now) for index in range(len(job.script.tasks))],
        "val_errors": [],
        "spec": [],
        "cost": 0,
        "workflow_id": job.script.workflow_id,
        "updated_at": _when(min(now, life.finished_at)),
        "finished_at": _when(life.finished_at) if finished else "",
        "exec_created_at": _when(life.running_at) if started else "",
        "exec_updated_at": _when(min(now, life.finished_at)) if started else "",
        "created_at": _when(life.created_at),
        "estimated_duration": math.ceil(life.running_s),
        "progress": job.progress(now),
    }


def _task(job: PixxelJob, index: int, now: float) -> dict[str, Any]:
    name = job.script.tasks[index]
    view = job.task_view(index, now)
    failure = job.script.failure_of(name) if view.status == "failed" else None
    share_s = job.lifecycle.running_s / len(job.script.tasks)
    return {
        "id": job.task_ids[index],
        "info_logs": [],
        "created_at": _when(job.lifecycle.created_at),
        "updated_at": _when(min(now, job.lifecycle.finished_at)),
        "finished_at": _when(view.finished_at),
        "estimated_time_duration": math.ceil(share_s),
        "time_taken": "" if view.taken_s is None else _duration(view.taken_s),
        "status": view.status,
        "state_msg": "" if failure is None else failure.err_msg,
        "inputs": [],
        "result": [],
        "depends_on": [] if index == 0 else [job.task_ids[index - 1]],
        "name": name,
        "progress": view.progress,
        "disclaimer": [],
        "recv_time": _when(view.started_at),
        "send_time": _when(view.finished_at),
        "block_inf_start_time": _when(view.started_at),
        "block_inf_end_time": _when(view.finished_at),
        "block_info": {"id": f"block-{name}", "name": name, "version": "1.0.0"},
        "err_msg": "" if failure is None else failure.err_msg,
        "failure_type": "" if failure is None else failure.failure_type,
    }


def _when(at: float | None) -> str:
    return iso(at) or ""


def _duration(seconds: float) -> str:
    """Like Go's ``time.Duration`` strings for short spans, e.g. ``12.5s``."""
    return f"{seconds:g}s"
