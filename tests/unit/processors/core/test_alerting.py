"""The alert state of one (rule, key): its sample of event ids and its dumps."""

from __future__ import annotations

import sys

import pytest

from agentwatch.processors.core._alerting import (
    DUMP_IDS,
    LOAD_IDS,
    SAMPLE_SIZE,
    AlertTracker,
    Firing,
    Sample,
)


def test_a_sample_keeps_the_most_recent_ids_oldest_first() -> None:
    sample = Sample()
    sample.extend(f"e{i}" for i in range(SAMPLE_SIZE + 3))
    assert sample.ids() == [f"e{i}" for i in range(3, SAMPLE_SIZE + 3)]
    assert list(sample) == sample.ids()
    assert len(sample) == SAMPLE_SIZE


def test_a_short_sample_reads_in_order() -> None:
    sample = Sample()
    sample.extend(["a", "b"])
    assert sample.ids() == ["a", "b"]


def _busy_tracker() -> AlertTracker:
    tracker = AlertTracker(("t1", "s1"), "agent-1", "s1")
    tracker.firing = Firing("alert-1", 1_795_000_000_000_000)
    tracker.cooldown_until_us = 1_794_000_000_000_000
    tracker.sample.extend(f"e{i}" for i in range(12))
    return tracker


def _same(a: AlertTracker, b: AlertTracker) -> bool:
    return (a.key, a.agent_id, a.session_id, a.firing, a.cooldown_until_us, a.sample.ids()) == (
        b.key, b.agent_id, b.session_id, b.firing, b.cooldown_until_us, b.sample.ids())


def test_a_tracker_dump_round_trips() -> None:
    tracker = _busy_tracker()
    assert _same(AlertTracker.from_dump(tracker.key, tracker.dump()), tracker)


def test_a_new_tracker_dumps_only_its_agent() -> None:
    tracker = AlertTracker(("t1", "s1"), "agent-1", "s1")
    assert tracker.dump() == {"a": "agent-1", "s": 1}
    assert _same(AlertTracker.from_dump(tracker.key, tracker.dump()), tracker)


def test_sample_ids_among_the_dumped_session_ids_are_positions() -> None:
    tracker = _busy_tracker()
    DUMP_IDS.update({"e5": 0, "e11": 1})
    try:
        data = tracker.dump()
    finally:
        DUMP_IDS.clear()
    assert data["i"] == ["e2", "e3", "e4", 0, "e6", "e7", "e8", "e9", "e10", 1]
    LOAD_IDS.extend(["e5", "e11"])
    try:
        loaded = AlertTracker.from_dump(tracker.key, data)
    finally:
        LOAD_IDS.clear()
    assert _same(loaded, tracker)


def test_a_sample_position_past_the_session_ids_is_refused() -> None:
    with pytest.raises(ValueError, match="event id #3 of 0"):
        AlertTracker.from_dump(("t1", "s1"), {"i": [3]})


def test_a_tracker_dumped_in_the_first_format_loads() -> None:
    tracker = _busy_tracker()
    first = ["agent-1", "s1", "alert-1", 1_795_000_000_000_000, 1_794_000_000_000_000,
             tracker.sample.ids()]
    assert _same(AlertTracker.from_dump(tracker.key, first), tracker)


def test_a_tracker_is_its_own_sample_and_is_never_false() -> None:
    tracker = AlertTracker(("t", "s"), "a", "s")
    assert tracker.sample is tracker
    assert len(tracker.sample) == 0
    assert tracker  # an empty sample does not make the tracker false
    tracker.sample.append("e1")
    assert tracker.sample.ids() == ["e1"]


@pytest.mark.parametrize("n", [SAMPLE_SIZE - 1, SAMPLE_SIZE, SAMPLE_SIZE + 5])
def test_a_long_sample_takes_only_the_room_of_its_ids(n: int) -> None:
    sample = Sample()
    sample.extend(f"e{i}" for i in range(n))
    held = min(n, SAMPLE_SIZE)
    assert sys.getsizeof(sample._ids) == sys.getsizeof([None] * held)
    assert sample.ids() == [f"e{i}" for i in range(n - held, n)]
