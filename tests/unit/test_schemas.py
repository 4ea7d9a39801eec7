"""The published schemas in ``schemas/`` must be exactly what the models generate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from gateway.messages import CompletionEvent, WaitRegistration
from gateway.schemas import check_schemas, rendered, write_schemas

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def test_committed_schemas_match_the_models() -> None:
    assert check_schemas(SCHEMAS) == [], "run `make schemas` and commit the result"


def test_a_drifted_or_missing_file_is_reported(tmp_path: Path) -> None:
    shutil.copytree(SCHEMAS, tmp_path / "s")
    (tmp_path / "s" / "completion-event.schema.json").write_text("{}\n")
    (tmp_path / "s" / "openapi.json").unlink()
    assert sorted(check_schemas(tmp_path / "s")) == ["completion-event.schema.json", "openapi.json"]


def test_write_then_check_round_trips(tmp_path: Path) -> None:
    write_schemas(tmp_path)
    assert check_schemas(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(rendered())


def test_schemas_describe_the_models_fields() -> None:
    event = json.loads((SCHEMAS / "completion-event.schema.json").read_text())
    assert set(event["properties"]) == set(CompletionEvent.model_fields)
    assert set(event["required"]) == {"id", "key", "status"}
    assert event["properties"]["status"]["enum"] == ["succeeded", "failed"]
    wait = json.loads((SCHEMAS / "wait-registration.schema.json").read_text())
    assert set(wait["properties"]) == set(WaitRegistration.model_fields)


def test_openapi_lists_every_public_route() -> None:
    doc = json.loads((SCHEMAS / "openapi.json").read_text())
    assert {"/v1/waits", "/v1/waits/{key}", "/v1/events", "/healthz", "/readyz"} <= set(
        doc["paths"]
    )
    assert doc["paths"]["/v1/waits"]["post"]["requestBody"]["content"]["application/json"] == {
        "schema": {"$ref": "#/components/schemas/WaitRegistration"}
    }
