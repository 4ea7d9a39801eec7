"""The servers of each scenario: Workato sandbox, gateway, ingest baseline, forwarder.

The gateway is configured the way a single-node production install would be (SQLite with
``synchronous = full``, JSON logs), except that logging is at ``warning`` so that a log line per
request does not dominate, and the rate limit is high so that deliveries never wait.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.httpload import Pool, encode_request
from bench.load import fan_out
from bench.messages import JSON, Api
from bench.procs import HOST, READY_TIMEOUT_S, Server, Supervisor, free_port, wait_ready

API_KEY = "bench-api-key-0123456789"
WORKATO_TOKEN = "bench-workato-token"
HIGH_RATE_PER_MINUTE = 1_000_000
PRODUCTION_RATE_PER_MINUTE = 60
SETUP_CONCURRENCY = 32


@dataclass(frozen=True, slots=True)
class Job:
    """A suspended sandbox job."""

    job_id: str
    resume_token: str


class Sandbox:
    """A Workato sandbox child and the calls the bench makes to its control API."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.pool = Pool(HOST, server.port)
        self._host = f"{HOST}:{server.port}"

    async def create_jobs(self, count: int) -> list[Job]:
        request = encode_request("POST", self._host, "/_sandbox/jobs", b"{}", _json_headers())
        replies = await fan_out(self.pool, [request] * count, SETUP_CONCURRENCY)
        docs = [json.loads(_expect(reply.status, reply.body, 201)) for reply in replies]
        return [Job(doc["job_id"], doc["resume_token"]) for doc in docs]

    @property
    def pid(self) -> int:
        return self.server.pid

    def close(self) -> None:
        self.pool.close()

    async def jobs(self) -> list[dict[str, Any]]:
        """Every job's state (``resume_count``, ``resumed_at`` ...)."""
        reply = await self.pool.request(encode_request("GET", self._host, "/_sandbox/jobs"))
        result: list[dict[str, Any]] = json.loads(_expect(reply.status, reply.body, 200))
        return result

    async def job(self, job_id: str) -> dict[str, Any]:
        """One job's state (``resume_count``, ``resumed_body_size`` ...)."""
        path = f"/_sandbox/jobs/{job_id}"
        reply = await self.pool.request(encode_request("GET", self._host, path))
        result: dict[str, Any] = json.loads(_expect(reply.status, reply.body, 200))
        return result

    async def resume_body(self, job_id: str) -> bytes:
        """The exact body of the job's successful resume."""
        path = f"/_sandbox/jobs/{job_id}/body"
        reply = await self.pool.request(encode_request("GET", self._host, path))
        return _expect(reply.status, reply.body, 200)

    async def stats(self) -> dict[str, Any]:
        reply = await self.pool.request(encode_request("GET", self._host, "/_sandbox/stats"))
        result: dict[str, Any] = json.loads(_expect(reply.status, reply.body, 200))
        return result


def _json_headers() -> dict[str, str]:
    return {"Content-Type": JSON}


def _expect(status: int, body: bytes, wanted: int) -> bytes:
    if status != wanted:
        raise RuntimeError(f"expected HTTP {wanted}, got {status}: {body[:300]!r}")
    return body


async def start_sandbox(procs: Supervisor) -> Sandbox:
    port = free_port()
    args = ["sandbox", "workato", "--port", str(port), "--api-token", WORKATO_TOKEN]
    args += ["--rate-limit-per-minute", str(HIGH_RATE_PER_MINUTE)]
    server = procs.start("sandbox", "gateway", args, port)
    await wait_ready(server, "/_sandbox/stats")
    return Sandbox(server)


def gateway_toml(port: int, db_path: Path, workato_url: str, rate_per_minute: int) -> str:
    """The bench's gateway configuration (see the module docstring for the choices)."""
    token_key = base64.b64encode(secrets.token_bytes(32)).decode()
    return f"""env = "prod"

[server]
port = {port}

[store]
url = {json.dumps(f"sqlite:///{db_path}")}
sqlite_synchronous = "full"

[ingest]
spool_dir = {json.dumps(str(db_path.parent / "spool"))}

[blobs]
url = {json.dumps(f"file:///{db_path.parent / 'blobs'}")}

[security]
token_keys = [{{ id = "b", key = "{token_key}" }}]

[logging]
format = "json"
level = "warning"

[delivery]
poll_interval_s = 0.05

[[tenants]]
name = "bench"
base_url = {json.dumps(workato_url)}
api_token = {json.dumps(WORKATO_TOKEN)}
api_keys = [{json.dumps(API_KEY)}]
rate_limit_per_minute = {rate_per_minute}
"""


async def start_gateway(
    procs: Supervisor,
    workdir: Path,
    sandbox: Sandbox,
    rate_per_minute: int = HIGH_RATE_PER_MINUTE,
    wrapper: list[str] | None = None,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> Server:
    """A gateway on the bench's configuration, run by ``wrapper`` (a profiler) if given."""
    port = free_port()
    config = workdir / f"gateway-{port}.toml"
    db_path = workdir / f"gateway-{port}.db"
    config.write_text(gateway_toml(port, db_path, sandbox.server.url, rate_per_minute))
    args = ["run", "--config", str(config)]
    server = procs.start("gateway", "gateway", args, port, wrapper)
    await wait_ready(server, "/healthz", ready_timeout_s)
    return server


async def start_baseline(procs: Supervisor) -> Server:
    port = free_port()
    server = procs.start("baseline", "bench.baseline_server", ["--port", str(port)], port)
    await wait_ready(server, "/healthz")
    return server


async def start_forwarder(procs: Supervisor, sandbox: Sandbox) -> Server:
    port = free_port()
    args = ["--port", str(port), "--workato", sandbox.server.url]
    args += ["--api-token", WORKATO_TOKEN, "--api-key", API_KEY]
    server = procs.start("forwarder", "bench.forwarder", args, port)
    await wait_ready(server, "/healthz")
    return server


def api_of(server: Server) -> Api:
    return Api(HOST, server.port, API_KEY)


async def register_waits(api: Api, keys: list[str], jobs: list[Job]) -> None:
    """Register one wait per (key, job); every one must be created (201)."""
    pool = Pool(api.host, api.port)
    try:
        requests = [api.wait(key, job.resume_token) for key, job in zip(keys, jobs, strict=True)]
        for reply in await fan_out(pool, requests, SETUP_CONCURRENCY):
            _expect(reply.status, reply.body, 201)
    finally:
        pool.close()
