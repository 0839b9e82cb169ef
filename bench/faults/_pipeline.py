"""One row's pipeline: a broker of its own, the worker, the sink, the webhook dispatcher, a
webhook receiver and the agent process, each started (and restarted) as a user would,
with fresh topics, groups and data dirs. Reuses the integration tests' harnesses
(``tests/integration``: the broker, ``WorkerProcess``, ``ServiceProcess``,
``DispatcherProcess``) and the receiver that ships with the sinks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
INTEGRATION = REPO / "tests" / "integration"
for _path in (str(REPO), str(INTEGRATION)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import orjson  # noqa: E402
from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402
from kafka_broker import KafkaBroker, start_broker  # noqa: E402
from sink_harness import ServiceProcess  # noqa: E402
from webhooks_harness import DispatcherProcess, write_endpoints  # noqa: E402
from worker_harness import WorkerProcess, create_topic, topics_for  # noqa: E402

from agentwatch.alerts import ReceivedDelivery, WebhookReceiver  # noqa: E402
from agentwatch.schemas import to_us  # noqa: E402

SECRET = "fault-matrix-secret"  # noqa: S105 -- a local receiver's test secret
ENDPOINT = "ops"
PARTITIONS = 4
RULES = Path(__file__).parent / "rules.yaml"
#: the endpoint rides out a 60 s outage: attempts every <= 5 s (full jitter), 40 of them
ENDPOINT_SETTINGS: dict[str, Any] = {"max_attempts": 40, "backoff_initial_s": 0.5,
                                     "backoff_max_s": 5}
#: ``agentwatch sink`` runs without these capabilities, so that a read-only data dir binds
#: it as it binds any non-root process (root ignores file modes otherwise)
_DROPPED_CAPS = "-dac_override,-dac_read_search,-fowner"


def signal_broker(broker: KafkaBroker, sig: signal.Signals) -> None:
    """SIGSTOP / SIGCONT the broker's process group (the fixture keeps the process private)."""
    proc: subprocess.Popen[bytes] | None = broker._proc  # the fixture keeps it private
    assert proc is not None
    os.killpg(proc.pid, sig)


#: the worker's stats line every 2 s: its last one (when it stops) is read for late_events
STATS_INTERVAL_S = 2.0


