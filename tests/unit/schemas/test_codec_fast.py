"""decode_record's fast path (orjson + plain check, no pydantic) must give exactly what
pydantic gives: the same events (equal, same fields set, same types), the same rejects
with the same reasons, on random valid and broken records of every form."""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hostile_inputs import HOSTILE, NUMBER_TOKENS, event_dicts, records
from hypothesis import given
from hypothesis import strategies as st

from agentwatch.schemas import Event, decode_record
from agentwatch.schemas._codec import _decode_reference
from agentwatch.schemas.fastcheck import plain_event

sys.path.insert(0, str(Path(__file__).parents[1] / "sinks"))
from test_kafka_decode import _random_event, _record


def _same(fast: Event, slow: Event) -> None:
    assert fast == slow
    assert fast.model_fields_set == slow.model_fields_set
    for name in Event.model_fields:
        assert type(getattr(fast, name)) is type(getattr(slow, name)), name
    assert fast.ts.utcoffset() == slow.ts.utcoffset()
    assert fast.model_dump_json() == slow.model_dump_json()


@pytest.mark.parametrize("seed", range(6))
def test_fast_path_decodes_exactly_what_pydantic_decodes(seed: int) -> None:
    rng = random.Random(seed)
    accepted = rejected = 0
    for _ in range(1500):
        value = _record(rng)
        if value is None:
            continue
        fast, slow = decode_record(value), _decode_reference(value)
        assert [(r.raw, r.reason, r.index) for r in fast.rejected] == [
            (r.raw, r.reason, r.index) for r in slow.rejected], value
        assert len(fast.events) == len(slow.events), value
        for a, b in zip(fast.events, slow.events, strict=True):
            _same(a, b)
        accepted += len(fast.events)
        rejected += len(fast.rejected)
    assert accepted > 700
    assert rejected > 300


def test_a_partition_batch_of_many_sessions_keeps_its_order() -> None:
    rng = random.Random(1)
    items: list[dict[str, Any]] = []
    for i in range(50):
        event = {k: v for k, v in _random_event(rng).items() if type(v) is not bytes}
        event.update({"event_id": f"00000000-0000-4000-8000-{i:012d}",
                      "ts": "2026-11-20T09:00:00.5Z", "session_id": f"s-{i % 7}"})
        items.append(event)
    value = orjson.dumps(items)
    decoded = decode_record(value)
    slow = _decode_reference(value)
    assert [e.event_id for e in decoded.events] == [e.event_id for e in slow.events]
    assert [(e.session_id, e.event_id) for e in decoded.events] == [
        (e.session_id, e.event_id) for e in slow.events]


def test_an_int_where_a_float_is_due_takes_the_fast_path_and_becomes_a_float() -> None:
    item = {"event_id": "00000000-0000-4000-8000-000000000001", "ts": "2026-11-20T09:00:00Z",
            "agent_id": "a", "session_id": "s", "kind": "tool_call", "duration_ms": 768,
            "cost_usd": 0}
    assert plain_event(item)
    value = orjson.dumps(item)
    [fast] = decode_record(value).events
    [slow] = _decode_reference(value).events
    _same(fast, slow)
    assert (fast.duration_ms, type(fast.duration_ms)) == (768.0, float)
    assert (fast.cost_usd, type(fast.cost_usd)) == (0.0, float)


# -- the same differential check on hypothesis' hostile records (tests/unit/schemas/
# hostile_inputs.py): NaN and 400-digit number tokens, huge strings and numbers, timestamps
# out of range, unknown kinds, foreign items in arrays, arbitrary bytes --------------------


def _agree(value: bytes) -> None:
    fast, slow = decode_record(value), _decode_reference(value)
    assert [(r.raw, r.reason, r.index) for r in fast.rejected] == [
        (r.raw, r.reason, r.index) for r in slow.rejected], value[:300]
    assert len(fast.events) == len(slow.events), value[:300]
    for a, b in zip(fast.events, slow.events, strict=True):
        _same(a, b)


@HOSTILE
@given(records())
def test_fast_path_agrees_with_pydantic_on_hostile_records(value: bytes) -> None:
    _agree(value)


@HOSTILE
@given(st.lists(event_dicts(), min_size=1, max_size=4), st.sampled_from(NUMBER_TOKENS))
def test_fast_path_agrees_with_pydantic_on_number_tokens_json_cannot_write(
        items: list[dict[str, Any]], token: bytes) -> None:
    clean = [{k: v for k, v in i.items() if k not in {"cost_usd", "attributes"}} for i in items]
    try:
        value = orjson.dumps(clean)
    except orjson.JSONEncodeError:
        return
    # the number goes into the first item, as text orjson itself would never write
    where = value.index(b"{") + 1
    _agree(value[:where] + b'"attributes":{"n":' + token + b"}," + value[where:])
    _agree(value[:where] + b'"cost_usd":' + token + b"," + value[where:])
