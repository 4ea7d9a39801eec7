"""``/v1/waits`` and ``/v1/events``: authenticate, validate, hand to ``Ingest``, answer."""

from __future__ import annotations

from aiohttp import web
from pydantic import ValidationError
from pydantic_core import to_json

from gateway.errors import Conflict, InvalidInput, NotFound
from gateway.http.auth import ApiKeys
from gateway.http.problems import invalid
from gateway.http.views import wait_json
from gateway.ingest.bodies import Bodies, content_type_of, refuse_encoded
from gateway.ingest.service import Ingest
from gateway.messages import CompletionEvent, WaitRegistration
from gateway.store.records import CONFLICTS, EXPIRED_ON_ARRIVAL, JSON

API_SOURCE = "api"


class Api:
    def __init__(self, ingest: Ingest, bodies: Bodies, keys: ApiKeys) -> None:
        self._ingest = ingest
        self._bodies = bodies
        self._keys = keys

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/waits", self.register),
            web.get("/v1/waits/{key:.+}", self.get_wait),
            web.delete("/v1/waits/{key:.+}", self.cancel_wait),
            web.post("/v1/events", self.post_event),
        ]

    async def register(self, request: web.Request) -> web.Response:
        tenant = self._keys.tenant_for(request)
        refuse_encoded(request.headers)
        body = await request.read()
        try:
            reg = WaitRegistration.model_validate_json(body)
        except ValidationError as exc:
            raise invalid(exc) from None
        result = await self._ingest.register(tenant.name, reg)
        if result.conflict == EXPIRED_ON_ARRIVAL:
            raise InvalidInput(CONFLICTS[EXPIRED_ON_ARRIVAL], field="expires_at")
        if result.outcome == "conflict":
            reason = result.conflict or "conflict"
            raise Conflict(CONFLICTS.get(reason, reason), reason=reason)
        assert result.wait is not None
        status = 201 if result.outcome == "created" else 200
        return web.json_response(
            {"outcome": result.outcome, **wait_json(result.wait)}, status=status
        )

    async def get_wait(self, request: web.Request) -> web.Response:
        tenant = self._keys.tenant_for(request)
        wait = await self._ingest.wait(tenant.name, request.match_info["key"])
        if wait is None:
            raise NotFound("no wait is registered under this key")
        return web.json_response(wait_json(wait))

    async def cancel_wait(self, request: web.Request) -> web.Response:
        tenant = self._keys.tenant_for(request)
        result = await self._ingest.cancel(tenant.name, request.match_info["key"])
        if result.outcome == "not_found":
            raise NotFound("no wait is registered under this key")
        assert result.wait is not None
        if result.outcome != "cancelled":
            detail = (
                "its resume request is in flight"
                if result.outcome == "in_flight"
                else (f"it is already {result.wait.state}")
            )
            raise Conflict(f"the wait cannot be cancelled: {detail}", wait=wait_json(result.wait))
        return web.json_response(wait_json(result.wait))

    async def post_event(self, request: web.Request) -> web.Response:
        """One completion event: the JSON document ``{id, key, status, data}``, or (with ``id``,
        ``key`` and ``status`` in the query) a body that is the data itself, of any type."""
        tenant = self._keys.tenant_for(request)
        form = _payload_form(request)  # 422 or 415 before the body is read
        with await self._bodies.receive(request, self._bodies.max_body_bytes) as body:
            if form is not None:
                event, media = form
                result = await self._bodies.accept_payload(
                    tenant.name, API_SOURCE, event, body, media
                )
            else:
                fields, data = await self._bodies.event_document(body)
                event = _validated(fields)
                result = await self._bodies.accept_data(tenant.name, API_SOURCE, event, body, data)
        status = 200 if result.outcome == "duplicate" else 202
        answer = {"outcome": result.outcome, "event_id": event.id, "key": event.key}
        return web.Response(body=to_json(answer), status=status, content_type=JSON)


QUERY_FIELDS = ("id", "key", "status")


def _payload_form(request: web.Request) -> tuple[CompletionEvent, str] | None:
    """The event in the query and the body's media type, when the body is the data itself:
    any of its fields in the query says so, and a missing one is named."""
    query = request.query
    if not request.query_string or not any(name in query for name in QUERY_FIELDS):
        return None
    if "data" in query:
        raise InvalidInput(
            "data: in this form the body is the data; it is never taken from the query",
            errors=[{"field": "data", "message": "not a query parameter"}],
        )
    repeated = [name for name in dict.fromkeys(query) if len(query.getall(name)) > 1]
    if repeated:  # which one would count is a guess: the first, where JSON takes the last
        raise InvalidInput(
            f"{repeated[0]}: given more than once in the query",
            errors=[{"field": name, "message": "given more than once"} for name in repeated],
        )
    return _validated(dict(query)), content_type_of(request.headers)


def _validated(fields: dict[str, object]) -> CompletionEvent:
    fields.pop("data", None)  # the data is never taken from the query, and is checked apart
    try:
        return CompletionEvent.model_validate(fields)
    except ValidationError as exc:
        raise invalid(exc) from None
