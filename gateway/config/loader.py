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


def load_settings(path: Path | None, environ: Mapping[str, str]) -> Settings:
    """Validated settings from ``path`` (optional) overlaid with environment overrides."""
    data = _read_toml(path) if path is not None else {}
    overrides = [n for n in environ if n.startswith(ENV_PREFIX) and n != f"{ENV_PREFIX}CONFIG"]
    for name in sorted(overrides, key=lambda n: (_path_order(n), n)):  # __2 before __10
        _apply_override(data, name, environ[name])
    return settings_from_dict(data, environ)


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


def _apply_override(data: dict[str, Any], name: str, raw: str) -> None:
    """``RESUME_GATEWAY_TENANTS__0__API_TOKEN=x`` sets ``data["tenants"][0]["api_token"]``.
    Every name is lowercased: a table whose keys are data (a ``status_map``) is set whole,
    as JSON, to keep their case."""
    path = [p.lower() for p in name[len(ENV_PREFIX) :].split(ENV_SEPARATOR)]
    node: Any = data
    for part, following in itertools.pairwise(path):
        node = _child(node, part, following, name)
    _assign(node, path[-1], _parse_value(raw), name)


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


def _parse_value(raw: str) -> Any:
    """JSON lists, objects and booleans are understood; everything else stays a string."""
    if raw[:1] in "[{" or raw in ("true", "false"):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw


def _describe(exc: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "(top level)"
        lines.append(f"  {field}: {error['msg']}")
    return "\n".join(lines)
