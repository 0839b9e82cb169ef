"""alert latency: from the ``emit()`` of the event that completes a runaway loop to the
signed webhook's arrival at a local HTTP server, under a steady background load.

Workload (both modes): the project's producer (``Agentwatch``) emits a steady
``--rate`` events/s (default 5,000) of healthy traffic in real time: ``--sessions``
sessions over 5 agents, 1/3 llm calls (gpt-4o-mini, priced), 2/3 tool calls with fresh
arguments, 1 % errors. Every ``--loop-every-s`` seconds a new session starts a runaway
loop: the same tool call with the same arguments every 20 ms. The default rule
``loop_repeat`` (5 repeats within 120 s) fires on its 5th call. Each event's ``ts`` is
the wall-clock time just before its ``emit()``, and the alert's ``ts`` is the ``ts`` of
the event that changed its state (checked against the loop's emitted times), so the
latency of one alert is ``received_at - alert.ts`` on the same clock.

Modes:
- **embedded**: the in-process pipeline of ``agentwatch demo`` (in-process log, the
  detection core, chDB, the dispatcher), all in this process;
- **kafka**: the producer to a real Kafka broker (started from the test fixture unless
  ``KAFKA_BOOTSTRAP_SERVERS`` is set), ``agentwatch worker`` and ``agentwatch webhooks``
  as their own processes, as deployed. The alert record's broker timestamp splits the
  latency into emit -> alert on Kafka (producer linger, broker, worker) and alert on
  Kafka -> webhook (dispatcher).

A warm-up injects loops until the first alert arrives (the whole chain is live) and
runs ``--settle-s`` more (the worker drains what queued while it joined its group), then
``--duration-s`` seconds are measured. Peer: the stores agentwatch's peers alert from are
polled every 1 to 15 minutes; the ratio is against the best case of one poll per minute
(60 s), as the issue asks. Goal (issue 6, not asserted): p99 < 1 s through Kafka.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` as a namespace package

from confluent_kafka import Consumer  # type: ignore[import-untyped]

from agentwatch.cli._embedded import EmbeddedPipeline
from agentwatch.processors.core import Engine
from agentwatch.producer import Agentwatch, InProcessLog, InProcessTransport
from agentwatch.sinks import ChdbBackend, ClickHouseSink, SchemaConfig, migrate
from agentwatch.sinks.webhooks import EndpointConfig, ReceivedDelivery, WebhookReceiver
from bench._common import summary
from bench._kafka import (
    BenchError,
    create_topics,
    fresh_name,
    kafka_bootstrap,
    log_tail,
    start_process,
    stop_process,
)

AGENTWATCH = Path(sys.executable).parent / "agentwatch"  # the venv's console script
SECRET = "bench-secret"  # noqa: S105 -- a throwaway secret of a local run
PEER_POLL_S = 60.0
LOOP_STEP_S = 0.02
LOOP_CALLS = 8
TENANT = "bench"


@dataclass
class Workload:
    rate: int
    sessions: int
    loop_every_s: float
    rng: random.Random = field(default_factory=lambda: random.Random(6))
    loops_started: int = 0
    emitted: int = 0
    load_s: float = 0.0
    #: loop session -> the ``ts`` strings of its repeated calls
    loop_ts: dict[str, list[str]] = field(default_factory=dict)

    def background(self) -> dict[str, Any]:
        rng = self.rng
        session = f"s{rng.randrange(self.sessions)}"
        event: dict[str, Any] = {"session_id": session, "agent_id": f"agent-{hash(session) % 5}"}
        if rng.random() < 1 / 3:
            event |= {"kind": "llm_call", "model": "gpt-4o-mini",
                      "input_tokens": rng.randint(100, 3000), "output_tokens": rng.randint(10, 500)}
        else:
            event |= {"kind": "tool_call", "name": rng.choice(("search", "lookup", "email")),
                      "tool_args_hash": f"{rng.getrandbits(64):016x}",
                      "status": "error" if rng.random() < 0.01 else "ok"}
        return event


def now_ts() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def emit(client: Agentwatch, work: Workload, event: dict[str, Any]) -> str:
    ts = now_ts()
    event["ts"] = ts
    event["event_id"] = str(uuid.uuid4())
    client.emit(event)
    work.emitted += 1
    return ts


def run_load(client: Agentwatch, work: Workload, stop: threading.Event,
             measuring: threading.Event) -> None:
    """Emit ``work.rate`` background events/s in 5 ms ticks, and loop calls on schedule."""
    tick_s = 0.005
    started = time.monotonic()
    due = 0.0  # background events owed
    loops: list[tuple[str, int, float]] = []  # (session, calls made, next call at)
    next_loop = started
    last = started
    while not stop.is_set():
        now = time.monotonic()
        due += (now - last) * work.rate
        last = now
        while due >= 1:
            emit(client, work, work.background())
            due -= 1
        if now >= next_loop:
            next_loop += work.loop_every_s
            tag = "m" if measuring.is_set() else "w"
            session = f"loop-{tag}-{work.loops_started}"
            work.loops_started += 1
            work.loop_ts[session] = []
            loops.append((session, 0, now))
        kept = []
        for session, made, at in loops:
            calls, next_at = made, at
            if now >= at:
                ts = emit(client, work, {
                    "kind": "tool_call", "session_id": session, "agent_id": "agent-loop",
                    "name": "reroute_shipment", "tool_args_hash": "same-args-every-time"})
                work.loop_ts[session].append(ts)
                calls, next_at = made + 1, at + LOOP_STEP_S
            if calls < LOOP_CALLS:
                kept.append((session, calls, next_at))
        loops = kept
        time.sleep(max(0.0, tick_s - (time.monotonic() - now)))
        work.load_s = time.monotonic() - started


@dataclass
class Sample:
    session: str
    latency_s: float
    alert_id: str
    alert_ts: str


def samples(received: list[ReceivedDelivery], work: Workload) -> list[Sample]:
    """Latencies of the measured loops' firing loop_repeat alerts (first delivery each)."""
    out: dict[str, Sample] = {}
    for d in received:
        body = d.json
        if not (isinstance(body, dict) and body.get("rule") == "loop_repeat"
                and body.get("state") == "firing"):
            continue
        session = str(body.get("session_id"))
        if not session.startswith("loop-m-") or session in out:
            continue
        ts = str(body["ts"])
        emitted = {datetime.fromisoformat(t) for t in work.loop_ts.get(session, [])}
        alert_ts = datetime.fromisoformat(ts)
        if alert_ts not in emitted:
            raise BenchError(f"alert ts {ts} of {session} is none of its emitted event times")
        if not d.verified:
            raise BenchError(f"bad signature on a delivery: {d.verify_error}")
        out[session] = Sample(session, d.received_at_s - alert_ts.timestamp(),
                              str(body["alert_id"]), ts)
    return list(out.values())


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def describe(values: list[float]) -> str:
    return (f"n={len(values)} p50={pct(values, 0.50) * 1000:.0f} ms "
            f"p95={pct(values, 0.95) * 1000:.0f} ms p99={pct(values, 0.99) * 1000:.0f} ms "
            f"max={max(values) * 1000:.0f} ms mean={statistics.fmean(values) * 1000:.0f} ms")


