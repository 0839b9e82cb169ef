"""SlidingWindow: bucket semantics, disorder, eviction, construction."""

from __future__ import annotations

import random

import pytest

from agentwatch.processors.core import ADDED, LATE, REORDERED, SlidingWindow


# -- window boundaries ------------------------------------------------------------------------
def test_exact_window_excludes_event_at_t_minus_window() -> None:
    window = SlidingWindow(window_us=10, step_us=1, disorder_us=0)
    window.add(100, 1, 0)
    window.add(110, 0, 0)
    assert window.sum_a == 0


def test_exact_window_includes_event_just_after_t_minus_window() -> None:
    window = SlidingWindow(window_us=10, step_us=1, disorder_us=0)
    window.add(101, 1, 0)
    window.add(110, 0, 0)
    assert window.sum_a == 1


def test_exact_window_includes_event_at_t() -> None:
    window = SlidingWindow(window_us=10, step_us=1, disorder_us=0)
    window.add(100, 1, 0)
    window.add(110, 5, 0)
    assert window.sum_a == 5


def test_bucketed_window_drops_a_whole_bucket_at_its_boundary() -> None:
    # window 10 ms in 1 ms steps: the bucket [0, 1000) leaves at t = 10_000 (not 10_999)
    window = SlidingWindow(window_us=10_000, step_us=1_000, disorder_us=0)
    window.add(999, 1, 0)
    window.add(9_999, 0, 0)
    assert window.sum_a == 1
    window.add(10_000, 0, 0)
    assert window.sum_a == 0


def test_events_in_one_bucket_accumulate_in_one_cell() -> None:
    window = SlidingWindow(window_us=10_000, step_us=1_000, disorder_us=0)
    for ts in (5_000, 5_100, 5_999):
        window.add(ts, 2, 1)
    assert window.buckets() == [(5, 6, 3, 5_999)]
    assert (window.sum_a, window.sum_b) == (6, 3)


# -- disorder ---------------------------------------------------------------------------------
def test_add_at_or_after_high_water_mark_returns_added() -> None:
    window = SlidingWindow(window_us=10_000, step_us=1_000, disorder_us=2_000)
    assert window.add(5_000, 1, 0) == ADDED
    assert window.add(5_000, 1, 0) == ADDED
    assert window.max_ts_us == 5_000


def test_out_of_order_event_within_tolerance_is_reordered_and_counted_once() -> None:
    window = SlidingWindow(window_us=10_000, step_us=1_000, disorder_us=2_000)
    window.add(5_000, 1, 0)
    assert window.add(3_500, 10, 0) == REORDERED
    assert window.sum_a == 11
    assert window.max_ts_us == 5_000
    # both leave the window exactly once: the sum goes back to zero, never below
    window.add(30_000, 0, 0)
    assert window.sum_a == 0


def test_event_exactly_at_disorder_bound_is_accepted() -> None:
    window = SlidingWindow(window_us=10_000, step_us=1_000, disorder_us=2_000)
    window.add(5_000, 1, 0)
    assert window.add(3_000, 1, 0) == REORDERED
    assert window.sum_a == 2


def test_event_beyond_disorder_bound_is_late_and_refused() -> None:
    window = SlidingWindow(window_us=10_000, step_us=1_000, disorder_us=2_000)
    window.add(5_000, 1, 1)
    assert window.add(2_999, 7, 7) == LATE
    assert (window.sum_a, window.sum_b) == (1, 1)
    assert window.buckets() == [(5, 1, 1, 5_000)]


def test_reordered_event_into_an_existing_bucket_keeps_bucket_max_ts() -> None:
    window = SlidingWindow(window_us=10_000, step_us=1_000, disorder_us=2_000)
    window.add(4_800, 1, 0)
    window.add(5_000, 1, 0)
    window.add(4_100, 1, 0)
    assert window.buckets() == [(4, 2, 0, 4_800), (5, 1, 0, 5_000)]


def test_zero_disorder_refuses_any_older_event() -> None:
    window = SlidingWindow(window_us=10, step_us=1, disorder_us=0)
    window.add(100, 1, 0)
    assert window.add(99, 1, 0) == LATE


# -- windows other than the current one -------------------------------------------------------
def test_windows_from_yields_each_window_a_reordered_event_changed() -> None:
    # window 3 s in 1 s steps; buckets 0, 2, 3 then a late event in bucket 1
    window = SlidingWindow(window_us=3_000, step_us=1_000, disorder_us=2_000)
    window.add(0, 1, 0)
    window.add(2_000, 10, 0)
    window.add(3_000, 100, 0)
    window.add(1_500, 1_000, 0)
    assert list(window.windows_from(1_500)) == [
        (1_500, 1_001, 0),  # buckets (-2, 1]
        (2_000, 1_011, 0),  # buckets (-1, 2]
        (3_000, 1_110, 0),  # buckets (0, 3]: bucket 0 has left
    ]


