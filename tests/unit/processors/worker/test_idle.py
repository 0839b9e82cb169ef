"""When the worker calls an input partition idle (``_idle``, pure).

On the broker, tests/integration/test_worker_late_producer.py (records after every
partition went idle) and test_worker_faults.py cover the whole; here each condition of the
decision, one at a time, including the one the fault matrix found missing: the first fetch
answer after an outage judged before the 0.5 s sampler saw the gap.
"""

from __future__ import annotations

import pytest

from agentwatch.processors.worker._idle import (
    FETCH_GAP_S,
    QUIET_AFTER_GAP_S,
    FetchGaps,
    PartitionView,
    idle_until_us,
)

IDLE_AFTER_S = 1.0
WALL_S = 1_000_000.0  # "now", wall clock


def _view(*, caught_up: bool = True, quiet_s: float = 5.0, fetched_s: float | None = WALL_S,
          back_s: float | None = None) -> PartitionView:
    return PartitionView(caught_up, quiet_s, fetched_s, back_s)


def test_a_caught_up_quiet_partition_confirmed_by_a_later_answer_is_idle_up_to_it() -> None:
    fetched_s = WALL_S - 0.3
    assert idle_until_us(_view(fetched_s=fetched_s), wall_s=WALL_S,
                         idle_after_s=IDLE_AFTER_S) == int((fetched_s - IDLE_AFTER_S) * 1e6)


@pytest.mark.parametrize("view", [
    _view(caught_up=False),  # records left to read
    _view(quiet_s=0.5),  # a record came less than idle_after_s ago
    _view(fetched_s=None),  # the broker never answered
    # the last answer came 4.5 s after the last record: quiet for only 0.5 s of it, as far
    # as the broker confirmed (it has not answered since: stopped or frozen)
    _view(quiet_s=5.0, fetched_s=WALL_S - 4.5),
], ids=["not-caught-up", "not-quiet", "no-answer", "no-answer-after-the-quiet-period"])
def test_a_partition_is_not_idle(view: PartitionView) -> None:
    assert idle_until_us(view, wall_s=WALL_S, idle_after_s=IDLE_AFTER_S) is None


def test_after_a_gap_in_answers_a_partition_waits_quiet_after_gap_s_since_they_came_back() -> None:
    back_s = WALL_S - QUIET_AFTER_GAP_S + 1.0
    assert idle_until_us(_view(quiet_s=60.0, back_s=back_s), wall_s=WALL_S,
                         idle_after_s=IDLE_AFTER_S) is None
    later_s = back_s + QUIET_AFTER_GAP_S
    assert idle_until_us(_view(quiet_s=60.0, fetched_s=later_s, back_s=back_s),
                         wall_s=later_s, idle_after_s=IDLE_AFTER_S) == int(
                             (later_s - IDLE_AFTER_S) * 1e6)


def test_fetch_gaps_notes_when_answers_come_back_after_a_gap_and_keeps_it() -> None:
    gaps = FetchGaps()
    assert gaps.note(0, None) is None
    for fetched_s in (100.0, 100.5, 101.0):  # the 0.5 s sampler, answers flowing
        assert gaps.note(0, fetched_s) is None
    assert gaps.note(0, 101.0 + FETCH_GAP_S) is None  # exactly the gap: not more than it
    back_s = 101.0 + FETCH_GAP_S + 12.0  # the broker was stopped ~12 s
    assert gaps.note(0, back_s) == back_s
    assert gaps.note(0, back_s + 0.5) == back_s
    assert gaps.note(0, None) == back_s  # no new answer: still back since then
    assert gaps.note(1, back_s) is None  # per partition


def test_the_first_answer_after_an_outage_is_not_idle_though_the_sampler_missed_the_gap() -> None:
    # the sampler noted answers up to 100.0, then the broker went away; its first answer
    # after coming back (130.0) is judged before the sampler runs again: the judge notes
    # the answer itself and sees the gap
    gaps = FetchGaps()
    gaps.note(0, 100.0)
    back_s = gaps.note(0, 130.0)
    assert back_s == 130.0
    assert idle_until_us(_view(quiet_s=40.0, fetched_s=130.0, back_s=back_s), wall_s=130.2,
                         idle_after_s=IDLE_AFTER_S) is None
    # without that check (no gap known) the same answer would have made it idle at once
    assert idle_until_us(_view(quiet_s=40.0, fetched_s=130.0, back_s=None), wall_s=130.2,
                         idle_after_s=IDLE_AFTER_S) is not None
