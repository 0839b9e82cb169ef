"""Every faust-streaming (and aiokafka) internal the worker relies on, in one place.

faust-streaming is pinned to 0.15.x (pyproject.toml). Where its public API does the job
the worker uses it (``seek_wait``, ``resume_partitions``, ``highwater``, ``commit``,
``producer.send``, ``Store.set_persisted_offset``); what it has no public API for is here,
each with the reason. :func:`problems` checks that they are all still there: the worker
refuses to start without them (one line naming what changed), and a unit test fails the
same way when an upgrade of faust-streaming or aiokafka changes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

__all__ = [
    "committed_offset",
    "current_event",
    "eager_delivery",
    "forget_ack_gap",
    "last_fetch_s",
    "own_ack_gaps",
    "problems",
    "short_fetch_wait",
    "store_write_many",
]

AddGap = Callable[[Any, int, int], Awaitable[None]]


def short_fetch_wait(max_wait_ms: int) -> None:
    """Make faust's worker consumer ask the broker to hold a fetch at most ``max_wait_ms``
    (faust hard-codes 1,500 ms, and aiokafka parks new records behind the fetch in flight:
    most of an alert's latency). No setting reaches it: faust builds the aiokafka consumer
    in ``AIOKafkaConsumerThread._create_worker_consumer``, which is wrapped here to set
    aiokafka's ``_fetch_max_wait_ms`` before ``start()`` builds the fetcher. Idempotent."""
    from faust.transport.drivers import aiokafka as driver  # noqa: PLC0415

    thread_cls: Any = driver.AIOKafkaConsumerThread
    if getattr(thread_cls, "_agentwatch_short_fetch", False):
        return
    create = thread_cls._create_worker_consumer

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = max_wait_ms
        return consumer

    thread_cls._create_worker_consumer = create_worker_consumer
    thread_cls._agentwatch_short_fetch = True


def eager_delivery() -> None:
    """Hand each fetched record to faust's streams without four asyncio tasks per record.

    faust's consumer loop (``Consumer._drain_messages``) delivers every record with
    ``await self.wait_first(callback(message), self.suspend_flow.wait())``: mode's
    ``wait_first`` wraps the callback, the flow event and the consumer's stopped and
    crashed events in four tasks and an ``asyncio.wait`` per record, so that a delivery
    blocked on a full stream buffer gives up when a rebalance suspends the flow. That was
    the largest single cost of the worker over one-event records (KAFKA.md: 36 % of a bare
    faust agent). The callback almost never blocks (the conductor puts the event on a
    stream buffer with room, ``stream_buffer_maxsize``), so it is stepped once here, in
    place: when it completes without suspending, the record is delivered exactly as the
    tasks would have delivered it, in the same order, and no task is made. When it
    suspends (flow control during a rebalance, a full buffer, the producer's buffer, a
    lock), the rest of it runs under faust's own ``wait_first`` as before, cancellable by
    a suspended flow. What Python 3.12's eager tasks do, for this one call.

    Patched on faust's Consumer class (the call site is the consumer's only use of
    ``wait_first`` with two awaitables; every other shape goes to mode's as it is).
    Idempotent."""
    import faust.transport.consumer as faust_consumer  # noqa: PLC0415
    from mode.services import WaitResults  # noqa: PLC0415

    consumer_cls: Any = faust_consumer.Consumer
    if getattr(consumer_cls, "_agentwatch_eager_delivery", False):
        return
    wait_first = consumer_cls.wait_first

    async def eager_wait_first(self: Any, *coros: Any, timeout: Any = None) -> Any:
        if len(coros) != 2 or timeout is not None or not asyncio.iscoroutine(coros[0]):
            return await wait_first(self, *coros, timeout=timeout)
        delivery, flow = coros
        try:
            yielded = delivery.send(None)
        except StopIteration as done:
            flow.close()  # the flow event's wait(), never started
            return WaitResults([delivery], [done.value], False)
        except BaseException:
            flow.close()
            raise
        return await wait_first(self, _resume(delivery, yielded), flow)

    consumer_cls.wait_first = eager_wait_first
    consumer_cls._agentwatch_eager_delivery = True


async def _resume(coro: Coroutine[Any, Any, Any], yielded: Any) -> Any:
    """Run the rest of ``coro``, which has suspended once, yielding ``yielded``: what an
    asyncio task does with a coroutine (wait for the future it yielded, or a loop turn for a
    bare yield; then step it again); a cancellation is thrown into it."""
    try:
        while True:
            try:
                if yielded is None:
                    await asyncio.sleep(0)
                else:
                    yielded._asyncio_future_blocking = False
                    await asyncio.wait([yielded])
            except asyncio.CancelledError as exc:
                if yielded is not None:
                    yielded.cancel()
                yielded = coro.throw(exc)
                continue
            yielded = coro.send(None)
    except StopIteration as done:
        return done.value
    finally:
        coro.close()


@contextlib.contextmanager
def current_event(event: Any) -> Iterator[None]:
    """Make ``event`` the stream's current event. A table's local store picks the
    partition of a write from it; the worker writes state at checkpoints, outside the
    agent's iteration, so it sets it itself (faust's own context variable)."""
    from faust.streams import _current_event  # noqa: PLC0415

    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def committed_offset(consumer: Any, tp: Any) -> int | None:
    """The offset faust last committed (or sought to) for ``tp``; faust keeps it and has
    no public getter (aiokafka's ``committed()`` asks the broker every time)."""
    value = consumer._committed_offset.get(tp)
    return None if value is None else int(value)


def own_ack_gaps(consumer: Any, topics: set[str]) -> AddGap:
    """faust records a jump in a partition's offsets as an "ack gap" and commits over it;
    on ``topics`` the worker checks jumps itself (_offsets.py), so faust adds none there.
    Returns faust's own ``_add_gap`` (the worker calls it for holes the broker confirmed).
    Idempotent per consumer."""
    kept: AddGap | None = getattr(consumer, "_agentwatch_faust_add_gap", None)
    if kept is not None:
        return kept
    original: AddGap = consumer._add_gap

    async def add_gap(tp: Any, offset_from: int, offset_to: int) -> None:
        if tp.topic not in topics:
            await original(tp, offset_from, offset_to)

    consumer._add_gap = add_gap
    consumer._agentwatch_faust_add_gap = original
    return original


def forget_ack_gap(consumer: Any, tp: Any, from_offset: int) -> None:
    """Drop the ack gaps faust holds for ``tp`` from ``from_offset`` on (never commit over
    a hole read again); the gaps below, holes the broker confirmed, stay."""
    gaps = consumer._gap.get(tp)
    if gaps:
        gaps.chop(from_offset, 1 << 62)


def last_fetch_s(consumer: Any, tp: Any) -> float | None:
    """When (wall clock, seconds) the broker last answered a fetch for ``tp``, records or
    not: the time its highwater was last confirmed. aiokafka's public
    ``last_poll_timestamp``, on the aiokafka consumer faust keeps inside its consumer
    thread (faust has no getter for it). None before the first answer."""
    inner = consumer._thread._consumer
    if inner is None:
        return None
    try:
        stamp_ms = inner.last_poll_timestamp(tp)
    except Exception:  # noqa: BLE001 (aiokafka raises IllegalStateError when not assigned)
        return None
    return None if stamp_ms is None else stamp_ms / 1000.0


def store_write_many(store: Any, partition: int,
                     items: list[tuple[bytes, bytes | None]]) -> bool:
    """Write (value) or delete (None) the raw ``items`` of one partition of a table's local
    store in one RocksDB write batch, what faust does itself when it applies a changelog
    batch (``Store.apply_changelog_batch``); False, with nothing done, when the store is
    not faust's RocksDB store on rocksdict (write through the store's mapping then).
    faust's own per-key path costs a database write per key, an update of its (threaded,
    1,000-entry) key index, and a delete of a key the index has forgotten goes to every
    partition's database: ~60 % of a checkpoint's writes (py-spy, alert_latency at 20k)."""
    from faust.stores import rocksdb  # noqa: PLC0415

    if not isinstance(store, rocksdb.Store) or not getattr(store, "use_rocksdict", False):
        return False
    import rocksdict  # noqa: PLC0415 (faust's store uses it: installed)

    batch = rocksdict.WriteBatch(raw_mode=True)
    for key, value in items:
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)
    store._db_for_partition(partition).write(batch)
    return True