def test_first_false_us_is_when_the_deciding_bucket_leaves() -> None:
    window = SlidingWindow(window_us=10_000, step_us=1_000, disorder_us=0)
    window.add(1_500, 5, 0)
    window.add(3_200, 5, 0)
    window.add(4_000, 5, 0)
    # sum 15; "sum > 6" stops holding when bucket 3 leaves: at (3 + 10) * 1000
    assert window.first_false_us(lambda a, b: a > 6) == (13_000, 5, 0)


def test_first_false_us_respects_until_us() -> None:
    window = SlidingWindow(window_us=10_000, step_us=1_000, disorder_us=0)
    window.add(1_500, 5, 0)
    window.add(3_200, 5, 0)
    window.add(4_000, 5, 0)
    assert window.first_false_us(lambda a, b: a > 6, until_us=12_999) is None


def test_first_false_us_is_none_when_predicate_holds_on_empty_window() -> None:
    window = SlidingWindow(window_us=10_000, step_us=1_000, disorder_us=0)
    window.add(1_500, 5, 0)
    assert window.first_false_us(lambda a, b: True) is None


def test_empty_at_us_is_when_the_head_bucket_leaves() -> None:
    window = SlidingWindow(window_us=10_000, step_us=1_000, disorder_us=0)
    assert window.is_empty()
    window.add(4_321, 1, 0)
    assert not window.is_empty()
    assert window.empty_at_us() == 14_000


# -- memory -----------------------------------------------------------------------------------
def test_retained_buckets_stay_bounded_over_a_long_stream() -> None:
    step_us, n, disorder_us = 1_000, 60, 5_000
    d = -(-disorder_us // step_us)
    window = SlidingWindow(window_us=n * step_us, step_us=step_us, disorder_us=disorder_us)
    rng = random.Random(7)
    ts = 0
    for _ in range(10_000):
        ts += rng.randrange(0, 3 * step_us)
        window.add(ts - rng.randrange(0, disorder_us + 1), 1, 1)
        assert len(window.buckets()) <= n + d + 1


# -- construction -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("window_us", "step_us", "disorder_us"),
    [
        (10_000, 3_000, 0),  # window not a multiple of step
        (10_000, 0, 0),  # zero step
        (10_000, -1_000, 0),  # negative step
        (0, 1_000, 0),  # empty window
        (-10_000, 1_000, 0),  # negative window
    ],
)
def test_constructor_rejects_bad_window_or_step(
    window_us: int, step_us: int, disorder_us: int
) -> None:
    with pytest.raises(ValueError, match="multiple of step_us"):
        SlidingWindow(window_us, step_us, disorder_us)


@pytest.mark.parametrize("disorder_us", [10_000, 9_001, 20_000])
def test_constructor_rejects_disorder_not_shorter_than_window(disorder_us: int) -> None:
    # 9_001 us rounds up to 10 steps of 1 ms: as long as the whole window
    with pytest.raises(ValueError, match="disorder must be shorter"):
        SlidingWindow(10_000, 1_000, disorder_us)


def test_constructor_accepts_disorder_one_step_shorter_than_window() -> None:
    window = SlidingWindow(10_000, 1_000, 9_000)
    assert window.window_buckets == 10
    assert window.step_us == 1_000


def _filled(seed: int) -> SlidingWindow:
    """A 10 s window in 1 s steps with 2 s of disorder, some buckets gone old."""
    rng = random.Random(seed)
    window = SlidingWindow(10_000_000, 1_000_000, 2_000_000)
    t_us = 1_795_000_000_000_000
    for _ in range(60):
        t_us += rng.randrange(0, 900_000)
        window.add(t_us - rng.randrange(0, 2_000_000), rng.randrange(1, 10**9), rng.randrange(3))
    return window


@pytest.mark.parametrize("seed", range(5))
def test_a_dumped_window_loads_with_the_same_buckets_and_sums(seed: int) -> None:
    window = _filled(seed)
    data = window.dump()
    assert max(abs(v) for v in data[2:]) < 10**10  # relative: no absolute µs times
    loaded = SlidingWindow(10_000_000, 1_000_000, 2_000_000)
    loaded.load(data)
    assert loaded.buckets() == window.buckets()
    assert (loaded.max_ts_us, loaded.sum_a, loaded.sum_b) == (
        window.max_ts_us, window.sum_a, window.sum_b)


def test_a_window_dumped_in_the_first_format_loads() -> None:
    window = _filled(7)
    cells = window.buckets()
    n_old = len(cells) - sum(1 for c in cells if c[0] > window.head - 10)
    flat = [[v for cell in part for v in cell] for part in (cells[:n_old], cells[n_old:])]
    loaded = SlidingWindow(10_000_000, 1_000_000, 2_000_000)
    loaded.load([window.max_ts_us, *flat])
    assert loaded.buckets() == cells
    assert (loaded.sum_a, loaded.sum_b) == (window.sum_a, window.sum_b)


def test_a_window_dump_with_a_bad_bucket_count_is_refused() -> None:
    loaded = SlidingWindow(10_000_000, 1_000_000, 2_000_000)
    with pytest.raises(ValueError, match="old buckets"):
        loaded.load([5_000_000, 3, 0, 1, 0, 0])
