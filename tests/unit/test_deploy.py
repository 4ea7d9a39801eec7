"""The files under ``deploy/`` agree with the code and with each other.

No Docker engine runs here, so the files are read, not built: the example config validates
through the real loader, the Dockerfile copies what exists and starts a declared console
script, its healthcheck works against a live ``/healthz``, and the compose file (read with a
small YAML subset parser, no PyYAML) builds that Dockerfile, publishes the configured port and
provides every secret the example config references.
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import tomllib
import typing
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from gateway import __version__
from gateway.cli import _parser
from gateway.config.loader import ENV_PREFIX, load_settings
from gateway.config.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
EXAMPLE = DEPLOY / "gateway.example.toml"
COMPOSE = DEPLOY / "docker-compose.yml"
HEALTHCHECK_TIMEOUT_S = 10


# -- the example configuration -------------------------------------------------------------


def references(scheme: str) -> set[str]:
    """What the example's values point at with ``env:NAME`` or ``file:/path``."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            node = list(node.values())
        if isinstance(node, list):
            for child in node:
                walk(child)
        elif isinstance(node, str) and node.startswith(f"{scheme}:") and "://" not in node:
            # ``file:///…`` is a URL (the blob store), ``file:/…`` a secret reference
            found.add(node.removeprefix(f"{scheme}:"))

    walk(tomllib.loads(EXAMPLE.read_text()))
    return found


def example_settings(tmp: Path) -> tuple[Settings, dict[str, str], set[str]]:
    """The example loaded with every ``env:`` and ``file:`` reference provided.

    Each secret gets a distinct valid AES key as its value, which suits every secret field
    (an API key may belong to one tenant only). Returns the settings, the environment
    given, and the values given by file.
    """
    text = EXAMPLE.read_text()
    environ = {name: _random_key() for name in references("env")}
    files: set[str] = set()
    for i, path in enumerate(sorted(references("file"))):
        value = _random_key()
        provided = tmp / f"secret-{i}"
        provided.write_text(value + "\n")
        text = text.replace(f'"file:{path}"', f'"file:{provided}"')
        files.add(value)
    config = tmp / "gateway.toml"
    config.write_text(text)
    return load_settings(config, environ), environ, files


def _random_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def all_secrets(settings: Settings) -> list[str]:
    found = [k.key.get_secret_value() for k in settings.security.token_keys]
    found += [s.get_secret_value() for s in settings.security.admin_tokens]
    for tenant in settings.tenants:
        found += [s.get_secret_value() for s in (tenant.api_token, tenant.token) if s]
        found += [k.get_secret_value() for k in tenant.api_keys]
    return found


def test_example_config_validates_with_its_secrets_provided(tmp_path: Path) -> None:
    settings, environ, from_files = example_settings(tmp_path)
    from_env = set(environ.values())

    assert settings.env == "prod"
    assert settings.server.host == "0.0.0.0"
    assert Path(settings.store.sqlite_path).is_relative_to("/var/lib/resume-gateway")
    assert settings.security.token_keys, "production needs a token key"
    assert settings.logging.format == "json"
    secrets = all_secrets(settings)
    assert set(secrets) <= from_env | from_files, "a secret is written inline in the example"
    assert from_files & {k.get_secret_value() for t in settings.tenants for k in t.api_keys}
    assert from_env & {k.get_secret_value() for t in settings.tenants for k in t.api_keys}


def test_example_config_has_a_us_token_tenant_and_a_legacy_eu_tenant(tmp_path: Path) -> None:
    settings, environ, _ = example_settings(tmp_path)

    us, eu = settings.tenants
    assert (us.data_center, us.resolved_base_url) == ("us", "https://www.workato.com")
    assert us.api_token is not None
    assert us.api_token.get_secret_value() == environ["WORKATO_API_TOKEN"]
    assert (eu.data_center, eu.api_token) == ("eu", None)
    assert eu.email
    assert eu.token is not None


def test_example_secret_variables_are_not_read_as_overrides() -> None:
    """``RESUME_GATEWAY_*`` variables are overrides; a secret there would break the config."""
    names = references("env")
    assert names
    assert [n for n in names if n.startswith(ENV_PREFIX)] == []


# -- the Dockerfile ------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    logical, pending = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in logical]


def instruction(name: str) -> list[str]:
    return [args for instr, args in dockerfile_instructions() if instr == name]


def final_stage() -> list[tuple[str, str]]:
    steps = dockerfile_instructions()
    last_from = max(i for i, (instr, _) in enumerate(steps) if instr == "FROM")
    return steps[last_from:]


