"""The OpenAPI document, built from the same pydantic models that validate requests."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from gateway import __version__
from gateway.messages import (
    CompletionEvent,
    EventAccepted,
    Problem,
    WaitRegistration,
    WaitStatus,
)

MODELS: list[type[BaseModel]] = [
    WaitRegistration,
    CompletionEvent,
    WaitStatus,
    EventAccepted,
    Problem,
]
KEY_PARAM = {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}
SOURCE_PARAM = {"name": "source", "in": "path", "required": True, "schema": {"type": "string"}}
HOOK_DESCRIPTION = (
    "Verified as the `[[sources]]` entry of this name says (Standard Webhooks, an HMAC-SHA256 "
    "header, a bearer token, or none), then mapped to an event by its JSON pointers."
)


def openapi_document() -> dict[str, Any]:
    _, defs = models_json_schema(
        [(m, "validation") for m in MODELS], ref_template="#/components/schemas/{model}"
    )
    return {
        "openapi": "3.1.0",
        "info": {"title": "resume-gateway", "version": __version__},
        "components": {
            "schemas": defs["$defs"],
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer"},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
        "security": [{"apiKey": []}, {"apiKeyHeader": []}],
        "paths": _paths(),
    }


def _paths() -> dict[str, Any]:
    return {
        "/v1/waits": {
            "post": _op(
                "Register a wait",
                "WaitRegistration",
                {
                    "201": ("Registered", "WaitStatus"),
                    "200": ("Identical repeat", "WaitStatus"),
                    "409": (
                        "The key is open with another token, the token is registered under"
                        " another key, or a repeat differs (see reason)",
                        "Problem",
                    ),
                    "413": ("Body over [server] max_body_bytes", "Problem"),
                    "422": ("Invalid registration", "Problem"),
                    "503": ("The store failed; nothing was registered, retry", "Problem"),
                },
            )
        },
        "/v1/waits/{key}": {
            "parameters": [KEY_PARAM],
            "get": _op(
                "State of a wait",
                None,
                {"200": ("The wait", "WaitStatus"), "404": ("Unknown key", "Problem")},
            ),
            "delete": _op(
                "Cancel a wait",
                None,
                {
                    "200": ("Cancelled", "WaitStatus"),
                    "404": ("Unknown key", "Problem"),
                    "409": ("Already final or in flight", "Problem"),
                },
            ),
        },
        "/v1/events": {
            "post": _op(
                "Report completion",
                "CompletionEvent",
                {
                    "202": ("Accepted: matched, buffered or late", "EventAccepted"),
                    "200": ("Duplicate", "EventAccepted"),
                    "413": ("Body over [ingest] max_body_bytes", "Problem"),
                    "415": ("The Content-Type is not a media type", "Problem"),
                    "422": ("Invalid event", "Problem"),
                    "503": (
                        "The store, the blob store or the disk failed; nothing was accepted, retry",
                        "Problem",
                    ),
                },
            )
            | _payload_form()
        },
        "/v1/blobs/{id}": {"get": _blob_op()},
        "/v1/hooks/{source}": {"parameters": [SOURCE_PARAM], "post": _hook_op()},
        "/healthz": {
            "get": {
                "summary": "Liveness",
                "security": [],
                "responses": {"200": {"description": "Alive"}},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness (store, Kafka when configured)",
                "security": [],
                "responses": {"200": {"description": "Ready"}, "503": {"description": "Not ready"}},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "security": [],
                "responses": {"200": {"description": "Metrics"}},
            }
        },
    }


def _op(summary: str, body: str | None, responses: dict[str, tuple[str, str]]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            code: {"description": text, "content": {_media(model): {"schema": _ref(model)}}}
            for code, (text, model) in responses.items()
        },
    }
    op["responses"]["401"] = {
        "description": "Missing or wrong API key",
        "content": {_media("Problem"): {"schema": _ref("Problem")}},
    }
    if body:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    return op


def _hook_op() -> dict[str, Any]:
    """Webhooks authenticate per source, not with an API key, and have no fixed body shape."""
    op = _op(
        "Receive a third-party webhook",
        None,
        {
            "202": ("Accepted: matched, buffered or late", "EventAccepted"),
            "200": (
                "Duplicate (the same event id, e.g. a replayed webhook-id), or ignored (its "
                "status maps to ignore: nothing stored)",
                "EventAccepted",
            ),
            "404": ("No source of this name", "Problem"),
            "413": ("Body over the source's max_body_bytes", "Problem"),
            "422": ("Not JSON, or a mapped field is missing or invalid", "Problem"),
        },
    )
    op["description"] = HOOK_DESCRIPTION
    op["security"] = []
    op["responses"]["401"]["description"] = "The request does not verify against the source"
    op["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": {"description": "Any JSON document"}}},
    }
    return op


def _payload_form() -> dict[str, Any]:
    """``POST /v1/events?id=…&key=…&status=…``: the body is the data, of any content type."""
    query = [
        {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
        for name in ("id", "key", "status", "occurred_at")
    ]
    return {
        "description": (
            "Either the JSON event document, or, with `id`, `key` and `status` in the query, "
            "a body that is the event's data itself: JSON (validated, sent inline when it "
            "fits) or any other content type (CSV, binary: always a claim check with its "
            "Content-Type). Bodies above the spool threshold are streamed to disk, never "
            "held in memory."
        ),
        "parameters": query,
    }


def _blob_op() -> dict[str, Any]:
    """Claim-check downloads: the signature in the URL is the credential."""
    params = [
        {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
        {"name": "expires", "in": "query", "required": True, "schema": {"type": "integer"}},
        {
            "name": "type",
            "in": "query",
            "required": False,
            "description": "The Content-Type to serve: the one the event declared (signed)",
            "schema": {"type": "string"},
        },
        {"name": "sig", "in": "query", "required": True, "schema": {"type": "string"}},
    ]
    problem = {_media("Problem"): {"schema": _ref("Problem")}}
    return {
        "summary": "Download a claim-check payload (a payload_ref URL)",
        "security": [],
        "parameters": params,
        "responses": {
            "200": {"description": "The payload, streamed, with its Content-Type and ETag"},
            "206": {"description": "The requested byte range (single Range)"},
            "304": {"description": "If-None-Match matched the ETag"},
            "403": {"description": "Tampered, expired or missing signature", "content": problem},
            "404": {"description": "No such payload (never stored, or collected)"},
            "416": {"description": "Range not satisfiable", "content": problem},
        },
    }


def _ref(model: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model}"}


def _media(model: str) -> str:
    return "application/problem+json" if model == "Problem" else "application/json"
