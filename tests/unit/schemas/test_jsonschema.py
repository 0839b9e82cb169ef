"""The committed JSON Schema files match the models; events validate against them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from agentwatch.schemas import SCHEMA_NAMES, json_schema, json_schema_bytes

SCHEMA_DIR = Path(__file__).resolve().parents[3] / "schemas" / "json"


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_committed_schema_file_equals_generated_bytes(name: str) -> None:
    assert (SCHEMA_DIR / f"{name}.schema.json").read_bytes() == json_schema_bytes(name)


def test_every_schema_name_has_a_committed_file() -> None:
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.schema.json")) == sorted(
        f"{name}.schema.json" for name in SCHEMA_NAMES)


def test_schema_declares_draft_2020_12_and_id() -> None:
    schema = json_schema("event")
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == "https://agentwatch.dev/schemas/event.v1.json"


def test_event_schema_lists_the_required_fields() -> None:
    assert sorted(json_schema("event")["required"]) == sorted(
        ["event_id", "ts", "agent_id", "session_id", "kind"])


def test_unknown_schema_name_is_value_error() -> None:
    with pytest.raises(ValueError, match="unknown schema"):
        json_schema("metric")


def test_valid_event_validates_against_json_schema(full_event_data: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = orjson.loads((SCHEMA_DIR / "event.schema.json").read_bytes())
    jsonschema.Draft202012Validator(schema).validate(full_event_data)


def test_invalid_event_fails_json_schema(event_data: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = orjson.loads((SCHEMA_DIR / "event.schema.json").read_bytes())
    assert not jsonschema.Draft202012Validator(schema).is_valid({**event_data, "extra": 1})