@contextmanager
def load(client: Agentwatch, work: Workload) -> Iterator[tuple[threading.Event, threading.Event]]:
    stop, measuring = threading.Event(), threading.Event()
    thread = threading.Thread(target=run_load, args=(client, work, stop, measuring),
                              name="load", daemon=True)
    thread.start()
    try:
        yield stop, measuring
    finally:
        stop.set()
        thread.join(10)


def warm_up_then_measure(receiver: WebhookReceiver, measuring: threading.Event,
                         duration_s: float, warmup_timeout_s: float,
                         alive: Callable[[], str | None], settle_s: float) -> float:
    """Wait for the first loop alert (the chain is live), then ``settle_s`` more (the
    backlog of the start-up drains), then measure for ``duration_s``; returns the measured
    seconds."""
    started = time.monotonic()
    deadline = started + warmup_timeout_s
    while not any(d.json.get("rule") == "loop_repeat" for d in receiver.received
                  if isinstance(d.json, dict)):
        problem = alive()
        if problem:
            raise BenchError(problem)
        if time.monotonic() > deadline:
            raise BenchError(f"no alert within {warmup_timeout_s:.0f} s of warm-up")
        time.sleep(0.1)
    print(f"alert_latency: first alert {time.monotonic() - started:.1f} s after the load "
          f"started; settling {settle_s:.0f} s", file=sys.stderr, flush=True)
    settled = time.monotonic() + settle_s
    while time.monotonic() < settled:
        problem = alive()
        if problem:
            raise BenchError(problem)
        time.sleep(0.2)
    measuring.set()
    started = time.monotonic()
    while time.monotonic() - started < duration_s:
        problem = alive()
        if problem:
            raise BenchError(problem)
        time.sleep(0.2)
    measuring.clear()
    return time.monotonic() - started


