"""Acceptance tests of the ``resume-gateway`` command line, each call a subprocess with a timeout.

``check-config`` prints the effective settings with every secret masked and names the field
of an invalid file (exit 2); environment overrides win over the file; ``migrate`` creates the
schema once; ``run`` refuses to start without token keys and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from gateway.store.sqlfiles import load_migrations
from tests.e2e.conftest import Process, free_port, wait_http

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

CLI_TIMEOUT_S = 20
ENV_PREFIX = "RESUME_GATEWAY_"
MASK = "**********"
TOKEN_KEY = base64.b64encode(b"k" * 32).decode()
ENV_TOKEN = "workato-token-from-env-5f1c9e"
FILE_KEY = "connector-key-from-file-8d2a71"
LEGACY_TOKEN = "legacy-user-token-c0ffee42"
ADMIN_TOKEN = "admin-token-inline-77aa31"
SECRETS = [TOKEN_KEY, ENV_TOKEN, FILE_KEY, LEGACY_TOKEN, ADMIN_TOKEN]
SECURITY = f"""
[security]
token_keys = [{{ id = "k1", key = "{TOKEN_KEY}" }}]
admin_tokens = ["{ADMIN_TOKEN}"]
"""
LEGACY_TENANT = f"""
[[tenants]]
name = "own-url"
base_url = "https://workato.internal.example/"
email = "ops@example.com"
token = "{LEGACY_TOKEN}"
"""


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Overrides in the developer's shell must not change what these tests see."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def cli(
    *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        check=False,
    )


def write(tmp: Path, text: str, name: str = "gateway.toml") -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def valid_config(tmp: Path) -> Path:
    key_file = write(tmp, FILE_KEY + "\n", "connector.key")
    return write(
        tmp,
        f"""
[server]
port = 8090