def test_dockerfile_builds_on_python_311_slim() -> None:
    images = [args.split()[0] for args in instruction("FROM")]
    assert images
    assert set(images) == {"python:3.11-slim"}


def test_dockerfile_copies_only_paths_that_exist_in_the_repo() -> None:
    sources = []
    for args in instruction("COPY"):
        words = shlex.split(args)
        if any(w.startswith("--from") for w in words):
            continue  # from an earlier build stage, not from the context
        sources += [w for w in words[:-1] if not w.startswith("--")]
    assert {"pyproject.toml", "README.md", "gateway"} <= set(sources)
    missing = [s for s in sources if not (REPO / s).exists()]
    assert missing == [], "COPY sources missing from the build context (the repo root)"


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = [args.split(":")[0] for instr, args in final_stage() if instr == "USER"]
    assert users, "the runtime stage sets no USER"
    assert users[-1] not in ("root", "0")


def test_entrypoint_is_the_declared_console_script_and_cmd_parses() -> None:
    (entrypoint,) = instruction("ENTRYPOINT")
    (cmd,) = instruction("CMD")
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]

    assert json.loads(entrypoint) == ["resume-gateway"]
    module, _, function = scripts["resume-gateway"].partition(":")
    assert callable(getattr(importlib.import_module(module), function))
    args = _parser().parse_args(json.loads(cmd))
    assert args.config == "/etc/resume-gateway/gateway.toml"


def test_dockerfile_exposes_the_example_port() -> None:
    exposed = {int(port.split("/")[0]) for args in instruction("EXPOSE") for port in args.split()}
    assert tomllib.loads(EXAMPLE.read_text())["server"]["port"] in exposed


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}')

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def healthz_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, name="healthz", daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthcheck_exit_code(command: list[str], port: int) -> int:
    env = {**os.environ, f"{ENV_PREFIX}SERVER__PORT": str(port)}
    assert command[0] == "python", "slim has no curl: the healthcheck must use python"
    result = subprocess.run(
        [sys.executable, *command[1:]],
        capture_output=True,
        timeout=HEALTHCHECK_TIMEOUT_S,
        env=env,
        check=False,
    )
    return result.returncode


def test_healthcheck_passes_on_a_live_healthz_and_fails_without_one(healthz_port: int) -> None:
    (healthcheck,) = instruction("HEALTHCHECK")
    _options, sep, exec_form = healthcheck.partition("CMD ")
    command = json.loads(exec_form)

    assert sep
    assert "/healthz" in exec_form
    assert healthcheck_exit_code(command, healthz_port) == 0
    assert healthcheck_exit_code(command, closed_port()) != 0


# -- the compose file ----------------------------------------------------------------------


class OutsideSubset(ValueError):
    """The compose file uses YAML this parser does not read; keep it simple or add PyYAML."""


def _require(condition: object, message: str) -> None:
    if not condition:
        raise OutsideSubset(message)


