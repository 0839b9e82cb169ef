"""Run `agentwatch worker` processes against the real broker and read what they produce."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from agentwatch.processors.core import Engine, RulesConfig
from agentwatch.processors.replay import replay_lines
from agentwatch.producer.packing import Packer
from agentwatch.schemas import Alert, partition_batch_key, partition_for, session_key

#: the worker's test-only crash hook (see agentwatch.processors.worker._app._crash_point)
CRASH_ENV = "AGENTWATCH_TEST_CRASH_AT"


class WorkerProcess:
    """One ``agentwatch worker`` subprocess; its log goes to ``log_path``."""

    def __init__(self, bootstrap: str, topics: dict[str, str], group: str, data_dir: Path,
                 log_path: Path, *, rules: Path | None = None, idle_after_s: float | None = None,
                 crash_at: str | None = None, stats_interval_s: float | None = None,
                 stages: str | None = None) -> None:
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "AGENTWATCH_EVENTS_TOPIC": topics["events"],
            "AGENTWATCH_ALERTS_TOPIC": topics["alerts"],
            "AGENTWATCH_DLQ_TOPIC": topics["dlq"],
            "AGENTWATCH_WORKER_GROUP": group,
            "AGENTWATCH_DATA_DIR": str(data_dir),
        }
        if rules is not None:
            self.env["AGENTWATCH_RULES"] = str(rules)
        if idle_after_s is not None:
            self.env["AGENTWATCH_IDLE_AFTER_S"] = str(idle_after_s)
        if stats_interval_s is not None:
            self.env["AGENTWATCH_STATS_INTERVAL_S"] = str(stats_interval_s)
        if stages is not None:  # ``split``: the agent/tenant stage in a child process
            self.env["AGENTWATCH_WORKER_STAGES"] = stages
        if crash_at is not None:  # ``write:N`` or ``commit:N``: the worker SIGKILLs itself
            self.env[CRASH_ENV] = crash_at
        else:
            self.env.pop(CRASH_ENV, None)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentwatch.cli", "worker", "--loglevel", "info"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no goodbye."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def wait(self, timeout_s: float) -> int:
        """Wait for the process to end by itself; its exit code (-9: SIGKILL)."""
        assert self.proc is not None
        return self.proc.wait(timeout_s)

    def wait_for_log(self, text: str, timeout_s: float) -> bool:
        """Whether ``text`` appeared in the log within ``timeout_s`` (False as soon as the
        process ends without it)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            if self.proc.poll() is not None:
                return text in self.log()
            time.sleep(0.2)
        return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def topics_for(name: str) -> dict[str, str]:
    """The worker's events, alerts and dead-letter topic names for one test."""
    return {"events": f"{name}.events", "alerts": f"{name}.alerts", "dlq": f"{name}.dlq"}


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    async def go() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, partitions, 1)])
        finally:
            await admin.close()

    asyncio.run(go())


def pack(events: Iterable[dict[str, Any]], *, flush_every: int = 200) -> list[tuple[bytes, bytes]]:
    """Records as the producer packs them: per-session arrays, one flush per ``flush_every``
    events (the producer's linger interval, stated in events)."""
    packer = Packer(max_events=500, max_bytes=1_000_000)
    records: list[tuple[bytes, bytes]] = []
    for i, event in enumerate(events, start=1):
        key = f"{event.get('tenant_id', 'default')}/{event['session_id']}".encode()
        packer.add(key, orjson.dumps(event))
        if i % flush_every == 0:
            records += [(r.key, r.value) for r in packer.take(all_open=True)]
    records += [(r.key, r.value) for r in packer.take(all_open=True)]
    return records


