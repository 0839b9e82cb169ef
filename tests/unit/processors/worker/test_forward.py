"""The events both worker stages feed the core (:class:`StageEvent`), and what the session
stage forwards to the rekeyed stage: compact events that come back as the fields the
agent- and tenant-scoped detectors read."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from agentwatch.processors.worker._forward import (
    compact_event,
    event_from_compact,
    event_from_item,
    event_from_model,
)
from agentwatch.schemas import Event, EventKind, EventStatus, decode_record, from_us, to_us
from agentwatch.schemas.fastcheck import plain_event_ts

ID = "00000000-0000-4000-8000-000000000001"
#: what the core and the stages read of an event
READ = ("event_id", "ts", "tenant_id", "agent_id", "session_id", "kind", "status",
        "cost_usd", "name", "tool_args_hash", "duration_ms", "model", "attributes",
        "input_tokens", "output_tokens", "cached_input_tokens")


def _event(kind: EventKind, **fields: Any) -> Event:
    return Event(event_id=ID, ts=from_us(1_796_032_800_123_456), agent_id="a",
                 session_id="s", tenant_id="t", kind=kind, **fields)


EVENTS = [
    _event(EventKind.TOOL_CALL, name="search", tool_args_hash="h", status=EventStatus.ERROR),
    _event(EventKind.LLM_CALL, model="gpt-4o", cost_usd=0.25, duration_ms=812.5),
    _event(EventKind.SCORE, name="helpfulness",
           attributes={"gen_ai.evaluation.score.value": 0.25, "gen_ai.response.id": "r"}),
]


@pytest.mark.parametrize("event", EVENTS, ids=["tool", "llm", "score"])
def test_a_compact_event_comes_back_with_what_the_detectors_read(event: Event) -> None:
    back = event_from_compact(compact_event(event_from_model(event)))
    fields = READ[:13]
    assert {f: getattr(back, f) for f in fields} == {f: getattr(event, f) for f in fields}


def test_a_plain_event_stays_ten_fields_and_other_kinds_drop_their_attributes() -> None:
    tool = event_from_model(_event(EventKind.TOOL_CALL, name="search", attributes={"k": "v"}))
    assert len(compact_event(tool)) == 10
    llm = event_from_model(_event(EventKind.LLM_CALL, duration_ms=5.0, attributes={"k": "v"}))
    assert compact_event(llm)[10:] == [5.0, None, None]
    assert event_from_compact(compact_event(llm)).attributes is None


@pytest.mark.parametrize("item", [
    {"event_id": ID, "ts": "2026-12-01T10:00:00.123456Z", "agent_id": "a", "session_id": "s",
     "kind": "llm_call", "model": "gpt-4o", "input_tokens": 1200, "output_tokens": 80,
     "cached_input_tokens": 100, "cost_usd": 1, "duration_ms": 30},
    {"event_id": ID, "ts": "2026-12-01T10:00:00Z", "agent_id": "a", "session_id": "s",
     "tenant_id": "acme", "kind": "tool_call", "status": "error", "name": "search",
     "tool_args_hash": "abc", "attributes": {"k": "v", "n": 2}},
    {"event_id": ID, "ts": "2026-12-01T10:00:00Z", "agent_id": "a", "session_id": "s",
     "kind": "agent_step"},
], ids=["llm-int-numbers", "tool-tenant-error", "defaults"])
def test_an_event_from_its_json_object_holds_what_pydantic_would(item: dict[str, Any]) -> None:
    ts = plain_event_ts(item)
    assert ts is not None
    event = event_from_item(item, to_us(ts))
    (model,) = decode_record(orjson.dumps(item)).events
    assert {f: getattr(event, f) for f in READ} == {f: getattr(model, f) for f in READ}
    # int costs and durations become floats, as pydantic makes them (sums print alike)
    assert [type(event.cost_usd), type(event.duration_ms)] == [
        type(model.cost_usd), type(model.duration_ms)]
    assert event.to_model() == model


@pytest.mark.parametrize("event", EVENTS, ids=["tool", "llm", "score"])
def test_an_event_from_a_pydantic_event_holds_its_fields_and_gives_it_back(event: Event) -> None:
    stage_event = event_from_model(event)
    assert {f: getattr(stage_event, f) for f in READ} == {f: getattr(event, f) for f in READ}
    assert stage_event.to_model() is event
