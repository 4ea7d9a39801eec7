"""``resume-gateway dev``: the gateway, a Workato sandbox and a sample config in one process.

Everything lives under the data directory (default ``./.data``): the SQLite database and a
generated token-encryption key, kept so that a restart can still decrypt stored tokens.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.app import Gateway
from gateway.config.loader import settings_from_dict
from gateway.config.settings import Settings
from gateway.devkafka import dev_kafka_settings, kafka_instructions, local_kafka
from gateway.errors import ConfigError
from gateway.logs import configure_logging
from gateway.sandbox.server import SandboxServer
from gateway.sandbox.workato import create_app
from gateway.sandbox.workato_state import WorkatoSandbox, WorkatoSandboxSettings
from gateway.security.redact import Redactor
from gateway.security.tokens import generate_key

DEV_API_KEY = "dev-key"
DEV_WORKATO_TOKEN = "dev-workato-token"
DEV_WEBHOOK_SECRET = "dev-webhook-secret"
DEV_STANDARD_WEBHOOKS_SECRET = "whsec_ZGV2LXN0YW5kYXJkLXdlYmhvb2tzLWtleS0zMmJ5dGU="
DEV_WEBHOOK_SOURCES: list[dict[str, Any]] = [
    {
        "name": "orders",
        "tenant": "demo",
        "verify": {
            "scheme": "hmac_sha256",
            "header": "X-Signature",
            "prefix": "sha256=",
            "secrets": [DEV_WEBHOOK_SECRET],
        },
        "mapping": {
            "key": "/order/id",
            "key_template": "order-{value}",
            "event_id": "/delivery_id",
            "status": "/order/state",
            "status_map": {"shipped": "succeeded", "cancelled": "failed"},
            "data": "/order",
        },
    },
    {
        "name": "jobs",
        "tenant": "demo",
        "verify": {"scheme": "standard_webhooks", "secrets": [DEV_STANDARD_WEBHOOKS_SECRET]},
        "mapping": {
            "key": "/job_id",
            "status": "/status",
            "status_map": {"completed": "succeeded", "error": "failed"},
        },
    },
]
"""The README's webhook examples (section "Webhooks") run against these sources as they are."""


def dev_token_key(data_dir: Path) -> str:
    """The dev encryption key, created once and kept in the data directory."""
    path = data_dir / "dev-token.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        # created owner-only: writing first and chmod-ing after leaves the key readable a moment
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(base64.b64encode(generate_key()).decode())
    return path.read_text().strip()


def dev_settings(
    data_dir: Path, port: int, sandbox_url: str, kafka_bootstrap: str | None = None
) -> Settings:
    raw: dict[str, Any] = {
        "env": "dev",
        "server": {"port": port},
        # not run's default (.data/gateway.db): a gateway run from the same directory with
        # other token keys would share the dev waits and fail their deliveries
        "store": {"url": f"sqlite:///{data_dir / 'dev.db'}"},
        "ingest": {"spool_dir": str(data_dir / "spool")},
        "blobs": {"url": f"file:///{data_dir / 'blobs'}"},
        "delivery": {"poll_interval_s": 0.2},
        "logging": {"format": "console"},
        "security": {"token_keys": [{"id": "dev", "key": dev_token_key(data_dir)}]},
        "tenants": [
            {
                "name": "demo",
                "base_url": sandbox_url,
                "api_token": DEV_WORKATO_TOKEN,
                "api_keys": [DEV_API_KEY],
            }
        ],
        "sources": DEV_WEBHOOK_SOURCES,
    }
    if kafka_bootstrap is not None:
        raw["kafka"] = dev_kafka_settings(kafka_bootstrap)
    return settings_from_dict(raw, os.environ)


