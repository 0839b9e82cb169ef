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


def test_a_delivery_failure_round_trips_and_validates_against_its_schema() -> None:
    """The dead-letter record the alert service writes and the sink reads: one contract,
    in schemas, with a committed JSON Schema."""
    jsonschema = pytest.importorskip("jsonschema")
    from datetime import UTC, datetime  # noqa: PLC0415

    from agentwatch.schemas import (  # noqa: PLC0415
        FAILED_PREFIX,
        Alert,
        AlertScope,
        AlertState,
        AlertType,
        DeliveryFailure,
        Severity,
    )

    alert = Alert(alert_id="a-1", rule="session_cost", type=AlertType.COST,
                  state=AlertState.FIRING, severity=Severity.WARNING,
                  scope=AlertScope.SESSION, key="s-1", tenant_id="t", agent_id="ag",
                  session_id="s-1",
                  value=2.0, threshold=1.0, window_s=60,
                  ts=datetime(2026, 12, 4, 9, 0, tzinfo=UTC), reason="over")
    failure = DeliveryFailure(alert=alert, endpoint="ops", delivery_id="d-1", attempts=3,
                              status_code=503, error="HTTP 503")
    raw = failure.encode()
    assert DeliveryFailure.decode(raw) == failure
    assert failure.delivery_status == f"{FAILED_PREFIX}ops"
    schema = orjson.loads((SCHEMA_DIR / "delivery_failure.schema.json").read_bytes())
    validator = jsonschema.Draft202012Validator(schema)
    validator.validate(orjson.loads(raw))
    assert not validator.is_valid({**orjson.loads(raw), "attempts": 0})
