"""What every sandbox's control API (``/_sandbox/...``, no auth) has in common.

Body parsing with the same 400/422 answers, and the job-state, request-log, fault-plan, stats,
settings and reset endpoints, which behave identically whatever the emulated API. Never exposed
by a real upstream; never put a sandbox on a network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from gateway.sandbox.faults import FaultInjector, FaultPlan, fault_middleware
from gateway.sandbox.requestlog import RequestLog
from gateway.sandbox.responses import json_errors

_Model = TypeVar("_Model", bound=BaseModel)
_Job = TypeVar("_Job")
_Job_co = TypeVar("_Job_co", covariant=True)


async def parse_model(request: web.Request, model: type[_Model]) -> _Model | web.Response:
    """The body validated as ``model`` (an empty body is ``{}``), or the 400/422 to send."""
    document = await parse_object(request)
    if isinstance(document, web.Response):
        return document
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        return invalid(exc)


async def parse_object(request: web.Request) -> dict[str, Any] | web.Response:
    """The body as a JSON object (an empty body is ``{}``), or the 400 to send."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        document = await request.json()
    except ValueError:
        return web.json_response({"message": "Request body is not valid JSON"}, status=400)
    if not isinstance(document, dict):
        return web.json_response({"message": "Request body must be a JSON object"}, status=400)
    return document


def invalid(exc: ValidationError) -> web.Response:
    """422 listing what was wrong, without echoing the input (it may hold credentials)."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    return web.json_response({"message": "Invalid request", "errors": errors}, status=422)


def missing() -> web.Response:
    """404 of the control API."""
    return web.json_response({"message": "Not found"}, status=404)


class Controlled(Protocol[_Job_co]):
    """What every sandbox state object offers to its control API."""

    clock: Callable[[], float]
    settings: Any  # the sandbox's own settings model: ``updated(changes)``, ``public_view()``
    faults: FaultInjector
    requests: RequestLog

    def stats(self) -> dict[str, Any]: ...

    def reset(self) -> None: ...

    def job(self, job_id: str) -> _Job_co | None: ...

    def jobs(self) -> Sequence[_Job_co]: ...


def sandbox_app(sandbox: Controlled[Any], *route_tables: list[web.RouteDef]) -> web.Application:
    """An application with the middlewares of every sandbox, outermost first: request log,
    fault injection, JSON errors."""
    app = web.Application(
        middlewares=[
            sandbox.requests.middleware(sandbox.clock),
            fault_middleware(sandbox.faults),
            json_errors,
        ]
    )
    for routes in route_tables:
        app.add_routes(routes)
    return app


class CommonControl(Generic[_Job]):
    """The endpoints every sandbox shares: job states, request log, fault plan, stats, settings,
    reset. ``job_state`` is what a test may assert about one job at a given time."""

    def __init__(
        self, sandbox: Controlled[_Job], job_state: Callable[[_Job, float], dict[str, Any]]
    ) -> None:
        self._sandbox = sandbox
        self._job_state = job_state
        self._faults = sandbox.faults
        self._requests = sandbox.requests

    def routes(self) -> list[web.RouteDef]:
        """Route table of the shared endpoints."""
        return [
            web.get("/_sandbox/jobs", self.list_jobs),
            web.get("/_sandbox/jobs/{job_id}", self.get_job),
            web.get("/_sandbox/requests", self.requests),
            web.get("/_sandbox/faults", self.get_faults),
            web.put("/_sandbox/faults", self.put_faults),
            web.delete("/_sandbox/faults", self.delete_faults),
            web.get("/_sandbox/stats", self.stats),
            web.get("/_sandbox/settings", self.get_settings),
            web.put("/_sandbox/settings", self.put_settings),
            web.post("/_sandbox/reset", self.reset),
        ]

    async def list_jobs(self, request: web.Request) -> web.Response:
        """Every job's state, in the sandbox's order, all read at the same instant."""
        now = self._sandbox.clock()
        return web.json_response([self._job_state(job, now) for job in self._sandbox.jobs()])

    async def get_job(self, request: web.Request) -> web.Response:
        """One job's state, any job the sandbox keeps."""
        job = self._sandbox.job(request.match_info["job_id"])
        if job is None:
            return missing()
        return web.json_response(self._job_state(job, self._sandbox.clock()))

    async def stats(self, request: web.Request) -> web.Response:
        """Totals."""
        return web.json_response(self._sandbox.stats())

    async def get_settings(self, request: web.Request) -> web.Response:
        """Current settings, credentials shown as ids only."""
        return web.json_response(self._sandbox.settings.public_view())

    async def put_settings(self, request: web.Request) -> web.Response:
        """Change some settings; fields left out keep their value."""
        changes = await parse_object(request)
        if isinstance(changes, web.Response):
            return changes
        try:
            self._sandbox.settings = self._sandbox.settings.updated(changes)
        except ValidationError as exc:
            return invalid(exc)
        return web.json_response(self._sandbox.settings.public_view())

    async def reset(self, request: web.Request) -> web.Response:
        """Forget jobs, faults and the log; restore the initial settings."""
        self._sandbox.reset()
        return web.Response(status=204)

    async def requests(self, request: web.Request) -> web.Response:
        """The request log, oldest first."""
        return web.json_response([entry.to_json() for entry in self._requests.entries()])

    async def get_faults(self, request: web.Request) -> web.Response:
        """The fault plan, with the scripted counts still remaining."""
        return web.json_response(self._faults.plan.model_dump())

    async def put_faults(self, request: web.Request) -> web.Response:
        """Replace the fault plan."""
        plan = await parse_model(request, FaultPlan)
        if isinstance(plan, web.Response):
            return plan
        self._faults.set_plan(plan)
        return web.json_response(plan.model_dump())

    async def delete_faults(self, request: web.Request) -> web.Response:
        """Remove every fault."""
        self._faults.clear()
        return web.Response(status=204)
