"""parse_plain_ts_us (the worker's timestamp parse, a per-minute cache in front) gives
exactly what to_us(parse_plain_ts(...)) gives, for plain timestamps and near-misses alike;
plain_event_ts_us agrees with plain_event_ts on whole events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from agentwatch.schemas import to_us
from agentwatch.schemas.fastcheck import (
    parse_plain_ts,
    parse_plain_ts_us,
    plain_event_ts,
    plain_event_ts_us,
)


def _reference(value: object) -> int | None:
    at = parse_plain_ts(value)
    return None if at is None else to_us(at)


def _plain(at: datetime, digits: int) -> str:
    text = at.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        text += "." + f"{at.microsecond:06d}"[:digits]
    return text + "Z"


@settings(max_examples=400)
@given(st.datetimes(min_value=datetime(1899, 12, 31), max_value=datetime(2300, 1, 2)),
       st.integers(0, 6))
def test_plain_timestamps_parse_as_the_reference_does(at: datetime, digits: int) -> None:
    text = _plain(at.replace(tzinfo=UTC), digits)
    assert parse_plain_ts_us(text) == _reference(text)
    assert parse_plain_ts_us(text) == parse_plain_ts_us(text)  # cached minute: the same


_CHARS = "0123456789-T:.Z :x+\u0661\u00b2"  # Arabic-Indic one, superscript two: digits


@settings(max_examples=1500)
@given(st.sampled_from(["2026-11-20T09:00:00.000083Z", "1900-01-01T00:00:00Z",
                        "2299-12-31T23:59:59.999999Z", "2024-02-29T12:30:45.5Z"]),
       st.lists(st.tuples(st.integers(0, 27), st.sampled_from(_CHARS)), max_size=3))
def test_near_misses_are_refused_exactly_when_the_reference_refuses(
    base: str, edits: list[tuple[int, str]]
) -> None:
    chars = list(base)
    for at, char in edits:
        if at < len(chars):
            chars[at] = char
    text = "".join(chars)
    assert parse_plain_ts_us(text) == _reference(text), text


def test_edges() -> None:
    for text in ["2026-02-30T00:00:00Z", "2026-11-20T24:00:00Z", "2026-11-20T09:60:00Z",
                 "2026-11-20T09:00:60Z", "2026-11-20T09:00:00.Z", "2026-11-20T09:00:00.1234567Z",
                 "1899-12-31T23:59:59Z", "2300-01-01T00:00:00Z", "2026-11-20 09:00:00Z",
                 "2026-11-20T09:00:00+00:00", "2026-11-20T09:00:0\u0661Z", 20261120, None,
                 # minutes with a fraction and no seconds: fromisoformat takes them, the
                 # contract does not (found by the near-miss test above)
                 "1900-01-01T00:00.00Z", "2026-11-20T09:00.5Z"]:
        assert parse_plain_ts_us(text) is None, text
        assert _reference(text) is None, text
    assert parse_plain_ts_us("1970-01-01T00:00:01.5Z") == 1_500_000
    assert parse_plain_ts_us("1969-12-31T23:59:59.000001Z") == -999_999
    assert parse_plain_ts_us("2026-11-20T09:00:00.000083Z") == to_us(
        datetime(2026, 11, 20, 9, tzinfo=UTC) + timedelta(microseconds=83))


def test_whole_events_agree() -> None:
    event = {"event_id": "0b6f3b8e-52a4-4d5e-9c1f-3f0e2f6a8b10", "ts": "2026-11-20T09:00:00.25Z",
             "agent_id": "a", "session_id": "s", "kind": "tool_call", "name": "search"}
    at = plain_event_ts(event)
    assert at is not None
    assert plain_event_ts_us(event) == to_us(at)
    for broken in ({"ts": "2026-11-20T09:00:61Z"}, {"event_id": "x"}, {"kind": "nope"},
                   {"ts": 5}):
        bad = {**event, **broken}
        assert plain_event_ts(bad) is None, broken
        assert plain_event_ts_us(bad) is None, broken
