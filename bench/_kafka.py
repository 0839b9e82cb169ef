"""Helpers shared by the Kafka benchmarks: a broker, fresh topics, preloading, committed offsets.

A benchmark measures a consumer (ours or a peer) running as its own process, from outside:
it polls the committed offsets of the consumer's group and turns them into events with the
per-offset event counts recorded while preloading (a record may hold many events). The rate
is the events committed between the first and the last commit observed, over the time
between those two observations, so process start-up, group join and topic creation are not
in the figure (they are reported apart). The end is late by at most one commit interval
of the consumer (it finished, then waited for its commit timer): the figure says how much
that can weigh, and a run with fewer than three commits, or whose first commit already
covered half the events, gives no figure at all.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

# confluent-kafka ships neither stubs nor py.typed: its names are Any to mypy.
from confluent_kafka import (  # type: ignore[import-untyped]
    Consumer,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[import-untyped]

__all__ = [
    "BenchError",
    "GroupWatcher",
    "Loaded",
    "Throughput",
    "create_topics",
    "fresh_name",
    "kafka_bootstrap",
    "log_tail",
    "measure_group",
    "preload",
    "read_values",
    "read_worker_stats",
    "start_process",
    "stop_process",
]

REPO = Path(__file__).resolve().parents[1]
INTEGRATION = REPO / "tests" / "integration"
BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"

#: One record to preload: (key, value, how many events the value holds).
RecordSpec = tuple[bytes, bytes, int]


class BenchError(RuntimeError):
    """The benchmark cannot produce a figure; ``detail`` may hold log tails."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


@contextlib.contextmanager
def kafka_bootstrap() -> Iterator[str]:
    """``$KAFKA_BOOTSTRAP_SERVERS`` when set; otherwise a broker from the integration-test
    fixture (``tests/integration/kafka_broker.py``), stopped on exit."""
    external = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if external:
        yield external
        return
    sys.path.insert(0, str(INTEGRATION))
    fixture: Any = importlib.import_module("kafka_broker")  # test code: not on mypy's path
    t0 = time.monotonic()
    try:
        broker = fixture.start_broker()
    except fixture.KafkaUnavailable as exc:
        raise BenchError(f"no Kafka broker: {exc.reason}", exc.detail) from None
    print(
        f"kafka: started a broker at {broker.bootstrap_servers} in {time.monotonic() - t0:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    try:
        yield str(broker.bootstrap_servers)
    finally:
        broker.stop()


def fresh_name(prefix: str) -> str:
    """A topic or group name no earlier run used (topic deletion is asynchronous)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_topics(bootstrap: str, names: Iterable[str], partitions: int) -> None:
    """Create topics with ``partitions`` partitions and the broker's replication factor."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})  # quiet purge notes
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions) for name in names], operation_timeout=30
    )
    for name, future in futures.items():
        try:
            future.result(timeout=60)
        except KafkaException as exc:
            raise BenchError(f"could not create topic {name}: {exc}") from None


@dataclass(frozen=True)
class Loaded:
    """A preloaded topic: where its events sit, offset by offset."""

    topic: str
    records: int
    events: int
    #: partition -> cumulative events: ``before[p][o]`` = events in offsets < o of p;
    #: ``len(before[p]) - 1`` is the partition's end offset.
    before: Mapping[int, list[int]]

    @property
    def partitions(self) -> list[int]:
        return sorted(self.before)

    def end_offsets(self) -> dict[int, int]:
        return {p: len(cum) - 1 for p, cum in self.before.items()}

    def events_below(self, committed: Mapping[int, int]) -> int:
        """Events in the records below each partition's committed offset."""
        total = 0
        for partition, offset in committed.items():
            cum = self.before.get(partition)
            if cum is not None and offset > 0:
                total += cum[min(offset, len(cum) - 1)]
        return total


