"""The published JSON Schemas (DESIGN 5.5), generated from the pydantic message models."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.http.openapi import openapi_document
from gateway.messages import PUBLISHED


def rendered() -> dict[str, str]:
    """File name → file content, exactly as committed under ``schemas/``."""
    out = {}
    for name, model in PUBLISHED.items():
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://resume-gateway.dev/schemas/{name}.schema.json",
            **model.model_json_schema(),
        }
        out[f"{name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    out["openapi.json"] = json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"
    return out


def write_schemas(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered().items():
        (folder / name).write_text(text)
        written.append(folder / name)
    return written


def check_schemas(folder: Path) -> list[str]:
    """Names of schema files that are missing or differ from the models."""
    drift = []
    for name, text in rendered().items():
        path = folder / name
        if not path.exists() or path.read_text() != text:
            drift.append(name)
    return drift
