"""decode_record on hostile input: it never raises, every reject says why, what it accepts
round-trips, and it stays within the documented limits (README, "Input limits")."""

from __future__ import annotations

import tracemalloc
import uuid
from typing import Any

import orjson
import pytest
from hostile_inputs import HOSTILE, NUMBER_TOKENS, deeply_nested, event_dicts, records
from hypothesis import given
from hypothesis import strategies as st

from agentwatch.schemas import (
    MAX_RECORD_BYTES,
    DecodedRecord,
    Event,
    decode_record,
    encode_event,
    encode_events,
    to_us,
)
from agentwatch.schemas._codec import OVERSIZED_RAW_KEPT, _decode_reference
from agentwatch.schemas._event import TS_MAX, TS_MIN

VALID: dict[str, Any] = {"event_id": str(uuid.UUID(int=1)), "ts": "2026-11-20T09:00:00Z",
                         "agent_id": "a", "session_id": "s", "kind": "llm_call"}


def _event(**fields: Any) -> bytes:
    return orjson.dumps({**VALID, **fields})


def _check(decoded: DecodedRecord) -> None:
    """What every decode must give: rejects with a reason, events that re-encode and
    decode to themselves, timestamps in range."""
    for rejected in decoded.rejected:
        assert rejected.reason.strip()
        assert len(rejected.raw) <= MAX_RECORD_BYTES
    for event in decoded.events:
        assert TS_MIN <= event.ts <= TS_MAX
        to_us(event.ts)
        [again] = decode_record(encode_event(event)).events
        assert again == event


@HOSTILE
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise_and_every_reject_has_a_reason(value: bytes) -> None:
    decoded = decode_record(value)
    _check(decoded)
    assert decoded.events or decoded.rejected


@HOSTILE
@given(records())
def test_hostile_records_never_raise_and_accepted_events_round_trip(value: bytes) -> None:
    decoded = decode_record(value)
    _check(decoded)
    assert decoded.events or decoded.rejected
    if decoded.events:  # what was accepted, packed again, is accepted again, the same
        assert decode_record(encode_events(decoded.events)).events == decoded.events


@HOSTILE
@given(st.lists(event_dicts(), min_size=1, max_size=6))
def test_every_item_of_a_packed_record_is_an_event_or_a_reject(items: list[Any]) -> None:
    try:
        value = orjson.dumps(items)
    except orjson.JSONEncodeError:
        return
    decoded = decode_record(value)
    _check(decoded)
    if decoded.rejected and decoded.rejected[0].index is not None:
        assert len(decoded.events) + len(decoded.rejected) == len(items)
        assert all(r.index is not None and 0 <= r.index < len(items) for r in decoded.rejected)


@pytest.mark.parametrize("token", NUMBER_TOKENS)
@pytest.mark.parametrize("field", ["cost_usd", "duration_ms", "input_tokens", "attributes"])
def test_hostile_number_tokens_are_accepted_exactly_or_rejected_with_a_reason(
        token: bytes, field: str) -> None:
    number = b'{"n":' + token + b"}" if field == "attributes" else token
    value = _event()[:-1] + b',"' + field.encode() + b'":' + number + b"}"
    for record in (value, b"[" + value + b"," + _event() + b"]"):
        decoded = decode_record(record)
        _check(decoded)
        assert decoded.events or decoded.rejected


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
@pytest.mark.parametrize("field", ["cost_usd", "duration_ms"])
def test_nan_and_infinite_numbers_are_rejected(token: bytes, field: str) -> None:
    value = _event()[:-1] + b',"' + field.encode() + b'":' + token + b"}"
    [rejected] = decode_record(value).rejected
    assert f"field `{field}`" in rejected.reason


@pytest.mark.parametrize("value", [2**63, 2**64, 10**30, 10**400])
def test_token_counts_over_64_bits_signed_are_rejected(value: int) -> None:
    [rejected] = decode_record(_event()[:-1] + f',"input_tokens":{value}}}'.encode()).rejected
    assert "field `input_tokens`" in rejected.reason


@pytest.mark.parametrize("ts", [
    "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59.999999Z",
    "9999-12-31T23:59:59-01:00", "1899-12-31T23:59:59.999999Z", "2300-01-01T00:00:00Z",
    "1900-01-01T00:30:00+01:00", "2299-12-31T23:30:00-01:00",
])
def test_timestamps_far_in_the_past_or_future_are_rejected_with_the_range(ts: str) -> None:
    for value in (_event(ts=ts), orjson.dumps([{**VALID, "ts": ts}])):
        [rejected] = decode_record(value).rejected
        assert "timestamp out of range" in rejected.reason, rejected.reason


@pytest.mark.parametrize("ts", [-1, -(2**62), 2**62, 1.5e300])
def test_numeric_timestamps_are_rejected(ts: float) -> None:
    [rejected] = decode_record(_event(ts=ts)).rejected
    assert "field `ts`" in rejected.reason


@pytest.mark.parametrize("ts", ["1900-01-01T00:00:00Z", "1969-12-31T23:59:59.5Z",
                                "2299-12-31T23:59:59.999999Z", "2299-12-31T22:00:00-01:00"])