def pack_partition_batches(events: Iterable[dict[str, Any]], partitions: int, *,
                           flush_every: int = 200) -> list[tuple[bytes, bytes, int]]:
    """Records as the project's producer packs them by default (DESIGN.md, "Kafka records",
    form 3): per flush of ``flush_every`` events, one array per partition of every event
    whose session maps to it (Kafka's default partitioner), in order, keyed
    ``~batch:<p>``, as ``(key, value, partition)``."""
    records: list[tuple[bytes, bytes, int]] = []
    open_: dict[int, list[bytes]] = defaultdict(list)

    def flush() -> None:
        for p, parts in sorted(open_.items()):
            records.append((partition_batch_key(p), b"[" + b",".join(parts) + b"]", p))
        open_.clear()

    for i, event in enumerate(events, start=1):
        key = session_key(event.get("tenant_id", "default"), event["session_id"])
        open_[partition_for(key, partitions)].append(orjson.dumps(event))
        if i % flush_every == 0:
            flush()
    flush()
    return records


Record = tuple[bytes | None, bytes] | tuple[bytes | None, bytes, int | None]


def produce(bootstrap: str, topic: str, records: Iterable[Record], *,
            pace_s: float = 0.0) -> None:
    """Send ``(key, value)`` records in order (keyed: Kafka's default partitioner), or
    ``(key, value, partition)`` to that partition, waiting ``pace_s`` between records."""
    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                    enable_idempotence=True)
        await producer.start()
        try:
            for record in records:
                key, value = record[0], record[1]
                partition = record[2] if len(record) == 3 else None
                await producer.send(topic, value, key=key, partition=partition)
                if pace_s:
                    await producer.flush()
                    await asyncio.sleep(pace_s)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(go())


def produce_confluent(bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]]
                      ) -> None:
    """Send keyed ``(key, value)`` records in order with confluent-kafka, a third-party
    client, and its default partitioner (librdkafka's ``consistent_random``: CRC32 of the
    key, not Kafka's murmur2)."""
    from confluent_kafka import Producer  # type: ignore[import-untyped]  # noqa: PLC0415

    failed: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "enable.idempotence": True, "linger.ms": 5})
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=delivered)
                break
            except BufferError:  # its local queue is full: let it send
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0, "confluent-kafka did not deliver every record"
    assert not failed, failed


class TopicRecord(NamedTuple):
    partition: int
    offset: int
    key: bytes | None
    value: bytes


def read_records(bootstrap: str, topic: str, *,
                 until: Callable[[list[TopicRecord]], bool], timeout_s: float,
                 settle_s: float = 2.0) -> list[TopicRecord]:
    """Every record on ``topic`` from the start (partition, offset, key, value), read until
    ``until(records)`` holds (then ``settle_s`` more, to catch anything extra) or
    ``timeout_s`` passes."""
    async def go() -> list[TopicRecord]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                    auto_offset_reset="earliest")
        await consumer.start()
        records: list[TopicRecord] = []
        try:
            deadline = time.monotonic() + timeout_s
            settle_at: float | None = None
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=200)
                for messages in batch.values():
                    records += [TopicRecord(m.partition, m.offset, m.key, m.value)
                                for m in messages if m.value is not None]
                if settle_at is None and until(records):
                    settle_at = time.monotonic() + settle_s
                if settle_at is not None and time.monotonic() >= settle_at:
                    break
        finally:
            await consumer.stop()
        return records

    return asyncio.run(go())


def read_topic(bootstrap: str, topic: str, *, until: Callable[[list[bytes]], bool],
               timeout_s: float, settle_s: float = 2.0) -> list[bytes]:
    """Every value on ``topic`` from the start, read until ``until(values)`` holds (then
    ``settle_s`` more, to catch anything extra) or ``timeout_s`` passes."""
    records = read_records(bootstrap, topic, until=lambda rs: until([r.value for r in rs]),
                           timeout_s=timeout_s, settle_s=settle_s)
    return [r.value for r in records]


def read_alerts(bootstrap: str, topic: str, *, distinct: int, timeout_s: float = 90.0
                ) -> list[dict[str, Any]]:
    """Every alert on ``topic`` (decoded), read until ``distinct`` different ones are there
    (then :func:`read_topic`'s settle time, to catch anything extra) or ``timeout_s``."""
    values = read_topic(bootstrap, topic, timeout_s=timeout_s, until=lambda v: len(
        alert_set(orjson.loads(x) for x in v)) >= distinct)
    return [orjson.loads(v) for v in values]


