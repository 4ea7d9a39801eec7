"""Fault injection for sandbox servers: scripted faults plus seeded random ones.

A :class:`FaultPlan` holds (a) a queue of scripted faults, consumed in order by the requests they
match, and (b) random rates. :func:`fault_middleware` applies them to every API request (control
paths are exempt). The kinds model what a client cannot tell apart from the outside:

* ``status`` — answer ``status`` (default 503) without processing;
* ``latency`` — process normally, then wait ``seconds`` before answering: a slow answer, so
  the request has taken effect even if the client gives up meanwhile;
* ``drop`` — close the connection without processing or answering;
* ``processed_then_error`` — process fully (e.g. the job *is* resumed), then answer 500;
* ``processed_then_drop`` — process fully, then close the connection without answering.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from http import HTTPStatus
from typing import Literal

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.sandbox.body import discard_body

FaultKind = Literal["status", "latency", "drop", "processed_then_error", "processed_then_drop"]

DEFAULT_STATUS: dict[FaultKind, int] = {"status": 503, "processed_then_error": 500}
CONTROL_PREFIX = "/_sandbox/"
# Status of the response object returned after a drop; aiohttp never manages to send it.
DROPPED_PLACEHOLDER_STATUS = 599
MAX_DELAY_S = 3600.0
"""The longest injected delay: a larger one (``inf``, ``1e308``) held a handler for ever."""

_log = structlog.get_logger(__name__)


class ScriptedFault(BaseModel):
    """One deterministic fault, applied to the next ``count`` matching requests."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: FaultKind
    count: int = Field(default=1, ge=1)
    status: int | None = Field(default=None, ge=400, le=599)
    seconds: float = Field(default=0.0, ge=0.0, le=MAX_DELAY_S)
    path_prefix: str | None = None


class RandomFaults(BaseModel):
    """Seeded per-request draws: drop with ``drop_rate``, else 503 with ``error_rate``, else
    process and answer 500 with ``processed_error_rate``, else a delay drawn uniformly from
    ``[0, latency_s]``. The same seed gives the same sequence."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    drop_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    processed_error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    latency_s: float = Field(default=0.0, ge=0.0, le=MAX_DELAY_S)
    seed: int | None = None

    @model_validator(mode="after")
    def _rates_fit(self) -> RandomFaults:
        if self.error_rate + self.drop_rate + self.processed_error_rate > 1.0:
            raise ValueError("error_rate + drop_rate + processed_error_rate must not exceed 1")
        return self


class FaultPlan(BaseModel):
    """Body of ``PUT /_sandbox/faults``: scripted faults first, then random ones."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    scripted: list[ScriptedFault] = Field(default_factory=list)
    random: RandomFaults = Field(default_factory=RandomFaults)


@dataclass(frozen=True)
class Fault:
    """A fault chosen for one request."""

    kind: FaultKind
    status: int
    seconds: float


@dataclass(frozen=True)
class AppliedFault:
    """What happened to a request; ``processed_status`` is the answer the fault replaced."""

    kind: FaultKind
    sent_status: int | None
    processed_status: int | None


APPLIED_FAULT = web.RequestKey("sandbox_applied_fault", AppliedFault)


class FaultInjector:
    """The live plan: remaining scripted counts and the seeded random generator."""

    def __init__(self) -> None:
        self._plan = FaultPlan()
        self._rng = random.Random()

    @property
    def plan(self) -> FaultPlan:
        """The plan with the counts still remaining."""
        return self._plan.model_copy(deep=True)

    def set_plan(self, plan: FaultPlan) -> None:
        """Replace the plan and reseed the random generator."""
        self._plan = plan.model_copy(deep=True)
        self._rng = random.Random(plan.random.seed)

    def clear(self) -> None:
        """Remove every fault."""
        self.set_plan(FaultPlan())

    def next_fault(self, path: str) -> Fault | None:
        """Pick the fault for a request to ``path``, consuming a scripted one if any matches."""
        return self._take_scripted(path) or self._draw_random()

    def _take_scripted(self, path: str) -> Fault | None:
        for index, scripted in enumerate(self._plan.scripted):
            if scripted.path_prefix is None or path.startswith(scripted.path_prefix):
                scripted.count -= 1
                if scripted.count == 0:
                    del self._plan.scripted[index]
                return _fault(scripted.kind, scripted.status, scripted.seconds)
        return None

    def _draw_random(self) -> Fault | None:
        rates = self._plan.random
        failing = rates.error_rate + rates.drop_rate + rates.processed_error_rate
        if failing == rates.latency_s == 0.0:
            return None
        draw = self._rng.random()
        delay = self._rng.uniform(0.0, rates.latency_s)
        if draw < rates.drop_rate:
            return _fault("drop", None, 0.0)
        if draw < rates.drop_rate + rates.error_rate:
            return _fault("status", None, 0.0)
        if draw < failing:
            return _fault("processed_then_error", None, 0.0)
        return _fault("latency", None, delay) if delay > 0.0 else None


def _fault(kind: FaultKind, status: int | None, seconds: float) -> Fault:
    return Fault(kind=kind, status=status or DEFAULT_STATUS.get(kind, 500), seconds=seconds)


def fault_middleware(injector: FaultInjector) -> Middleware:
    """Middleware applying ``injector``'s faults to every request outside ``/_sandbox/``."""

    @web.middleware
    async def inject_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            return await handler(request)
        fault = injector.next_fault(request.path)
        if fault is None:
            return await handler(request)
        _log.info("sandbox.fault_injected", kind=fault.kind, path=request.path)
        return await _apply(fault, request, handler)

    return inject_faults


async def _apply(fault: Fault, request: web.Request, handler: Handler) -> web.StreamResponse:
    if fault.kind in ("status", "drop"):
        return await _refuse(fault, request)
    processed = await handler(request)
    if fault.kind == "latency":
        # A slow answer, not a slow arrival: the request is admitted (rate window, resume) on
        # arrival, as upstream would, and the client may give up while the answer is late.
        await asyncio.sleep(fault.seconds)
    response = _after_processing(fault, request, processed)
    _note(request, fault, response, processed=processed.status)
    return response


async def _refuse(fault: Fault, request: web.Request) -> web.StreamResponse:
    # Take the whole upload first: closing mid-upload would look like a reset, not a drop.
    await discard_body(request)
    response = _status_response(fault.status) if fault.kind == "status" else _drop(request)
    _note(request, fault, response, processed=None)
    return response


def _after_processing(
    fault: Fault, request: web.Request, processed: web.StreamResponse
) -> web.StreamResponse:
    if fault.kind == "processed_then_error":
        return _status_response(fault.status)
    if fault.kind == "processed_then_drop":
        return _drop(request)
    return processed


def _status_response(status: int) -> web.Response:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Injected fault"
    return web.json_response({"message": reason}, status=status)


def _drop(request: web.Request) -> web.Response:
    """Close the connection; the returned response is never written (aiohttp sees a reset)."""
    transport = request.transport
    if transport is not None:
        transport.close()
    return web.Response(status=DROPPED_PLACEHOLDER_STATUS)


def _note(
    request: web.Request, fault: Fault, response: web.StreamResponse, processed: int | None
) -> None:
    sent = None if fault.kind in ("drop", "processed_then_drop") else response.status
    request[APPLIED_FAULT] = AppliedFault(fault.kind, sent_status=sent, processed_status=processed)
