"""Servers under test as child processes: started on free loopback ports, always stopped.

Each server gets its own interpreter so that its event loop competes with the load generator
only for cores, never for the same loop. Children are stopped by their own pid (SIGTERM, then
SIGKILL after a grace period) in ``Supervisor.__exit__`` whatever happened.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from bench.httpload import Pool, encode_request
from gateway.children import die_with_parent

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 30.0
STOP_GRACE_S = 15.0
WRAPPED_SLOWDOWN = 10
"""A server under a wrapper such as Valgrind stops this many times slower."""
LOG_TAIL_BYTES = 4000


class ServerFailed(RuntimeError):
    """A server under test did not start, or died."""


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass(slots=True)
class Server:
    """One child process serving HTTP on ``HOST:port``; its output goes to ``log_path``."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    log_path: Path
    stop_grace_s: float = STOP_GRACE_S

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self) -> str:
        data = self.log_path.read_bytes()[-LOG_TAIL_BYTES:]
        return data.decode("utf-8", "replace")


class Supervisor:
    """Starts ``python -m <module> ...`` children and stops every one of them on exit."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._servers: list[Server] = []

    def start(
        self, name: str, module: str, args: list[str], port: int, wrapper: list[str] | None = None
    ) -> Server:
        """``python -m module args``, run by ``wrapper`` (a profiler, say) if given."""
        log_path = self._workdir / f"{name}.log"
        log = log_path.open("ab")
        proc = subprocess.Popen(
            [*(wrapper or []), sys.executable, "-m", module, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=die_with_parent(),  # even if the bench dies by SIGKILL
        )
        grace_s = STOP_GRACE_S * (WRAPPED_SLOWDOWN if wrapper else 1)
        server = Server(name, port, proc, log, log_path, grace_s)
        self._servers.append(server)
        return server

    def stop(self, server: Server) -> None:
        """SIGTERM, wait for a clean exit, SIGKILL if it does not come."""
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)
            try:
                server.proc.wait(timeout=server.stop_grace_s)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait()
        server.log.close()
        if server in self._servers:
            self._servers.remove(server)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for server in list(self._servers):
            self.stop(server)


async def wait_ready(server: Server, path: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll ``GET path`` until it answers 200; fail early if the child exits."""
    request = encode_request("GET", f"{HOST}:{server.port}", path)
    deadline = time.monotonic() + timeout_s
    pool = Pool(HOST, server.port)
    try:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise ServerFailed(f"{server.name} exited:\n{server.log_tail()}")
            try:
                if (await pool.request(request)).status == 200:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.05)
    finally:
        pool.close()
    raise ServerFailed(f"{server.name} not ready after {timeout_s:g} s:\n{server.log_tail()}")
