"""The Workato Jobs API client: one request in, one ``Attempt`` out, never an exception."""

from __future__ import annotations

import math
from collections.abc import AsyncIterable
from urllib.parse import quote

import aiohttp
import structlog

from gateway.config.settings import TenantSettings
from gateway.deliver.classify import Attempt
from gateway.messages import JobRef

log = structlog.get_logger(__name__)

RESUME_PATH = "/api/job/resume"
CONNECT_TIMEOUT_S = 5.0
UPLOAD_FLOOR_BYTES_PER_S = 1_000_000
"""The slowest upload a large body is given time for (about 50 s for the 50 MB limit)."""


class WorkatoClient:
    """Calls ``POST /api/job/resume`` for one tenant over a shared session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        tenant: TenantSettings,
        timeout_s: float,
        longest_s: float | None = None,
    ) -> None:
        """``timeout_s`` bounds a request; a large body gets time to upload on top (at
        ``UPLOAD_FLOOR_BYTES_PER_S``), up to ``longest_s`` — which must end before the lease."""
        self._timeout_s = timeout_s
        self._longest_s = max(longest_s or timeout_s, timeout_s)
        self._session = session
        self._tenant = tenant.name
        self._base = tenant.resolved_base_url
        self._url = self._base + RESUME_PATH
        self._headers = {**tenant.auth_headers(), "Content-Type": "application/json"}
        self._timeout = _exact(timeout_s, min(CONNECT_TIMEOUT_S, timeout_s))

    async def resume(
        self, body: bytes | AsyncIterable[bytes], size: int, within_s: float | None = None
    ) -> Attempt:
        """Send one resume request, ended within ``within_s`` (what is left of the lease) if
        given; ``sent`` says whether it may have reached Workato.

        A streamed body is sent with its exact ``size`` as Content-Length, never chunked.
        """
        headers = self._headers
        if not isinstance(body, bytes):
            headers = {**headers, "Content-Length": str(size)}
        timeout = self._timeout
        total = request_timeout_s(size, self._timeout_s, self._longest_s)
        if within_s is not None:
            total = min(total, within_s)
        if total != self._timeout_s:
            timeout = _exact(total, self._timeout.sock_connect)
        try:
            async with self._session.post(  # a redirect is answered, never followed: it
                self._url,  # would carry the token, and legacy auth headers, to its target
                data=body,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                await response.read()
                return Attempt(response.status, response.headers.get("Retry-After"))
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError):
            return Attempt(None, error="connect_failed", sent=False)
        except TimeoutError:
            return Attempt(None, error="timeout")
        except aiohttp.ServerDisconnectedError:
            return Attempt(None, error="disconnected")
        except aiohttp.ClientError as exc:
            return Attempt(None, error=type(exc).__name__)

    async def job_status(self, job: JobRef, within_s: float | None = None) -> str | None:
        """The job's ``status`` from the Jobs API (seed 001, or the managed_users form of 000),
        or None when it cannot be read (within ``within_s`` too, when given)."""
        url = f"{self._base}{job_path(job)}"
        timeout = self._timeout
        if within_s is not None and within_s < self._timeout_s:
            timeout = _exact(within_s, timeout.sock_connect)
        try:
            async with self._session.get(
                url, headers=self._headers, timeout=timeout, allow_redirects=False
            ) as resp:
                if resp.status != 200:  # said: a 403 (the role may not read jobs) looked as a
                    log.warning(  # job still running, and its delivery stayed unconfirmed
                        "reconcile.lookup_refused",
                        tenant=self._tenant,
                        status=resp.status,
                        alert=resp.status in (401, 403),
                    )
                    return None
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("reconcile.lookup_failed", tenant=self._tenant, error=type(exc).__name__)
            return None
        status = body.get("status") if isinstance(body, dict) else None
        return status if isinstance(status, str) else None


def _exact(total: float, sock_connect: float | None) -> aiohttp.ClientTimeout:
    """A timeout that ends when it says: aiohttp rounds one of 5 s or more up to the next whole
    second of the loop's clock, which ate the second the lease keeps for the settle."""
    return aiohttp.ClientTimeout(total=total, sock_connect=sock_connect, ceil_threshold=math.inf)


def request_timeout_s(size: int, timeout_s: float, longest_s: float) -> float:
    """A slow link must not turn a large body into a timeout: time to upload it at
    ``UPLOAD_FLOOR_BYTES_PER_S`` comes on top, but never past ``longest_s`` (the lease)."""
    if size <= UPLOAD_FLOOR_BYTES_PER_S:
        return timeout_s
    return max(timeout_s, min(timeout_s + size / UPLOAD_FLOOR_BYTES_PER_S, longest_s))


def job_path(job: JobRef) -> str:
    """``/api/recipes/:recipe_id/jobs/:job_id``, under ``/api/managed_users/:id`` when embedded.

    ``managed_user_id`` is numeric or ``E`` + an external id; it is URL-encoded here.
    """
    path = f"/recipes/{quote(str(job.recipe_id), safe='')}/jobs/{quote(job.job_id, safe='')}"
    if job.managed_user_id:
        return f"/api/managed_users/{quote(job.managed_user_id, safe='')}{path}"
    return f"/api{path}"