def problems() -> list[str]:
    """What is missing of the internals above (empty: all there)."""
    import aiokafka  # noqa: PLC0415
    import faust  # noqa: PLC0415
    import faust.streams  # noqa: PLC0415
    import faust.transport.consumer as faust_consumer  # noqa: PLC0415
    from faust.transport.drivers import aiokafka as driver  # noqa: PLC0415

    found: list[str] = []
    versions = f"faust-streaming {faust.__version__}, aiokafka {aiokafka.__version__}"

    def missing(what: str, why: str) -> None:
        found.append(f"{what} is gone ({versions}); the worker uses it {why}")

    if not hasattr(faust.streams, "_current_event"):
        missing("faust.streams._current_event", "to write table state at checkpoints")
    if not callable(getattr(driver.AIOKafkaConsumerThread, "_create_worker_consumer", None)):
        missing("AIOKafkaConsumerThread._create_worker_consumer", "to shorten fetch waits")
    if "_fetch_max_wait_ms" not in inspect.getsource(aiokafka.AIOKafkaConsumer.start):
        missing("AIOKafkaConsumer._fetch_max_wait_ms (read by start())", "to shorten fetch waits")
    annotations = getattr(faust_consumer.Consumer, "__annotations__", {})
    for name, why in (("_committed_offset", "for the committed offsets"),
                      ("_gap", "to drop ack gaps over holes")):
        if name not in annotations:
            missing(f"faust Consumer.{name}", why)
    drain = inspect.getsource(faust_consumer.Consumer._drain_messages)
    if "self.wait_first(" not in drain or "callback(message), self.suspend_flow.wait()" \
            not in drain:
        missing("Consumer._drain_messages' wait_first(callback(message), ...) per record",
                "to deliver records without four tasks each")
    if not callable(getattr(faust_consumer.Consumer, "_add_gap", None)):
        missing("faust Consumer._add_gap", "to keep faust from committing over holes")
    if "_consumer" not in getattr(driver.AIOKafkaConsumerThread, "__annotations__", {}):
        missing("AIOKafkaConsumerThread._consumer", "to read when a fetch last answered")
    if "_thread" not in getattr(faust_consumer.ThreadDelegateConsumer, "__annotations__", {}):
        missing("faust ThreadDelegateConsumer._thread", "to read when a fetch last answered")
    if not callable(getattr(aiokafka.AIOKafkaConsumer, "last_poll_timestamp", None)):
        missing("AIOKafkaConsumer.last_poll_timestamp", "to read when a fetch last answered")
    from faust.stores import rocksdb  # noqa: PLC0415

    if not callable(getattr(rocksdb.Store, "_db_for_partition", None)):
        missing("faust rocksdb Store._db_for_partition", "to write state in batches")
    for name in ("seek_wait", "resume_partitions", "on_buffer_drop", "highwater"):
        if not callable(getattr(faust_consumer.Consumer, name, None)):
            missing(f"faust Consumer.{name}", "(public API)")
    return found