def report(mode: str, got: list[Sample], work: Workload, loops: int, dropped: int,
           received: list[ReceivedDelivery]) -> float:
    if not got:
        raise BenchError(f"{mode}: no alert measured")
    by_rule = Counter(f"{d.json.get('rule')}/{d.json.get('state')}" for d in received
                      if isinstance(d.json, dict))
    print(f"alert_latency ({mode}): webhooks received: "
          f"{', '.join(f'{k} {v}' for k, v in sorted(by_rule.items()))}", file=sys.stderr)
    latencies = [s.latency_s for s in got]
    print(f"alert_latency ({mode}): {describe(latencies)}; {len(got)}/{loops} loops "
          f"alerted; {work.emitted / work.load_s:,.0f} events/s emitted (background and "
          f"loops) over {work.load_s:.0f} s, {dropped} dropped", file=sys.stderr, flush=True)
    return pct(latencies, 0.99)


def run_embedded(args: argparse.Namespace, tmp: Path) -> float:
    work = Workload(args.rate, args.sessions, args.loop_every_s)
    with ExitStack() as stack:
        backend = stack.enter_context(ChdbBackend(tmp / "chdb"))
        migrate(backend, SchemaConfig(ttl_days=None))
        receiver = stack.enter_context(WebhookReceiver(secret=SECRET))
        log = InProcessLog()
        pipeline = EmbeddedPipeline(
            log, Engine(), ClickHouseSink(backend),
            [EndpointConfig(name="bench", url=receiver.url, secret=SECRET)]).start()
        client = Agentwatch(transport=InProcessTransport(log), tenant_id=TENANT,
                            agent_id="bench")
        try:
            with load(client, work) as (_stop, measuring):
                warm_up_then_measure(receiver, measuring, args.duration_s,
                                     60, lambda: None, args.settle_s)
                loops = sum(1 for s in work.loop_ts if s.startswith("loop-m-"))
                time.sleep(2)  # the last loops' alerts
        finally:
            client.close()
            pipeline.stop()
        got = samples(receiver.received, work)
        return report("embedded", got, work, loops, client.stats.dropped,
                      receiver.received)


def run_kafka(args: argparse.Namespace, tmp: Path) -> float:
    work = Workload(args.rate, args.sessions, args.loop_every_s)
    with ExitStack() as stack:
        bootstrap = stack.enter_context(kafka_bootstrap())
        name = fresh_name("bench-latency")
        topics = {"events": f"{name}.events", "alerts": f"{name}.alerts",
                  "dlq": f"{name}.events.dlq", "alerts_dlq": f"{name}.alerts.dlq"}
        create_topics(bootstrap, [topics["events"]], 4)
        create_topics(bootstrap, [topics["alerts"], topics["dlq"], topics["alerts_dlq"]], 1)
        receiver = stack.enter_context(WebhookReceiver(secret=SECRET))
        endpoints = tmp / "endpoints.yaml"
        endpoints.write_text(yaml.safe_dump({"endpoints": [
            {"name": "bench", "url": receiver.url, "secret": SECRET}]}))
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()} | {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "AGENTWATCH_EVENTS_TOPIC": topics["events"],
            "AGENTWATCH_ALERTS_TOPIC": topics["alerts"],
            "AGENTWATCH_DLQ_TOPIC": topics["dlq"],
            "AGENTWATCH_ALERTS_DLQ_TOPIC": topics["alerts_dlq"],
            "AGENTWATCH_WORKER_GROUP": f"{name}-worker",
            "AGENTWATCH_WEBHOOKS_GROUP": f"{name}-webhooks",
            "AGENTWATCH_DATA_DIR": str(tmp / "worker"),
        }
        worker_log, hooks_log = tmp / "worker.log", tmp / "webhooks.log"
        worker, _ = start_process([str(AGENTWATCH), "worker", "--loglevel", "info"], env,
                                  worker_log)
        stack.callback(stop_process, worker)
        hooks, _ = start_process([str(AGENTWATCH), "webhooks", "--endpoints", str(endpoints)],
                                 env, hooks_log)
        stack.callback(stop_process, hooks)

        def alive() -> str | None:
            for proc, log in ((worker, worker_log), (hooks, hooks_log)):
                if proc.poll() is not None:
                    return f"{log.stem} exited ({proc.returncode}):\n{log_tail(log)}"
            return None

        client = Agentwatch(bootstrap_servers=bootstrap, tenant_id=TENANT, agent_id="bench",
                            topic=topics["events"])
        try:
            with load(client, work) as (_stop, measuring):
                warm_up_then_measure(receiver, measuring, args.duration_s,
                                     args.warmup_timeout_s, alive, args.settle_s)
                loops = sum(1 for s in work.loop_ts if s.startswith("loop-m-"))
                time.sleep(3)
        finally:
            client.close()
        got = samples(receiver.received, work)
        p99 = report("kafka", got, work, loops, client.stats.dropped, receiver.received)

        print_stages(bootstrap, topics, got)
        stats = [line for line in worker_log.read_text(errors="replace").splitlines()
                 if "agentwatch worker: batches=" in line]
        if stats:
            print(f"alert_latency (kafka): worker counters: {stats[-1].split('worker: ')[-1]}",
                  file=sys.stderr, flush=True)
        return p99


