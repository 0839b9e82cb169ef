"""Run `agentwatch worker` processes against the real broker and read what they produce."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from agentwatch.processors.core import Engine, RulesConfig
from agentwatch.processors.replay import replay_lines
from agentwatch.producer._packing import Packer
from agentwatch.schemas import Alert


class WorkerProcess:
    """One ``agentwatch worker`` subprocess; its log goes to ``log_path``."""

    def __init__(self, bootstrap: str, topics: dict[str, str], group: str, data_dir: Path,
                 log_path: Path, *, rules: Path | None = None, idle_after_s: float | None = None
                 ) -> None:
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


def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes]],
            *, pace_s: float = 0.0) -> None:
    """Send ``(key, value)`` records in order (keyed: Kafka's default partitioner), waiting
    ``pace_s`` between records."""
    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                    enable_idempotence=True)
        await producer.start()
        try:
            for key, value in records:
                await producer.send(topic, value, key=key)
                if pace_s:
                    await producer.flush()
                    await asyncio.sleep(pace_s)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(go())


def read_topic(bootstrap: str, topic: str, *, until: Callable[[list[bytes]], bool],
               timeout_s: float, settle_s: float = 2.0) -> list[bytes]:
    """Every value on ``topic`` from the start, read until ``until(values)`` holds (then
    ``settle_s`` more, to catch anything extra) or ``timeout_s`` passes."""
    async def go() -> list[bytes]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                    auto_offset_reset="earliest")
        await consumer.start()
        values: list[bytes] = []
        try:
            deadline = time.monotonic() + timeout_s
            settle_at: float | None = None
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=200)
                for messages in batch.values():
                    values += [m.value for m in messages if m.value is not None]
                if settle_at is None and until(values):
                    settle_at = time.monotonic() + settle_s
                if settle_at is not None and time.monotonic() >= settle_at:
                    break
        finally:
            await consumer.stop()
        return values

    return asyncio.run(go())


def replay_alerts(events: Iterable[dict[str, Any]], config: RulesConfig | None = None
                  ) -> list[dict[str, Any]]:
    """What `agentwatch replay` reports for the events in this order (as alert JSON dicts)."""
    alerts: list[Alert] = []
    replay_lines((orjson.dumps(e) for e in events), Engine(config), alerts.append)
    return [orjson.loads(a.model_dump_json()) for a in alerts]


def alert_set(alerts: Iterable[dict[str, Any]]) -> set[bytes]:
    """Alerts as canonical JSON, order-free (the worker's partitions interleave)."""
    return {orjson.dumps(a, option=orjson.OPT_SORT_KEYS) for a in alerts}