def test_the_ends_of_the_timestamp_range_are_accepted(ts: str) -> None:
    [event] = decode_record(_event(ts=ts)).events
    assert decode_record(encode_event(event)).events == [event]


@pytest.mark.parametrize("kind", ["llm", "LLM_CALL", "", "llm_call ", 1, None, ["llm_call"]])
def test_an_unknown_kind_is_rejected_naming_the_field(kind: Any) -> None:
    [rejected] = decode_record(_event(kind=kind)).rejected
    assert "field `kind`" in rejected.reason


@pytest.mark.parametrize("where", ["arrays", "objects", "attributes"])
@pytest.mark.parametrize("depth", [200, 254, 255, 300, 1000, 1023, 1024, 1100, 100_000])
def test_deep_nesting_is_rejected_with_a_reason_not_a_recursion_error(
        where: str, depth: int) -> None:
    value = deeply_nested(depth, where)
    for record in (value, b"[" + value + b"]", b"[" + _event() + b"," + value + b"]"):
        decoded = decode_record(record)
        _check(decoded)
        assert decoded.rejected
        assert len(decoded.events) <= 1
        assert decoded.rejected == _decode_reference(record).rejected


@pytest.mark.parametrize(("field", "limit"), [
    ("name", 256), ("agent_id", 256), ("session_id", 256), ("tenant_id", 128),
    ("model", 256), ("tool_args_hash", 256),
])
def test_strings_over_their_limit_are_rejected_naming_the_field(field: str, limit: int) -> None:
    assert decode_record(_event(**{field: "x" * limit})).events
    [rejected] = decode_record(_event(**{field: "x" * (limit + 1)})).rejected
    assert f"field `{field}`" in rejected.reason
    huge = decode_record(_event(**{field: "x" * 5_000_000})).rejected[0]
    assert len(huge.reason) < 1000  # the reason quotes a short prefix, not the value


def test_attribute_limits_are_enforced() -> None:
    assert decode_record(_event(attributes={f"k{i}": i for i in range(128)})).events
    assert decode_record(_event(attributes={f"k{i}": i for i in range(129)})).rejected
    assert decode_record(_event(attributes={"a": "z" * 4096})).events
    [rejected] = decode_record(_event(attributes={"a": "z" * 4097})).rejected
    assert "attributes" in rejected.reason


def test_a_record_over_the_size_limit_is_rejected_unread_and_cut() -> None:
    value = b"[" + b" " * MAX_RECORD_BYTES + _event() + b"]"
    decoded = decode_record(value)
    assert decoded.events == []
    [rejected] = decoded.rejected
    assert "record too large" in rejected.reason
    assert str(MAX_RECORD_BYTES) in rejected.reason
    assert rejected.raw == value[:OVERSIZED_RAW_KEPT]


def test_a_record_at_the_size_limit_is_decoded() -> None:
    event = _event()
    value = b"[" + event + b" " * (MAX_RECORD_BYTES - len(event) - 2) + b"]"
    assert len(value) == MAX_RECORD_BYTES
    assert len(decode_record(value).events) == 1


#: documented in README, "Input limits": peak Python memory of decoding a record, as a
#: multiple of its size. Measured ~17x for a packed record of small events, all of it the
#: parsed JSON (``orjson.loads`` alone peaks at the same): Python objects are that big.
MEMORY_FACTOR = 24


def _peak(value: bytes) -> int:
    tracemalloc.start()
    try:
        decoded = decode_record(value)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoded.events or decoded.rejected
    return peak


@pytest.mark.parametrize("shape", ["events", "strings", "malformed"])
def test_a_10_mb_record_decodes_within_a_bounded_multiple_of_its_size(shape: str) -> None:
    if shape == "events":  # a packed record of ~25,000 plain events
        one = _event(model="gpt-4o", input_tokens=1200, output_tokens=300, name="chat",
                     attributes={"region": "eu", "retries": 2}, cost_usd=0.01)
        value = b"[" + b",".join([one] * (10_000_000 // len(one))) + b"]"
    elif shape == "strings":  # events with long attribute text
        one = _event(attributes={f"k{i}": "v" * 4000 for i in range(20)})
        value = b"[" + b",".join([one] * (10_000_000 // len(one))) + b"]"
    else:
        value = b'[{"a":"' + b"x" * 10_000_000
    assert 9_000_000 < len(value) <= MAX_RECORD_BYTES
    peak = _peak(value)
    assert peak <= MEMORY_FACTOR * len(value), f"{peak / len(value):.1f}x the record"


def test_the_reference_path_takes_the_same_hostile_inputs() -> None:
    for value in (deeply_nested(5000, "arrays"), b"\xff\xfe", _event(ts="0001-01-01T00:00:00Z"),
                  _event(attributes={"a": "z" * 5000})):
        _check(_decode_reference(value))


def test_an_integer_attribute_over_64_bits_is_taken_as_a_float_on_every_path() -> None:
    value = _event()[:-1] + b',"attributes":{"n":' + str(10**30).encode() + b"}}"
    for record in (value, b"[" + value + b"]", b"[" + value + b',"x"]'):
        [event] = decode_record(record).events
        assert isinstance(event, Event)
        assert event.attributes == {"n": 1e30}
        assert type(event.attributes["n"]) is float
