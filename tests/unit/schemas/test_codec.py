"""decode_record / encode_*: single and packed records, bad input as data, round trips."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from agentwatch.schemas import (
    Alert,
    AlertScope,
    AlertState,
    AlertType,
    Event,
    Severity,
    decode_record,
    encode_alert,
    encode_event,
    encode_events,
)


def _with_id(data: dict[str, Any], n: int) -> dict[str, Any]:
    return {**data, "event_id": f"00000000-0000-0000-0000-{n:012d}"}


# -- decode_record ----------------------------------------------------------------------------
def test_single_object_record_decodes_one_event(event_data: dict[str, Any]) -> None:
    record = decode_record(orjson.dumps(event_data))
    assert [e.event_id for e in record.events] == [event_data["event_id"]]
    assert record.rejected == []


def test_packed_array_decodes_every_event_in_order(event_data: dict[str, Any]) -> None:
    items = [_with_id(event_data, i) for i in range(3)]
    record = decode_record(orjson.dumps(items))
    assert [e.event_id for e in record.events] == [i["event_id"] for i in items]
    assert record.rejected == []


def test_packed_array_with_leading_whitespace_decodes(event_data: dict[str, Any]) -> None:
    record = decode_record(b"  \n" + orjson.dumps([event_data]))
    assert len(record.events) == 1


def test_bad_items_are_rejected_with_index_and_good_ones_kept(
    event_data: dict[str, Any],
) -> None:
    items = [
        _with_id(event_data, 0),
        {**_with_id(event_data, 1), "input_tokens": -5},
        _with_id(event_data, 2),
        {**_with_id(event_data, 3), "kind": "nope"},
    ]
    record = decode_record(orjson.dumps(items))
    assert [e.event_id for e in record.events] == [items[0]["event_id"], items[2]["event_id"]]
    assert [r.index for r in record.rejected] == [1, 3]
    assert "field `input_tokens`" in record.rejected[0].reason
    assert "field `kind`" in record.rejected[1].reason
    assert orjson.loads(record.rejected[0].raw) == items[1]


def test_non_object_items_are_rejected(event_data: dict[str, Any]) -> None:
    record = decode_record(orjson.dumps([1, event_data, "x"]))
    assert len(record.events) == 1
    assert [(r.index, r.reason) for r in record.rejected] == [
        (0, "item 0 is int, not an object"), (2, "item 2 is str, not an object")]


def test_empty_array_is_rejected() -> None:
    record = decode_record(b"[]")
    assert record.events == []
    (rejected,) = record.rejected
    assert "empty array" in rejected.reason


@pytest.mark.parametrize("value", [b'{"event_id": ', b'[{"event_id": 1', b"", b"\xff\xfe"])
def test_malformed_json_is_rejected_not_raised(value: bytes) -> None:
    record = decode_record(value)
    assert record.events == []
    (rejected,) = record.rejected
    assert rejected.reason.startswith("malformed JSON")
    assert rejected.raw == value


@pytest.mark.parametrize("value", [b"42", b'"event"', b"null"])
def test_non_object_record_is_rejected(value: bytes) -> None:
    (rejected,) = decode_record(value).rejected
    assert rejected.reason == "not a JSON object"


def test_invalid_single_object_names_the_field(event_data: dict[str, Any]) -> None:
    del event_data["session_id"]
    (rejected,) = decode_record(orjson.dumps(event_data)).rejected
    assert rejected.index is None
    assert rejected.reason == "field `session_id`: required field is missing"


def test_reason_lists_several_problems(event_data: dict[str, Any]) -> None:
    record = decode_record(orjson.dumps({**event_data, "input_tokens": -1, "extra": 1}))
    reason = record.rejected[0].reason
    assert "field `input_tokens`" in reason
    assert "field `extra`: unknown field" in reason


# -- encoding ---------------------------------------------------------------------------------
def test_encode_decode_round_trip_keeps_every_field(full_event_data: dict[str, Any]) -> None:
    event = Event.model_validate_json(orjson.dumps(full_event_data))
    (again,) = decode_record(encode_event(event)).events
    assert again == event


def test_encode_event_leaves_out_absent_optional_fields(event_data: dict[str, Any]) -> None:
    event = Event.model_validate_json(orjson.dumps(event_data))
    assert set(orjson.loads(encode_event(event))) == {
        *event_data, "schema_version", "tenant_id", "status"}


def test_encode_events_round_trips_as_packed_record(event_data: dict[str, Any]) -> None:
    events = [Event.model_validate_json(orjson.dumps(_with_id(event_data, i))) for i in range(3)]
    record = decode_record(encode_events(events))
    assert record.events == events
    assert record.rejected == []


def test_encode_alert_has_every_field_and_utc_ts() -> None:
    alert = Alert(
        alert_id="a1", rule="session_cost", type=AlertType.COST, state=AlertState.FIRING,
        severity=Severity.WARNING, scope=AlertScope.SESSION, key="s", tenant_id="default",
        value=1.5, threshold=1.0, window_s=60, ts=datetime(2026, 11, 20, 9, 0, 1, tzinfo=UTC),
        reason="spent too much",
    )
    body = orjson.loads(encode_alert(alert))
    assert body["ts"] == "2026-11-20T09:00:01.000000Z"
    assert body["agent_id"] is None  # nulls included: the webhook body is complete
    assert body["type"] == "cost"
    assert Alert.model_validate_json(encode_alert(alert)) == alert
