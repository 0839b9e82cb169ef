"""The sink's fast decoder must store exactly what the reference decoder
(`agentwatch.schemas.decode_record` + `events_to_arrow`) stores, and reject exactly what it
rejects, with the same reasons: a differential test on random valid and broken records."""

from __future__ import annotations

import math
import random
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from agentwatch.schemas import decode_record
from agentwatch.sinks import events_to_arrow
from agentwatch.sinks._rows import event_rows_to_arrow
from agentwatch.sinks.kafka._decode import decode_rows

sys.path.insert(0, str(Path(__file__).parents[1] / "schemas"))
from test_fastcheck import FIELD_VALUES

IDS = [str(uuid.UUID(int=7)), "0" * 36, "not-a-uuid", str(uuid.UUID(int=9)).upper(), 5, None]
STAMPS = [
    "2026-11-20T09:00:00.123456Z",
    "2026-11-20T09:00:00Z",
    "2026-11-20T09:00:00.5Z",
    "2026-11-20T10:00:00+01:00",
    "2026-11-20T09:00:00",
    "2026-02-30T09:00:00Z",
    "2026-11-20 09:00:00Z",
    "2026-11-20T09:00:00,5Z",
    "2026-11-20T09:00:00.Z",
    "2026-11-20T24:00:00Z",
    "1999-12-31T23:59:59.999999Z",
    "yesterday",
    1_700_000_000,
    None,
]
PLAIN: dict[str, Any] = {"agent_id": "a", "session_id": "s", "kind": "tool_call"}


def _random_event(rng: random.Random) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": rng.choice(IDS[:1] * 6 + IDS),
        "ts": rng.choice(STAMPS[:3] * 4 + STAMPS),
    }
    event.update(PLAIN)
    for name, values in FIELD_VALUES.items():
        if rng.random() < 0.25:
            # mostly the plain valid values, sometimes anything (broken ones included)
            event[name] = rng.choice(values[:2] if rng.random() < 0.93 else values)
    if rng.random() < 0.05:
        event.pop(rng.choice(["event_id", "ts", "agent_id", "session_id", "kind"]))
    event["event_id"] = (
        event.get("event_id")
        if event.get("event_id") != IDS[0]
        else str(uuid.UUID(int=rng.getrandbits(128)))
    )
    return event


def _record(rng: random.Random) -> bytes | None:
    shape = rng.random()
    try:
        if shape < 0.05:
            return rng.choice([b"{not json", b"[]", b"42", b'"s"', b"[1, {}]", b"null"])
        if shape < 0.3:
            return orjson.dumps(_random_event(rng))
        items: list[Any] = [_random_event(rng) for _ in range(rng.randint(1, 5))]
        if rng.random() < 0.05:
            items.insert(rng.randrange(len(items) + 1), rng.choice([3, "x", None, [1]]))
        return orjson.dumps(items)
    except (orjson.JSONEncodeError, TypeError):
        return None  # a value JSON cannot carry (bytes, ints over 64 bits)


@pytest.mark.parametrize("seed", range(6))
def test_fast_decoder_stores_and_rejects_exactly_what_the_reference_does(seed: int) -> None:
    rng = random.Random(seed)
    fast_rows: list[dict[str, Any]] = []
    slow_events = []
    accepted = rejected = 0
    for _ in range(1500):  # ~800 events accepted, ~500 rejected per seed
        value = _record(rng)
        if value is None:
            continue
        rows, fast_rejects = decode_rows(value)
        reference = decode_record(value)
        assert [(r.raw, r.reason, r.index) for r in fast_rejects] == [
            (r.raw, r.reason, r.index) for r in reference.rejected
        ], value
        assert [r["event_id"] for r in rows] == [e.event_id for e in reference.events]
        fast_rows += rows
        slow_events += reference.events
        accepted += len(rows)
        rejected += len(fast_rejects)
    assert accepted > 700
    assert rejected > 300  # the broken variants really are exercised
    assert event_rows_to_arrow(fast_rows).equals(events_to_arrow(slow_events))


def test_plain_events_skip_pydantic_but_land_identically() -> None:
    event = {
        "event_id": str(uuid.UUID(int=1)),
        "ts": "2026-11-20T09:00:00.25Z",
        "agent_id": "a",
        "session_id": "s",
        "kind": "llm_call",
        "model": "m",
        "input_tokens": 3,
        "duration_ms": 1.5,
        "attributes": {"k": True, "n": 2},
    }
    rows, rejects = decode_rows(orjson.dumps([event, event | {"tenant_id": "t"}]))
    assert rejects == []
    assert rows[0] is not None
    assert rows[0]["ts"] == "2026-11-20T09:00:00.25Z"  # kept as sent: Arrow parses it
    table = event_rows_to_arrow(rows)
    reference = events_to_arrow(
        decode_record(orjson.dumps([event, event | {"tenant_id": "t"}])).events
    )
    assert table.equals(reference)
    assert table.column("tenant_id").to_pylist() == ["default", "t"]
    assert table.column("status").to_pylist() == ["ok", "ok"]
    assert not math.isnan(table.column("duration_ms")[0].as_py())


def test_a_partition_batch_of_many_sessions_decodes_into_every_row() -> None:
    """DESIGN.md, "Kafka records", form 3: one array of many sessions' events (and tenants),
    keyed ``~batch:<p>``; the sink stores every one, in the record's order."""
    events = [
        {
            "event_id": str(uuid.UUID(int=1000 + i)),
            "ts": f"2026-11-20T09:00:{i % 60:02d}.{i:06d}Z",
            "tenant_id": f"t{i % 3}",
            "agent_id": f"a{i % 5}",
            "session_id": f"s{i % 40}",
            "kind": "tool_call" if i % 2 else "llm_call",
            **({"status": "error", "error_type": "Timeout"} if i % 17 == 0 else {}),
        }
        for i in range(200)
    ]
    value = orjson.dumps(events)
    rows, rejects = decode_rows(value)
    assert rejects == []
    assert [r["event_id"] for r in rows] == [e["event_id"] for e in events]
    table = event_rows_to_arrow(rows)
    assert table.equals(events_to_arrow(decode_record(value).events))
    assert set(zip(table.column("tenant_id").to_pylist(),
                   table.column("session_id").to_pylist(), strict=True)) == {
        (e["tenant_id"], e["session_id"]) for e in events}