class Pipeline:
    """Everything of one row, under ``root``; ``start()`` then ``stop()``."""

    def __init__(self, root: Path, name: str, *, idle_after_s: float | None = None) -> None:
        self.root = root
        self.idle_after_s = idle_after_s  # the worker's AGENTWATCH_IDLE_AFTER_S (None: default)
        self.name = name
        root.mkdir(parents=True, exist_ok=True)
        self.topics = topics_for(name)
        self.alerts_dlq = f"{name}.alerts.dlq"
        self.groups = {"worker": f"{name}-worker", "sink": f"{name}-sink",
                       "webhooks": f"{name}-webhooks"}
        self.chdb_dir = root / "clickhouse"
        self.worker_dir = root / "worker-data"
        self.spool_dir = root / "spool"
        self.agent_log = root / "agent-emitted.txt"
        self.broker: KafkaBroker | None = None
        self.worker: WorkerProcess | None = None
        self.sink: ServiceProcess | None = None
        self.dispatcher: DispatcherProcess | None = None
        self.receivers: list[WebhookReceiver] = []
        self.receiver_port = 0
        self.agent: subprocess.Popen[bytes] | None = None
        self.agent_runs = 0
        self.starts = {"worker": 0, "sink": 0, "webhooks": 0}

    @property
    def bootstrap(self) -> str:
        assert self.broker is not None
        return self.broker.bootstrap_servers

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self.broker = start_broker()
        for topic, partitions in ((self.topics["events"], PARTITIONS),
                                  (self.topics["alerts"], PARTITIONS),
                                  (self.topics["dlq"], 1), (self.alerts_dlq, 1)):
            create_topic(self.bootstrap, topic, partitions)
        self.start_receiver()
        endpoints = write_endpoints(self.root / "endpoints.yaml", [
            {"name": ENDPOINT, "url": f"http://127.0.0.1:{self.receiver_port}/",
             "secret": SECRET, "allow_private": True,  # the receiver is on 127.0.0.1
             **ENDPOINT_SETTINGS}])
        self._endpoints = endpoints
        self.start_worker()
        self.start_sink()
        self.start_dispatcher()
        assert self.worker is not None
        if not self.worker.wait_for_log("agentwatch worker: assigned", 90):
            raise RuntimeError(f"the worker did not join its group:\n{self.worker.log()[-2000:]}")

    def stop(self) -> None:
        """Stop what still runs (SIGTERM, then SIGKILL), the broker last."""
        if self.agent is not None and self.agent.poll() is None:
            self.agent.kill()
            self.agent.wait(10)
        for service in (self.dispatcher, self.sink):
            if service is not None and service.proc is not None:
                with contextlib.suppress(Exception):
                    service.stop(timeout_s=30)
                if service.proc.poll() is None:
                    service.kill()
        if self.worker is not None:
            self.worker.stop()
        for receiver in self.receivers:
            receiver.stop()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    # -- services -------------------------------------------------------------------------

    def start_worker(self) -> None:
        self.starts["worker"] += 1
        self.worker = WorkerProcess(
            self.bootstrap, self.topics, self.groups["worker"], self.worker_dir,
            self.root / f"worker-{self.starts['worker']}.log", rules=RULES,
            idle_after_s=self.idle_after_s, stats_interval_s=STATS_INTERVAL_S).start()

    def start_sink(self) -> None:
        self.starts["sink"] += 1
        prefix = (["setpriv", "--bounding-set", _DROPPED_CAPS, "--"]
                  if os.geteuid() == 0 else [])
        env = {**os.environ,
               "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
               "AGENTWATCH_EVENTS_TOPIC": self.topics["events"],
               "AGENTWATCH_ALERTS_TOPIC": self.topics["alerts"],
               "AGENTWATCH_ALERTS_DLQ_TOPIC": self.alerts_dlq,
               "AGENTWATCH_SINK_GROUP": self.groups["sink"]}
        self.sink = ServiceProcess(
            [*prefix, sys.executable, "-m", "agentwatch.cli", "sink", "--url",
             str(self.chdb_dir)], env, self.root / f"sink-{self.starts['sink']}.log").start()

    def start_dispatcher(self) -> None:
        self.starts["webhooks"] += 1
        self.dispatcher = DispatcherProcess(
            self.bootstrap, alerts_topic=self.topics["alerts"], dlq_topic=self.alerts_dlq,
            group=self.groups["webhooks"], endpoints_file=self._endpoints,
            log_path=self.root / f"webhooks-{self.starts['webhooks']}.log").start()

    def start_receiver(self) -> None:
        receiver = WebhookReceiver(secret=SECRET, port=self.receiver_port).start()
        self.receiver_port = int(receiver.url.rsplit(":", 1)[1].strip("/"))
        self.receivers.append(receiver)

    def stop_receiver(self) -> None:
        self.receivers[-1].stop()

    def deliveries(self) -> list[ReceivedDelivery]:
        return [d for r in self.receivers for d in r.received]

    def exited(self) -> list[str]:
        """Services that ended by themselves (name and exit code)."""
        out = []
        for name, service in (("worker", self.worker), ("sink", self.sink),
                              ("webhooks", self.dispatcher)):
            proc = service.proc if service is not None else None
            if proc is not None and proc.poll() is not None:
                out.append(f"{name} exited with code {proc.returncode}")
        return out

    # -- the agent ------------------------------------------------------------------------

    def start_agent(self, fleet: dict[str, Any], *, spool: bool, start: int = 0) -> None:
        self.agent_runs += 1
        args = [sys.executable, "-m", "bench.faults._agent", "--bootstrap", self.bootstrap,
                "--topic", self.topics["events"], "--log", str(self.agent_log),
                "--events", str(fleet["events"]), "--pace", str(fleet["pace"]),
                "--sessions", str(fleet["sessions"]), "--loop-every", str(fleet["loop_every"]),
                "--seed", str(fleet["seed"]), "--start", str(start)]
        if fleet.get("start_us") is not None:
            args += ["--fleet-start-us", str(fleet["start_us"])]
        if spool:
            args += ["--spool", str(self.spool_dir)]
        out = (self.root / f"agent-{self.agent_runs}.out").open("wb")
        with out:
            self.agent = subprocess.Popen(args,  # noqa: S603 -- our own interpreter and script
                                           cwd=REPO, stdout=out, stderr=subprocess.STDOUT)

    def agent_output(self) -> str:
        return (self.root / f"agent-{self.agent_runs}.out").read_text(errors="replace")

    def emitted_indices(self) -> list[int]:
        if not self.agent_log.exists():
            return []
        return [int(line) for line in self.agent_log.read_text().split()]

    # -- Kafka reads ----------------------------------------------------------------------

    def end_offsets(self, topics: list[str],
                    extra: Iterable[tuple[str, int]] = ()) -> dict[tuple[str, int], int]:
        """End offsets of ``topics`` (``PARTITIONS`` each) and of the ``extra`` partitions."""
        tps = {(t, p) for t in topics for p in range(PARTITIONS)} | set(extra)
        return asyncio.run(_end_offsets(self.bootstrap, sorted(tps)))

    def committed(self, group: str) -> dict[tuple[str, int], tuple[int, str]]:
        return asyncio.run(_committed(self.bootstrap, group))

    def topic_events(self) -> tuple[list[dict[str, Any]], int, TopicOrder]:
        """Every event on the events topic (first copy of each ``event_id``), how many
        copies there were beyond the first (producer re-sends), and how far the partitions'
        offsets run backwards in event time."""
        return asyncio.run(_read_events(self.bootstrap, self.topics["events"]))

    def late_events(self) -> list[int]:
        """Per worker run, the ``late_events`` of its last stats line (events its agent stage
        took after their time was released, out of order)."""
        late = []
        for n in range(1, self.starts["worker"] + 1):
            found = re.findall(rb'"late_events":(\d+)',
                               (self.root / f"worker-{n}.log").read_bytes())
            late.append(int(found[-1]) if found else 0)
        return late

    def clickhouse_ids(self) -> dict[str, int]:
        """``event_id -> rows`` in ClickHouse's ``agentwatch.events`` (the sink stopped),
        through ``agentwatch query`` as a user reads it."""
        done = subprocess.run(  # noqa: S603 -- our own interpreter and CLI
            [sys.executable, "-m", "agentwatch.cli", "query", "--url", str(self.chdb_dir),
             "-f", "csv", "--limit", "0",
             "SELECT event_id, count() FROM agentwatch.events GROUP BY event_id"],
            capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"agentwatch query failed: {done.stderr[-2000:]}")
        rows: dict[str, int] = {}
        for line in done.stdout.splitlines():
            event_id, _, n = line.rpartition(",")
            event_id = event_id.strip('"')
            if n.isdigit():
                rows[event_id] = int(n)
        return rows


