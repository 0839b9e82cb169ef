"""Backoff: the delay schedule (doubling, cap, full jitter, Retry-After floor, reset) and
the waits that a stop event ends, in a thread and in an asyncio task."""

from __future__ import annotations

import asyncio
import threading

import pytest

from agentwatch.schemas.backoff import Backoff, sleep, sleep_async

#: far longer than any test may take: a wait that returns did so because of the stop
_FOREVER_S = 3600.0
#: a safety net so that a broken wait fails the test instead of hanging it
_JOIN_S = 60.0


# -- the schedule -----------------------------------------------------------------------
def test_delays_start_at_initial_and_double_per_failure() -> None:
    backoff = Backoff(0.5, 100.0)
    assert [backoff.next_s() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_delays_stop_growing_at_the_cap() -> None:
    backoff = Backoff(1.0, 5.0)
    assert [backoff.next_s() for _ in range(6)] == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_a_very_long_run_of_failures_stays_at_the_cap() -> None:
    backoff = Backoff(0.1, 30.0)
    assert backoff.delay_s(10_000) == 30.0


def test_reset_starts_the_schedule_over() -> None:
    backoff = Backoff(0.2, 10.0)
    backoff.next_s()
    backoff.next_s()
    backoff.reset()
    assert backoff.failures == 0
    assert backoff.next_s() == 0.2


def test_at_least_raises_the_delay_within_the_cap() -> None:
    backoff = Backoff(0.2, 10.0)
    assert backoff.next_s(at_least_s=3.0) == 3.0
    assert backoff.next_s(at_least_s=60.0) == 10.0
    assert backoff.failures == 2


def test_jitter_draws_below_the_ceiling() -> None:
    draws = iter([0.0, 0.5, 0.999])
    backoff = Backoff(1.0, 8.0, jitter=True, rng=lambda: next(draws))
    assert backoff.delay_s(1) == 0.0
    assert backoff.delay_s(3) == pytest.approx(2.0)  # half of the ceiling 4
    assert backoff.delay_s(10) == pytest.approx(0.999 * 8.0)  # the ceiling is the cap


def test_jittered_delays_stay_within_zero_and_the_ceiling() -> None:
    backoff = Backoff(0.5, 30.0, jitter=True)
    for failures in range(1, 12):
        ceiling_s = backoff.ceiling_s(failures)
        draws = [backoff.delay_s(failures) for _ in range(200)]
        assert all(0.0 <= d <= ceiling_s for d in draws)
        assert len(set(draws)) > 1  # drawn, not constant


def test_initial_above_the_cap_is_refused_naming_both() -> None:
    with pytest.raises(ValueError, match=r"initial_s=5\.0, max_s=1\.0"):
        Backoff(5.0, 1.0)


def test_negative_initial_is_refused() -> None:
    with pytest.raises(ValueError, match="initial_s"):
        Backoff(-1.0, 1.0)


# -- waits that a stop ends ---------------------------------------------------------------
class _SeenEvent(threading.Event):
    """A threading.Event that says when someone starts waiting on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting.set()
        return super().wait(timeout)


def test_sleep_runs_out_when_nothing_stops_it() -> None:
    assert sleep(0.0, threading.Event()) is False


def test_sleep_returns_at_once_when_already_stopped() -> None:
    stop = threading.Event()
    stop.set()
    assert sleep(_FOREVER_S, stop) is True


def test_a_stop_during_sleep_wakes_the_thread() -> None:
    stop = _SeenEvent()
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(sleep(_FOREVER_S, stop)))
    waiter.start()
    assert stop.waiting.wait(_JOIN_S)
    stop.set()
    waiter.join(_JOIN_S)
    assert not waiter.is_alive()
    assert result == [True]


def test_sleep_async_runs_out_when_nothing_stops_it() -> None:
    async def main() -> bool:
        return await sleep_async(0.0, asyncio.Event())

    assert asyncio.run(main()) is False


def test_sleep_async_returns_at_once_when_already_stopped() -> None:
    async def main() -> bool:
        stop = asyncio.Event()
        stop.set()
        return await asyncio.wait_for(sleep_async(_FOREVER_S, stop), _JOIN_S)

    assert asyncio.run(main()) is True


def test_a_stop_during_sleep_async_wakes_the_task() -> None:
    async def main() -> tuple[bool, bool]:
        stop = asyncio.Event()
        task = asyncio.create_task(sleep_async(_FOREVER_S, stop))
        await asyncio.sleep(0)  # the task runs up to its wait
        await asyncio.sleep(0)
        waiting = not task.done()
        stop.set()
        return waiting, await asyncio.wait_for(task, _JOIN_S)

    assert asyncio.run(main()) == (True, True)
