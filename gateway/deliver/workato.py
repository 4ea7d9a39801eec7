"""The Workato Jobs API client: one request in, one ``Attempt`` out, never an exception."""

from __future__ import annotations

import aiohttp

from gateway.config.settings import TenantSettings
from gateway.deliver.classify import Attempt

RESUME_PATH = "/api/job/resume"
CONNECT_TIMEOUT_S = 5.0


class WorkatoClient:
    """Calls ``POST /api/job/resume`` for one tenant over a shared session."""

    def __init__(self, session: aiohttp.ClientSession, tenant: TenantSettings, timeout_s: float):
        self._session = session
        self._url = tenant.resolved_base_url + RESUME_PATH
        self._headers = {**tenant.auth_headers(), "Content-Type": "application/json"}
        self._timeout = aiohttp.ClientTimeout(
            total=timeout_s, sock_connect=min(CONNECT_TIMEOUT_S, timeout_s)
        )

    async def resume(self, body: bytes) -> Attempt:
        """Send one resume request; ``sent`` says whether it may have reached Workato."""
        try:
            async with self._session.post(
                self._url, data=body, headers=self._headers, timeout=self._timeout
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
