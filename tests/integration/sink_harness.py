"""Runs ``agentwatch sink`` as a process for the integration tests, and reads the group's
committed offsets (with their metadata) from Kafka.

Run as a script it is the sink itself; ``--kill-after-inserts N`` makes the process
SIGKILL itself right after its N-th batch insert, i.e. after ClickHouse stored the
batch and before the offsets are committed: the crash the dedup tokens are for.
``crash_at`` sets the sink's own test hook (``AGENTWATCH_TEST_CRASH_AT``, see
``agentwatch.sinks.kafka._runner``) to crash at other points too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

HERE = Path(__file__).parent


class ServiceProcess:
    """An ``agentwatch`` service run as a process: ``args`` and ``env`` set by a subclass,
    output to ``log_path``."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args, self.env, self.log_path = args, env, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=log)
        return self

    def stop(self, timeout_s: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)

    def wait(self, timeout_s: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class SinkProcess(ServiceProcess):
    def __init__(self, bootstrap: str, *, events_topic: str, alerts_topic: str, group: str,
                 chdb_path: Path, log_path: Path, batch_max_events: int = 500,
                 batch_max_ms: int = 300, kill_after_inserts: int | None = None,
                 crash_at: str | None = None) -> None:
        args = [sys.executable, str(HERE / "sink_harness.py"), "--chdb", str(chdb_path)]
        if kill_after_inserts is not None:  # the sink's own crash point after an insert
            if crash_at is not None:
                raise ValueError("give kill_after_inserts or crash_at, not both")
            crash_at = f"insert:{kill_after_inserts}"
        super().__init__(args, {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "AGENTWATCH_EVENTS_TOPIC": events_topic,
            "AGENTWATCH_ALERTS_TOPIC": alerts_topic,
            "AGENTWATCH_ALERTS_DLQ_TOPIC": "",  # not the shared default; a test sets its own
            "AGENTWATCH_CONTROL_TOPIC": "",  # the same
            "AGENTWATCH_ACKS_TOPIC": "",  # likewise
            "AGENTWATCH_SINK_GROUP": group,
            "AGENTWATCH_SINK_BATCH_MAX_EVENTS": str(batch_max_events),
            "AGENTWATCH_SINK_BATCH_MAX_MS": str(batch_max_ms),
            "AGENTWATCH_TEST_CRASH_AT": crash_at or "",
        }, log_path)


def group_offsets(bootstrap: str, group: str) -> dict[tuple[str, int], tuple[int, str]]:
    """``(topic, partition) -> (committed offset, metadata)`` of a consumer group."""
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415

    async def go() -> dict[tuple[str, int], tuple[int, str]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(group)
        finally:
            await admin.close()
        return {(tp.topic, tp.partition): (m.offset, m.metadata) for tp, m in offsets.items()}

    return asyncio.run(go())


def end_offsets(bootstrap: str, topics: dict[str, int]) -> dict[tuple[str, int], int]:
    """End offsets of every partition of ``topics`` (name -> partition count)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: PLC0415

    async def go() -> dict[tuple[str, int], int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        await consumer.start()
        try:
            tps = [TopicPartition(t, p) for t, n in topics.items() for p in range(n)]
            ends = await consumer.end_offsets(tps)
        finally:
            await consumer.stop()
        return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}

    return asyncio.run(go())


def _settled(metadata: str) -> bool:
    """No metadata (the webhook dispatcher's progress is metadata), or the sink's recent-id
    memory span without an intent."""
    from agentwatch.sinks.kafka import parse_intent  # noqa: PLC0415

    return not metadata or (metadata.startswith("agentwatch-sink/")
                            and parse_intent(metadata) is None)


def wait_caught_up(bootstrap: str, group: str, topics: dict[str, int], *, timeout_s: float,
                   sink: ServiceProcess | None = None) -> None:
    """Until the group committed the end of every partition of ``topics`` (name ->
    partition count), with no intent pending (the sink's other metadata may be there)."""
    ends = end_offsets(bootstrap, topics)
    deadline = time.monotonic() + timeout_s
    committed: dict[tuple[str, int], tuple[int, str]] = {}
    from aiokafka.errors import KafkaError  # noqa: PLC0415

    while time.monotonic() < deadline:
        try:
            committed = group_offsets(bootstrap, group)
        except KafkaError:  # the group does not exist yet
            committed = {}
        if all(committed.get(tp, (-1, ""))[0] >= end and _settled(committed[tp][1])
               for tp, end in ends.items() if end > 0):
            return
        if sink is not None and sink.proc is not None and sink.proc.poll() is not None:
            raise AssertionError(f"sink exited ({sink.proc.returncode}):\n{sink.log()[-3000:]}")
        time.sleep(0.3)
    log = sink.log()[-3000:] if sink is not None else ""
    raise AssertionError(f"not caught up after {timeout_s} s: ends {ends}, committed "
                         f"{committed}\n{log}")


def _main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chdb", required=True)
    args = parser.parse_args()

    from agentwatch.sinks import SinkSettings, StoreSettings  # noqa: PLC0415
    from agentwatch.sinks.kafka import run_sink  # noqa: PLC0415

    sys.exit(run_sink(SinkSettings.from_env(), StoreSettings.from_env(url=args.chdb)))


if __name__ == "__main__":
    _main()
