"""HTTP clients of the polled job systems. Each answers raw bytes (or a short result, for a
cancellation) or raises ``PollError``: an answer that does not validate is one too."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel, Field, ValidationError

from gateway.config.connections import AlteryxConnection, PixxelConnection
from gateway.deliver.classify import parse_retry_after
from gateway.errors import GatewayError, InvalidInput
from gateway.poll.jobs import alteryx_state

TOKEN_REFRESH_MARGIN_S = 60.0
READ_CHUNK_BYTES = 64 * 1024


class PollError(GatewayError):
    """The job system did not answer usefully."""


class JobNotFound(PollError):
    """The job system answered 404 for the job: deleted, or never there (a wrong id or URL)."""


class Throttled(PollError):
    """The system answered 429: every poll of its connection waits ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def throttled(system: str, resp: aiohttp.ClientResponse) -> Throttled:
    wait_s = parse_retry_after(resp.headers.get("Retry-After"), time.time())
    return Throttled(f"{system} answered 429 (retry after {wait_s:g} s)", wait_s)


NOT_FOUND = "not found (404)"
"""How a ``JobNotFound`` message begins, as a watch's ``last_error`` keeps it."""


class JobClient(Protocol):
    async def job(self, spec: dict[str, str]) -> bytes:
        """The job's JSON answer, as received."""

    async def cancel(self, spec: dict[str, str]) -> str:
        """Ask the system to cancel the job; a short description of what happened."""


class _Token(BaseModel):
    access_token: str = Field(pattern=r"^[\x20-\x7e]+$")  # RFC 6749's VSCHARs: a line
    # break in it made every later request raise from aiohttp, which ended the poller
    expires_in: float = 3600.0


class AlteryxClient:
    """Alteryx Server v3: OAuth2 client credentials, the token cached until shortly before it
    expires and refreshed at once when the server says 401."""

    def __init__(self, session: aiohttp.ClientSession, conn: AlteryxConnection) -> None:
        self._session = session
        self._conn = conn
        self._timeout = aiohttp.ClientTimeout(total=conn.request_timeout_s)
        self._token: str | None = None
        self._token_until = 0.0
        self._fetching: asyncio.Task[str] | None = None
        """The fetch under way: polls that find the token missing, expired or refused all wait
        for it and get its token or its error (one given up by its poll goes on for the rest)."""

    async def job(self, spec: dict[str, str]) -> bytes:
        url = f"{self._jobs_url(spec)}?includeMessages=true"
        status, body = await self._call("GET", url)
        if status == 404:
            raise JobNotFound(f"{NOT_FOUND}: alteryx job {spec['job_id']}")
        if status != 200:
            raise PollError(f"alteryx answered {status} for job {spec['job_id']}")
        return body

    async def cancel(self, spec: dict[str, str]) -> str:
        """``cancelled``, ``already_over`` or ``not_permitted``; a ``PollError`` to be tried
        again, also for a job that cannot be cancelled yet (``Initializing``: only a
        ``Queued`` or ``Running`` job can be, seed 003)."""
        status, body = await self._call("DELETE", self._jobs_url(spec))
        if status in (200, 404):  # a cancelled queued job is deleted
            return "cancelled" if status == 200 else "already_over"
        if status != 400:
            raise PollError(f"alteryx answered {status} to cancel job {spec['job_id']}")
        if b"permission" in body:  # "You do not have permission to cancel this job."
            return "not_permitted"
        try:  # "This job is not in 'Queued' or 'Running' state."
            now = alteryx_state(await self.job(spec))
        except JobNotFound:  # deleted in between
            return "already_over"
        except (ValidationError, InvalidInput):
            raise PollError(f"alteryx answered job {spec['job_id']} unexpectedly") from None
        if now.status is not None:
            return "already_over"
        raise PollError(f"alteryx cannot cancel job {spec['job_id']} while {now.job_status}")

    def _jobs_url(self, spec: dict[str, str]) -> str:
        return f"{self._conn.root}{self._conn.api_path}/v3/jobs/{segment(spec['job_id'])}"

    async def _call(self, method: str, url: str) -> tuple[int, bytes]:
        refused: str | None = None
        for _ in range(2):  # a 401: once more with a new token
            token = await self._bearer(refused)
            headers = {"Authorization": f"Bearer {token}"}
            try:
                async with self._session.request(
                    method, url, headers=headers, timeout=self._timeout
                ) as resp:
                    body = await read_capped(resp, self._conn.max_answer_bytes, "alteryx")
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise PollError(f"alteryx unreachable: {type(exc).__name__}") from exc
            if resp.status == 429:
                raise throttled("alteryx", resp)
            if resp.status != 401:
                return resp.status, body
            refused = token
        return 401, b""

    async def _bearer(self, refused: str | None) -> str:
        """The cached token, or a new one if there is none, it expired or it is the one the
        server just ``refused`` (unless another poll replaced it meanwhile)."""
        token = self._token
        if token is not None and token != refused and time.monotonic() < self._token_until:
            return token
        fetching = self._fetching
        if fetching is None or fetching.done():
            fetching = self._fetching = asyncio.create_task(self._fetch_token(), name="token")
            fetching.add_done_callback(_retrieved)  # every waiter may have given up
        return await asyncio.shield(fetching)

    async def _fetch_token(self) -> str:
        secret = self._conn.client_secret.get_secret_value()
        headers = {"Authorization": aiohttp.encode_basic_auth(self._conn.client_id, secret)}
        url = self._conn.root + self._conn.token_path
        form = {"grant_type": "client_credentials"}
        try:
            async with self._session.post(
                url, data=form, headers=headers, timeout=self._timeout
            ) as resp:
                body = await read_capped(resp, self._conn.max_answer_bytes, "alteryx")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PollError(f"alteryx token endpoint unreachable: {type(exc).__name__}") from exc
        if resp.status == 429:
            raise throttled("alteryx token endpoint", resp)
        if resp.status != 200:
            raise PollError(f"alteryx token endpoint answered {resp.status}")
        try:
            token = _Token.model_validate_json(body)
        except ValidationError:  # e.g. a login page: not the job's answer, and not quoted
            raise PollError(
                "alteryx token endpoint answered 200 without a usable access_token"
            ) from None
        margin = min(TOKEN_REFRESH_MARGIN_S, token.expires_in / 2)  # a short-lived one is used
        self._token = token.access_token
        self._token_until = time.monotonic() + token.expires_in - margin
        return token.access_token


