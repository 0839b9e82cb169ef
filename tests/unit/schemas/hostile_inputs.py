"""Hypothesis strategies for hostile record values, shared by the decoders' tests.

Every decoder of ``agentwatch.events`` records (``decode_record``, the sink's
``decode_rows``, ``agentwatch replay``, the worker's session stage) is fed from here:
arbitrary bytes, JSON of any shape, events with edge values in every field (NaN,
infinities, huge numbers, huge strings, unknown kinds, timestamps far in the past or
future), deep nesting, and the three record forms.

``HOSTILE`` is the one settings profile: derandomized (the same examples on every run,
so CI does not flake) and bounded, so the suite stays quick.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

HOSTILE = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_KINDS = ["llm_call", "tool_call", "agent_step", "session_start", "session_end", "handoff",
          "guardrail", "custom"]
_BIG = [2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**30, -(2**63), -(2**63) - 1]

#: JSON numbers a hostile producer can write (as text: orjson cannot write some of them)
NUMBER_TOKENS = [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"1e-999", b"-0",
                 b"0.0", b"1E2", b"9" * 400, b"-" + b"9" * 400, b"18446744073709551616",
                 b"9223372036854775808", b"-9223372036854775809", b"1.5", b"00", b"+1"]

ts_values = st.one_of(
    st.sampled_from([
        "2026-11-20T09:00:01.250000Z", "2026-11-20T09:00:01Z", "2026-11-20T09:00:01.5Z",
        "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59.999999Z",
        "9999-12-31T23:59:59-01:00", "1969-12-31T23:59:59.999999Z", "1900-01-01T00:00:00Z",
        "1899-12-31T23:59:59.999999Z",
        "2299-12-31T23:59:59.999999Z", "2300-01-01T00:00:00Z", "2299-12-31T23:00:00-01:00",
        "1900-01-01T00:30:00+01:00", "0000-01-01T00:00:00Z", "10000-01-01T00:00:00Z",
        "2026-02-30T09:00:00Z", "2026-11-20T24:00:00Z", "2026-11-20T09:00:00",
        "2026-11-20 09:00:00Z", "-2026-11-20T09:00:00Z", "", "now",
    ]),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
texts = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", "x" * 256, "x" * 257, "\x00", "\ud7ff", "/", "a/b", "é" * 300]),
    st.integers(min_value=1, max_value=70_000).map(lambda n: "y" * n),
)
numbers = st.one_of(
    st.integers(min_value=-10, max_value=10**6),
    st.sampled_from(_BIG),
    st.floats(allow_nan=False, allow_infinity=False),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
attribute_maps = st.one_of(
    st.dictionaries(st.text(max_size=8), st.one_of(st.booleans(), numbers, st.text(max_size=8)),
                    max_size=6),
    st.integers(min_value=127, max_value=130).map(lambda n: {f"k{i}": i for i in range(n)}),
    st.sampled_from([{"a": "z" * 4096}, {"a": "z" * 4097}, {"k" * 257: 1}, {"a": None},
                     {"a": [1]}, {"a": {"b": 1}}, [], "attrs"]),
)
FIELDS: dict[str, Any] = {
    "agent_id": texts, "session_id": texts, "tenant_id": texts, "trace_id": texts,
    "span_id": texts, "parent_span_id": texts, "name": texts, "error_type": texts,
    "model": st.one_of(st.sampled_from(["gpt-4o", "claude-sonnet-4-5"]), texts),
    "provider": texts, "tool_args_hash": texts,
    "kind": st.one_of(st.sampled_from(_KINDS), st.sampled_from(["LLM_CALL", "nope", ""]),
                      scalars),
    "status": st.one_of(st.sampled_from(["ok", "error", "OK", "failed"]), scalars),
    "schema_version": st.sampled_from([1, 2, 0, True, 1.0, "1", None]),
    "input_tokens": numbers, "output_tokens": numbers, "cached_input_tokens": numbers,
    "reasoning_tokens": numbers, "cost_usd": numbers, "duration_ms": numbers,
    "attributes": attribute_maps,
}


@st.composite
def event_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """An event as a dict: valid about half the time, otherwise broken in one or more
    fields (unknown fields, edge values, missing required ones)."""
    event: dict[str, Any] = {
        "event_id": draw(st.one_of(
            st.builds(lambda n: str(uuid.UUID(int=n)), st.integers(0, 2**128 - 1)),
            st.sampled_from(["not-a-uuid", "0" * 36, "", "x" * 300]), scalars)),
        "ts": draw(st.one_of(st.just("2026-11-20T09:00:01.250000Z"), ts_values)),
        "agent_id": "agent-1",
        "session_id": draw(st.sampled_from(["s-1", "s-2", "s-3"])),
        "kind": draw(st.sampled_from(_KINDS)),
    }
    for name in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=4, unique=True)):
        event[name] = draw(FIELDS[name])
    if draw(st.integers(0, 19)) == 0:
        event[draw(st.sampled_from(["input_token", "extra", "ts_us"]))] = 1
    if draw(st.integers(0, 19)) == 0:
        event.pop(draw(st.sampled_from(["event_id", "ts", "agent_id", "session_id", "kind"])))
    return event


def _dumps(value: Any) -> bytes | None:
    try:
        return orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError):
        return None  # a value JSON cannot carry (ints over 64 bits, lone surrogates)


@st.composite
def json_text(draw: st.DrawFn) -> bytes:
    """Any JSON value as text (nested up to a few levels)."""
    value = draw(st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                  st.text(max_size=10)),
        lambda inner: st.one_of(st.lists(inner, max_size=4),
                                st.dictionaries(st.text(max_size=6), inner, max_size=4)),
        max_leaves=12))
    return _dumps(value) or b"null"


@st.composite
def records(draw: st.DrawFn) -> bytes:
    """A record value of any form (one event, an array of events with foreign items
    mixed in), or something that is no record at all; numbers sometimes replaced by
    tokens orjson cannot write (NaN, 400-digit integers)."""
    shape = draw(st.integers(0, 10))
    if shape == 0:
        return draw(st.binary(max_size=200))
    if shape == 1:
        return draw(json_text())
    if shape == 10:  # around the parsers' nesting limits (orjson writes 254, reads 1,024)
        nested = deeply_nested(draw(st.integers(190, 1100)),
                               draw(st.sampled_from(["arrays", "objects", "attributes"])))
        return draw(st.sampled_from([nested, b"[" + nested + b"]", b'["x",' + nested + b"]"]))
    if shape <= 4:
        value = _dumps(draw(event_dicts()))
    else:
        items: list[Any] = draw(st.lists(event_dicts(), min_size=0, max_size=5))
        if draw(st.integers(0, 4)) == 0:
            items.insert(draw(st.integers(0, len(items))),
                         draw(st.sampled_from([3, "x", None, [1], [], {}, True])))
        value = _dumps(items)
    if value is None:
        return b"{}"
    if draw(st.integers(0, 5)) == 0:  # a hostile number token in place of a number
        token = draw(st.sampled_from(NUMBER_TOKENS))
        value = value.replace(b":1200", b":" + token, 1).replace(b":0,", b":" + token + b",", 1)
        value = value.replace(b'"duration_ms":', b'"duration_ms":' + token + b",\"_x\":", 1)
    return value


def deeply_nested(depth: int, where: str) -> bytes:
    """JSON nested ``depth`` levels: bare arrays, objects, or inside an event's field."""
    if where == "arrays":
        return b"[" * depth + b"]" * depth
    if where == "objects":
        return b'{"a":' * depth + b"1" + b"}" * depth
    inner = b"[" * depth + b"]" * depth
    event = orjson.dumps({"event_id": str(uuid.UUID(int=1)), "ts": "2026-11-20T09:00:00Z",
                          "agent_id": "a", "session_id": "s", "kind": "custom"})
    return event[:-1] + b',"attributes":{"deep":' + inner + b"}}"
