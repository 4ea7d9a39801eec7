"""What every sandbox's control API (``/_sandbox/...``, no auth) has in common.

Body parsing with the same 400/422 answers, and the request-log and fault-plan endpoints, which
behave identically whatever the emulated API. Never exposed by a real upstream; never put a
sandbox on a network.
"""

from __future__ import annotations

from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from gateway.sandbox.faults import FaultInjector, FaultPlan
from gateway.sandbox.requestlog import RequestLog

_Model = TypeVar("_Model", bound=BaseModel)


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


class FaultsAndLogControl:
    """``/_sandbox/requests`` and ``/_sandbox/faults`` for one sandbox's injector and log."""

    def __init__(self, faults: FaultInjector, requests: RequestLog) -> None:
        self._faults = faults
        self._requests = requests

    def routes(self) -> list[web.RouteDef]:
        """Route table of the shared endpoints."""
        return [
            web.get("/_sandbox/requests", self.requests),
            web.get("/_sandbox/faults", self.get_faults),
            web.put("/_sandbox/faults", self.put_faults),
            web.delete("/_sandbox/faults", self.delete_faults),
        ]

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
