"""HTTP face of the Alteryx Server sandbox: the OAuth2 token endpoint and the v3 jobs API.

Paths follow seed 003, where ``{baseURL}`` is ``http://host/webapi``: the canonical routes are
``/webapi/oauth2/token`` and ``/webapi/v3/jobs/{jobId}``. The jobs routes are also served
without the ``/webapi`` prefix (``/v3/jobs/{jobId}``), so a client configured with the
``{base}/v3/jobs`` form of the issue reaches the same jobs.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway.sandbox.alteryx_jobs import CancelOutcome, detail, messages_of
from gateway.sandbox.alteryx_state import AlteryxSandbox
from gateway.sandbox.alteryx_tokens import TokenCheck
from gateway.sandbox.requestlog import credential_id, note_of
from gateway.sandbox.responses import message, not_found

TOKEN_PATH = "/webapi/oauth2/token"
API_PREFIX = "/webapi"
JOB_PATHS = (API_PREFIX + "/v3/jobs/{job_id}", "/v3/jobs/{job_id}")
GRANT_TYPE = "client_credentials"
# ASP.NET's wording: Alteryx Server's API runs on it.
DENIED = "Authorization has been denied for this request."
_CHALLENGES = {
    TokenCheck.MISSING: 'Bearer realm="webapi"',
    TokenCheck.UNKNOWN: 'Bearer realm="webapi", error="invalid_token"',
    TokenCheck.EXPIRED: (
        'Bearer realm="webapi", error="invalid_token", error_description="The token expired"'
    ),
}


def oauth_error(
    status: int, error: str, description: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """An RFC 6749 section 5.2 error body."""
    body = {"error": error, "error_description": description}
    return web.json_response(body, status=status, headers=headers)


class AlteryxApi:
    """Handlers of the token endpoint and the jobs endpoints."""

    def __init__(self, sandbox: AlteryxSandbox) -> None:
        self._sandbox = sandbox

    def routes(self) -> list[web.RouteDef]:
        """Route table: the token endpoint, then each job path with and without ``/webapi``."""
        routes = [web.post(TOKEN_PATH, self.token)]
        for path in JOB_PATHS:
            routes += [
                web.get(path, self.get_job),
                web.delete(path, self.cancel_job),
                web.get(path + "/messages", self.get_messages),
            ]
        return routes

    async def token(self, request: web.Request) -> web.Response:
        """``POST /webapi/oauth2/token``: client credentials (HTTP Basic, or in the form)."""
        try:
            form = await request.post()
        except ValueError:  # a form whose bytes are not UTF-8 (UnicodeDecodeError)
            return oauth_error(400, "invalid_request", "the form is not valid UTF-8")
        client = client_credentials(request.headers.get("Authorization", ""), form)
        if client is None:
            return _invalid_client()
        note_of(request).credential_id = credential_id(client[0])
        grant_type = form.get("grant_type")
        if not isinstance(grant_type, str) or not grant_type:
            return oauth_error(400, "invalid_request", "grant_type is required")
        if grant_type != GRANT_TYPE:
            return oauth_error(400, "unsupported_grant_type", f"Use {GRANT_TYPE}")
        issued = self._sandbox.issue_token(*client)
        if issued is None:
            return _invalid_client()
        body = {
            "access_token": issued.value,
            "token_type": "bearer",
            "expires_in": self._sandbox.settings.token_expires_in_s,
        }
        return web.json_response(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    async def get_job(self, request: web.Request) -> web.Response:
        """``GET /v3/jobs/{jobId}[?includeMessages=true|false]``: 200, 400, 401 or 404."""
        refusal = self._gate(request)
        if refusal is not None:
            return refusal
        include = include_messages(request.query.get("includeMessages"))
        if include is None:
            value = request.query["includeMessages"]
            return message(400, f"The value '{value}' is not valid for includeMessages.")
        job = self._sandbox.poll(request.match_info["job_id"])
        if job is None:
            return not_found()
        return web.json_response(detail(job, self._sandbox.clock(), include_messages=include))

    async def get_messages(self, request: web.Request) -> web.Response:
        """``GET /v3/jobs/{jobId}/messages``: the job's messages (empty until it is complete)."""
        refusal = self._gate(request)
        if refusal is not None:
            return refusal
        job = self._sandbox.visible_job(request.match_info["job_id"])
        if job is None:
            return not_found()
        return web.json_response(messages_of(job, self._sandbox.clock()))

    async def cancel_job(self, request: web.Request) -> web.Response:
        """``DELETE /v3/jobs/{jobId}``: 200 deleted/cancelled, 400 not cancellable, 401, 404."""
        refusal = self._gate(request)
        if refusal is not None:
            return refusal
        outcome = self._sandbox.cancel(request.match_info["job_id"])
        if outcome is None:
            return not_found()
        return message(400 if outcome is CancelOutcome.NOT_CANCELLABLE else 200, outcome.value)

    def _gate(self, request: web.Request) -> web.Response | None:
        """Check the bearer token; the 401 to send if it is missing, unknown or expired."""
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        token = value.strip() if scheme.lower() == "bearer" else ""
        check = self._sandbox.check_token(token)
        if check is not TokenCheck.VALID:
            return message(401, DENIED, {"WWW-Authenticate": _CHALLENGES[check]})
        note_of(request).credential_id = credential_id(token)
        return None


def client_credentials(authorization: str, form: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(client_id, client_secret)`` from HTTP Basic or, failing that, the form body."""
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() == "basic":
        return _decode_basic(encoded.strip())
    client_id, secret = form.get("client_id"), form.get("client_secret")
    if isinstance(client_id, str) and isinstance(secret, str) and client_id:
        return client_id, secret
    return None


def _decode_basic(encoded: str) -> tuple[str, str] | None:
    # Decoded by hand: aiohttp's BasicAuth is deprecated and warns on construction. As UTF-8
    # (RFC 7617's charset="UTF-8", what clients send, the gateway's too): as Latin-1, a secret
    # with an "ä" never matched. Not UTF-8: no credentials (UnicodeDecodeError is a ValueError).
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except ValueError:
        return None
    client_id, colon, secret = decoded.partition(":")
    return (client_id, secret) if colon and client_id else None


def include_messages(raw: str | None) -> bool | None:
    """The ``includeMessages`` flag: absent or empty means true; None when it is invalid."""
    if raw is None or raw.strip() == "":
        return True
    return {"true": True, "false": False}.get(raw.strip().lower())


def _invalid_client() -> web.Response:
    return oauth_error(
        401,
        "invalid_client",
        "Client authentication failed",
        {"WWW-Authenticate": 'Basic realm="webapi"'},
    )