def parse_yaml_subset(text: str) -> Any:
    """Block mappings and sequences of scalars; scalars plain, double-quoted, or a flow
    sequence written as JSON. Plain scalars stay strings. Anything else is refused."""
    _require("\t" not in text, "tabs are not YAML indentation")
    lines = [
        (len(line) - len(line.lstrip(" ")), line.strip())
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    node, end = _block(lines, 0, lines[0][0])
    _require(end == len(lines), f"unexpected indentation at {lines[min(end, len(lines) - 1)]}")
    return node


def _block(lines: list[tuple[int, str]], at: int, indent: int) -> tuple[Any, int]:
    if lines[at][1].startswith("- "):
        items = []
        while at < len(lines) and lines[at][0] == indent and lines[at][1].startswith("- "):
            items.append(_scalar(lines[at][1][2:]))
            at += 1
        return items, at
    mapping: dict[str, Any] = {}
    while at < len(lines) and lines[at][0] == indent:
        key, sep, rest = lines[at][1].partition(":")
        _require(sep and re.fullmatch(r"[A-Za-z0-9_.-]+", key), f"not a key: {lines[at]}")
        _require(key not in mapping, f"duplicate key {key}")
        _require(rest == "" or rest.startswith(" "), f"no space after the colon: {lines[at]}")
        at += 1
        if rest.strip():
            mapping[key] = _scalar(rest.strip())
        elif at < len(lines) and lines[at][0] > indent:
            mapping[key], at = _block(lines, at, lines[at][0])
        else:
            mapping[key] = None
    return mapping, at


def _scalar(text: str) -> Any:
    if text[:1] in ('"', "["):
        value, end = json.JSONDecoder().raw_decode(text)
        rest = text[end:].strip()
        _require(rest == "" or rest.startswith("#"), f"text after a quoted scalar: {text}")
        return value
    _require(text[:1] not in ("'", "{", "&", "*", "|", ">", "!"), f"outside the subset: {text}")
    return text.split(" #", 1)[0].strip()


def compose_gateway() -> tuple[dict[str, Any], dict[str, Any]]:
    compose = parse_yaml_subset(COMPOSE.read_text())
    return compose, compose["services"]["gateway"]


def test_yaml_subset_parser_reads_nested_blocks_and_refuses_the_rest() -> None:
    parsed = parse_yaml_subset('a:\n  b: "x: y"  # c\n  c:\n    - 1\n    - ["p", "q"]\nd:\n')
    assert parsed == {"a": {"b": "x: y", "c": ["1", ["p", "q"]]}, "d": None}
    with pytest.raises(OutsideSubset, match="outside the subset"):
        parse_yaml_subset("a: &anchor 1\n")
    with pytest.raises(OutsideSubset, match="duplicate key"):
        parse_yaml_subset("a: 1\na: 2\n")


def test_compose_builds_the_dockerfile_from_the_repo_root() -> None:
    _compose, gateway = compose_gateway()
    build = gateway["build"]

    assert (DEPLOY / build["context"]).resolve() == REPO
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


def test_compose_publishes_the_example_port_and_checks_its_health() -> None:
    _compose, gateway = compose_gateway()
    port = tomllib.loads(EXAMPLE.read_text())["server"]["port"]
    healthcheck = gateway["healthcheck"]["test"]

    assert any(mapping.split(":")[-1] == str(port) for mapping in gateway["ports"])
    assert healthcheck[:2] == ["CMD", "python"]
    assert f"127.0.0.1:{port}/healthz" in healthcheck[-1]
    compile(healthcheck[-1], "compose healthcheck", "exec")


def test_compose_mounts_the_config_where_cmd_reads_it_and_a_volume_for_data() -> None:
    compose, gateway = compose_gateway()
    sources_by_target = {}
    for mount in gateway["volumes"]:
        source, target = mount.split(":")[:2]
        sources_by_target[target] = source
    (cmd,) = instruction("CMD")
    store = tomllib.loads(EXAMPLE.read_text())["store"]["url"].removeprefix("sqlite:///")

    config_target = json.loads(cmd)[-1]
    assert config_target in sources_by_target
    data_volume = sources_by_target[str(Path(store).parent)]
    assert data_volume in compose["volumes"], "data must live on a named volume"


def test_compose_provides_every_secret_the_example_references() -> None:
    compose, gateway = compose_gateway()
    secret_files = {f"/run/secrets/{name}" for name in gateway["secrets"]}

    assert references("env") <= set(gateway["environment"])
    assert references("file") <= secret_files
    assert set(gateway["secrets"]) <= set(compose["secrets"])
    assert not [v for v in gateway["environment"].values() if not v.startswith("${")], (
        "compose must pass secrets from its environment, not hold them"
    )


def test_the_compose_image_is_tagged_with_the_version() -> None:
    """It said 0.1.0 at 0.2.8."""
    compose = (DEPLOY / "docker-compose.yml").read_text()
    assert f"image: resume-gateway:{__version__}\n" in compose


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


HEADER = re.compile(r"^#? ?\[\[?([a-z_.]+)\]\]?\s*$", re.M)


def _sections(text: str) -> dict[str, str]:
    """The example's text under each table header, set or commented (``""``: before any)."""
    sections: dict[str, str] = {}
    names = ["", *HEADER.findall(text)]
    for name, body in zip(names, HEADER.split(text)[::2], strict=True):
        sections[name] = sections.get(name, "") + body
    return sections


def test_the_example_names_every_option() -> None:
    """The README calls the example complete, every option commented: it lacked the Kafka,
    polling, connection and S3 options, and a dozen more. Each option appears as a key, set
    or in a commented line, in its own table (or inline in its parent's), and each table has
    a header."""
    sections = _sections(EXAMPLE.read_text())
    missing: list[str] = []
    seen: set[type[BaseModel]] = set()

    def walk(model: type[BaseModel], path: str, text: str) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, field in model.model_fields.items():
            nested = _models_in(field.annotation)
            own = f"{path}.{name}".lstrip(".")
            inline = re.search(rf"(^|[\s{{,#]){name} = ", text, re.M)
            if own not in sections and not inline:
                missing.append(own)
            for child in nested:
                walk(child, own, sections.get(own, text))

    walk(Settings, "", sections[""])
    assert missing == []