@contextlib.contextmanager
def data_dir_held(data_dir: Path) -> Iterator[None]:
    """One dev gateway per data directory. Each has its own in-memory sandbox, and two sharing
    a database took each other's deliveries: a resume meant for one sandbox's job reached the
    other, which knew no such token (404, after a retry ``delivered_unconfirmed``). Held
    until the process ends, however it ends."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / "dev.lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"another 'resume-gateway dev' uses {data_dir}: stop it, or give this one "
                "a --data-dir of its own"
            ) from None
        yield


async def run_dev(
    data_dir: Path, port: int, sandbox_port: int, kafka_port: int | None = None
) -> None:
    with data_dir_held(data_dir):
        await _run_dev(data_dir, port, sandbox_port, kafka_port)


async def _run_dev(data_dir: Path, port: int, sandbox_port: int, kafka_port: int | None) -> None:
    sandbox = WorkatoSandbox(WorkatoSandboxSettings(api_tokens=[DEV_WORKATO_TOKEN]))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with (
        SandboxServer(create_app(sandbox), port=sandbox_port) as server,
        local_kafka(kafka_port) as kafka,
    ):
        settings = dev_settings(data_dir, port, server.url, kafka)
        redactor = Redactor(
            [DEV_API_KEY, DEV_WORKATO_TOKEN, DEV_WEBHOOK_SECRET, DEV_STANDARD_WEBHOOKS_SECRET]
        )
        configure_logging("console", "info", redactor)
        async with Gateway(settings) as gateway:
            gateway_url = f"http://127.0.0.1:{gateway.port}"
            print(instructions(gateway_url, server.url, data_dir, kafka), flush=True)
            await gateway.run_until(stop)


def instructions(
    gateway_url: str,
    sandbox_url: str,
    data_dir: Path = Path(".data"),
    kafka_bootstrap: str | None = None,
) -> str:
    kafka = (
        kafka_instructions(kafka_bootstrap, gateway_url, sandbox_url, DEV_API_KEY)
        if kafka_bootstrap
        else ""
    )
    return f"""
resume-gateway (dev) is running.
  gateway          {gateway_url}      (API key: {DEV_API_KEY})
  Workato sandbox  {sandbox_url}      (control API under /_sandbox/)
  webhooks         {gateway_url}/v1/hooks/orders and /v1/hooks/jobs (README "Webhooks")
  data             SQLite and the dev token key under {data_dir}

Try it — paste these into another shell:

  # 1. a Workato job suspends and hands out a resume token (the sandbox plays Workato)
  JOB=$(curl -s -X POST {sandbox_url}/_sandbox/jobs -H 'Content-Type: application/json' -d '{{}}')
  TOKEN=$(echo "$JOB" | python3 -c 'import sys,json; print(json.load(sys.stdin)["resume_token"])')
  JOB_ID=$(echo "$JOB" | python3 -c 'import sys,json; print(json.load(sys.stdin)["job_id"])')
  # a key per job, so that the steps can be run again
  KEY="order-$JOB_ID"

  # 2. the connector action registers the wait with the gateway
  curl -s -w '\\n' -X POST {gateway_url}/v1/waits -H 'Authorization: Bearer {DEV_API_KEY}' \\
       -H 'Content-Type: application/json' \\
       -d '{{"key": "'"$KEY"'", "resume_token": "'"$TOKEN"'", "metadata": {{"order": 42}}}}'

  # 3. the third party reports completion
  curl -s -w '\\n' -X POST {gateway_url}/v1/events -H 'Authorization: Bearer {DEV_API_KEY}' \\
       -H 'Content-Type: application/json' \\
       -d '{{"id": "evt-'"$JOB_ID"'", "key": "'"$KEY"'", "status": "succeeded",
           "data": {{"total": 42.50}}}}'

  # 4. the job was resumed, once, with the data
  curl -s -w '\\n' {sandbox_url}/_sandbox/jobs/$JOB_ID
  curl -s -w '\\n' {gateway_url}/v1/waits/$KEY -H 'Authorization: Bearer {DEV_API_KEY}'
{kafka}
Stop with Ctrl-C.
"""
