"""The faust-streaming internals the worker relies on (one module: _faust_internals.py).

The first test is the upgrade alarm: it fails, naming what changed, when a new
faust-streaming or aiokafka drops one of them (the worker then refuses to start with the
same message). The others run the internals on a real faust consumer (no broker needed:
faust builds it without connecting)."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import faust.streams
import pytest
from faust.transport.drivers import aiokafka as driver
from faust.types import TP

from agentwatch.processors.worker import _faust_internals as internals


def test_every_internal_the_worker_uses_is_still_there() -> None:
    assert internals.problems() == []


@pytest.fixture
def consumer() -> Iterator[Any]:
    """faust's aiokafka consumer of an app, not started (its event loops closed after)."""
    app = faust.App("agentwatch-internals-test", broker="kafka://127.0.0.1:1",
                    web_enabled=False)
    consumer = app.consumer
    yield consumer
    consumer._thread.thread_loop.close()
    app.loop.close()


def test_faust_adds_no_ack_gap_on_the_worker_topics_but_still_on_others(consumer: Any) -> None:
    async def go() -> None:
        original = internals.own_ack_gaps(consumer, {"events"})
        assert internals.own_ack_gaps(consumer, {"events"}) is original  # idempotent
        await consumer._add_gap(TP("events", 0), 5, 9)  # what faust calls on a jump
        await consumer._add_gap(TP("other", 0), 5, 9)
        assert TP("events", 0) not in consumer._gap
        assert TP("other", 0) in consumer._gap
        await original(TP("events", 1), 3, 4)  # holes the broker confirmed: faust's own
        await original(TP("events", 1), 9, 9)
        assert sorted((i.begin, i.end) for i in consumer._gap[TP("events", 1)]) == [
            (3, 5), (9, 10)]
        internals.forget_ack_gap(consumer, TP("events", 1), 7)  # sought back to 7
        internals.forget_ack_gap(consumer, TP("events", 2), 0)  # none: nothing happens
        assert sorted((i.begin, i.end) for i in consumer._gap[TP("events", 1)]) == [(3, 5)]

    asyncio.run(go())


def test_committed_offsets_come_from_faust_s_own_record(consumer: Any) -> None:
    assert internals.committed_offset(consumer, TP("events", 0)) is None
    consumer._committed_offset[TP("events", 0)] = 42
    assert internals.committed_offset(consumer, TP("events", 0)) == 42


def test_the_current_event_is_set_for_the_block_only() -> None:
    class Event:  # faust keeps a weak reference
        pass

    event = Event()
    var: contextvars.ContextVar[Any] = faust.streams._current_event
    before = var.get(None)
    with internals.current_event(event):
        assert var.get()() is event
    assert var.get(None) is before


def test_fetch_waits_are_shortened_once() -> None:


    internals.short_fetch_wait(50)
    wrapped = driver.AIOKafkaConsumerThread._create_worker_consumer
    internals.short_fetch_wait(50)
    assert driver.AIOKafkaConsumerThread._create_worker_consumer is wrapped


def test_no_fetch_time_before_the_consumer_fetched(consumer: Any) -> None:
    assert internals.last_fetch_s(consumer, TP("events", 0)) is None


class _Event:  # faust keeps a weak reference to the current event
    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(partition=partition)


def test_state_written_in_one_batch_reads_back_through_the_rocksdb_store(
        tmp_path: Path) -> None:
    app = faust.App("agentwatch-store-test", broker="kafka://127.0.0.1:1",
                    store="rocksdb://", datadir=str(tmp_path), web_enabled=False)
    store = app.Table("state", partitions=4, key_type=bytes, value_type=bytes).data
    assert internals.store_write_many(store, 2, [(b'[2,"a"]', b"1"), (b'[2,"b"]', b"2")])
    assert internals.store_write_many(store, 2, [(b'[2,"a"]', None), (b'[2,"b"]', b"3")])
    with internals.current_event(_Event(2)):
        assert store[b'[2,"b"]'] == b"3"
        with pytest.raises(KeyError):
            store[b'[2,"a"]']
    # written to partition 2's database only
    with internals.current_event(_Event(1)), pytest.raises(KeyError):
        store[b'[2,"b"]']
    app.loop.close()


def test_a_memory_store_is_left_to_its_own_mapping() -> None:
    app = faust.App("agentwatch-store-test-2", broker="kafka://127.0.0.1:1",
                    store="memory://", web_enabled=False)
    store = app.Table("state", partitions=4, key_type=bytes, value_type=bytes).data
    assert not internals.store_write_many(store, 0, [(b"k", b"v")])
    assert b"k" not in store.data
    app.loop.close()


def _run(test: Any) -> None:
    """Run ``test(consumer)`` on a faust consumer built inside the running event loop (mode
    binds its events and wait_first's tasks to the loop of the consumer's making)."""

    async def main() -> None:
        app = faust.App("agentwatch-eager-test", broker="kafka://127.0.0.1:1",
                        web_enabled=False)
        consumer: Any = app.consumer
        try:
            await test(consumer)
        finally:
            consumer._thread.thread_loop.close()

    asyncio.run(main())


def _drain_once(consumer: Any, callback: Any) -> Any:
    """What faust's consumer loop does per record: ``wait_first(callback, flow.wait())``
    (on the consumer's own event loop, where mode's wait_first makes its tasks)."""
    return consumer.wait_first(callback, consumer.suspend_flow.wait())


def test_a_delivery_that_does_not_suspend_runs_in_place_without_a_task() -> None:
    internals.eager_delivery()
    internals.eager_delivery()  # idempotent
    delivered: list[int] = []

    async def callback(n: int) -> str:
        delivered.append(n)
        return "done"

    async def go(consumer: Any) -> None:
        tasks_before = len(asyncio.all_tasks())
        result = await _drain_once(consumer, callback(1))
        assert delivered == [1]
        assert result.results == ["done"]
        assert not result.stopped
        assert len(asyncio.all_tasks()) == tasks_before  # nothing scheduled, nothing left

    _run(go)


def test_a_delivery_that_suspends_finishes_under_faust_s_wait() -> None:
    internals.eager_delivery()
    steps: list[str] = []

    async def callback() -> int:
        steps.append("before")
        await asyncio.sleep(0)  # a bare yield
        fut = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(fut.set_result, 7)
        value: int = await fut  # a future
        steps.append("after")
        return value

    async def go(consumer: Any) -> None:
        result = await _drain_once(consumer, callback())
        assert steps == ["before", "after"]
        assert 7 in result.results

    _run(go)


def test_a_blocked_delivery_is_cancelled_when_the_flow_is_suspended() -> None:
    internals.eager_delivery()
    seen: list[str] = []

    async def callback() -> None:
        try:
            await asyncio.get_running_loop().create_future()  # a full buffer: never done
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def go(consumer: Any) -> None:
        asyncio.get_running_loop().call_later(0.01, consumer.suspend_flow.set)
        result = await _drain_once(consumer, callback())
        for _ in range(3):  # the cancelled task runs on the next turns of the loop
            await asyncio.sleep(0)
        assert seen == ["cancelled"]
        assert result.results == [True]  # the flow event's wait() won
        consumer.suspend_flow.clear()

    _run(go)


def test_an_error_in_a_delivery_propagates() -> None:
    internals.eager_delivery()

    async def callback() -> None:
        raise ValueError("bad record")

    async def go(consumer: Any) -> None:
        with pytest.raises(ValueError, match="bad record"):
            await _drain_once(consumer, callback())

    _run(go)
