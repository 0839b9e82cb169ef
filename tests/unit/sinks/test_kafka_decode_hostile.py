"""The sink's decoder on hostile input (tests/unit/schemas/hostile_inputs.py): it never
raises, stores and rejects exactly what ``decode_record`` does (same reasons), and what it
stores converts to the events table's Arrow columns."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentwatch.schemas import MAX_RECORD_BYTES, decode_record
from agentwatch.sinks import events_to_arrow
from agentwatch.sinks._rows import event_rows_to_arrow
from agentwatch.sinks.kafka._decode import decode_rows

sys.path.insert(0, str(Path(__file__).parents[1] / "schemas"))
from hostile_inputs import HOSTILE, deeply_nested, records


def _same_as_reference(value: bytes) -> None:
    rows, rejected = decode_rows(value)
    reference = decode_record(value)
    assert [(r.raw, r.reason, r.index) for r in rejected] == [
        (r.raw, r.reason, r.index) for r in reference.rejected], value[:300]
    assert all(r.reason for r in rejected)
    assert [r["event_id"] for r in rows] == [e.event_id for e in reference.events]
    assert event_rows_to_arrow(rows).equals(events_to_arrow(reference.events))


@HOSTILE
@given(records())
def test_hostile_records_store_and_reject_what_the_reference_does(value: bytes) -> None:
    _same_as_reference(value)


@HOSTILE
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_rejected_with_a_reason(value: bytes) -> None:
    _same_as_reference(value)


@pytest.mark.parametrize("where", ["arrays", "objects", "attributes"])
@pytest.mark.parametrize("depth", [254, 255, 1000, 1024, 50_000])
def test_deep_nesting_is_a_reject_as_in_the_reference(where: str, depth: int) -> None:
    value = deeply_nested(depth, where)
    for record in (value, b"[" + value + b"]", b"[" + value + b',"x"]'):
        _same_as_reference(record)
        assert decode_rows(record)[1]


@pytest.mark.parametrize("ts", ["1900-01-01T00:00:00Z", "2299-12-31T23:59:59.999999Z",
                                "1969-12-31T23:59:59.5Z"])
def test_the_ends_of_the_timestamp_range_are_stored(ts: str) -> None:
    event = {"event_id": str(uuid.UUID(int=1)), "ts": ts, "agent_id": "a",
             "session_id": "s", "kind": "custom"}
    _same_as_reference(orjson.dumps([event]))


def test_a_record_over_the_size_limit_is_rejected_unread() -> None:
    rows, [rejected] = decode_rows(b"[" + b" " * MAX_RECORD_BYTES + b"]")
    assert rows == []
    assert "record too large" in rejected.reason
