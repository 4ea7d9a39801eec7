"""SQL is data: migrations and named queries live in ``sql/<dialect>/`` and load once."""

from __future__ import annotations

import re
from importlib import resources

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.M)
_MIGRATION = re.compile(r"^(\d{4})_\w+\.sql$")


def load_queries(dialect: str) -> dict[str, str]:
    """``-- name: x`` blocks of ``queries.sql`` → {x: sql}."""
    text = (resources.files("gateway.store") / "sql" / dialect / "queries.sql").read_text()
    parts = _NAME.split(text)[1:]
    return {name: sql.strip() for name, sql in zip(parts[::2], parts[1::2], strict=True)}


def load_migrations(dialect: str) -> list[tuple[int, str]]:
    """Numbered migration scripts in ascending order."""
    folder = resources.files("gateway.store") / "sql" / dialect
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text()))
    return sorted(found)
