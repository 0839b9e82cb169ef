"""The Event model: required fields, strict types, UTC timestamps, the wire format."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from agentwatch.schemas import (
    Event,
    EventKind,
    EventStatus,
    EventValidationError,
    decode_event,
    encode_event,
    to_us,
)


def _validate(data: dict[str, Any]) -> Event:
    return Event.model_validate_json(orjson.dumps(data))


def test_minimal_event_gets_documented_defaults(event_data: dict[str, Any]) -> None:
    event = _validate(event_data)
    assert (event.schema_version, event.tenant_id, event.status) == (1, "default",
                                                                     EventStatus.OK)
    assert event.kind is EventKind.LLM_CALL
    assert event.cost_usd is None
    assert event.key == "default/sess-1"


def test_event_with_every_field_validates(full_event_data: dict[str, Any]) -> None:
    event = _validate(full_event_data)
    assert event.status is EventStatus.ERROR
    assert event.attributes == {"region": "eu", "retries": 2, "ratio": 0.5, "cached": True}


@pytest.mark.parametrize("field", ["event_id", "ts", "agent_id", "session_id", "kind"])
def test_required_field_missing_is_rejected(event_data: dict[str, Any], field: str) -> None:
    del event_data[field]
    with pytest.raises(EventValidationError, match=f"field `{field}`: required field is missing"):
        decode_event(event_data)


def test_unknown_kind_is_rejected(event_data: dict[str, Any]) -> None:
    event_data["kind"] = "llm_cal"
    with pytest.raises(EventValidationError, match="field `kind`"):
        decode_event(event_data)


@pytest.mark.parametrize("kind", [k.value for k in EventKind])
def test_every_documented_kind_is_accepted(event_data: dict[str, Any], kind: str) -> None:
    event_data["kind"] = kind
    assert _validate(event_data).kind == kind


@pytest.mark.parametrize(
    "field", ["input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens"])
def test_negative_tokens_are_rejected(event_data: dict[str, Any], field: str) -> None:
    event_data[field] = -5
    with pytest.raises(EventValidationError, match=f"field `{field}`.*got -5"):
        decode_event(event_data)


def test_negative_cost_is_rejected(event_data: dict[str, Any]) -> None:
    event_data["cost_usd"] = -0.01
    with pytest.raises(EventValidationError, match="field `cost_usd`"):
        decode_event(event_data)


def test_non_finite_cost_is_rejected(event_data: dict[str, Any]) -> None:
    raw = orjson.dumps(event_data)[:-1] + b',"cost_usd":Infinity}'
    with pytest.raises(ValidationError):
        Event.model_validate_json(raw)


def test_zero_tokens_and_cost_are_accepted(event_data: dict[str, Any]) -> None:
    event = _validate({**event_data, "input_tokens": 0, "cost_usd": 0})
    assert (event.input_tokens, event.cost_usd) == (0, 0)


def test_naive_timestamp_is_rejected(event_data: dict[str, Any]) -> None:
    event_data["ts"] = "2026-11-20T09:00:01.250000"
    with pytest.raises(EventValidationError, match="field `ts`"):
        decode_event(event_data)


def test_non_utc_offset_is_the_same_instant_and_serialized_in_utc(
    event_data: dict[str, Any],
) -> None:
    event = _validate({**event_data, "ts": "2026-11-20T11:00:01.25+02:00"})
    assert to_us(event.ts) == to_us(datetime(2026, 11, 20, 9, 0, 1, 250_000, tzinfo=UTC))
    assert orjson.loads(encode_event(event))["ts"] == "2026-11-20T09:00:01.250000Z"


def test_timestamp_is_serialized_with_microseconds_and_z(event_data: dict[str, Any]) -> None:
    event = _validate({**event_data, "ts": "2026-11-20T09:00:01Z"})
    assert orjson.loads(encode_event(event))["ts"] == "2026-11-20T09:00:01.000000Z"


def test_timestamp_keeps_microsecond_precision(event_data: dict[str, Any]) -> None:
    event = _validate({**event_data, "ts": "2026-11-20T09:00:01.000007Z"})
    assert orjson.loads(encode_event(event))["ts"] == "2026-11-20T09:00:01.000007Z"


def test_unknown_field_is_rejected(event_data: dict[str, Any]) -> None:
    event_data["input_token"] = 5
    with pytest.raises(EventValidationError, match="field `input_token`: unknown field"):
        decode_event(event_data)


def test_schema_version_2_is_rejected(event_data: dict[str, Any]) -> None:
    event_data["schema_version"] = 2
    with pytest.raises(EventValidationError, match="field `schema_version`"):
        decode_event(event_data)


def test_schema_version_true_is_rejected(event_data: dict[str, Any]) -> None:
    event_data["schema_version"] = True
    with pytest.raises(EventValidationError, match="field `schema_version`"):
        decode_event(event_data)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("input_tokens", "5"),  # no string -> int coercion
        ("input_tokens", 5.0),  # no float -> int coercion
        ("input_tokens", True),  # a bool is not a token count
        ("cost_usd", "0.5"),
        ("agent_id", 5),
        ("attributes", {"nested": {"a": 1}}),
    ],
)
def test_types_are_strict(event_data: dict[str, Any], field: str, value: object) -> None:
    event_data[field] = value
    with pytest.raises(EventValidationError, match=f"field `{field}"):
        decode_event(event_data)


def test_bad_event_id_is_rejected(event_data: dict[str, Any]) -> None:
    event_data["event_id"] = "not-a-uuid"
    with pytest.raises(EventValidationError, match="field `event_id`"):
        decode_event(event_data)


def test_tenant_id_with_slash_is_rejected(event_data: dict[str, Any]) -> None:
    # the Kafka key is "<tenant_id>/<session_id>"
    event_data["tenant_id"] = "a/b"
    with pytest.raises(EventValidationError, match="field `tenant_id`"):
        decode_event(event_data)


def test_empty_session_id_is_rejected(event_data: dict[str, Any]) -> None:
    event_data["session_id"] = ""
    with pytest.raises(EventValidationError, match="field `session_id`"):
        decode_event(event_data)


def test_bad_status_is_rejected(event_data: dict[str, Any]) -> None:
    event_data["status"] = "failed"
    with pytest.raises(EventValidationError, match="field `status`"):
        decode_event(event_data)


def test_decode_event_accepts_bytes_str_and_dict(event_data: dict[str, Any]) -> None:
    raw = orjson.dumps(event_data)
    assert decode_event(raw) == decode_event(raw.decode()) == decode_event(event_data)


def test_validation_error_is_a_value_error(event_data: dict[str, Any]) -> None:
    del event_data["kind"]
    with pytest.raises(ValueError, match="kind"):
        decode_event(event_data)
