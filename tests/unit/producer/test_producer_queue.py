from __future__ import annotations

import logging
import threading

import pytest

from agentwatch.producer._queue import BoundedQueue, RateLimitedLog


def _queue(maxsize: int = 3, wake_at: int = 2) -> tuple[BoundedQueue[int], threading.Event]:
    wake = threading.Event()
    return BoundedQueue(maxsize, wake, wake_at), wake


def test_put_then_drain_returns_items_in_order_with_the_last_sequence_number() -> None:
    queue, _ = _queue()
    for i in range(3):
        assert queue.put(i)
    assert queue.drain() == ([0, 1, 2], 3)
    assert len(queue) == 0


def test_full_queue_drops_the_new_item_and_counts_it() -> None:
    queue, _ = _queue(maxsize=2)
    assert queue.put(1)
    assert queue.put(2)
    assert not queue.put(3)
    assert queue.dropped == 1
    assert queue.drain()[0] == [1, 2]


def test_reaching_wake_at_wakes_the_worker() -> None:
    queue, wake = _queue(wake_at=2)
    queue.put(1)
    assert not wake.is_set()
    queue.put(2)
    assert wake.is_set()


def test_drop_counts_items_refused_before_the_queue() -> None:
    queue, _ = _queue()
    queue.drop(2)
    assert queue.dropped == 2


class _Clock:
    def __init__(self) -> None:
        self.now_ns = 0

    def __call__(self) -> int:
        return self.now_ns


def test_rate_limited_log_warns_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    log = RateLimitedLog(interval_s=10.0, clock_ns=clock)
    with caplog.at_level(logging.WARNING, logger="agentwatch.producer"):
        assert log.warn_limited("full", "queue full")
        for _ in range(5):
            assert not log.warn_limited("full", "queue full")
        clock.now_ns = 9_999_999_999
        assert not log.warn_limited("full", "queue full")
    assert [r.getMessage() for r in caplog.records] == ["queue full"]


def test_rate_limited_log_warns_again_after_the_interval_with_the_suppressed_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _Clock()
    log = RateLimitedLog(interval_s=10.0, clock_ns=clock)
    with caplog.at_level(logging.WARNING, logger="agentwatch.producer"):
        log.warn_limited("full", "queue full")
        log.warn_limited("full", "queue full")
        clock.now_ns = 10_000_000_000
        assert log.warn_limited("full", "queue full")
    assert caplog.records[-1].getMessage() == "queue full (1 similar messages suppressed)"


def test_rate_limited_log_limits_each_topic_separately(caplog: pytest.LogCaptureFixture) -> None:
    log = RateLimitedLog(interval_s=10.0, clock_ns=_Clock())
    with caplog.at_level(logging.WARNING, logger="agentwatch.producer"):
        assert log.warn_limited("full", "queue full")
        assert log.warn_limited("invalid", "bad event")
    assert len(caplog.records) == 2
