"""The fast check must never accept what the Event contract rejects (differential test
against pydantic on random events), and must accept the plain events agents send."""

from __future__ import annotations

import math
import random
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from agentwatch.schemas import Event
from agentwatch.schemas.fastcheck import (
    plain_cost,
    plain_fields,
    plain_id,
    plain_text,
    plain_ts,
    plainly_valid,
)

MADE = frozenset({"event_id", "ts"})
VALIDATOR = Event.__pydantic_validator__

# values to try per field: plain valid ones first, then everything that could go wrong
TEXT = ["a", "x" * 256, "x" * 257, "", "é/ü", 5, None, True, b"b", 1.5]
TOKENS = [0, 7, 2**40, -1, 2**63, 1.0, True, "3", None]
FLOATS = [0.0, 0.25, 1e9, -0.5, math.inf, math.nan, 3, True, "1.0", None]
FIELD_VALUES: dict[str, list[Any]] = {
    "agent_id": TEXT,
    "session_id": TEXT,
    "tenant_id": [*TEXT, "a/b", "t" * 128, "t" * 129],
    "kind": ["tool_call", "llm_call", "custom", "bogus", "TOOL_CALL", 1, None],
    "schema_version": [1, 2, 0, True, 1.0, "1", None],
    "trace_id": TEXT,
    "span_id": TEXT,
    "parent_span_id": TEXT,
    "name": TEXT,
    "status": ["ok", "error", "OK", "fail", None, 0],
    "error_type": TEXT,
    "model": TEXT,
    "provider": TEXT,
    "input_tokens": TOKENS,
    "output_tokens": TOKENS,
    "cached_input_tokens": TOKENS,
    "reasoning_tokens": TOKENS,
    "cost_usd": FLOATS,
    "duration_ms": FLOATS,
    "tool_args_hash": TEXT,
    "attributes": [
        {},
        {"k": "v", "n": 1, "f": 0.5, "b": False},
        {"k" * 257: 1},
        {"k": None},
        {"k": [1]},
        {"k": {"a": 1}},
        {"k": math.inf},
        {"k": 2**64},
        {1: "v"},
        "not a dict",
        None,
    ],
    "extra_field": [1],
}


def pydantic_accepts(event: dict[str, Any]) -> bool:
    try:
        raw = orjson.dumps({k: v for k, v in event.items() if v is not None})
        VALIDATOR.validate_json(raw)
    except (ValidationError, TypeError):
        return False
    return True


def random_event(rng: random.Random) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "8d116ece-1738-47d9-bd9c-172411e20b8f",
        "ts": "2026-11-20T09:00:00.010000Z",
        "agent_id": "agent",
        "session_id": "s-1",
        "kind": "tool_call",
        "tenant_id": "acme",
    }
    for field in rng.sample(sorted(FIELD_VALUES), rng.randint(0, 6)):
        values = FIELD_VALUES[field]
        # mostly plain values, so that accepted events are common too
        event[field] = values[0] if rng.random() < 0.4 else rng.choice(values)
    if rng.random() < 0.1:
        del event[rng.choice(["agent_id", "session_id", "kind"])]
    return event


@pytest.mark.parametrize("seed", range(4))
def test_never_accepts_what_the_contract_rejects(seed: int) -> None:
    rng = random.Random(seed)
    accepted = 0
    for _ in range(5_000):
        event = random_event(rng)
        if plainly_valid(event, MADE):
            accepted += 1
            assert pydantic_accepts(event), event
    assert accepted > 500  # the fast path is really taken


def test_plain_events_of_every_kind_take_the_fast_path() -> None:
    for kind in ("llm_call", "tool_call", "agent_step", "session_start", "session_end",
                 "handoff", "guardrail", "custom"):
        event = {"event_id": "e", "ts": "t", "agent_id": "a", "session_id": "s",
                 "tenant_id": "default", "kind": kind, "status": "error", "model": "gpt-4o",
                 "input_tokens": 10, "output_tokens": 3, "cost_usd": 0.001,
                 "duration_ms": 12.5, "attributes": {"k": "v", "n": 2}}
        assert plainly_valid(event, MADE)


def test_ids_and_times_the_caller_set_go_to_pydantic() -> None:
    event = {"event_id": "not-a-uuid", "ts": "2026-11-20T09:00:00Z", "agent_id": "a",
             "session_id": "s", "kind": "custom", "tenant_id": "t"}
    assert not plainly_valid(event, frozenset())
    assert not plainly_valid(event, frozenset({"ts"}))
    assert plainly_valid(event, MADE)  # (only when the client made both itself)


@pytest.mark.parametrize("seed", range(2))
def test_plain_fields_never_accepts_a_field_the_contract_rejects(seed: int) -> None:
    # every random event has the required fields unless one was deleted: then plain_fields
    # may accept (it does not ask for them) but plainly_valid may not
    rng = random.Random(seed)
    accepted = 0
    for _ in range(5_000):
        event = random_event(rng)
        complete = all(f in event for f in ("agent_id", "session_id", "kind"))
        if plain_fields(event, MADE):
            accepted += 1
            assert plainly_valid(event, MADE) == complete, event
            if complete:
                assert pydantic_accepts(event), event
        else:
            assert not plainly_valid(event, MADE), event
    assert accepted > 500


def test_plain_fields_leaves_ids_and_times_to_the_caller() -> None:
    assert plain_fields({"kind": "custom", "name": "x"})
    assert not plain_fields({"kind": "custom", "event_id": "8d116ece-1738-47d9-bd9c-172411e20b8f"})
    assert not plain_fields({"kind": "custom", "ts": "2026-11-20T09:00:00.010000Z"})
    assert not plain_fields({"kind": "custom", "session_id": None})


@pytest.mark.parametrize(("check", "field", "values"), [
    (plain_id, "agent_id", TEXT),
    (plain_id, "session_id", TEXT),
    (plain_text, "trace_id", TEXT),
    (plain_text, "parent_span_id", TEXT),
    (plain_cost, "cost_usd", FLOATS),
    (plain_cost, "duration_ms", FLOATS),
    # fromisoformat also takes minutes with a fraction and no seconds ("HH:MM.ff"), which
    # the contract refuses: plain_ts must not
    (plain_ts, "ts", ["2026-11-20T09:00:00.010000Z", "2026-11-20T09:00:00Z",
                      "2026-11-20T09:00.5Z", "1900-01-01T00:00.00Z", "2026-11-20T09:00.123456Z"]),
])
def test_single_value_checks_agree_with_the_contract(
    check: Any, field: str, values: list[Any],
) -> None:
    base = {"event_id": "8d116ece-1738-47d9-bd9c-172411e20b8f",
            "ts": "2026-11-20T09:00:00.010000Z", "agent_id": "a", "session_id": "s",
            "kind": "custom"}
    for value in values:
        if check(value):
            assert value is not None
            assert pydantic_accepts({**base, field: value}), (field, value)
    assert check(values[0])