async def _end_offsets(bootstrap: str, partitions: list[tuple[str, int]]
                       ) -> dict[tuple[str, int], int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                request_timeout_ms=10_000)
    await asyncio.wait_for(consumer.start(), 20)
    try:
        tps = [TopicPartition(t, p) for t, p in partitions]
        ends = await asyncio.wait_for(consumer.end_offsets(tps), 20)
    finally:
        await consumer.stop()
    return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}


async def _committed(bootstrap: str, group: str) -> dict[tuple[str, int], tuple[int, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await asyncio.wait_for(admin.start(), 20)
    try:
        offsets = await asyncio.wait_for(admin.list_consumer_group_offsets(group), 20)
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): (m.offset, m.metadata or "") for tp, m in offsets.items()}


async def _read_events(bootstrap: str, topic: str
                       ) -> tuple[list[dict[str, Any]], int, TopicOrder]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=8 << 20)
    await consumer.start()
    seen: set[str] = set()
    events: list[dict[str, Any]] = []
    copies = 0
    order = TopicOrder()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        left = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + 120
        while left and time.monotonic() < deadline:
            batches = await consumer.getmany(*left, timeout_ms=500, max_records=10_000)
            for messages in batches.values():
                for message in messages:
                    decoded = orjson.loads(message.value or b"null")
                    for event in decoded if isinstance(decoded, list) else [decoded]:
                        if not isinstance(event, dict) or "event_id" not in event:
                            continue
                        order.add(message.partition, message.offset, event,
                                  event["event_id"] in seen)
                        if event["event_id"] in seen:
                            copies += 1
                            continue
                        seen.add(event["event_id"])
                        events.append(event)
            for tp in list(left):
                if await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
        if left:
            raise RuntimeError(f"could not read {topic} to its end in 120 s")
    finally:
        await consumer.stop()
    return events, copies, order


class TopicOrder:
    """How far each partition's offsets run backwards in event time: an event behind the
    largest time already on its partition (a copy included) by more than the rules'
    ``disorder_s`` can reach the worker's agent stage after its time was released."""

    def __init__(self) -> None:
        self.max_us: dict[int, int] = {}
        #: partition -> [(behind us, offset, event_id, first copy?)] of events behind the max
        self.behind: dict[int, list[tuple[int, int, str, bool]]] = {}

    def add(self, partition: int, offset: int, event: dict[str, Any], copy: bool) -> None:
        ts_us = to_us(datetime.fromisoformat(event["ts"]))
        top = self.max_us.get(partition, ts_us)
        if ts_us < top:
            self.behind.setdefault(partition, []).append(
                (top - ts_us, offset, event["event_id"], not copy))
        self.max_us[partition] = max(top, ts_us)

    def summary(self, disorder_us: int) -> str:
        """One line: per partition, first copies behind by more than ``disorder_us``."""
        parts = []
        for partition, items in sorted(self.behind.items()):
            over = [i for i in items if i[3] and i[0] > disorder_us]
            if over:
                worst = max(over)
                parts.append(f"p{partition}: {len(over)} (worst {worst[0] / 1e6:.2f} s "
                             f"at offset {worst[1]})")
        return ("events behind their partition's newest by more than disorder_s: "
                + (", ".join(parts) or "none"))


def spool_event_ids(spool_dir: Path) -> set[str]:
    """The ``event_id`` of every event in the spool's segment files (acknowledged or not):
    what the killed producer had made durable on disk. The entry layout is the one
    ``agentwatch.producer._spool`` documents (16-byte header: crc32, key length, value
    length, events; then key and value)."""
    ids: set[str] = set()
    for segment in sorted(spool_dir.glob("*.seg")):
        data = segment.read_bytes()
        offset = 0
        while offset + 16 <= len(data):
            key_len = int.from_bytes(data[offset + 4:offset + 8], "little")
            value_len = int.from_bytes(data[offset + 8:offset + 12], "little")
            start = offset + 16 + key_len
            end = start + value_len
            if end > len(data):
                break  # a torn tail
            with contextlib.suppress(orjson.JSONDecodeError):
                decoded = orjson.loads(data[start:end])
                for event in decoded if isinstance(decoded, list) else [decoded]:
                    if isinstance(event, dict) and "event_id" in event:
                        ids.add(event["event_id"])
            offset = end
    return ids