[store]
url = "sqlite:///{tmp / "data" / "gateway.db"}"
{SECURITY}
[[tenants]]
name = "eu-api"
data_center = "eu"
api_token = "env:RG_TEST_WORKATO_TOKEN"
api_keys = ["file:{key_file}"]
{LEGACY_TENANT}""",
    )


def effective_settings(stdout: str) -> Any:
    """The JSON document ``check-config`` prints after its summary."""
    _head, sep, body = stdout.partition("effective settings (secrets masked):")
    assert sep, stdout
    return json.loads(body)


# -- check-config --------------------------------------------------------------------------


def test_check_config_prints_effective_settings_with_every_secret_masked(tmp_path: Path) -> None:
    result = cli(
        "check-config", str(valid_config(tmp_path)), env={"RG_TEST_WORKATO_TOKEN": ENV_TOKEN}
    )

    assert result.returncode == 0, result.stderr
    assert "configuration is valid." in result.stdout
    assert "POST https://app.eu.workato.com/api/job/resume with api token" in result.stdout
    assert "POST https://workato.internal.example/api/job/resume with legacy" in result.stdout
    assert "claim checks   blobs in file:///.data/blobs, URLs under http://" in result.stdout
    leaked = [s for s in SECRETS if s in result.stdout or s in result.stderr]
    assert leaked == [], "secret values were printed"
    settings = effective_settings(result.stdout)
    eu, legacy = settings["tenants"]
    assert (eu["data_center"], eu["api_token"], eu["api_keys"]) == ("eu", MASK, [MASK])
    assert (legacy["email"], legacy["token"]) == ("ops@example.com", MASK)
    security = settings["security"]
    assert security == {
        "token_keys": [{"id": "k1", "key": MASK}],
        "admin_tokens": [MASK],
        "url_keys": [],
    }


INVALID = {
    "wrong type": (f'[server]\nport = "x"\n{SECURITY}', ["server.port", "integer"]),
    "unknown field": (f"[server]\nprot = 8080\n{SECURITY}", ["server.prot", "not permitted"]),
    "no token keys in prod": (LEGACY_TENANT, ["security.token_keys", "outside dev"]),
    "base_url and data_center": (
        f'{SECURITY}\n[[tenants]]\nname = "both"\nbase_url = "https://x.example"\n'
        f'data_center = "eu"\napi_token = "{ENV_TOKEN}"\n',
        ["tenants.0", "base_url", "data_center"],
    ),
    "env var not set": (
        f'{SECURITY}\n[[tenants]]\nname = "t"\ndata_center = "us"\n'
        f'api_token = "env:RG_TEST_NEVER_SET"\napi_keys = ["{FILE_KEY}"]\n',
        ["tenants.0.api_token", "RG_TEST_NEVER_SET", "not set"],
    ),
}


@pytest.mark.parametrize(("text", "names"), INVALID.values(), ids=INVALID.keys())
def test_check_config_rejects_invalid_file_naming_the_field(
    tmp_path: Path, text: str, names: list[str]
) -> None:
    result = cli("check-config", str(write(tmp_path, text)))

    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.startswith("error: invalid configuration:"), result.stderr
    missing = [name for name in names if name not in result.stderr]
    assert missing == [], result.stderr
    assert "Traceback" not in result.stderr
    assert [s for s in SECRETS if s in result.stderr] == [], "an error quoted a secret"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    config = valid_config(tmp_path)
    env = {"RG_TEST_WORKATO_TOKEN": ENV_TOKEN, "RESUME_GATEWAY_SERVER__PORT": "9999"}

    result = cli("check-config", str(config), env=env)

    assert result.returncode == 0, result.stderr
    assert "listen on      http://127.0.0.1:9999 (env: prod)" in result.stdout
    assert effective_settings(result.stdout)["server"]["port"] == 9999


def test_check_config_without_a_file_checks_the_one_run_would_read(tmp_path: Path) -> None:
    """``$RESUME_GATEWAY_CONFIG``, as for ``run``: it checked defaults and the environment, and
    called valid a file that ``run`` refused."""
    bad = write(tmp_path, f'{SECURITY}\n[server]\nport = "notaport"\n', name="bad.toml")

    result = cli("check-config", env={"RESUME_GATEWAY_CONFIG": str(bad)})

    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "server.port" in result.stderr


# -- migrate -------------------------------------------------------------------------------


def test_migrate_creates_the_database_then_is_up_to_date(tmp_path: Path) -> None:
    db = tmp_path / "not-yet" / "gateway.db"
    config = write(tmp_path, f'[store]\nurl = "sqlite:///{db}"\n{SECURITY}')
    versions = [version for version, _ in load_migrations("sqlite")]

    first = cli("migrate", "--config", str(config))
    second = cli("migrate", "--config", str(config))

    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"applied migrations: {versions}"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        stored = [row[0] for row in conn.execute("SELECT version FROM schema_version ORDER BY 1")]
    assert stored == versions
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "applied migrations: none (up to date)"


# -- run -----------------------------------------------------------------------------------


def test_run_refuses_to_start_without_token_keys_in_prod(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        f'[server]\nport = {free_port()}\n[store]\nurl = "sqlite:///{tmp_path / "g.db"}"\n',
    )

    result = cli("run", "--config", str(config))

    assert result.returncode == 2
    assert "security.token_keys is required outside dev" in result.stderr
    assert "gateway.started" not in result.stderr + result.stdout
    assert not (tmp_path / "g.db").exists(), "nothing was opened before validation"


def test_run_in_dev_without_token_keys_is_refused_as_check_config_says(tmp_path: Path) -> None:
    """check-config called it valid ('dev: generated'), and run failed with a bare message."""
    store = f'[store]\nurl = "sqlite:///{tmp_path / "g.db"}"\n'
    config = write(tmp_path, f'env = "dev"\n[server]\nport = {free_port()}\n{store}')

    checked = cli("check-config", str(config))
    result = cli("run", "--config", str(config))

    assert "none: `run` needs one" in checked.stdout
    assert result.returncode == 2
    assert "security.token_keys: `run` needs at least one" in result.stderr


def test_check_config_says_when_there_is_no_file(tmp_path: Path) -> None:
    """Without gateway.toml it checks the defaults and the environment, and now says so."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESUME_GATEWAY_")}
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config"],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        env=env | {"RESUME_GATEWAY_ENV": "dev", "PYTHONPATH": str(Path.cwd())},
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("(no gateway.toml: the defaults and the environment only)")
    assert effective_settings(result.stdout)["env"] == "dev"


def test_run_on_a_taken_port_says_so_without_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        store = f'[store]\nurl = "sqlite:///{tmp_path / "g.db"}"\n'
        config = write(tmp_path, f'[server]\nhost = "127.0.0.1"\nport = {port}\n{store}{SECURITY}')

        result = cli("run", "--config", str(config))

    assert result.returncode == 1, result.stderr
    assert f"error: cannot listen on 127.0.0.1:{port}: address already in use" in result.stderr
    assert "Traceback" not in result.stderr
    # known before anything started: the store was opened, and deliveries claimed, first
    assert not (tmp_path / "g.db").exists()


def test_run_stops_gracefully_on_sigterm(tmp_path: Path, processes: list[Process]) -> None:
    port = free_port()
    config = write(
        tmp_path,
        f'[server]\nport = {port}\n[store]\nurl = "sqlite:///{tmp_path / "g.db"}"\n'
        f'[logging]\nformat = "json"\n{SECURITY}{LEGACY_TENANT}',
    )
    gateway = Process(["run", "--config", str(config)], tmp_path / "run.log")
    processes.append(gateway)
    wait_http(f"http://127.0.0.1:{port}/healthz")

    assert gateway.terminate() == 0, gateway.log_path.read_text()
    lines = gateway.log_path.read_text().splitlines()
    events = [json.loads(line)["event"] for line in lines]
    assert events[0] == "gateway.started"
    assert events[-1] == "gateway.stopped"
    assert [s for s in SECRETS if any(s in line for line in lines)] == []