def read_timestamps(bootstrap: str, topic: str, keep: Callable[[bytes, bytes], list[Any]],
                    wanted: int, timeout_s: float = 30.0) -> dict[Any, float]:
    """``keep(key, value)`` -> ids found in a record; id -> the record's broker timestamp
    (CreateTime, seconds) of the first record holding it."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": fresh_name("bench-read"),
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    found: dict[Any, float] = {}
    deadline = time.monotonic() + timeout_s
    idle = 0
    while time.monotonic() < deadline and (len(found) < wanted or idle < 2):
        msgs = consumer.consume(2000, timeout=1.0)
        idle = 0 if msgs else idle + 1
        for msg in msgs:
            if msg.error() is None:
                for ident in keep(msg.key() or b"", msg.value() or b""):
                    found.setdefault(ident, msg.timestamp()[1] / 1000)
    consumer.close()
    return found


def print_stages(bootstrap: str, topics: dict[str, str], got: list[Sample]) -> None:
    """Split each latency at the broker timestamps of the record carrying the triggering
    event (the producer's send) and of the alert record (the worker's send)."""
    sessions = {s.session for s in got}

    def trigger_events(key: bytes, value: bytes) -> list[Any]:
        session = key.decode(errors="replace").partition("/")[2]
        if session not in sessions:
            return []
        return [(session, e["ts"]) for e in orjson.loads(value)]

    def alerts(_key: bytes, value: bytes) -> list[Any]:
        a = orjson.loads(value)
        return [a["alert_id"]] if a.get("state") == "firing" else []

    event_at = read_timestamps(bootstrap, topics["events"], trigger_events, len(got))
    alert_at = read_timestamps(bootstrap, topics["alerts"], alerts, len(got))
    produce, detect, deliver = [], [], []
    dump = os.environ.get("BENCH_LATENCY_DUMP")  # JSON lines per alert, for a closer look
    rows = []
    for s in got:
        emitted = datetime.fromisoformat(s.alert_ts).timestamp()
        sent = event_at.get((s.session, s.alert_ts))
        raised = alert_at.get(s.alert_id)
        if sent is None or raised is None:
            continue
        produce.append(sent - emitted)
        detect.append(raised - sent)
        deliver.append(s.latency_s - (raised - emitted))
        rows.append({"at": s.alert_ts, "total_s": s.latency_s, "produce_s": produce[-1],
                     "detect_s": detect[-1], "deliver_s": deliver[-1]})
    if dump:
        Path(dump).write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in sorted(
            rows, key=lambda r: str(r["at"]))))
    if not produce:
        print("alert_latency (kafka): no stage figures (records not found)", file=sys.stderr)
        return
    for label, values in (("emit -> event on Kafka (producer: linger, send)", produce),
                          ("event on Kafka -> alert on Kafka (worker)", detect),
                          ("alert on Kafka -> webhook received (dispatcher)", deliver)):
        print(f"alert_latency (kafka): {label}: {describe(values)}", file=sys.stderr,
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=5000, help="background events/s")
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--loop-every-s", type=float, default=0.25)
    parser.add_argument("--duration-s", type=float, default=30.0)
    parser.add_argument("--warmup-timeout-s", type=float, default=120.0)
    parser.add_argument("--settle-s", type=float, default=10.0,
                        help="seconds of load between the first alert and the measurement")
    parser.add_argument("--mode", choices=("both", "embedded", "kafka"), default="both")
    args = parser.parse_args()
    print(f"alert_latency: {args.rate:,} background events/s, a runaway loop every "
          f"{args.loop_every_s} s, {args.duration_s:.0f} s measured per mode",
          file=sys.stderr, flush=True)
    failed = False
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        for mode, run in (("embedded", run_embedded), ("kafka", run_kafka)):
            if args.mode not in {"both", mode}:
                continue
            work_dir = Path(tmp) / mode
            work_dir.mkdir()
            try:
                p99_s = run(args, work_dir)
            except BenchError as exc:
                print(f"alert_latency_{mode}: FAILED: {exc.reason}\n{exc.detail}", flush=True)
                failed = True
                continue
            summary(f"alert_latency_{mode}", "p99_s", p99_s, PEER_POLL_S,
                    higher_is_better=False)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