def preload(
    bootstrap: str,
    topic: str,
    records: Iterable[RecordSpec],
    *,
    compression: str = "none",
    partitioner: str = "murmur2_random",
) -> Loaded:
    """Produce ``records`` in order with confluent-kafka (fastest client here; not measured).

    Keys are partitioned with murmur2 by default, as Kafka's Java client and aiokafka do;
    ``partitioner="consistent_random"`` is librdkafka's own default (CRC32 of the key: what
    a third-party producer on its defaults does, sessions land elsewhere).
    """
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": partitioner,
            "enable.idempotence": True,  # in order, no duplicates: offsets map to records 1:1
            "linger.ms": 20,
            "compression.type": compression,
            "queue.buffering.max.messages": 200_000,
            "log_level": 3,  # errors only: a fresh broker makes it retry its PID, noisily
        }
    )
    landed: dict[int, dict[int, int]] = {}  # partition -> offset -> events
    errors: list[str] = []

    def delivered(events: int, err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))
            return
        landed.setdefault(msg.partition(), {})[msg.offset()] = events

    sent = 0
    for key, value, events in records:
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=partial(delivered, events))
                break
            except BufferError:  # local queue full: serve delivery reports, then retry
                producer.poll(0.05)
        sent += 1
        if sent % 1000 == 0:
            producer.poll(0)
    left = producer.flush(120)
    if left or errors:
        raise BenchError(
            f"preloading {topic}: {left} records undelivered, {len(errors)} errors "
            f"({errors[0] if errors else 'timeout'})"
        )
    before: dict[int, list[int]] = {}
    for partition, by_offset in landed.items():
        if sorted(by_offset) != list(range(len(by_offset))):
            raise BenchError(f"preloading {topic}: offsets of partition {partition} have gaps")
        cum = [0]
        for offset in range(len(by_offset)):
            cum.append(cum[-1] + by_offset[offset])
        before[partition] = cum
    return Loaded(topic, sent, sum(cum[-1] for cum in before.values()), before)


class GroupWatcher:
    """Reads one consumer group's committed offsets on one preloaded topic.

    Through a consumer that never subscribes (so it never joins the group): the admin API,
    ``AdminClient.list_consumer_group_offsets``, segfaults in confluent-kafka 2.12 on a group
    that has no coordinator yet (confluentinc/confluent-kafka-python#1982).
    """

    def __init__(self, bootstrap: str, group: str, loaded: Loaded) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
            }
        )
        self._partitions = [TopicPartition(loaded.topic, p) for p in loaded.partitions]

    def committed(self) -> dict[int, int]:
        """partition -> committed offset, for the partitions that have one (else empty)."""
        try:
            result = self._consumer.committed(self._partitions, timeout=10)
        except KafkaException:
            return {}  # the coordinator is not there yet, or moving
        return {tp.partition: tp.offset for tp in result if tp.error is None and tp.offset >= 0}

    def close(self) -> None:
        self._consumer.close()


@dataclass(frozen=True)
class Throughput:
    """What one consumer run did, seen through its group's committed offsets."""

    events: int  # events committed after the first commit observed, up to the last
    reached_end: bool  # False: stopped after a prefix of the topic, the consumer still busy
    elapsed_s: float  # from the first commit observed to the one that reached the end
    startup_s: float  # from process launch to the first commit observed
    first_commit_events: int  # events the first commit observed already covered
    commits_seen: int  # distinct committed positions observed (the resolution)
    #: (events, seconds) from the first commit observed to the last one before the end:
    #: leaves out the last commit interval, in which the consumer may have idled
    before_end: tuple[int, float]

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed_s

    @property
    def steady_events_per_s(self) -> float:
        events, seconds = self.before_end
        return events / seconds

    @property
    def tail_bound(self) -> float:
        """About how low ``events_per_s`` may be from the consumer idling between its last
        event and its last commit: one mean commit interval over the elapsed time (none
        when the run stopped while the consumer was still busy)."""
        return 1 / (self.commits_seen - 1) if self.reached_end else 0.0

    def describe(self) -> str:
        total = self.first_commit_events + self.events
        with_startup = total / (self.startup_s + self.elapsed_s)
        return (
            f"{self.events_per_s:,.0f} events/s ({self.events:,} events between the first "
            f"and last commit in {self.elapsed_s:.2f} s, {self.commits_seen} commits seen: "
            + (
                f"may be low by up to {self.tail_bound:.0%}"
                if self.reached_end
                else f"stopped after {total:,} events, a prefix of the topic"
            )
            + f"; the first commit, "
            f"{self.startup_s:.1f} s after launch, covered {self.first_commit_events:,}; "
            f"{with_startup:,.0f} events/s counting start-up; "
            f"{self.steady_events_per_s:,.0f} events/s without the last commit interval)"
        )


MIN_COMMITS = 3  # the first, one in between, the last: fewer and there is no rate to speak of


