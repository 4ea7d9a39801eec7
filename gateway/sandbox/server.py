"""Run an aiohttp application on a TCP port inside the current event loop.

Every sandbox (Workato, Alteryx, Pixxel) is an ``web.Application``; this is the one place that
knows how to bind it, report the real port when port 0 was asked for, and shut it down.
"""

from __future__ import annotations

from types import TracebackType

from aiohttp import web

from gateway.errors import listen_error

DEFAULT_SHUTDOWN_TIMEOUT_S = 5.0


class SandboxServer:
    """Serve ``app`` on ``host:port``; port 0 picks a free port (see :attr:`url`)."""

    def __init__(
        self,
        app: web.Application,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S,
    ) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._shutdown_timeout_s = shutdown_timeout_s
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """Base URL (no trailing slash) with the port actually bound."""
        if self._url is None:
            raise RuntimeError("SandboxServer is not started")
        return self._url

    async def start(self) -> None:
        """Bind and start serving; raises if already started."""
        if self._runner is not None:
            raise RuntimeError("SandboxServer is already started")
        # Handlers must not be cancelled when a client disconnects: a request that already
        # reached the server is processed to the end, like a real upstream would.
        runner = web.AppRunner(
            self._app, handler_cancellation=False, shutdown_timeout=self._shutdown_timeout_s
        )
        await runner.setup()
        self._runner = runner
        try:
            await web.TCPSite(runner, self._host, self._port).start()
        except OSError as exc:  # e.g. the port is taken
            await self.stop()
            raise listen_error(self._host, self._port, exc) from exc
        except BaseException:
            await self.stop()
            raise
        self._url = _base_url(self._host, runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop serving; safe to call more than once."""
        runner, self._runner = self._runner, None
        self._url = None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> SandboxServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _base_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"
