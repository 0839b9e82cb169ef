"""``agentwatch sink``: a Kafka consumer group that writes exact batches to ClickHouse.

The loop: read records (``getmany``) into one :class:`PartitionBatch` per partition;
when the rows held reach ``batch_max_events`` or the oldest is ``batch_max_ms`` old,
run a *flush round* over every partition that holds something:

1. one commit of every batch's intent (``start`` + ``pending <last>``);
2. per batch, its rows go through the one sink contract,
   :class:`~agentwatch.sinks.ClickHouseSink`: ``add_*``, then a flush with the batch's
   token prefix (staged while the previous round writes, then written; the sink makes
   the tokens, builds the Arrow batches and maps failed deliveries to rows);
3. one commit of every batch's end (``last + 1``).

See :mod:`._batches` for why that stores each row exactly once across crashes and
rebalances. While ClickHouse fails, step 2 retries the same batch with exponential
backoff (the consumer keeps polling with every partition paused, so it stays in its
group), and nothing else is read; when ClickHouse is back, the sink carries on by
itself. Bad records never stop it: they become ``dead_letters`` rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import time
from collections import Counter as Tally
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from agentwatch.schemas import default_price_table
from agentwatch.schemas.backoff import Backoff
from agentwatch.schemas.errors import BackpressureError, SinkError, TransportError
from agentwatch.schemas.kafka_group import (
    CommittedOffsets,
    ensure_compacted_topic,
    rebalance_listener,
    start_with_retry,
)
from agentwatch.sinks._ddl import SchemaConfig
from agentwatch.sinks._sink import ClickHouseSink, StagedFlush
from agentwatch.sinks.kafka._batches import (
    BatchKind,
    PartitionBatch,
    RecentIds,
    intent_metadata,
    memory_metadata,
    parse_commit,
    record_event_ids,
)
from agentwatch.sinks.kafka._metrics import SinkMetrics

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from agentwatch.sinks._settings import SinkSettings
    from agentwatch.sinks.backends.base import Backend

__all__ = ["KafkaSink", "SinkStats"]

log = logging.getLogger("agentwatch.sink")

#: Event ids remembered per partition to drop a producer's re-sent copies.
RECENT_IDS_PER_PARTITION: Final = 100_000
_FIRST_BACKOFF_S: Final = 0.2
_POLL_MS: Final = 100
_STATS_EVERY_S: Final = 30.0
#: Rebuilding a partition's recent-id memory gives up when the re-read makes no progress
#: for this long (the memory is then partial, and says so in the log).
_PRIME_STALL_S: Final = 30.0

#: Crash tests (tests/integration): ``<point>:<n>`` makes the sink SIGKILL itself at the
#: n-th time it passes that point. Points: ``taken`` (a record taken into a batch: mid-batch,
#: nothing of it committed), ``intent`` (a round's intents committed, no insert made),
#: ``insert`` (an insert made, its batch's end not committed), ``commit`` (a round's ends
#: committed).
CRASH_ENV: Final = "AGENTWATCH_TEST_CRASH_AT"


class _CrashPoints:
    """The test-only crash hook of :data:`CRASH_ENV` (does nothing when it is unset)."""

    def __init__(self, wanted: str | None) -> None:
        point, _, n = (wanted or "").partition(":")
        self._point = point
        self._n = int(n) if n.isdigit() else 0
        self._passed = 0

    def passed(self, point: str) -> None:
        if point != self._point:
            return
        self._passed += 1
        if self._passed == self._n:
            log.warning("sink: %s=%s:%d: killing myself", CRASH_ENV, point, self._n)
            os.kill(os.getpid(), signal.SIGKILL)


@dataclass(slots=True)
class SinkStats:
    records: int = 0
    events: int = 0
    alerts: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    rounds: int = 0
    retries: int = 0


@dataclass(slots=True)
class _Job:
    """One round, detached from the batches: its tables, where it ends, what it holds."""

    parts: list[StagedFlush] = field(default_factory=list)  # one per batch, with its tokens
    ends: dict[Any, int] = field(default_factory=dict)  # TopicPartition -> last offset
    end_metadata: dict[Any, str] = field(default_factory=dict)  # TopicPartition -> metadata
    events: int = 0
    alerts: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    reasons: Tally[str] = field(default_factory=Tally)  # dead letters by reason (/metrics)


class _AbandonedError(Exception):
    """A round in flight is given up (a rebalance takes the partitions, or the sink stops
    while ClickHouse fails): its intents let whoever reads the partitions next complete it."""


class KafkaSink:
    """One sink process. ``await sink.run()`` until :meth:`stop`."""

    def __init__(self, settings: SinkSettings, backend: Backend, schema: SchemaConfig) -> None:
        self._settings = settings
        self._sink = ClickHouseSink(backend, database=schema.database)
        self._kinds: dict[str, BatchKind] = {
            settings.alerts_topic: "alerts",
            settings.alerts_dlq_topic: "alert_failures",
            settings.control_topic: "control",
            settings.acks_topic: "acks",
        }
        self._batches: dict[TopicPartition, PartitionBatch] = {}
        self._recent: dict[TopicPartition, RecentIds] = {}
        self._prices = default_price_table()
        self._consumer: AIOKafkaConsumer | None = None
        self._probe: AIOKafkaConsumer | None = None  # re-reads records to rebuild id memories
        self._crash = _CrashPoints(os.environ.get(CRASH_ENV))
        self._lock = asyncio.Lock()  # a flush round, or a rebalance, at a time
        self._revoking = False
        self._stopping = asyncio.Event()
        self._committed = CommittedOffsets(settings.bootstrap_servers, settings.group_id,
                                           settings.kafka_security, stopping=self._stopping)
        self._inflight: asyncio.Task[None] | None = None
        self._inflight_job: _Job | None = None
        self._paused = False  # every partition paused while ClickHouse fails
        self.stats = SinkStats()
        self.ready = asyncio.Event()  # set once partitions are assigned
        self.metrics = SinkMetrics(self)  # /metrics: reads the stats at scrape time

    def stop(self) -> None:
        """Ask :meth:`run` to flush what it holds, commit and return."""
        self._stopping.set()

    # -- the consumer ---------------------------------------------------------------

    def _make_consumer(self, *, probe: bool = False) -> AIOKafkaConsumer:
        """The group's consumer; or (``probe``) a consumer outside the group, to re-read a
        partition's records before its committed offset. Both read committed records only,
        so the probe sees exactly the records the group consumer took."""
        from aiokafka import AIOKafkaConsumer  # noqa: PLC0415 (optional runtime dependency)

        s = self._settings
        return AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap_servers,
            group_id=None if probe else s.group_id,
            client_id=f"{s.group_id}-sink" + ("-ids" if probe else ""),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
            **s.kafka_security.client_options(),
        )

    async def run(self) -> SinkStats:
        consumer = await self._start_consumer()
        if consumer is None:  # asked to stop before Kafka could be reached
            return self.stats
        self._consumer = consumer
        if self._settings.acks_topic:  # compacted: created here before a subscription
            try:  # could auto-create it with the broker's defaults
                await ensure_compacted_topic(
                    self._settings.bootstrap_servers, self._settings.acks_topic,
                    security=self._settings.kafka_security,
                )
            except TransportError as exc:
                log.warning("sink: cannot create %s (%s)", self._settings.acks_topic, exc)
        try:
            listener = rebalance_listener(self._on_revoked, self._on_assigned)
            consumer.subscribe(list(self._settings.topics), listener=listener)
            await self._loop(consumer)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
            if self._probe is not None:
                with contextlib.suppress(Exception):
                    await self._probe.stop()
            with contextlib.suppress(Exception):
                await self._committed.close()
        return self.stats

    async def _start_consumer(self) -> AIOKafkaConsumer | None:
        """Connect, retrying with backoff while Kafka cannot be reached; None when
        stopped meanwhile."""
        return await start_with_retry(
            self._make_consumer,
            self._stopping,
            log=log,
            what="sink",
            bootstrap_servers=self._settings.bootstrap_servers,
            security=self._settings.kafka_security,
            max_backoff_s=self._settings.max_backoff_s,
        )

    async def _loop(self, consumer: AIOKafkaConsumer) -> None:
        s = self._settings
        max_age_s = s.batch_max_ms / 1000
        next_stats = time.monotonic() + _STATS_EVERY_S
        while not self._stopping.is_set():
            data = await consumer.getmany(timeout_ms=_POLL_MS, max_records=s.batch_max_events)
            async with self._lock:
                for tp, records in data.items():
                    await self._take(tp, records)
                    self.metrics.positions[tp] = records[-1].offset + 1
                if self._due(max_age_s):
                    await self._round()
            if time.monotonic() >= next_stats:
                next_stats = time.monotonic() + _STATS_EVERY_S
                log.info("sink: %s", self.stats)
        async with self._lock:
            await self._round()
            await self._settle()

    async def _take(self, tp: TopicPartition, records: Iterable[Any]) -> None:
        batch = self._batches.get(tp)
        if batch is None:  # revoked while these were in flight
            return
        recent = self._recent.get(tp)
        for record in records:
            if (batch.last is not None and record.offset <= batch.last) or (
                batch.start is not None and record.offset < batch.start
            ):
                continue  # taken already (a fetch from before a seek): batches are contiguous
            if not batch.accepts(record.offset):
                # Past an intent's cut: the re-formed batch is complete. Store it,
                # then go on with this record in the next batch.
                batch.passed_cut()
                await self._round()
            batch.add(record.offset, record.value, recent, self._prices)
            self.stats.records += 1
            self._crash.passed("taken")
            if batch.must_flush:
                await self._round()

    def _due(self, max_age_s: float) -> bool:
        rows = 0
        oldest: float | None = None
        for batch in self._batches.values():
            if batch.empty or not batch.complete:
                continue
            rows += batch.rows
            if batch.opened_at is not None and (oldest is None or batch.opened_at < oldest):
                oldest = batch.opened_at
        if oldest is None:
            return False
        return rows >= self._settings.batch_max_events or time.monotonic() - oldest >= max_age_s

    # -- a flush round ----------------------------------------------------------------

    async def _round(self) -> None:
        """Store every complete, non-empty batch (call with the lock held).

        The inserts and the final commit run in the background (:meth:`_store`) while
        the loop reads and decodes on; the next round waits for them before it commits
        its own intents, since an intent at ``start = previous end + 1`` says the
        previous batch is stored.
        """
        consumer = self._consumer
        # A batch re-formed from an intent waits for its cut (see PartitionBatch.complete).
        ready = {tp: b for tp, b in self._batches.items() if not b.empty and b.complete}
        if consumer is None or not ready:
            return
        from aiokafka.errors import KafkaError  # noqa: PLC0415
        from aiokafka.structs import OffsetAndMetadata  # noqa: PLC0415

        job = self._job(ready)  # Arrow tables: CPU work that overlaps the insert in flight
        if not await self._settle() or any(
            self._batches.get(tp) is not b for tp, b in ready.items()
        ):
            return  # the round in flight failed: these partitions are read again
        intents = {
            tp: OffsetAndMetadata(b.start, intent_metadata(b.end, b.ids_at_start))
            for tp, b in ready.items()
            if not b.intent_committed and b.start is not None and b.end is not None
        }
        try:
            if intents:
                await consumer.commit(intents)
        except KafkaError as exc:
            log.warning("sink: commit failed (%s); re-reading from the last commit", exc)
            await self._reset(list(ready))
            return
        self._crash.passed("intent")
        for batch in ready.values():
            batch.committed()  # the next records start the next batch
        self._inflight = asyncio.create_task(self._store(job))
        self._inflight_job = job

    def _job(self, ready: dict[TopicPartition, PartitionBatch]) -> _Job:
        job = _Job()
        group = self._settings.group_id
        sink = self._sink
        for tp, batch in ready.items():
            sink.add_event_rows(batch.events)
            sink.add_alerts(batch.alerts)
            sink.add_delivery_failures(batch.failures)
            sink.add_dead_letters(batch.dead_letters)
            sink.add_control(batch.controls)
            sink.add_acks(batch.acks)
            # A batch re-formed from an intent (cut_at) completes one whose first try may
            # be stored: the sink leaves out the events ClickHouse has already.
            staged = sink.stage(batch.token(group), maybe_stored=batch.cut_at is not None)
            if not staged.written:
                job.parts.append(staged)
            if batch.end is not None:
                job.ends[tp] = batch.end
                # Every record read from tp is in this batch: the memory stands at its end.
                recent = self._recent.get(tp)
                job.end_metadata[tp] = memory_metadata(None if recent is None else recent.span)
            job.events += staged.rows.events
            job.alerts += staged.rows.alerts
            job.dead_letters += staged.rows.dead_letters
            job.reasons.update(d.reason for d in batch.dead_letters)
            job.reasons.update(f.reason for f in batch.failures)
            job.duplicates += batch.duplicates
        return job

    async def _store(self, job: _Job) -> None:
        """Write a round's batches (each with its tokens), then commit its ends."""
        from aiokafka.structs import OffsetAndMetadata  # noqa: PLC0415

        for staged in job.parts:
            await self._write_with_retry(staged)
        if self._consumer is not None:
            await self._consumer.commit(
                {
                    tp: OffsetAndMetadata(end + 1, job.end_metadata.get(tp, ""))
                    for tp, end in job.ends.items()
                }
            )
            self._crash.passed("commit")

    async def _settle(self) -> bool:
        """Wait for the round in flight. False when it failed: its partitions then start
        over from their last commit (whose intent makes the retry store nothing twice)."""
        task, job = self._inflight, self._inflight_job
        if task is None or job is None:
            return True
        while not task.done():
            await asyncio.wait({task}, timeout=_POLL_MS / 1000)
            if not task.done() and self._paused and self._consumer is not None:
                # Every partition is paused (ClickHouse fails): polling returns nothing
                # but keeps this consumer in its group (max_poll_interval_ms).
                await self._consumer.getmany(timeout_ms=0)
        self._inflight = self._inflight_job = None
        exc = task.exception()
        if exc is None:
            self.stats.events += job.events
            self.stats.alerts += job.alerts
            self.stats.dead_letters += job.dead_letters
            self.stats.duplicates += job.duplicates
            self.metrics.stored(job.reasons)
            self.stats.rounds += 1
            gc.collect(1)  # the batches' objects die by refcount; collect the young rest
            return True
        from aiokafka.errors import KafkaError  # noqa: PLC0415

        if isinstance(exc, _AbandonedError):
            log.info("sink: a flush was given up (rebalance or stop); its intent completes it")
            return False
        if isinstance(exc, KafkaError):
            # The final commit failed (a rebalance, the coordinator moved): what was
            # inserted stays; the partitions are read again from the intents.
            log.warning("sink: commit failed (%s); re-reading from the last commit", exc)
            await self._reset([tp for tp in job.ends if tp in self._batches])
            return False
        raise exc

    async def _write_with_retry(self, staged: StagedFlush) -> None:
        """Write a batch through the sink, retrying while ClickHouse fails (the sink keeps
        what is not written yet in ``staged``; each table is inserted once)."""
        backoff = Backoff(min(_FIRST_BACKOFF_S, self._settings.max_backoff_s),
                          self._settings.max_backoff_s)
        try:
            while True:
                try:
                    await asyncio.to_thread(self._sink.write, staged, on_insert=self._inserted)
                except SinkError as exc:
                    wait_s = backoff.next_s(at_least_s=exc.retry_after_s
                                            if isinstance(exc, BackpressureError) else 0.0)
                    self.stats.retries += 1
                    log.warning("sink: %s; retrying in %.1f s (nothing is lost)", exc, wait_s)
                    if not self._paused and self._consumer is not None:
                        # Read nothing more until ClickHouse takes this batch.
                        self._consumer.pause(*self._consumer.assignment())
                        self._paused = True
                    await self._wait(wait_s)
                else:
                    return
        finally:
            if self._paused and self._consumer is not None:
                self._consumer.resume(*self._consumer.assignment())
                self._paused = False

    def _inserted(self, table: str, rows: int, seconds: float) -> None:
        """After each insert (in the writing thread): metrics, and the ``insert`` crash point."""
        if rows:  # 0: every event of a pending batch was stored already, nothing inserted
            self.metrics.insert_seconds.labels(table).observe(seconds)
        self._crash.passed("insert")

    async def _wait(self, wait_s: float) -> None:
        """Sleep before a retry; give up the round when a rebalance wants our partitions or
        the sink is asked to stop. (The loop keeps polling meanwhile, so the group keeps us.)
        Not :func:`agentwatch.schemas.backoff.sleep_async`: besides the stop event it
        watches ``_revoking``, a flag the rebalance callback sets."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self._revoking or self._stopping.is_set():
                raise _AbandonedError
            await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    # -- rebalances -------------------------------------------------------------------

    async def _on_revoked(self, revoked: list[TopicPartition]) -> None:
        self._revoking = True
        try:
            async with self._lock:
                await self._settle()
                for tp in revoked:
                    self._batches.pop(tp, None)
                    self._recent.pop(tp, None)
        finally:
            self._revoking = False

    async def _on_assigned(self, assigned: list[TopicPartition]) -> None:
        async with self._lock:
            await self._reset(assigned)
        self.ready.set()
        log.info("sink: assigned %s", ", ".join(f"{tp.topic}/{tp.partition}" for tp in assigned))

    async def _reset(self, partitions: list[TopicPartition]) -> None:
        """Start these partitions over from their committed offset, honouring intents."""
        consumer = self._consumer
        if consumer is None or not partitions:
            return
        from aiokafka.errors import KafkaError  # noqa: PLC0415

        committed = await self._committed.read(partitions)
        # Explicit offsets for partitions without a commit: seek_to_beginning() only
        # schedules a reset, which can land after records were fetched and hand them
        # over a second time.
        fresh = [tp for tp in partitions if committed.get(tp, (None, ""))[0] is None]
        beginnings = await consumer.beginning_offsets(fresh) if fresh else {}
        for tp in partitions:
            batch = PartitionBatch(tp.topic, tp.partition, self._kinds.get(tp.topic, "events"))
            offset, metadata = committed.get(tp, (None, ""))
            meta = parse_commit(metadata)
            if batch.kind == "events":
                # The memory is rebuilt from the log, never kept: after a failed commit the
                # one in hand holds ids of records about to be read again.
                recent = RecentIds(RECENT_IDS_PER_PARTITION, meta.ids)
                self._recent[tp] = recent
                if offset is not None and meta.ids is not None and meta.ids[0] < offset:
                    try:
                        await self._prime(tp, recent, meta.ids[0], offset)
                    except KafkaError as exc:
                        # Go on: a re-sent copy of an event the memory misses is stored
                        # again (a pending batch still checks ClickHouse first).
                        log.warning(
                            "sink: %s/%d: cannot re-read the recent-id memory (%s); "
                            "going on with a partial one",
                            tp.topic,
                            tp.partition,
                            exc,
                        )
            if offset is not None:
                batch.start = offset
                batch.cut_at = meta.cut_at
                consumer.seek(tp, offset)
                if batch.cut_at is not None:
                    log.info(
                        "sink: %s/%d: completing a batch that may be stored (offsets %d-%d)",
                        tp.topic,
                        tp.partition,
                        offset,
                        batch.cut_at,
                    )
            else:
                consumer.seek(tp, beginnings[tp])  # as auto_offset_reset="earliest"
            self._batches[tp] = batch

    async def _prime(
        self, tp: TopicPartition, recent: RecentIds, from_offset: int, to_offset: int
    ) -> None:
        """Rebuild ``tp``'s recent-id memory: re-read its records ``[from_offset,
        to_offset)`` (where the committed metadata says the memory starts, up to the
        committed offset) with the probe consumer."""
        probe = self._probe
        if probe is None:
            probe = self._make_consumer(probe=True)
            await probe.start()
            self._probe = probe
        started = time.monotonic()
        probe.assign([tp])
        probe.seek(tp, from_offset)
        position = from_offset
        progress_at = time.monotonic()
        records = 0
        while position < to_offset:
            data = await probe.getmany(tp, timeout_ms=_POLL_MS, max_records=10_000)
            for record in data.get(tp, []):
                if record.offset < to_offset:
                    recent.prime(record.offset, record_event_ids(record.value))
                    records += 1
            new_position = await probe.position(tp)
            if new_position > position:
                position, progress_at = new_position, time.monotonic()
            elif time.monotonic() - progress_at > _PRIME_STALL_S:
                log.warning(
                    "sink: %s/%d: re-reading offsets %d-%d for the recent-id memory stalled "
                    "at %d; going on with a partial memory",
                    tp.topic,
                    tp.partition,
                    from_offset,
                    to_offset - 1,
                    position,
                )
                break
        probe.unsubscribe()
        log.info(
            "sink: %s/%d: recent-id memory rebuilt from offsets %d-%d (%d records, %d ids) "
            "in %.2f s",
            tp.topic,
            tp.partition,
            from_offset,
            to_offset - 1,
            records,
            len(recent),
            time.monotonic() - started,
        )
