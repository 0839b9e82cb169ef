"""The faust-streaming shell around the two pure stages: topics, tables, batches, signals.

faust does what it is for: group membership, partition assignment, changelog-backed
tables and their recovery, offset commits, the worker process. The hot path works per
batch (``take_events``): records are grouped by partition and handed to a stage, which
returns what to send and what to write. Per batch, in this order:

1. send alerts, dead letters and forwarded events, and wait for the broker's acks;
2. write the state of every key the batch touched to the table (one write per key);
3. faust acks the batch's records; before committing their offsets it flushes the
   producer, so a committed offset always has its state and outputs on the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Awaitable, Iterable, Iterator, Sequence
from typing import Any

import faust
from faust.streams import _current_event  # the partition table writes go to (see _write)
from faust.types import TP, EventT

from agentwatch.processors.core import RulesConfig
from agentwatch.processors.worker._forward import MARK_KEY
from agentwatch.processors.worker._rekeyed_stage import RekeyedStage
from agentwatch.processors.worker._session_stage import SessionStage, StageOutput
from agentwatch.processors.worker._settings import WorkerSettings
from agentwatch.schemas import encode_alert

__all__ = ["build_app"]

log = logging.getLogger("agentwatch.worker")

#: a partition with records to read that delivers none for this long is resumed
_STALL_S = 5.0
_RAW: dict[str, Any] = {"key_type": bytes, "value_type": bytes,
                        "key_serializer": "raw", "value_serializer": "raw"}
#: How long the broker may hold a fetch that finds no new data. faust hard-codes 1,500 ms.
#: aiokafka keeps one fetch in flight per broker and leaves out the partitions whose records
#: it still buffers; records arriving for those then wait for the in-flight fetch to return,
#: up to this long. At 1,500 ms that was most of an alert's latency (bench_alert_latency:
#: p50 1.3 s between the event on Kafka and the alert on Kafka, at 1,000 events/s).
FETCH_MAX_WAIT_MS = 50
PRODUCER_MAX_BATCH_BYTES = 512 * 1024


def _short_fetch_wait() -> None:
    """Make faust's worker consumer use :data:`FETCH_MAX_WAIT_MS` (idempotent)."""
    from faust.transport.drivers import aiokafka as driver  # noqa: PLC0415

    thread_cls: Any = driver.AIOKafkaConsumerThread
    if getattr(thread_cls, "_agentwatch_short_fetch", False):
        return
    create = thread_cls._create_worker_consumer

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when start() builds the fetcher
        return consumer

    thread_cls._create_worker_consumer = create_worker_consumer
    thread_cls._agentwatch_short_fetch = True


def _by_partition(batch: Sequence[EventT[Any]]) -> dict[int, list[EventT[Any]]]:
    groups: dict[int, list[EventT[Any]]] = {}
    for event in batch:
        groups.setdefault(event.message.partition, []).append(event)
    return groups


def _records(events: list[EventT[Any]]) -> Iterator[tuple[int, bytes | None, bytes | None]]:
    for event in events:
        message = event.message
        yield message.offset, message.key, message.value


def _table_items(table: Any, partition: int) -> Iterator[tuple[bytes, bytes]]:
    """The table entries of one partition (keys start with ``[<partition>,``)."""
    prefix = b"[%d," % partition
    for key, value in table.data.items():
        if key.startswith(prefix) and value is not None:
            yield key, value


def _feed(stage: SessionStage | RekeyedStage, table: Any,
          groups: dict[int, list[EventT[Any]]]) -> StageOutput:
    """Run a stage over a batch, partition by partition; a partition this process has not
    seen since its assignment is first rebuilt from the table."""
    out = StageOutput()
    for partition, events in groups.items():
        if partition not in stage.partitions:
            stage.restore(partition, _table_items(table, partition))
        stage.process(partition, _records(events), out)
    return out


async def _write(table: Any, groups: dict[int, list[EventT[Any]]],
                 writes: list[tuple[int, bytes, bytes | None]]) -> None:
    """Write (or delete) table keys: the local store, then the key's changelog partition.

    Not through ``table[key] = value``: that queues every write on faust's producer buffer,
    which sends one message per event-loop round trip and stalls the consumer when more
    than 100 are waiting (measured: it capped the worker at ~8k events/s). Here the
    changelog messages go straight to the producer, which batches them; faust still waits
    for all of them (it flushes the producer) before it commits the input offsets, and
    records their offsets for the local store as it does for its own writes.

    A batch holds records of several partitions, but the local store picks the partition
    of a write from the stream's *current event*: each partition's writes are made with
    one of its events as the current event (faust's own context variable).
    """
    by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
    for partition, key, value in writes:
        by_partition.setdefault(partition, []).append((key, value))
    store, changelog, on_sent = table.data, table.changelog_topic, table._on_changelog_sent
    for partition, items in by_partition.items():
        token = _current_event.set(weakref.ref(groups[partition][-1]))
        try:
            for key, value in items:
                if value is not None:
                    store[key] = value
                else:
                    with contextlib.suppress(KeyError):
                        del store[key]
        finally:
            _current_event.reset(token)
        for key, value in items:
            await changelog.send(key=key, value=value, partition=partition, force=True,
                                 callback=on_sent)


