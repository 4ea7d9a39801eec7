"""End-to-end helpers: the CLI in subprocesses, on free loopback ports, always cleaned up."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from gateway.children import die_with_parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """A ``python -m gateway ...`` child whose stderr goes to a file we can read afterwards."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", *args],
            stdout=self._log,
            stderr=self._log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=die_with_parent(),  # a killed pytest leaves no gateway behind
        )

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._log.close()

    def terminate(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``dev`` writes relative to its working directory, and reads overrides: isolate both."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("RESUME_GATEWAY_"):
            monkeypatch.delenv(name)
    return tmp_path


@pytest.fixture
def shell() -> dict[str, str]:
    """The shell a developer pastes into: curl and openssl on PATH, this venv's python3 first."""
    for tool in ("curl", "openssl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not on PATH: the printed and README examples use it")
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path}


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.kill()


def wait_http(url: str, timeout_s: float = 20.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{url} did not answer within {timeout_s}s")


# The Kafka broker and S3 fixtures (tests/kafka_broker.py), for the Kafka end-to-end tests.
from tests.kafka_broker import kafka, moto_s3  # noqa: E402

__all__ = ["Process", "free_port", "kafka", "moto_s3", "processes", "wait_http"]
