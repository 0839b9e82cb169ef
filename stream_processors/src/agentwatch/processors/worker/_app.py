"""The faust-streaming shell around the two pure stages: topics, tables, batches, signals.

faust does what it is for: group membership, partition assignment, changelog-backed
tables and their recovery, offset commits, the worker process. The hot path works per
batch of records (``noack_take``), grouped by partition and handed to a stage, which
returns what to send; the batch's alerts, dead letters and forwarded events are sent and
acknowledged by the broker right away (an alert's latency does not wait for state).

State is checkpointed (DESIGN.md, "Worker state"): every ``checkpoint_interval_s`` (longer
when checkpoints would take more than ``checkpoint_max_share`` of the time) the shell
takes the stages' dirty keys, writes them to the changelog tables, waits for the broker's
acks, and only then acks the records they came from, so faust commits input offsets never
ahead of saved state. A record of the rekeyed stage is acked only once every event it
brought is released (``RekeyedStage.safe_offset``): a restart reads the others again. Key
state in memory, one changelog write per dirty key per checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Iterable, Iterator, Sequence
from typing import Any

import faust
import orjson
from faust.types import TP, EventT

from agentwatch.processors.core import RulesConfig
from agentwatch.processors.worker import _faust_internals as faust_internals
from agentwatch.processors.worker._control import control_records, halt_rules
from agentwatch.processors.worker._forward import MARK_KEY
from agentwatch.processors.worker._idle import FetchGaps, PartitionView, idle_until_us
from agentwatch.processors.worker._metrics import WorkerMetrics
from agentwatch.processors.worker._offsets import HoleProbe, OffsetGuard
from agentwatch.processors.worker._rekeyed_stage import RekeyedStage
from agentwatch.processors.worker._sends import SendFailures, SendRefusedError
from agentwatch.processors.worker._session_stage import SessionStage, StageOutput
from agentwatch.processors.worker._settings import WorkerSettings
from agentwatch.schemas import ConfigError, encode_alert
from agentwatch.schemas.kafka_security import KafkaSecurity

__all__ = ["build_app", "fatal_error"]

log = logging.getLogger("agentwatch.worker")

#: a partition with records to read that delivers none for this long is resumed
_STALL_S = 5.0
#: a partition sought back over a hole whose record has not come for this long is sought again
_RESEEK_S = 2.0
_RAW: dict[str, Any] = {"key_type": bytes, "value_type": bytes,
                        "key_serializer": "raw", "value_serializer": "raw"}
#: How long the broker may hold a fetch that finds no new data. faust hard-codes 1,500 ms.
#: aiokafka keeps one fetch in flight per broker and leaves out the partitions whose records
#: it still buffers; records arriving for those then wait for the in-flight fetch to return,
#: up to this long. At 1,500 ms that was most of an alert's latency (bench_alert_latency:
#: p50 1.3 s between the event on Kafka and the alert on Kafka, at 1,000 events/s).
FETCH_MAX_WAIT_MS = 50
PRODUCER_MAX_BATCH_BYTES = 512 * 1024
PRODUCER_COMPRESSION = "zstd"
#: RocksDB options of the state tables (rocksdb store). The tables are written once per
#: dirty key per checkpoint and read only when a partition is restored, so neither big
#: memtables nor a block cache buy anything; faust's defaults (64 MiB write buffers, up to
#: 3 of them, per partition and table, and a 2 GiB block cache) cost ~250 MB of the
#: worker's RSS growth per 100,000 open sessions (bench_worker_memory: 1,721 -> 1,469 MB)
ROCKSDB_OPTIONS: dict[str, int] = {
    "write_buffer_size": 4 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "block_cache_size": 8 * 1024 * 1024,
}


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


#: what a stage runs over at a time (see _Worker.run_slices): records up to this many bytes
#: of values (a partition batch of the fleet is ~75 KB: ~14 of them, ~4,000 events), and
#: at most this many records (a slice has fixed costs: the lock, the offset guard, the
#: sends, the stats; with single-event records 16 at a time left them per 16 events)
FEED_SLICE_BYTES = 1 << 20
FEED_SLICE_RECORDS = 1024


def _slices(groups: dict[int, list[EventT[Any]]]) -> Iterator[tuple[int, list[EventT[Any]]]]:
    for partition, events in groups.items():
        start = size = 0
        for i, event in enumerate(events):
            value = event.message.value
            size += len(value) if value is not None else 0
            if size >= FEED_SLICE_BYTES or i + 1 - start >= FEED_SLICE_RECORDS:
                yield partition, events[start:i + 1]
                start, size = i + 1, 0
        if start < len(events):
            yield partition, events[start:]


#: a checkpoint hands this many writes to the store and the producer, then yields to the
#: batches (it runs beside them: see _Worker.maybe_checkpoint)
WRITE_CHUNK = 256


async def _write(producer: Any, table: Any, last_events: dict[int, EventT[Any]],
                 writes: list[tuple[int, bytes, bytes | None]], snap: _Snapshot,
                 sends: SendFailures) -> dict[int, Any]:
    """Write (or delete) table keys: the local store, then the key's changelog partition,
    ``WRITE_CHUNK`` at a time (their time is added to ``snap.write_s``). Returns the send
    future of the last changelog message per partition: once the producer is flushed,
    :func:`_persisted` records their offsets for the local store.

    Not through ``table[key] = value`` nor ``changelog.send``: the first queues every write
    on faust's producer buffer, which sends one message per event-loop round trip (it
    capped the worker at ~8k events/s); the second builds a FutureMessage, logs and calls
    back per message (profiled: 11 % of the worker at 3,700 records/s). Here the messages
    go straight to the producer, which batches them; the caller flushes it before anything
    that relies on them (acks, offset commits).

    The local store picks the partition of a write from the stream's *current event*:
    each partition's writes are made with the last event read from it as the current
    event (faust's own context variable).
    """
    by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
    for partition, key, value in writes:
        by_partition.setdefault(partition, []).append((key, value))
    store = table.data
    topic = table.changelog_topic.get_topic_name()
    last: dict[int, Any] = {}
    for partition, items in by_partition.items():
        for start in range(0, len(items), WRITE_CHUNK):
            t0 = time.perf_counter()
            chunk = items[start:start + WRITE_CHUNK]
            if not faust_internals.store_write_many(store, partition, chunk):
                with faust_internals.current_event(last_events[partition]):
                    for key, value in chunk:
                        if value is not None:
                            # a right-sized copy: the (memory) store keeps it until the
                            # key's next write, and orjson's bytes keep its whole buffer
                            # (>= 4 KiB since orjson 3.12): ~4 KB of ~16 KB per session
                            store[key] = bytes(memoryview(value))
                        else:
                            with contextlib.suppress(KeyError):
                                del store[key]
            for key, value in chunk:
                last[partition] = sent = await producer.send(topic, key, value, partition,
                                                             None, None)
                sends.watch(sent, topic)
            snap.write_s += time.perf_counter() - t0
            await asyncio.sleep(0)  # the batches' turn
    return last


def _persisted(table: Any, last: dict[int, Any]) -> None:
    """Tell the local store which changelog offsets it has (what faust's own table writes
    do per message; once per partition and checkpoint here)."""
    for future in last.values():
        if future.done() and not future.cancelled() and future.exception() is None:
            metadata = future.result()
            table.data.set_persisted_offset(metadata.topic_partition, metadata.offset)


class _Held:
    """Records processed by a stage and not acked yet, per partition, with the last one
    per partition."""

    __slots__ = ("events", "last", "stream", "touched")

    def __init__(self) -> None:
        self.stream: Any = None
        self.events: dict[int, list[EventT[Any]]] = {}
        self.last: dict[int, EventT[Any]] = {}
        self.touched: set[int] = set()  # partitions with records since their last checkpoint

    def add(self, stream: Any, batch: Sequence[EventT[Any]]) -> None:
        self.stream = stream
        events = self.events
        for event in batch:
            partition = event.message.partition
            held = events.get(partition)
            if held is None:
                events[partition] = held = []
            held.append(event)
            self.last[partition] = event
            self.touched.add(partition)

    def take_touched(self, partitions: Iterable[int] | None = None) -> list[int]:
        """The partitions with records since their last checkpoint, of ``partitions``
        (None: all), now no longer touched."""
        if partitions is None:
            touched, self.touched = sorted(self.touched), set()
            return touched
        taken = sorted(self.touched.intersection(partitions))
        self.touched.difference_update(taken)
        return taken

    def count(self) -> int:
        return sum(len(events) for events in self.events.values())

    def forget(self) -> None:
        """After a rebalance faust seeks every partition to its committed offset: what
        was held is read again."""
        self.events = {}
        self.last = {}
        self.touched = set()


#: what a checkpoint's time goes to (stats counters, seconds): the dirty keys' state taken
#: (CPU), the batches' outputs acknowledged, the state handed to the store and producer,
#: the state acknowledged, the records acked and the offsets committed
CHECKPOINT_PHASES = ("checkpoint_dump_s", "checkpoint_flush_s", "checkpoint_write_s",
                     "checkpoint_acks_s", "checkpoint_commit_s")


def _next_in_turn(touched: set[int], last: int) -> int | None:
    """The partition to checkpoint after ``last``: the next touched one, in a cycle."""
    if not touched:
        return None
    return min((p for p in touched if p > last), default=min(touched))


class _Snapshot:
    """What a checkpoint saves, taken at one point between two batches: the partitions
    whose dirty keys it took, their table writes (partition, key, value or None: delete),
    the records held until then, and the rekeyed partitions' safe offsets."""

    __slots__ = ("dump_s", "partitions", "rekeyed_parts", "rekeyed_records", "rekeyed_writes",
                 "safe", "session_parts", "session_records", "session_writes", "write_s")

    def __init__(self, partitions: Iterable[int] | None, session_parts: list[int],
                 rekeyed_parts: list[int]) -> None:
        self.partitions = partitions  # None: all of them (not one in turn)
        self.session_parts = session_parts
        self.rekeyed_parts = rekeyed_parts
        self.session_writes: list[tuple[int, bytes, bytes | None]] = []
        self.rekeyed_writes: list[tuple[int, bytes, bytes | None]] = []
        self.session_records: list[EventT[Any]] = []
        self.rekeyed_records: dict[int, list[EventT[Any]]] = {}
        self.safe: dict[int, int] = {}
        self.dump_s = 0.0  # taking the snapshot (processing waits for it)
        self.write_s = 0.0  # handing its writes to the stores and the producer


class _Stats:
    """Counters of the worker, logged as ``agentwatch worker stats {json}`` (INFO) every
    ``stats_interval_s`` and read by the benchmarks."""

    def __init__(self) -> None:
        self.started_s = self.logged_s = time.monotonic()
        self.total: dict[str, float] = dict.fromkeys((
            "events", "records", "batches", "alerts", "dead_letters", "forwards", "checkpoints",
            "changelog_bytes", "changelog_writes", "process_s", "send_s", "checkpoint_s",
            "rekeyed_events", "rekeyed_records", "rekeyed_forwards", "holes_real",
            "holes_read_again", *CHECKPOINT_PHASES), 0)
        self.at_last_log = dict(self.total)
        self.checkpoint_s_max = 0.0

    def add(self, **counts: float) -> None:
        total = self.total
        for name, value in counts.items():
            total[name] += value

    def due(self, interval_s: float) -> bool:
        return time.monotonic() - self.logged_s >= interval_s

    def line(self, extra: dict[str, Any]) -> str:
        now = time.monotonic()
        dt = max(1e-9, now - self.logged_s)
        total, last = self.total, self.at_last_log
        delta = {k: total[k] - last[k] for k in total}
        events, records = delta["events"], delta["records"]
        checkpoints = delta["checkpoints"]
        out: dict[str, Any] = {
            "t_s": round(now - self.started_s, 3),
            # the machine's monotonic clock (system-wide): benchmarks place the line in time
            "monotonic_s": round(now, 3),
            "interval_s": round(dt, 3),
            "events_per_s": round(events / dt, 1),
            "records_per_s": round(records / dt, 1),
            "events_per_record": round(events / records, 2) if records else None,
            "checkpoint_s_mean": round(delta["checkpoint_s"] / checkpoints, 4)
            if checkpoints else None,
            "checkpoint_s_max": round(self.checkpoint_s_max, 4),
            "checkpoint_bytes": int(delta["changelog_bytes"]),
            "bytes_per_key_written": round(delta["changelog_bytes"] / delta["changelog_writes"])
            if delta["changelog_writes"] else None,
            "changelog_bytes_per_event": round(delta["changelog_bytes"] / events, 1)
            if events else None,
        }
        out.update({f"{k}_total": round(v, 4) if isinstance(v, float) and v % 1 else int(v)
                    for k, v in total.items()})
        out.update(extra)
        self.at_last_log = dict(total)
        self.logged_s = now
        self.checkpoint_s_max = 0.0
        return orjson.dumps(out).decode()


#: crash tests (tests/integration): ``<point>:<n>`` kills the worker (SIGKILL) at that point
#: of its n-th checkpoint with changelog writes. Points: ``write`` (half of the changelog
#: writes handed to the producer), ``commit`` (every write acknowledged, no record acked,
#: no offset committed), ``after`` (its offsets committed, the next checkpoint not begun).
CRASH_ENV = "AGENTWATCH_TEST_CRASH_AT"


def _crash_point(point: str, checkpoints: int) -> None:
    wanted = os.environ.get(CRASH_ENV)
    if wanted and wanted == f"{point}:{checkpoints}":
        log.warning("agentwatch worker: %s=%s: killing myself", CRASH_ENV, wanted)
        os.kill(os.getpid(), signal.SIGKILL)


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as f:  # noqa: PTH123 -- a /proc read, Linux only
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def faust_credentials(security: KafkaSecurity) -> faust.types.auth.CredentialsT | None:
    """faust's form of the security settings (its consumer, producer and admin use it)."""
    if security.uses_sasl:
        return faust.SASLCredentials(
            username=security.username, password=security.password,
            ssl_context=security.ssl_context(), mechanism=security.sasl_mechanism)
    context = security.ssl_context()
    return faust.SSLCredentials(context) if context is not None else None


class _Worker:
    """The app, its topics and tables, and the two stages (one instance per process)."""

    def __init__(self, settings: WorkerSettings, config: RulesConfig, partitions: int) -> None:
        self.settings = settings
        self.n = n = partitions
        self.app = app = faust.App(
            settings.app_id,
            broker=[f"kafka://{hp.strip()}" for hp in settings.bootstrap_servers.split(",")],
            store="rocksdb://" if settings.store == "rocksdb" else "memory://",
            datadir=str(settings.data_dir),
            web_enabled=False,
            broker_credentials=faust_credentials(settings.kafka_security),
            topic_partitions=n,
            topic_replication_factor=settings.replication_factor,
            consumer_auto_offset_reset="earliest",
            broker_max_poll_records=10_000,  # KAFKA.md: 500 halves the record rate
            producer_acks=-1,
            # aiokafka holds one open batch per partition and makes the next send wait for
            # it to be sent once it is full: at faust's 16 KiB, changelog writes waited a
            # broker round trip every few dozen keys
            producer_max_batch_size=PRODUCER_MAX_BATCH_BYTES,
            # state values are JSON with repeated names and hex: zstd stores the changelog
            # in ~1/4 of the bytes (bench_worker_memory: worker_changelog) for little CPU
            producer_compression_type=PRODUCER_COMPRESSION,
            # a crashed worker's partitions move to the others after this long (faust: 60 s);
            # heartbeats come from faust's consumer thread, not from the busy agent loop
            broker_session_timeout=10.0,
            # faust stops fetching a partition whose stream buffer is under pressure and
            # should resume it when the buffer drains; that resume can be lost (faust-streaming
            # #471: a partition is never read again). A batch takes up to 5,000 records, so a
            # buffer this size is never under pressure; the watchdog below covers the rest.
            stream_buffer_maxsize=65_536,
            # records are acked at checkpoints, and a rekeyed record only once its events
            # are released: faust's wait for every record to be acked before a rebalance
            # could wait forever. The shell checkpoints on revocation itself (on_revoked).
            stream_wait_empty=False,
        )
        self.events_topic = app.topic(settings.events_topic, partitions=n, **_RAW)
        self.rekeyed_topic = app.topic(settings.rekeyed_topic, partitions=n, internal=True,
                                       **_RAW)
        # bytes in, bytes out: faust picks the "raw" codec from these types
        self.session_table: Any = None
        self.rekeyed_table: Any = None
        if settings.runs_session_stage:
            self.session_table = app.Table("session-state", partitions=n, key_type=bytes,
                                           value_type=bytes, options=dict(ROCKSDB_OPTIONS))
        if settings.runs_rekeyed_stage:
            self.rekeyed_table = app.Table("rekeyed-state", partitions=n, key_type=bytes,
                                           value_type=bytes, options=dict(ROCKSDB_OPTIONS))
        self.session_stage = SessionStage(
            config, settings.events_topic, n,
            spill_dir=settings.data_dir / "spill" if settings.spill_packed_sessions else None)
        self.halt_rules = halt_rules(config)
        self.rekeyed_stage = RekeyedStage(config, settings.rekeyed_topic, n)
        self.session_held = _Held()
        self.rekeyed_held = _Held()
        #: no record skipped: the next offset each stage needs, per partition (_offsets.py)
        self.session_guard = OffsetGuard()
        self.rekeyed_guard = OffsetGuard()
        self.probe = HoleProbe(settings.bootstrap_servers,
                               settings.kafka_security.client_options())
        #: (next offset, highwater) of partitions whose offsets from the next one up to the
        #: highwater hold no record (a transactional producer's last commit marker)
        self.empty_tail: dict[TP, tuple[int, int]] = {}
        self._faust_add_gap: Any = None  # faust's own Consumer._add_gap (on_assigned)
        #: topic -> since when its agent waits for records (None: busy with a batch); an
        #: agent waiting longer than a batch window has nothing queued for it
        self.waiting_since: dict[str, float | None] = dict.fromkeys(
            (settings.events_topic, settings.rekeyed_topic), time.monotonic())
        #: one batch or one checkpoint at a time: a checkpoint must not save the state of a
        #: batch whose outputs the broker has not acknowledged yet
        self.lock = asyncio.Lock()
        #: one checkpoint at a time (its writes and acks run apart from the lock)
        self.checkpointing = asyncio.Lock()
        self.saving: asyncio.Future[None] | None = None  # the checkpoint under way
        self.last_checkpoint_s = time.monotonic()
        #: from the start of the last checkpoint to the next (WorkerSettings.checkpoint_gap_s)
        self.checkpoint_gap_s = settings.checkpoint_interval_s
        self.crashable = 0  # checkpoints with changelog writes (see _crash_point)
        #: sends the broker refused: checked after every flush, before anything is committed
        self.sends = SendFailures()
        self.fatal: SendRefusedError | None = None  # why the worker stops (see stop_on)
        self.checkpointed_partition = -1  # the partition of the last checkpoint in turn
        #: (topic, partition) -> (monotonic time, last offset) of its latest batch: the
        #: watchdog's and the idle detection's view of which partitions make progress
        self.progress: dict[TP, tuple[float, int]] = {}
        #: per input partition, the broker's last fetch answer seen and since when answers
        #: are back after a gap: idle claims need a fresh answer (_idle.FetchGaps)
        self.fetches = FetchGaps()
        self.started_s = time.monotonic()
        self.stats = _Stats()
        self.metrics = WorkerMetrics(self)  # /metrics: reads the stats at scrape time
        if settings.runs_session_stage:
            app.agent(self.events_topic, name="agentwatch-session-stage")(self.session_agent)
            app.timer(interval=max(0.1, settings.idle_after_s / 2))(self.announce_idle)
            app.timer(interval=0.5)(self.sample_fetches)
            if not settings.runs_rekeyed_stage:  # it sends there: make sure it exists
                app.task(self.rekeyed_topic.maybe_declare)
        if settings.runs_rekeyed_stage:
            app.agent(self.rekeyed_topic, name="agentwatch-rekeyed-stage")(self.rekeyed_agent)
        # checkpoints take the partitions in turn, n per checkpoint_interval_s
        app.timer(interval=max(0.05, settings.checkpoint_interval_s / (4 * n)))(
            self.checkpoint_timer)
        app.on_partitions_revoked.connect(self.on_revoked)  # type: ignore[arg-type]
        app.on_partitions_assigned.connect(self.on_assigned)  # type: ignore[arg-type]
        app.on_before_shutdown.connect(self.on_shutdown)  # type: ignore[arg-type]

    # -- sending ---------------------------------------------------------------------------
    async def _send(self, topic: str, key: bytes | None, value: bytes | None,
                    partition: int | None = None) -> Awaitable[Any]:
        sent = await self.app.producer.send(topic, key, value, partition, None, None)
        self.sends.watch(sent, topic)
        return sent

    async def send_outputs(self, out: StageOutput) -> None:
        """Hand every output to the producer, which sends at once (no wait for the acks
        here: a checkpoint flushes the producer before it writes the state that records
        these outputs, so an alert is on the broker before its firing is saved)."""
        s = self.settings
        for a in out.alerts:
            await self._send(s.alerts_topic, a.alert_id.encode(), encode_alert(a))
        if out.alerts and self.halt_rules:  # halt rules: the control records (_control.py)
            for k, v in control_records(self.halt_rules, out.alerts):
                await self._send(s.control_topic, k, v)
        for d in out.dead_letters:
            await self._send(s.dlq_topic, d.key, d.to_json())
        for k, v in out.forwards:
            await self._send(s.rekeyed_topic, k, v)

    async def announce(self, partitions: Iterable[int], *, idle: bool,
                       until_us: dict[int, int] | None = None) -> None:
        """Tell every rekeyed partition how far these input partitions have got (after
        the forwards they follow: one producer keeps each partition's order). An idle
        mark says until when (``t``, event time in us) the partition holds nothing more:
        see :meth:`announce_idle`."""
        for partition in partitions:
            w = self.session_stage.max_ts_us(partition)
            if idle and until_us is not None:
                mark = b'{"p":%d,"w":%d,"idle":true,"t":%d}' % (
                    partition, w, until_us[partition])
            else:
                mark = b'{"p":%d,"w":%d,"idle":%s}' % (
                    partition, w, b"true" if idle else b"false")
            for q in range(self.n):
                await self._send(self.settings.rekeyed_topic, MARK_KEY, mark, q)

    # -- the agents --------------------------------------------------------------------------
    async def run_slices(self, stage: SessionStage | RekeyedStage, table: Any, held: _Held,
                         guard: OffsetGuard, topic: str, stream: Any,
                         batch: Sequence[EventT[Any]]) -> StageOutput:
        """Run ``stage`` over a batch a few records at a time, each slice's outputs handed to
        the producer and its records held for the next checkpoint, which may come between
        two slices. A batch of partition batches can hold a million events (5,000 records
        of hundreds): in one go it stood the event loop still for seconds, checkpoints came
        only between batches (up to 3 s apart), and faust lost records (the worker saw
        1,473 of 2,230 records of a preloaded fleet topic, its commits stuck at a gap)."""
        total = StageOutput()
        groups = _by_partition(batch)
        self.waiting_since[topic] = None
        try:
            await self._run_slices(stage, table, held, guard, topic, stream, groups, total)
        finally:
            self.waiting_since[topic] = time.monotonic()
        return total

    async def _run_slices(self, stage: SessionStage | RekeyedStage, table: Any, held: _Held,
                          guard: OffsetGuard, topic: str, stream: Any,
                          groups: dict[int, list[EventT[Any]]], total: StageOutput) -> None:
        for partition, delivered in _slices(groups):
            async with self.lock:
                if partition not in stage.partitions:  # new since the assignment
                    stage.restore(partition, _table_items(table, partition))
                if not guard.known(partition):
                    resume = stage.resume_offset(partition)
                    guard.start(partition, delivered[0].message.offset if resume is None
                                else resume)
                records = await self.admit(guard, TP(topic, partition), delivered)
                if not records:
                    continue
                t0 = time.perf_counter()
                out = StageOutput()
                stage.process(partition, _records(records), out)
                t1 = time.perf_counter()
                await self.send_outputs(out)
                held.add(stream, records)
                total.events += out.events
                total.alerts += out.alerts
                total.dead_letters += out.dead_letters
                total.forwards += out.forwards
                self.stats.add(process_s=t1 - t0, send_s=time.perf_counter() - t1)
            await self.maybe_checkpoint()
            # a turn for the other stage's agent and the timers: none of the awaits above
            # suspends while the producer has room, so over a backlog (a preloaded topic,
            # a restart) the session stage ran alone and the agent/tenant windows waited
            # for it to drain the whole topic (worker_fleet: 0 rekeyed events at its end)
            await asyncio.sleep(0)

    async def admit(self, guard: OffsetGuard, tp: TP, records: list[EventT[Any]]
                    ) -> list[EventT[Any]]:
        """The records of one partition its stage may process: none past a hole in the
        offsets (see _offsets.py). A hole the broker has records for is read again: the
        partition is sought back, and what comes past the hole is dropped until then."""
        offsets = [event.message.offset for event in records]
        kept, hole = guard.admit(tp.partition, offsets)
        while hole is not None:
            expected, got = guard.next_offset(tp.partition), offsets[hole]
            first = await self.probe.first_offset_from(tp.topic, tp.partition, expected)
            if first is None or first < got:
                log.warning("agentwatch worker: %s[%d]: records from offset %d were not "
                            "delivered (offset %d came next): reading them again",
                            tp.topic, tp.partition, expected, got)
                await self.seek_back(guard, tp)
                self.stats.add(holes_read_again=1)
                break
            self.stats.add(holes_real=1)
            log.debug("agentwatch worker: %s[%d] has no records from offset %d to %d "
                     "(transaction markers or a trimmed log): going on", tp.topic,
                     tp.partition, expected, got - 1)
            guard.skip_to(tp.partition, got)
            if self._faust_add_gap is not None:  # so that faust commits over it
                await self._faust_add_gap(tp, expected, got - 1)
            more, after = guard.admit(tp.partition, offsets[hole:])
            kept += [hole + i for i in more]
            hole = None if after is None else hole + after
        if len(kept) == len(records):
            return records
        return [records[i] for i in kept]

    async def seek_back(self, guard: OffsetGuard, tp: TP) -> None:
        consumer: Any = self.app.consumer
        # never commit over it (the confirmed holes below it keep their gaps: faust commits
        # over those, one at a time otherwise)
        faust_internals.forget_ack_gap(consumer, tp, guard.next_offset(tp.partition))
        await consumer.seek_wait({tp: guard.next_offset(tp.partition)})
        guard.sought_back(tp.partition)

    async def reseek_overdue(self) -> None:
        """Seek again where the record a seek back should bring has not come."""
        for guard, topic in ((self.session_guard, self.settings.events_topic),
                             (self.rekeyed_guard, self.settings.rekeyed_topic)):
            for partition, offset in guard.overdue(_RESEEK_S):
                tp = TP(topic, partition)
                if tp not in self.app.consumer.assignment():
                    continue
                async with self.lock:
                    if guard.awaiting(partition):
                        log.warning("agentwatch worker: %s[%d]: offset %d has not come "
                                    "since the seek back: seeking again", topic, partition,
                                    offset)
                        await self.seek_back(guard, tp)

    async def session_agent(self, stream: Any) -> None:
        stage = self.session_stage
        async for batch in stream.noack_take(self.settings.batch_max_records,
                                             within=self.settings.batch_within_s):
            out = await self.run_slices(stage, self.session_table, self.session_held,
                                        self.session_guard, self.settings.events_topic,
                                        stream, batch)
            groups = _by_partition(batch)
            async with self.lock:
                if stage.forward_scopes:  # after the forwards: one producer keeps the order
                    await self.announce(groups, idle=False)
                self._progressed(self.settings.events_topic, groups)
            self.metrics.outputs(out)
            self.stats.add(events=out.events, records=len(batch), batches=1,
                           alerts=len(out.alerts), dead_letters=len(out.dead_letters),
                           forwards=len(out.forwards))

    async def rekeyed_agent(self, stream: Any) -> None:
        async for batch in stream.noack_take(self.settings.batch_max_records,
                                             within=self.settings.batch_within_s):
            out = await self.run_slices(self.rekeyed_stage, self.rekeyed_table,
                                        self.rekeyed_held, self.rekeyed_guard,
                                        self.settings.rekeyed_topic, stream, batch)
            self._progressed(self.settings.rekeyed_topic, _by_partition(batch))
            self.metrics.outputs(out)
            # forward messages read (marks aside): with ``forwards_total`` they say when
            # this stage has read everything the session stage sent
            forwards = sum(1 for event in batch if event.message.key != MARK_KEY)
            self.stats.add(rekeyed_events=out.events, rekeyed_records=len(batch),
                           rekeyed_forwards=forwards,
                           alerts=len(out.alerts), dead_letters=len(out.dead_letters))

    # -- checkpoints -------------------------------------------------------------------------
    async def maybe_checkpoint(self) -> None:
        """When due, checkpoint the next partition in turn, one at a time: processing waits
        only for the snapshot of one partition's dirty keys (~1/N of them all); the rest
        (writes, acks, commit) runs in a task of its own while batches go on."""
        if self.fatal is not None:
            return  # stopping: nothing more is committed
        if self.saving is not None and self.saving.done():
            try:
                await self._saved()
            except SendRefusedError as exc:
                self.stop_on(exc)
                return
        if self._checkpoint_due() and not self.checkpointing.locked():
            await self.checkpointing.acquire()
            try:
                snap = None
                async with self.lock:
                    if self._checkpoint_due():
                        partition = _next_in_turn(
                            self.session_held.touched | self.rekeyed_held.touched,
                            self.checkpointed_partition)
                        if partition is not None:
                            self.checkpointed_partition = partition
                            snap = self._snapshot([partition])
            except BaseException:
                self.checkpointing.release()
                raise
            if snap is None:
                self.checkpointing.release()
            else:
                self.saving = asyncio.ensure_future(self._save_then_release(snap))
        if self.stats.due(self.settings.stats_interval_s):
            log.info("agentwatch worker stats %s", self.stats.line(self._gauges()))

    async def checkpoint_timer(self) -> None:
        tables: Any = self.app.tables
        if tables.recovery.completed.is_set():
            await self.reseek_overdue()
            await self.kick_stalled()
            await self.maybe_checkpoint()

    def stop_on(self, exc: SendRefusedError) -> None:
        """The broker refused what the worker sent: say so once and stop the worker (as
        SIGTERM does), committing nothing more; ``agentwatch worker`` then exits with
        this error (run.py). A restart reads again from the last checkpoint."""
        if self.fatal is None:
            self.fatal = exc
            log.error("agentwatch worker: checkpoint refused, stopping: %s", exc)
            os.kill(os.getpid(), signal.SIGTERM)

    async def checkpoint(self) -> None:
        """Write the dirty keys of both stages in every partition with records since its
        last checkpoint, wait for the broker, ack their records, commit (DESIGN.md:
        quixstreams' and Flink's order), once a checkpoint under way is done (a rebalance
        saves everything at once; maybe_checkpoint takes the partitions in turn)."""
        async with self.checkpointing:
            async with self.lock:
                snap = self._snapshot(None)
            await self._save(snap)

    def _checkpoint_due(self) -> bool:
        return time.monotonic() - self.last_checkpoint_s >= self.checkpoint_gap_s

    def _parts_in_turn(self) -> int:
        """Partition numbers checkpointed in turn: those assigned (of either stage)."""
        topics = {self.settings.events_topic, self.settings.rekeyed_topic}
        consumer: Any = self.app.consumer
        return max(1, len({tp.partition for tp in consumer.assignment() if tp.topic in topics}))

    async def _save_then_release(self, snap: _Snapshot) -> None:
        try:
            await self._save(snap)
        finally:
            self.checkpointing.release()

    async def _saved(self) -> None:
        """Wait for the checkpoint under way, if any; its error (the broker refused the
        state, say) is raised here, in a caller of the checkpoints, as when they ran in
        the agents themselves."""
        saving, self.saving = self.saving, None
        if saving is not None:
            await saving

    async def _save(self, snap: _Snapshot) -> None:
        """Save a snapshot (with ``checkpointing`` held, not the processing lock: batches
        go on meanwhile, and the next checkpoint waits for this one). The outputs of
        every batch before the snapshot are acknowledged before its state is written, the
        state before its records are acked and their offsets committed."""
        t0 = time.perf_counter()
        if snap.session_writes or snap.rekeyed_writes:
            self.crashable += 1
        producer: Any = self.app.producer
        # the outputs of every batch saved below are on the broker before their state
        await producer.flush()
        self.sends.check()  # (the flush waits for the acks; a refusal is only noted)
        t1 = time.perf_counter()
        last, last_rekeyed = await self._write_state(snap)
        t2 = time.perf_counter()
        await producer.flush()  # every changelog write acknowledged (acks=all)
        self.sends.check()
        t3 = time.perf_counter()
        _persisted(self.session_table, last)
        _persisted(self.rekeyed_table, last_rekeyed)
        _crash_point("commit", self.crashable)
        await self._ack_held(snap)
        await self.app.consumer.commit()
        _crash_point("after", self.crashable)
        writes = snap.session_writes + snap.rekeyed_writes
        t4 = time.perf_counter()
        took_s = snap.dump_s + t4 - t0
        self.stats.add(checkpoints=1, checkpoint_s=took_s, changelog_writes=len(writes),
                       changelog_bytes=sum(len(k) + len(v or b"") for _, k, v in writes),
                       checkpoint_dump_s=snap.dump_s, checkpoint_flush_s=t1 - t0,
                       checkpoint_write_s=t2 - t1, checkpoint_acks_s=t3 - t2,
                       checkpoint_commit_s=t4 - t3)
        self.stats.checkpoint_s_max = max(self.stats.checkpoint_s_max, took_s)
        parts = 1 if snap.partitions is None else self._parts_in_turn()
        # spaced by its own work (the snapshot, the writes), not by the batches that ran
        # while it waited for the broker
        self.checkpoint_gap_s = self.settings.checkpoint_gap_s(snap.dump_s + snap.write_s,
                                                               parts)
        self.metrics.checkpoint_seconds.observe(took_s)

    def _snapshot(self, partitions: Iterable[int] | None) -> _Snapshot:
        """The table writes of the stages' dirty keys in ``partitions`` (None: every
        touched one); the keys are clean afterwards."""
        self.last_checkpoint_s = time.monotonic()
        t0 = time.perf_counter()
        consumer: Any = self.app.consumer
        topic = self.settings.events_topic
        snap = _Snapshot(partitions, self.session_held.take_touched(partitions),
                         self.rekeyed_held.take_touched(partitions))
        for partition in snap.session_parts:
            committed = faust_internals.committed_offset(consumer, TP(topic, partition))
            snap.session_writes += self.session_stage.checkpoint(partition, committed)
            snap.session_records += self.session_held.events.pop(partition, [])
        for partition in snap.rekeyed_parts:
            snap.rekeyed_writes += self.rekeyed_stage.checkpoint(partition)
            # messages below it hold no event the saved state lacks
            snap.safe[partition] = self.rekeyed_stage.safe_offset(partition)
            snap.rekeyed_records[partition] = self.rekeyed_held.events.pop(partition, [])
        snap.dump_s = time.perf_counter() - t0
        return snap

    async def _write_state(self, snap: _Snapshot) -> tuple[dict[int, Any], dict[int, Any]]:
        """Hand the snapshot's writes to the tables' stores and the producer; the send
        futures of the last changelog message per partition (session, rekeyed)."""
        producer: Any = self.app.producer
        writes = snap.session_writes
        half = len(writes) // 2
        last: dict[int, Any] = {}
        if writes:
            last = await _write(producer, self.session_table, self.session_held.last,
                                writes[:half], snap, self.sends)
        _crash_point("write", self.crashable)
        if writes:
            last.update(await _write(producer, self.session_table, self.session_held.last,
                                     writes[half:], snap, self.sends))
        last_rekeyed: dict[int, Any] = {}
        if snap.rekeyed_writes:
            last_rekeyed = await _write(producer, self.rekeyed_table, self.rekeyed_held.last,
                                        snap.rekeyed_writes, snap, self.sends)
        return last, last_rekeyed

    async def _ack_held(self, snap: _Snapshot) -> None:
        """Ack the records whose effects the snapshot saved (faust commits up to them); a
        rekeyed record holding events not released yet is held on."""
        held = self.session_held
        for event in snap.session_records:
            await held.stream.ack(event)
        held = self.rekeyed_held
        for partition, events in snap.rekeyed_records.items():
            safe, keep = snap.safe[partition], []
            for event in events:
                if event.message.offset < safe:
                    await held.stream.ack(event)
                else:
                    keep.append(event)
            if keep:  # before those held since the snapshot
                held.events[partition] = keep + held.events.get(partition, [])

    def _gauges(self) -> dict[str, Any]:
        consumer: Any = self.app.consumer
        lag = 0
        for tp in consumer.assignment():
            if tp.topic == self.settings.events_topic:
                highwater = consumer.highwater(tp)
                if highwater is not None:
                    lag += max(0, highwater - self.session_stage.last_offset(tp.partition) - 1)
        sessions = sum(p.engine.open_sessions
                       for p in self.session_stage.partitions.values())
        # events the rekeyed stage got after their time was released (taken out of order)
        late = sum(p.late for p in self.rekeyed_stage.partitions.values())
        return {"lag": lag, "open_sessions": sessions, "rss_bytes": _rss_bytes(),
                "held_records": self.session_held.count() + self.rekeyed_held.count(),
                "late_events": late, "checkpoint_gap_s": round(self.checkpoint_gap_s, 3),
                # CPU seconds of the process (every thread) so far: per event, the figure a
                # benchmark on a shared machine can compare (wall-clock rates swing with
                # whatever else runs)
                "cpu_s": round(time.process_time(), 3)}

    # -- progress, stalls, idle partitions --------------------------------------------------
    def _progressed(self, topic: str, groups: dict[int, list[EventT[Any]]]) -> None:
        now = time.monotonic()
        for partition, events in groups.items():
            self.progress[TP(topic, partition)] = (now, events[-1].message.offset)

    async def kick_stalled(self) -> None:
        """Resume partitions that have records to read but deliver none (faust-streaming
        #471: a partition taken out of fetching under buffer pressure is never put back),
        and read them again from the stage's next offset (records lost at the end of a
        partition leave no later record to show the hole: see _offsets.py)."""
        consumer: Any = self.app.consumer
        now = time.monotonic()
        guards = {self.settings.events_topic: self.session_guard,
                  self.settings.rekeyed_topic: self.rekeyed_guard}
        for tp in consumer.assignment():
            guard = guards.get(tp.topic)
            if guard is None:
                continue
            highwater = consumer.highwater(tp)
            seen_s, offset = self.progress.get(tp, (max(self.started_s, self.assigned_s), -1))
            if guard.known(tp.partition):
                offset = guard.next_offset(tp.partition) - 1
            elif tp.topic == self.settings.events_topic:
                offset = max(offset, self.session_stage.last_offset(tp.partition))
            if highwater is None or offset + 1 >= highwater or now - seen_s < _STALL_S:
                continue
            if self.empty_tail.get(tp) == (offset + 1, highwater):
                continue  # only offsets without records (transaction markers) are left
            waiting_since = self.waiting_since[tp.topic]
            idle_agent = (guard.known(tp.partition) and waiting_since is not None
                          and now - waiting_since >= _STALL_S)
            if idle_agent and await self.probe.first_offset_from(
                    tp.topic, tp.partition, offset + 1, timeout_s=1.0) is None:
                # a transactional producer's last commit marker: nothing to read
                self.empty_tail[tp] = (offset + 1, highwater)
                continue
            log.warning("agentwatch worker: %s[%d] has records from offset %d but none came "
                        "for %.0f s: resuming it", tp.topic, tp.partition, offset + 1,
                        now - seen_s)
            consumer.on_buffer_drop(tp)
            consumer.resume_partitions({tp})
            self.progress[tp] = (now, offset)
            if idle_agent:
                async with self.lock:
                    await self.seek_back(guard, tp)

    async def sample_fetches(self) -> None:
        """Note, every 0.5 s, when the broker last answered a fetch for each input
        partition, and when its answers came back after a gap (none for longer than
        FETCH_GAP_S: the broker was stopped, frozen or unreachable, or the consumer was
        paused). Sampled apart from announce_idle, whose period follows idle_after_s (and
        which samples each answer it judges too, before it judges it)."""
        consumer: Any = self.app.consumer
        for tp in consumer.assignment():
            if tp.topic == self.settings.events_topic:
                self.fetches.note(tp, faust_internals.last_fetch_s(consumer, tp))

    async def announce_idle(self) -> None:
        """Input partitions with nothing left to read stop holding back the rekeyed stage.

        Which partition is idle, and up to which event time ``t``, is ``_idle.idle_until_us``:
        caught up, quiet for ``idle_after_s`` as a later fetch answer confirmed, long enough
        after a gap in answers. The rekeyed stage releases an idle partition's share up to
        ``t`` only, so an idle mark sent before an outage does not let the other
        partitions' backlog run ahead of this one's."""
        stage = self.session_stage
        tables: Any = self.app.tables
        if not tables.recovery.completed.is_set():
            return
        if not stage.forward_scopes:
            return
        now = time.monotonic()
        wall_s = time.time()
        idle_after_s = self.settings.idle_after_s
        idle = []
        until_us: dict[int, int] = {}
        for tp in self.app.consumer.assignment():
            if tp.topic != self.settings.events_topic:
                continue
            if tp.partition not in stage.partitions:  # no record since the assignment
                stage.restore(tp.partition, _table_items(self.session_table, tp.partition))
            # the answer's time before its highwater: the consumer thread may store a newer
            # answer meanwhile, and a newer highwater with an older time errs on the safe side
            fetched = faust_internals.last_fetch_s(self.app.consumer, tp)
            highwater = self.app.consumer.highwater(tp)
            next_offset = stage.last_offset(tp.partition) + 1
            caught_up = highwater is not None and (
                next_offset >= highwater or self.empty_tail.get(tp) == (next_offset, highwater))
            # quiet since its last record, or since the assignment when none came since: a
            # restarted worker must not call every partition idle at once (it would release
            # the agent windows ahead of partitions still catching up)
            seen_s = self.progress.get(tp, (self.assigned_s, -1))[0]
            quiet_s = now - max(seen_s, self.assigned_s)
            # the gap check on this very answer: the first answer after an outage must not
            # make the partition idle before sample_fetches has seen the gap
            back = self.fetches.note(tp, fetched)
            until = idle_until_us(PartitionView(caught_up, quiet_s, fetched, back),
                                  wall_s=wall_s, idle_after_s=idle_after_s)
            if until is not None:
                idle.append(tp.partition)
                until_us[tp.partition] = until
        await self.announce(idle, idle=True, until_us=until_us)

    # -- rebalances --------------------------------------------------------------------------
    assigned_s: float = 0.0

    async def on_revoked(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        """Save everything processed before the partitions move (faust then seeks every
        partition to its committed offset)."""
        tables: Any = self.app.tables
        async with self.checkpointing:  # a checkpoint under way finishes first
            pass
        try:
            await self._saved()  # (its records are no longer counted as held)
            if self.fatal is None and tables.recovery.completed.is_set() and (
                    self.session_held.count() or self.rekeyed_held.count()):
                await self.checkpoint()
        except SendRefusedError as exc:
            self.stop_on(exc)

    async def on_shutdown(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        saving, self.saving = self.saving, None
        if saving is not None:  # let it finish; what it did not save is read again
            await asyncio.wait([saving])
            if not saving.cancelled():
                saving.exception()  # (retrieved: stopping, it no longer matters)
        await self.probe.stop()
        self.metrics.close()

    async def on_assigned(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        """Another worker may have owned a partition meanwhile: rebuild every partition from
        the tables (on its next batch; faust has recovered the tables by then), and forget
        the records held: faust reads every partition again from its committed offset."""
        assigned: set[TP] = args[0] if args else kwargs.get("assigned", set())
        if self.settings.runs_session_stage:
            topic = self.settings.events_topic
            mine = sorted(tp.partition for tp in assigned if tp.topic == topic)
            log.info("agentwatch worker: assigned partitions %s of %s", mine, topic)
        else:
            topic = self.settings.rekeyed_topic
            mine = sorted(tp.partition for tp in assigned if tp.topic == topic)
            log.info("agentwatch worker (rekeyed stage): got partitions %s of %s", mine, topic)
        self.assigned_s = time.monotonic()
        self.progress.clear()
        self.empty_tail.clear()
        # on the worker's topics, holes are the worker's to check (_offsets.py)
        self._faust_add_gap = faust_internals.own_ack_gaps(
            self.app.consumer, {self.settings.events_topic, self.settings.rekeyed_topic})
        self.session_held.forget()
        self.rekeyed_held.forget()
        self.session_guard.forget()
        self.rekeyed_guard.forget()
        for partition in list(self.session_stage.partitions):
            self.session_stage.drop(partition)
        for partition in list(self.rekeyed_stage.partitions):
            self.rekeyed_stage.drop(partition)


#: the worker of each app build_app made (fatal_error reads it once the app has stopped)
_WORKERS: dict[int, _Worker] = {}


def fatal_error(app: faust.App) -> SendRefusedError | None:
    """Why ``app``'s worker stopped itself, if it did (None: it was asked to stop)."""
    worker = _WORKERS.get(id(app))
    return None if worker is None else worker.fatal


def build_app(settings: WorkerSettings, config: RulesConfig, input_partitions: int
              ) -> faust.App:
    """The worker app. ``input_partitions``: partitions of the events topic (the rekeyed
    topic and both tables get as many, so faust assigns them together)."""
    broken = faust_internals.problems()
    if broken:
        raise ConfigError("agentwatch worker cannot run with the installed faust-streaming: "
                          + "; ".join(broken))
    faust_internals.short_fetch_wait(FETCH_MAX_WAIT_MS)
    faust_internals.eager_delivery()
    worker = _Worker(settings, config, input_partitions)
    _WORKERS[id(worker.app)] = worker
    if settings.metrics_port:
        worker.metrics.start(settings.metrics_port)
    log.info("worker %s: %d partitions, store %s, forwarding %s", settings.group_id,
             input_partitions, settings.store,
             [s.value for s in worker.session_stage.forward_scopes] or "nothing")
    return worker.app