class _Worker:
    """The app, its topics and tables, and the two stages (one instance per process)."""

    def __init__(self, settings: WorkerSettings, config: RulesConfig, partitions: int) -> None:
        self.settings = settings
        self.n = n = partitions
        self.app = app = faust.App(
            settings.group_id,
            broker=[f"kafka://{hp.strip()}" for hp in settings.bootstrap_servers.split(",")],
            store="rocksdb://" if settings.store == "rocksdb" else "memory://",
            datadir=str(settings.data_dir),
            web_enabled=False,
            topic_partitions=n,
            topic_replication_factor=settings.replication_factor,
            consumer_auto_offset_reset="earliest",
            broker_max_poll_records=10_000,  # KAFKA.md: 500 halves the record rate
            producer_acks=-1,
            # aiokafka holds one open batch per partition and makes the next send wait for
            # it to be sent once it is full: at faust's 16 KiB, session-state changelog
            # writes waited a broker round trip every few dozen keys (bench_alert_latency:
            # 20 of 30 s in table writes at 5,000 events/s over 1,000 sessions)
            producer_max_batch_size=PRODUCER_MAX_BATCH_BYTES,
            # a crashed worker's partitions move to the others after this long (faust: 60 s);
            # heartbeats come from faust's consumer thread, not from the busy agent loop
            broker_session_timeout=10.0,
            # faust stops fetching a partition whose stream buffer is under pressure and
            # should resume it when the buffer drains; that resume can be lost (faust-streaming
            # #471: a partition is never read again). A batch takes up to 5,000 records, so a
            # buffer this size is never under pressure; the watchdog below covers the rest.
            stream_buffer_maxsize=65_536,
        )
        self.events_topic = app.topic(settings.events_topic, partitions=n, **_RAW)
        self.rekeyed_topic = app.topic(settings.rekeyed_topic, partitions=n, internal=True,
                                       **_RAW)
        # bytes in, bytes out: faust picks the "raw" codec from these types
        self.session_table: Any = app.Table("session-state", partitions=n, key_type=bytes,
                                            value_type=bytes)
        self.rekeyed_table: Any = app.Table("rekeyed-state", partitions=n, key_type=bytes,
                                            value_type=bytes)
        self.session_stage = SessionStage(config, settings.events_topic)
        self.rekeyed_stage = RekeyedStage(config, n)
        #: (topic, partition) -> (monotonic time, last offset) of its latest batch: the
        #: watchdog's view of which partitions make progress
        self.progress: dict[TP, tuple[float, int]] = {}
        self.started_s = time.monotonic()
        self._stats = {"batches": 0, "records": 0, "events": 0, "writes": 0, "alerts": 0,
                       "dead": 0, "process_s": 0.0, "send_s": 0.0, "write_s": 0.0}
        self._stats_logged_s = time.monotonic()
        app.agent(self.events_topic, name="agentwatch-session-stage")(self.session_agent)
        app.agent(self.rekeyed_topic, name="agentwatch-rekeyed-stage")(self.rekeyed_agent)
        app.timer(interval=max(0.1, settings.idle_after_s / 2))(self.announce_idle)
        app.on_partitions_assigned.connect(self.on_assigned)  # type: ignore[arg-type]

    # -- sending ---------------------------------------------------------------------------
    async def _send(self, topic: str, key: bytes | None, value: bytes,
                    partition: int | None = None) -> Awaitable[Any]:
        return await self.app.producer.send(topic, key, value, partition, None, None)

    async def send_outputs(self, out: StageOutput) -> None:
        """Send, then wait until the broker has every message (acks=all)."""
        s = self.settings
        pending = [await self._send(s.alerts_topic, a.alert_id.encode(), encode_alert(a))
                   for a in out.alerts]
        pending += [await self._send(s.dlq_topic, d.key, d.to_json())
                    for d in out.dead_letters]
        pending += [await self._send(s.rekeyed_topic, k, v) for k, v in out.forwards]
        if pending:
            await asyncio.gather(*pending)

    async def announce(self, partitions: Iterable[int], *, idle: bool) -> None:
        """Tell every rekeyed partition how far these input partitions have got."""
        pending = []
        for partition in partitions:
            mark = b'{"p":%d,"w":%d,"idle":%s}' % (
                partition, self.session_stage.max_ts_us(partition),
                b"true" if idle else b"false")
            pending += [await self._send(self.settings.rekeyed_topic, MARK_KEY, mark, q)
                        for q in range(self.n)]
        if pending:
            await asyncio.gather(*pending)

    # -- the agents --------------------------------------------------------------------------
    async def session_agent(self, stream: Any) -> None:
        stage, table = self.session_stage, self.session_table
        consumer: Any = self.app.consumer
        topic = self.settings.events_topic
        async for batch in stream.take_events(self.settings.batch_max_records,
                                              within=self.settings.batch_within_s):
            t0 = time.perf_counter()
            groups = _by_partition(batch)
            out = _feed(stage, table, groups)
            for partition in groups:
                committed = consumer._committed_offset.get(TP(topic, partition))
                if committed is not None:
                    stage.forget_closed(partition, committed, out)
            t1 = time.perf_counter()
            await self.send_outputs(out)
            if stage.forward_scopes:
                await self.announce(groups, idle=False)
            t2 = time.perf_counter()
            await _write(table, groups, out.writes)
            self._progressed(topic, groups)
            self._count(len(batch), out, t1 - t0, t2 - t1, time.perf_counter() - t2)

    def _count(self, records: int, out: StageOutput, process_s: float, send_s: float,
               write_s: float) -> None:
        """Counters of the session stage, logged (INFO) every 30 s."""
        st = self._stats
        st["batches"] += 1
        st["records"] += records
        st["events"] += out.events
        st["writes"] += len(out.writes)
        st["alerts"] += len(out.alerts)
        st["dead"] += len(out.dead_letters)
        st["process_s"] += process_s
        st["send_s"] += send_s
        st["write_s"] += write_s
        now = time.monotonic()
        if now - self._stats_logged_s >= 30.0:
            self._stats_logged_s = now
            log.info("agentwatch worker: %s", " ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in st.items()))

    def _progressed(self, topic: str, groups: dict[int, list[EventT[Any]]]) -> None:
        now = time.monotonic()
        for partition, events in groups.items():
            self.progress[TP(topic, partition)] = (now, events[-1].message.offset)

    def _kick_stalled(self) -> None:
        """Resume partitions that have records to read but deliver none (faust-streaming
        #471: a partition taken out of fetching under buffer pressure is never put back)."""
        consumer: Any = self.app.consumer
        now = time.monotonic()
        topics = {self.settings.events_topic, self.settings.rekeyed_topic}
        for tp in consumer.assignment():
            if tp.topic not in topics:
                continue
            highwater = consumer.highwater(tp)
            seen_s, offset = self.progress.get(tp, (self.started_s, -1))
            if tp.topic == self.settings.events_topic:
                offset = max(offset, self.session_stage.last_offset(tp.partition))
            if highwater is None or offset + 1 >= highwater or now - seen_s < _STALL_S:
                continue
            log.warning("agentwatch worker: %s[%d] has records from offset %d but none came "
                        "for %.0f s: resuming it", tp.topic, tp.partition, offset + 1,
                        now - seen_s)
            consumer.on_buffer_drop(tp)
            consumer.resume_partitions({tp})
            self.progress[tp] = (now, offset)

    async def rekeyed_agent(self, stream: Any) -> None:
        stage, table = self.rekeyed_stage, self.rekeyed_table
        async for batch in stream.take_events(self.settings.batch_max_records,
                                              within=self.settings.batch_within_s):
            groups = _by_partition(batch)
            out = _feed(stage, table, groups)
            await self.send_outputs(out)
            await _write(table, groups, out.writes)
            self._progressed(self.settings.rekeyed_topic, groups)

    async def announce_idle(self) -> None:
        """Input partitions with nothing left to read stop holding back the rekeyed stage."""
        stage = self.session_stage
        tables: Any = self.app.tables
        if not tables.recovery.completed.is_set():
            return
        self._kick_stalled()
        if not stage.forward_scopes:
            return
        now = time.monotonic()
        idle = []
        for tp in self.app.consumer.assignment():
            if tp.topic != self.settings.events_topic:
                continue
            if tp.partition not in stage.partitions:  # no record since the assignment
                stage.restore(tp.partition, _table_items(self.session_table, tp.partition))
            highwater = self.app.consumer.highwater(tp)
            caught_up = highwater is not None and stage.last_offset(tp.partition) + 1 >= highwater
            quiet = now - self.progress.get(tp, (0.0, -1))[0] >= self.settings.idle_after_s
            if caught_up and quiet:
                idle.append(tp.partition)
        await self.announce(idle, idle=True)

    async def on_assigned(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        """Another worker may have owned a partition meanwhile: rebuild every partition from
        the tables (on its next batch; faust has recovered the tables by then)."""
        assigned: set[TP] = args[0] if args else kwargs.get("assigned", set())
        mine = sorted(tp.partition for tp in assigned if tp.topic == self.settings.events_topic)
        log.info("agentwatch worker: assigned partitions %s of %s", mine,
                 self.settings.events_topic)
        for partition in list(self.session_stage.partitions):
            self.session_stage.drop(partition)
        for partition in list(self.rekeyed_stage.partitions):
            self.rekeyed_stage.drop(partition)


def build_app(settings: WorkerSettings, config: RulesConfig, input_partitions: int
              ) -> faust.App:
    """The worker app. ``input_partitions``: partitions of the events topic (the rekeyed
    topic and both tables get as many, so faust assigns them together)."""
    _short_fetch_wait()
    worker = _Worker(settings, config, input_partitions)
    log.info("worker %s: %d partitions, store %s, forwarding %s", settings.group_id,
             input_partitions, settings.store,
             [s.value for s in worker.session_stage.forward_scopes] or "nothing")
    return worker.app