def measure_group(
    watcher: GroupWatcher,
    loaded: Loaded,
    proc: subprocess.Popen[bytes],
    *,
    launched_at: float,
    timeout_s: float,
    until_events: int = 0,
    poll_s: float = 0.05,
) -> Throughput:
    """Poll committed offsets until they reach the end of ``loaded``, or cover
    ``until_events`` events when that is set (a prefix of the topic); see the module doc."""
    deadline = launched_at + timeout_s
    target = min(until_events, loaded.events) if until_events > 0 else loaded.events
    seen: list[tuple[float, int]] = []  # (when observed, events committed), on each change
    while True:
        committed = watcher.committed()
        now = time.monotonic()
        done = loaded.events_below(committed)
        if done > (seen[-1][1] if seen else 0):
            seen.append((now, done))
        if done >= target:
            break
        code = proc.poll()
        if code is not None:
            raise BenchError(
                f"the process exited with code {code} after committing {done:,} of "
                f"{loaded.events:,} events"
            )
        if now > deadline:
            raise BenchError(
                f"timed out after {timeout_s:.0f} s with {done:,} of {loaded.events:,} "
                f"events committed"
            )
        time.sleep(poll_s)
    (first_t, first_done), (last_t, last_done) = seen[0], seen[-1]
    if len(seen) < MIN_COMMITS or first_done > target // 2:
        raise BenchError(
            f"too few commits to measure a rate: {len(seen)} seen, the first already "
            f"covered {first_done:,} of {target:,} events (the consumer commits "
            f"too rarely for this run's length: raise --events)"
        )
    prev_t, prev_done = seen[-2]
    return Throughput(
        events=last_done - first_done,
        reached_end=last_done >= loaded.events,
        elapsed_s=last_t - first_t,
        startup_s=first_t - launched_at,
        first_commit_events=first_done,
        commits_seen=len(seen),
        before_end=(prev_done - first_done, prev_t - first_t),
    )


def start_process(
    cmd: list[str], env: Mapping[str, str], log: Path
) -> tuple[subprocess.Popen[bytes], float]:
    """Launch ``cmd`` in its own process group, output to ``log``; (process, launch time)."""
    with log.open("wb") as out:
        launched_at = time.monotonic()
        proc = subprocess.Popen(  # noqa: S603 -- our own venv's executables, argv built here
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,  # own group: stop_process() signals its children too
        )
    return proc, launched_at


def stop_process(proc: subprocess.Popen[bytes], *, term_timeout_s: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL it after ``term_timeout_s``."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=term_timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


#: what ``agentwatch worker`` logs every ``AGENTWATCH_STATS_INTERVAL_S`` at INFO, after faust's
#: ``[time] [pid] [level]`` prefix
WORKER_STATS_RE = re.compile(rb"(?:\[(\d+)\] \[\w+\] )?agentwatch worker stats (\{.*\})")


def read_worker_stats(log: Path) -> list[dict[str, Any]]:
    """The ``agentwatch worker stats {json}`` lines of a worker's log, in order, each with
    ``"_pid"``: the process that logged it when the prefix says (a worker may run a stage in
    a child process that logs its own line), else 0. Empty when the worker logs none (an
    older worker, or a log level above INFO)."""
    try:
        text = log.read_bytes()
    except OSError:
        return []
    out: list[dict[str, Any]] = []
    for match in WORKER_STATS_RE.finditer(text):
        with contextlib.suppress(ValueError):
            value = json.loads(match.group(2))
            if isinstance(value, dict):
                value["_pid"] = int(match.group(1) or 0)
                out.append(value)
    return out


def read_values(bootstrap: str, topic: str, *, timeout_s: float = 60.0) -> list[bytes]:
    """Every record value of ``topic``, from its start to its end as of now (no group);
    empty when the topic does not exist."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": fresh_name("bench-reader"),  # never subscribes, never commits
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",  # offset 0 gone to retention: the first one
            "log_level": 3,
        }
    )
    try:
        found = consumer.list_topics(topic, timeout=30).topics.get(topic)
        if found is None or found.error is not None:
            return []
        ends: dict[int, int] = {}
        for partition in found.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=30
            )
            if high > low:
                ends[partition] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])  # 0: from the start
        values: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while ends:
            if time.monotonic() > deadline:
                raise BenchError(f"reading {topic}: timed out after {timeout_s:.0f} s")
            for message in consumer.consume(10_000, timeout=0.5):
                if message.error() is not None:
                    continue
                values.append(message.value() or b"")
                if message.offset() + 1 >= ends.get(message.partition(), 0):
                    ends.pop(message.partition(), None)
        return values
    finally:
        consumer.close()
