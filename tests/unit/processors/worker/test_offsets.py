"""The worker's check that no record of a partition is skipped (OffsetGuard, pure).

The faust race it guards against (tests/integration/test_worker_faults.py and
test_worker_checkpoints.py exercise it on the broker): records 122..126 delivered, then
144..: 127..143 must never be processed past, nor their offsets committed.
"""

from __future__ import annotations

import random

from agentwatch.processors.worker._offsets import OffsetGuard


def test_contiguous_offsets_are_all_admitted_and_the_next_offset_moves_on() -> None:
    guard = OffsetGuard()
    guard.start(0, 10)
    assert guard.admit(0, [10, 11, 12]) == ([0, 1, 2], None)
    assert guard.next_offset(0) == 13
    assert guard.admit(0, [13]) == ([0], None)
    assert guard.next_offset(0) == 14


def test_records_read_again_are_admitted_without_moving_the_next_offset() -> None:
    # re-read after a restart from an older commit, or delivered twice by faust (61, 61):
    # the stages skip what their state has; they must still be acked for faust's commit
    guard = OffsetGuard()
    guard.start(0, 60)
    assert guard.admit(0, [55, 56, 60, 61, 61, 62]) == ([0, 1, 2, 3, 4, 5], None)
    assert guard.next_offset(0) == 63


def test_nothing_past_a_hole_is_admitted() -> None:
    guard = OffsetGuard()
    guard.start(0, 122)
    kept, hole = guard.admit(0, [122, 123, 124, 125, 126, 144, 145])
    assert (kept, hole) == ([0, 1, 2, 3, 4], 5)
    assert guard.next_offset(0) == 127  # the offset to read again from


def test_after_a_seek_back_the_records_past_it_are_dropped_until_the_awaited_one_comes() -> None:
    guard = OffsetGuard()
    guard.start(0, 127)
    assert guard.admit(0, [144]) == ([], 0)
    guard.sought_back(0, now_s=0.0)
    # read before the seek, still in the stream's queue: dropped, no new hole
    assert guard.admit(0, [145, 146, 147]) == ([], None)
    assert guard.awaiting(0)
    # then the seek's records, from the awaited one on
    assert guard.admit(0, [148, 127, 128]) == ([1, 2], None)
    assert not guard.awaiting(0)
    assert guard.next_offset(0) == 129
    # and past them, a jump is a hole again
    assert guard.admit(0, [131]) == ([], 0)


def test_a_real_hole_is_skipped_to_its_far_side() -> None:
    guard = OffsetGuard()
    guard.start(3, 0)
    assert guard.admit(3, [5, 6]) == ([], 0)
    guard.skip_to(3, 5)  # the broker has nothing before 5 (a trimmed log)
    assert guard.admit(3, [5, 6]) == ([0, 1], None)
    assert guard.next_offset(3) == 7


def test_partitions_are_independent_and_forget_resets_them() -> None:
    guard = OffsetGuard()
    guard.start(0, 5)
    guard.start(1, 50)
    assert guard.admit(1, [50]) == ([0], None)
    assert guard.admit(0, [7]) == ([], 0)
    assert guard.next_offset(1) == 51
    guard.forget()
    assert not guard.known(0)
    assert not guard.known(1)


def test_an_overdue_seek_back_is_reported_once_its_time_has_passed() -> None:
    guard = OffsetGuard()
    guard.start(0, 40)
    guard.start(1, 9)
    guard.admit(0, [44])
    guard.sought_back(0, now_s=100.0)
    assert guard.overdue(2.0, now_s=101.0) == []
    assert guard.overdue(2.0, now_s=102.5) == [(0, 40)]
    guard.sought_back(0, now_s=102.5)  # sought again
    assert guard.overdue(2.0, now_s=103.0) == []
    guard.start(0, 40)  # a new assignment: nothing awaited any more
    assert guard.overdue(2.0, now_s=200.0) == []


def test_random_deliveries_never_admit_an_offset_before_all_below_it() -> None:
    """Whatever faust delivers (duplicates, stale runs, jumps, even after a seek back),
    the admitted offsets above the start are exactly start, start+1, ... in order: each
    processed once before any higher one, and none skipped."""
    rng = random.Random(7)
    for _ in range(200):
        start = rng.randrange(0, 50)
        guard = OffsetGuard()
        guard.start(0, start)
        log_end = start + 200
        position = start  # the fetcher's position
        fresh: list[int] = []
        while guard.next_offset(0) < log_end:
            action = rng.random()
            if action < 0.7:  # a normal delivery from the position, maybe a duplicate
                n = rng.randrange(1, 10)
                batch = list(range(position, min(log_end, position + n)))
                position = min(log_end, position + n)
                if batch and rng.random() < 0.1:
                    batch.insert(rng.randrange(len(batch)), batch[0])
            else:  # faust loses a run: the position jumps ahead
                position = min(log_end, position + rng.randrange(1, 30))
                batch = list(range(position, min(log_end, position + 3)))
                position = min(log_end, position + 3)
            if not batch:  # nothing more comes: the worker's stall watchdog seeks back
                guard.sought_back(0, now_s=0.0)
                position = guard.next_offset(0)
                continue
            kept, hole = guard.admit(0, batch)
            for i in kept:
                if batch[i] >= start and batch[i] not in fresh:
                    fresh.append(batch[i])
            if hole is not None:
                guard.sought_back(0, now_s=0.0)
                position = guard.next_offset(0)  # the seek back
            elif rng.random() < 0.2:  # the worker's timer: seek again where still awaited
                for _, offset in guard.overdue(1.0, now_s=2.0):
                    guard.sought_back(0, now_s=0.0)
                    position = offset
        assert fresh == list(range(start, log_end))
