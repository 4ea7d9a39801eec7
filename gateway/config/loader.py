"""Reads the TOML file and the ``RESUME_GATEWAY_...`` environment: the only reader of either."""

from __future__ import annotations

import itertools
import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.config.settings import Settings
from gateway.errors import ConfigError

ENV_PREFIX = "RESUME_GATEWAY_"
ENV_SEPARATOR = "__"
_DIGITS = re.compile(r"[0-9]+")  # str.isdigit() also takes "²", which int() refuses
_VARIANTS = frozenset({"standard_webhooks", "hmac_sha256", "bearer", "none", "alteryx", "pixxel"})
_NAMED_BY_MESSAGE = re.compile(
    r"Value error, (?P<field>[a-z_]+(\.[a-z0-9_]+)+): (?P<message>.*)", re.S
)
_SERVICE_PORT = re.compile(r"([A-Z0-9_]+_)?PORT")
_SERVICE_URL = re.compile(r"(tcp|udp|sctp)://")
_SERVICE_LINK = re.compile(
    r"([A-Z0-9_]+_)?(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT_[0-9]+_(TCP|UDP|SCTP)"
    r"(_(PROTO|PORT|ADDR))?)"
)
"""What Kubernetes sets in every pod of the namespace for a Service named ``resume-gateway``
or ``resume-gateway-<anything>`` (``RESUME_GATEWAY_SERVICE_HOST``,
``RESUME_GATEWAY_HEADLESS_PORT=tcp://…``): not overrides. A bare ``…_PORT`` is one only with
such a value: ``RESUME_GATEWAY_SERVER_PORT=9000`` is a mistyped override, and refused."""


def load_settings(path: Path | None, environ: Mapping[str, str]) -> Settings:
    """Validated settings from ``path`` (optional) overlaid with environment overrides."""
    data = _read_toml(path) if path is not None else {}
    overrides = [name for name in environ if _is_override(name, environ[name])]
    notes: dict[str, str] = {}
    for name in sorted(overrides, key=lambda n: (_path_order(n), n)):  # __2 before __10
        if note := _apply_override(data, name, environ[name]):
            notes[name] = note
    try:
        return Settings.model_validate(data, context={"environ": environ})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, _sources(overrides, notes))) from None


def _is_override(name: str, value: str) -> bool:
    if not name.startswith(ENV_PREFIX) or name == f"{ENV_PREFIX}CONFIG":
        return False
    rest = name[len(ENV_PREFIX) :]
    if _SERVICE_PORT.fullmatch(rest) and _SERVICE_URL.match(value):
        return False
    return not _SERVICE_LINK.fullmatch(rest)


def _path_of(name: str) -> tuple[str, ...]:
    return tuple(p.lower() for p in name[len(ENV_PREFIX) :].split(ENV_SEPARATOR))


def _sources(overrides: list[str], notes: dict[str, str]) -> dict[tuple[str, ...], str]:
    """What an error at a path says of the variable that set it (the file may say another
    value there)."""
    return {
        _path_of(name): f"set by {name}" + (f"; {notes[name]}" if name in notes else "")
        for name in overrides
    }


def _path_order(name: str) -> list[tuple[int, int, str]]:
    """Sorts names by their path, list indexes as numbers: each list grows in order."""
    return [
        (0, int(part), "") if _DIGITS.fullmatch(part) else (1, 0, part)
        for part in name[len(ENV_PREFIX) :].lower().split(ENV_SEPARATOR)
    ]


def settings_from_dict(data: dict[str, Any], environ: Mapping[str, str]) -> Settings:
    try:
        return Settings.model_validate(data, context={"environ": environ})
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _apply_override(data: dict[str, Any], name: str, raw: str) -> str | None:
    """``RESUME_GATEWAY_TENANTS__0__API_TOKEN=x`` sets ``data["tenants"][0]["api_token"]``.
    Every name is lowercased: a table whose keys are data (a ``status_map``) is set whole,
    as JSON, to keep their case. Returns a note if the value looked like JSON but is not."""
    path = _path_of(name)
    node: Any = data
    for part, following in itertools.pairwise(path):
        node = _child(node, part, following, name)
    value, note = _parse_value(raw)
    _assign(node, path[-1], value, name)
    return note


def _child(node: Any, part: str, following: str, name: str) -> Any:
    _require_container(node, name)
    fresh: Any = [] if _DIGITS.fullmatch(following) else {}
    if isinstance(node, list):
        index = _index(node, part, name)
        if index == len(node):
            node.append(fresh)
        return node[index]
    return node.setdefault(part, fresh)


def _assign(node: Any, part: str, value: Any, name: str) -> None:
    _require_container(node, name)
    if isinstance(node, list):
        index = _index(node, part, name)
        if index == len(node):
            node.append(value)
        else:
            node[index] = value
    else:
        node[part] = value


def _require_container(node: Any, name: str) -> None:
    # e.g. RESUME_GATEWAY_SERVER=x together with RESUME_GATEWAY_SERVER__PORT=1
    if not isinstance(node, dict | list):
        raise ConfigError(f"{name}: its parent is a plain value, not a table or list")


def _index(node: list[Any], part: str, name: str) -> int:
    if not _DIGITS.fullmatch(part) or int(part) > len(node):
        raise ConfigError(f"{name}: list index {part!r} is out of range")
    return int(part)


def _parse_value(raw: str) -> tuple[Any, str | None]:
    """JSON lists, objects and booleans are understood; everything else stays a string (with
    a note when it began like JSON: "should be a valid list" alone hides a missing bracket)."""
    if raw.startswith(("[", "{")) or raw in ("true", "false"):
        try:
            return json.loads(raw), None
        except json.JSONDecodeError as exc:  # the message names a position, never the value
            return raw, f"not valid JSON ({exc.msg} at character {exc.pos})"
    return raw, None


def _describe(exc: ValidationError, sources: Mapping[tuple[str, ...], str] | None = None) -> str:
    lines = ["invalid configuration:"]
    for error in exc.errors():
        # a tagged union names its variant in the location, where no variable does
        loc = tuple(str(p).lower() for p in error["loc"] if p not in _VARIANTS)
        field = ".".join(str(p) for p in error["loc"]) or "(top level)"
        message = error["msg"]
        named = _NAMED_BY_MESSAGE.fullmatch(message) if not loc else None
        if named:  # a check across sections names the field itself: shown as any other
            field, message = named["field"], named["message"]
            loc = tuple(field.lower().split("."))
        line = f"  {field}: {message}"
        set_by = [
            said
            for path, said in (sources or {}).items()
            if path[: len(loc)] == loc or loc[: len(path)] == path  # in it, or it in one
        ]
        if loc and set_by:  # the environment's value, not the file's, is what failed
            line += f" ({'; '.join(set_by)})"
        lines.append(line)
    return "\n".join(lines)
