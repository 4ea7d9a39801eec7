"""Shared fixtures: settings factories, a Workato sandbox over real HTTP, a running gateway."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.app import Gateway
from gateway.config.loader import settings_from_dict
from gateway.config.settings import Settings
from gateway.sandbox.server import SandboxServer
from gateway.sandbox.workato import create_app
from gateway.sandbox.workato_state import WorkatoSandbox, WorkatoSandboxSettings

API_KEY = "test-api-key-0123456789"
WORKATO_TOKEN = "test-workato-token-abcdef"
TOKEN_KEY = base64.b64encode(bytes(range(32))).decode()

SettingsFactory = Callable[..., Settings]


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def base_config(db_path: Path, workato_url: str, **tenant: Any) -> dict[str, Any]:
    return {
        "server": {"port": 0},
        "store": {"url": f"sqlite:///{db_path}"},
        "ingest": {"spool_dir": str(db_path.parent / "spool")},
        "blobs": {"url": f"file:///{db_path.parent / 'blobs'}"},
        "delivery": {
            "poll_interval_s": 0.05,
            "sweep_interval_s": 0.2,
            "request_timeout_s": 2.0,
            "lease_s": 3.0,
            "backoff_base_s": 0.05,
            "backoff_cap_s": 0.2,
        },
        "security": {"token_keys": [{"id": "k1", "key": TOKEN_KEY}]},
        "logging": {"format": "json", "level": "info"},
        "tenants": [
            {
                "name": "acme",
                "base_url": workato_url,
                "api_token": WORKATO_TOKEN,
                "api_keys": [API_KEY],
                **tenant,
            }
        ],
    }


@pytest.fixture
def workato() -> WorkatoSandbox:
    return WorkatoSandbox(WorkatoSandboxSettings(api_tokens=[WORKATO_TOKEN]))


@pytest.fixture
async def workato_url(workato: WorkatoSandbox) -> AsyncIterator[str]:
    async with SandboxServer(create_app(workato)) as server:
        yield server.url


@pytest.fixture
def make_settings(tmp_path: Path, workato_url: str) -> SettingsFactory:
    def factory(extra: dict[str, Any] | None = None, **tenant: Any) -> Settings:
        config = deep_merge(
            base_config(tmp_path / "gateway.db", workato_url, **tenant), extra or {}
        )
        return settings_from_dict(config, os.environ)

    return factory


class RunningGateway:
    """A started gateway plus an HTTP client that speaks to it with the tenant's API key."""

    def __init__(self, gateway: Gateway, session: aiohttp.ClientSession) -> None:
        self.gateway = gateway
        self.http = session
        self.url = f"http://127.0.0.1:{gateway.port}"
        self.auth = {"Authorization": f"Bearer {API_KEY}"}

    async def post(self, path: str, body: Any, **kw: Any) -> tuple[int, Any]:
        async with self.http.post(self.url + path, json=body, headers=self.auth, **kw) as resp:
            return resp.status, await resp.json(content_type=None)

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.http.get(self.url + path, headers=self.auth) as resp:
            return resp.status, await resp.json(content_type=None)

    async def delete(self, path: str) -> tuple[int, Any]:
        async with self.http.delete(self.url + path, headers=self.auth) as resp:
            return resp.status, await resp.json(content_type=None)


@pytest.fixture
async def start_gateway() -> AsyncIterator[Callable[[Settings], Any]]:
    started: list[RunningGateway] = []

    async def start(settings: Settings) -> RunningGateway:
        gateway = Gateway(settings)
        await gateway.start()
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        running = RunningGateway(gateway, session)
        started.append(running)
        return running

    yield start
    for running in started:
        await running.http.close()
        await running.gateway.stop()