def replay_alerts(events: Iterable[dict[str, Any]], config: RulesConfig | None = None
                  ) -> list[dict[str, Any]]:
    """What `agentwatch replay` reports for the events in this order (as alert JSON dicts)."""
    alerts: list[Alert] = []
    replay_lines((orjson.dumps(e) for e in events), Engine(config), alerts.append)
    return [orjson.loads(a.model_dump_json()) for a in alerts]


def worker_alerts(bootstrap: str, topics: dict[str, str], group: str, tmp_path: Path,
                  until: Callable[[list[bytes]], bool], *, rules: Path | None = None,
                  timeout_s: float = 90.0, stages: str | None = None) -> list[dict[str, Any]]:
    """Run one worker over what is on ``topics["events"]`` and return the alerts it wrote
    (read until ``until(values)``), checking its log has no traceback."""
    worker = WorkerProcess(bootstrap, topics, group, tmp_path / "data",
                           tmp_path / "worker.log", rules=rules, stages=stages).start()
    try:
        got = read_topic(bootstrap, topics["alerts"], until=until, timeout_s=timeout_s)
    finally:
        worker.stop()
    assert "Traceback" not in worker.log(), worker.log()[-3000:]
    if stages is not None:
        assert_stages_ran(worker.log(), split=stages == "split")
    return [orjson.loads(v) for v in got]


_AGENT_STARTING = re.compile(
    r"\[(\d+)\] \[INFO\] \[\^---Agent: agentwatch\.proce\[\.\](session|rekeyed)_agent\]: "
    r"Starting")


def assert_stages_ran(log: str, *, split: bool) -> None:
    """Both stages' faust agents started, in two processes (``split``) or in one: the pids
    of faust's log lines."""
    pids: dict[str, set[str]] = {"session": set(), "rekeyed": set()}
    for pid, stage in _AGENT_STARTING.findall(log):
        pids[stage].add(pid)
    assert pids["session"], log[-3000:]
    assert pids["rekeyed"], log[-3000:]
    assert pids["session"].isdisjoint(pids["rekeyed"]) == split, pids


def alert_set(alerts: Iterable[dict[str, Any]]) -> set[bytes]:
    """Alerts as canonical JSON, order-free (the worker's partitions interleave)."""
    return {orjson.dumps(a, option=orjson.OPT_SORT_KEYS) for a in alerts}


def assert_exactly(got: Sequence[dict[str, Any]], expected: Sequence[dict[str, Any]]) -> None:
    """Every alert state change of replay, and nothing else. Re-sent identical records
    (at-least-once around a crash) may appear; an alert firing twice may not."""
    missing, extra = alert_set(expected) - alert_set(got), alert_set(got) - alert_set(expected)
    diff = (f"{len(missing)} alerts of replay missing, {len(extra)} not in replay:\n"
            + "\n".join(f"- {_brief(a)}" for a in sorted(missing))
            + "\n" + "\n".join(f"+ {_brief(a)}" for a in sorted(extra)))
    assert not missing, diff
    assert not extra, diff
    variants = {(a["alert_id"], a["state"]): orjson.dumps(a, option=orjson.OPT_SORT_KEYS)
                for a in got}
    assert len(variants) == len(alert_set(got))  # one content per (alert, state)
    assert set(Counter((a["alert_id"], a["state"]) for a in got)) == {
        (a["alert_id"], a["state"]) for a in expected}


def _brief(alert_json: bytes) -> str:
    a = orjson.loads(alert_json)
    return (f"{a['rule']} {a['state']} {a['key']} ts={a['ts']} value={a['value']} "
            f"reason={a['reason']!r} event_ids={a['event_ids']}")


def save_alerts(path: Path, alerts: Iterable[dict[str, Any]]) -> None:
    """Keep what a test read (JSON lines), as evidence next to the worker logs."""
    path.write_bytes(b"".join(orjson.dumps(a) + b"\n" for a in alerts))
