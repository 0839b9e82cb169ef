"""What the session stage forwards to the rekeyed stage: compact events that come back as
the fields the agent- and tenant-scoped detectors read."""

from __future__ import annotations

from typing import Any

import pytest

from agentwatch.processors.worker._forward import compact_event, event_from_compact
from agentwatch.schemas import Event, EventKind, EventStatus, from_us, to_us

ID = "00000000-0000-4000-8000-000000000001"


def _event(kind: EventKind, **fields: Any) -> Event:
    return Event(event_id=ID, ts=from_us(1_796_032_800_123_456), agent_id="a",
                 session_id="s", tenant_id="t", kind=kind, **fields)


@pytest.mark.parametrize("event", [
    _event(EventKind.TOOL_CALL, name="search", tool_args_hash="h", status=EventStatus.ERROR),
    _event(EventKind.LLM_CALL, model="gpt-4o", cost_usd=0.25, duration_ms=812.5),
    _event(EventKind.SCORE, name="helpfulness",
           attributes={"gen_ai.evaluation.score.value": 0.25, "gen_ai.response.id": "r"}),
], ids=["tool", "llm", "score"])
def test_a_compact_event_comes_back_with_what_the_detectors_read(event: Event) -> None:
    back = event_from_compact(compact_event(event, to_us(event.ts)))
    fields = ("event_id", "ts", "tenant_id", "agent_id", "session_id", "kind", "status",
              "cost_usd", "name", "tool_args_hash", "duration_ms", "model", "attributes")
    assert {f: getattr(back, f) for f in fields} == {f: getattr(event, f) for f in fields}


def test_a_plain_event_stays_ten_fields_and_other_kinds_drop_their_attributes() -> None:
    tool = _event(EventKind.TOOL_CALL, name="search", attributes={"k": "v"})
    assert len(compact_event(tool, 0)) == 10
    llm = _event(EventKind.LLM_CALL, duration_ms=5.0, attributes={"k": "v"})
    assert compact_event(llm, 0)[10:] == [5.0, None, None]
    assert event_from_compact(compact_event(llm, 0)).attributes is None
