"""``agentwatch replay`` on hostile lines (tests/unit/schemas/hostile_inputs.py): it never
raises, reports every bad line with a reason, and reads an endless line in bounded
memory."""

from __future__ import annotations

import io
import sys
import tracemalloc
import uuid
from pathlib import Path

import orjson
from hypothesis import given
from hypothesis import strategies as st

from agentwatch.processors.core import Engine, rules_from_mapping
from agentwatch.processors.replay import bounded_lines, replay_lines
from agentwatch.schemas import Alert, decode_record

sys.path.insert(0, str(Path(__file__).parents[1] / "schemas"))
from hostile_inputs import HOSTILE, deeply_nested, records


def _replay(lines: list[bytes]) -> tuple[int, list[tuple[int, str]], int]:
    invalid: list[tuple[int, str]] = []
    alerts: list[Alert] = []
    stats = replay_lines(lines, Engine(rules_from_mapping({})), alerts.append,
                         lambda no, reason: invalid.append((no, reason)))
    return stats.events, invalid, stats.invalid


@HOSTILE
@given(st.lists(st.one_of(records(), st.binary(max_size=100)), max_size=8))
def test_hostile_lines_never_raise_and_each_bad_one_is_reported_with_a_reason(
        lines: list[bytes]) -> None:
    lines = [line.replace(b"\n", b" ") + b"\n" for line in lines]
    events, invalid, n_invalid = _replay(lines)
    assert n_invalid == len(invalid)
    assert all(reason.strip() and 1 <= no <= len(lines) for no, reason in invalid)
    expected = [decode_record(line) for line in lines if line.strip()]
    assert events == sum(len(d.events) for d in expected)
    assert n_invalid == sum(len(d.rejected) for d in expected)


def test_deeply_nested_lines_are_invalid_lines() -> None:
    lines = [deeply_nested(100_000, where) + b"\n" for where in ("arrays", "objects",
                                                                  "attributes")]
    events, invalid, _ = _replay(lines)
    assert events == 0
    assert [no for no, _ in invalid] == [1, 2, 3]


def test_a_line_over_the_limit_is_read_in_bounded_memory_and_reported() -> None:
    good = orjson.dumps({"event_id": str(uuid.UUID(int=1)), "ts": "2026-11-20T09:00:00Z",
                         "agent_id": "a", "session_id": "s", "kind": "custom"})
    limit = 1 << 20
    stream = io.BytesIO(b"[" + b" " * (20 * limit) + b"]\n" + good + b"\n")
    tracemalloc.start()
    try:
        lines = list(bounded_lines(stream, max_bytes=limit))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [len(line) for line in lines] == [limit + 1, len(good) + 1]
    assert peak < 4 * limit  # the 20 MiB line is never held whole
    assert lines[1] == good + b"\n"


def test_an_oversized_line_is_an_invalid_line_naming_the_limit() -> None:
    from agentwatch.schemas import MAX_RECORD_BYTES  # noqa: PLC0415

    events, [(no, reason)], _ = _replay([b"{" + b" " * MAX_RECORD_BYTES + b"}\n"])
    assert (events, no) == (0, 1)
    assert "record too large" in reason