def _retrieved(task: asyncio.Task[str]) -> None:
    """Marks a fetch's error as seen: the polls waiting for it may all have given up."""
    if not task.cancelled():
        task.exception()


class PixxelClient:
    """Pixxel: the API key as the ``Authorization`` header (seed 004)."""

    def __init__(self, session: aiohttp.ClientSession, conn: PixxelConnection) -> None:
        self._session = session
        self._conn = conn
        self._timeout = aiohttp.ClientTimeout(total=conn.request_timeout_s)

    async def job(self, spec: dict[str, str]) -> bytes:
        url = (
            f"{self._conn.root}/v0/workflows/{segment(spec['workflow_id'])}"
            f"/jobs/{segment(spec['job_id'])}"
        )
        headers = {"Authorization": self._conn.api_key.get_secret_value()}
        try:
            async with self._session.get(url, headers=headers, timeout=self._timeout) as resp:
                body = await read_capped(resp, self._conn.max_answer_bytes, "pixxel")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PollError(f"pixxel unreachable: {type(exc).__name__}") from exc
        if resp.status == 429:
            raise throttled("pixxel", resp)
        if resp.status == 404:
            raise JobNotFound(f"{NOT_FOUND}: pixxel job {spec['job_id']}")
        if resp.status != 200:
            raise PollError(f"pixxel answered {resp.status} for job {spec['job_id']}")
        return body

    async def cancel(self, spec: dict[str, str]) -> str:
        return "not_supported"


def segment(job_id: str) -> str:
    """An id as one segment of a job's URL; a ``PollError`` for ``.`` or ``..``, which the URL
    would resolve (refused at registration since 0.2.11, but a watch stored before may hold
    one)."""
    if job_id in (".", ".."):
        raise PollError(f"job id {job_id!r} cannot be a segment of a URL")
    return quote(job_id, safe="")


async def read_capped(resp: aiohttp.ClientResponse, limit: int, system: str) -> bytes:
    """The whole answer, or a ``PollError`` as soon as it is over ``limit`` bytes: it is held
    in memory (a 55 MB Pixxel answer peaked at 213 MB parsed)."""
    if resp.content_length is not None and resp.content_length > limit:
        raise PollError(f"{system} answered {resp.content_length} bytes > max_answer_bytes {limit}")
    body = bytearray()
    async for chunk in resp.content.iter_chunked(READ_CHUNK_BYTES):
        body += chunk
        if len(body) > limit:
            raise PollError(f"{system} answered more than max_answer_bytes {limit}")
    return bytes(body)
