"""halt latency: from the ``emit()`` of the call that completes a runaway loop to the
agent's ``AgentHalted``, under the fleet workload produced live.

Workload: the fleet of ``bench/_fleet.py`` emitted in real time at ``--rate`` events/s
(default 5,000; ``--sessions`` open sessions) by ``--generators`` child processes with their
own producers (``bench/_latency.py``), its own loops off. Beside it, in this process, the
measured agent: a producer with ``control=True`` runs ``--trials`` looping sessions one
after the other, each the same tool call with the same arguments every
``--call-interval-ms``. The default rule ``loop_repeat`` (halt by default) fires on the 5th
call; the worker writes the halt to the control topic; the agent's producer follows it.
One latency: from just after the 5th call's ``tool_call()`` block (its event queued by
``emit()``) to the first ``halted()`` lookup that sees the halt (polled every 0.5 ms: the
lookup ``llm_call()``/``tool_call()`` make before raising ``AgentHalted``; the next call
is checked to raise it).

Through Kafka (a real broker: the test fixture's unless ``KAFKA_BOOTSTRAP_SERVERS`` is set),
one ``agentwatch worker`` process. The events, alerts and control topics stamp records with
the broker's append time (``LogAppendTime``), which splits each halt into three legs:
producer -> Kafka (the 5th call's record stored: linger, packing, send), worker -> control
topic (the halt record stored), control topic -> agent (the producer's follower read it).

Baseline, measured in the same run: the alert latency to Kafka, from the same ``emit()`` to
the loop alert stored on the alerts topic (what every notify-only rule achieves). The
ratio says what the extra hop back to the agent costs. Goal (issue 18, not asserted): p99
< 1 s at 5,000 events/s.

``--embedded`` also measures the in-process pipeline of ``agentwatch demo`` (no Kafka; the
load in a thread of this process), against its own alert latency (the pipeline's
``on_alert``).

    .venv/bin/python bench/bench_halt.py [--rate 5000] [--trials 20] [--embedded]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` as a namespace package

from confluent_kafka import Consumer, KafkaException  # type: ignore[import-untyped]
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[import-untyped]

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
from bench._latency import LiveLoad, create_log_append_topics, emit_live, live_fleet

AGENTWATCH = Path(sys.executable).with_name("agentwatch")
TENANT = "bench-halt"
AGENT = "halt-agent"
NO_FLEET_LOOPS = 10**9  # the fleet's own loops off: only the measured agent loops
REPEATS = 5  # loop_repeat's default min_repeats


@dataclass
class Trial:
    session: str
    emit_s: float  # wall clock just after the 5th call's emit()
    halt_s: float | None = None  # first halted() that saw it
    raised: bool = False  # the next tool_call() raised AgentHalted


@dataclass
class Stamps:
    """Broker append times (s) of what the bench's consumer saw, per looping session."""

    event_s: dict[str, float] = field(default_factory=dict)  # its 5th tool call stored
    alert_s: dict[str, float] = field(default_factory=dict)  # loop alert stored
    control_s: dict[str, float] = field(default_factory=dict)  # halt record stored
    calls: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _ms(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (f"p50={_pct(values, 0.5) * 1000:.0f} ms p99={_pct(values, 0.99) * 1000:.0f} ms "
            f"max={max(values) * 1000:.0f} ms (n={len(values)})")


# -- the measured agent ----------------------------------------------------------------------

def run_trials(client: Any, trials: int, interval_s: float, prefix: str,
               timeout_s: float = 60.0) -> list[Trial]:
    """``trials`` looping sessions; each waits for its halt (or ``timeout_s``)."""
    from agentwatch.producer import AgentHalted  # noqa: PLC0415

    done: list[Trial] = []
    for i in range(trials):
        session = f"{prefix}-{i:03d}"
        with client.session(session):
            for _ in range(REPEATS):
                with client.tool_call("reroute_shipment", args={"order": i}):
                    pass
                time.sleep(interval_s)
            trial = Trial(session, time.time())
            # (the sleep after the 5th call is before emit_s: the event left emit() at
            # the end of its block; correct for it)
            trial.emit_s -= interval_s
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if client.halted() is not None:
                    trial.halt_s = time.time()
                    break
                time.sleep(0.0005)
            try:
                with client.tool_call("reroute_shipment", args={"order": i}):
                    pass
            except AgentHalted:
                trial.raised = True
        done.append(trial)
        time.sleep(0.3)
    return done


# -- Kafka -----------------------------------------------------------------------------------

def _create_control_topic(bootstrap: str, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    futures = admin.create_topics([NewTopic(name, num_partitions=1, config={
        "cleanup.policy": "compact", "message.timestamp.type": "LogAppendTime"})],
        operation_timeout=30)
    for topic, future in futures.items():
        try:
            future.result(timeout=60)
        except KafkaException as exc:
            raise BenchError(f"could not create topic {topic}: {exc}") from None


def _watch(bootstrap: str, topics: dict[str, str], prefix: str, stamps: Stamps,
           stop: threading.Event) -> None:
    """Record the broker append times of the looping sessions' records."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": fresh_name("halt-watch"),
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "log_level": 3})
    consumer.subscribe([topics["events"], topics["alerts"], topics["control"]])
    marker = f'"{prefix}-'.encode()
    try:
        while not stop.is_set():
            for msg in consumer.consume(num_messages=1000, timeout=0.1):
                if msg.error() or msg.value() is None or marker not in msg.value():
                    continue
                at_s = msg.timestamp()[1] / 1000
                topic, value = msg.topic(), msg.value()
                with stamps.lock:
                    if topic == topics["control"]:
                        record = orjson.loads(value)
                        if record["action"] == "halt" and record.get("session_id"):
                            stamps.control_s.setdefault(record["session_id"], at_s)
                    elif topic == topics["alerts"]:
                        alert = orjson.loads(value)
                        if alert["state"] == "firing" and alert["rule"] == "loop_repeat":
                            stamps.alert_s.setdefault(alert["session_id"], at_s)
                    else:
                        items = orjson.loads(value)
                        for event in items if isinstance(items, list) else [items]:
                            session = event.get("session_id", "")
                            if session.startswith(prefix) and event["kind"] == "tool_call":
                                n = stamps.calls[session] = stamps.calls.get(session, 0) + 1
                                if n == REPEATS:
                                    stamps.event_s[session] = at_s
    finally:
        consumer.close()


def _wait(seconds: float, alive: Callable[[], str | None]) -> None:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        problem = alive()
        if problem:
            raise BenchError(problem)
        time.sleep(0.1)


def run_kafka(args: argparse.Namespace, tmp: Path, bootstrap: str) -> dict[str, list[float]]:
    prefix = fresh_name("bench-halt")
    topics = {"events": f"{prefix}.events", "alerts": f"{prefix}.alerts",
              "dlq": f"{prefix}.events.dlq", "control": f"{prefix}.control"}
    create_log_append_topics(bootstrap, [topics["events"]], args.partitions)
    create_log_append_topics(bootstrap, [topics["alerts"]], 1)
    create_topics(bootstrap, [topics["dlq"]], 1)
    _create_control_topic(bootstrap, topics["control"])
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()} | {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "AGENTWATCH_EVENTS_TOPIC": topics["events"],
        "AGENTWATCH_ALERTS_TOPIC": topics["alerts"],
        "AGENTWATCH_DLQ_TOPIC": topics["dlq"],
        "AGENTWATCH_CONTROL_TOPIC": topics["control"],
        "AGENTWATCH_WORKER_GROUP": f"{prefix}-worker",
        "AGENTWATCH_DATA_DIR": str(tmp / "worker"),
    }
    from agentwatch.producer import Agentwatch  # noqa: PLC0415

    stamps, stop = Stamps(), threading.Event()
    with ExitStack() as stack:
        worker_log = tmp / "worker.log"
        worker, _ = start_process([str(AGENTWATCH), "worker", "--loglevel", "info"], env,
                                  worker_log)
        stack.callback(stop_process, worker)
        load = LiveLoad(bootstrap, topics["events"], rate=args.rate, sessions=args.sessions,
                        loop_every=NO_FLEET_LOOPS, generators=args.generators,
                        seed=args.seed, log_dir=tmp)
        load.start()
        stack.callback(load.kill)
        watcher = threading.Thread(target=_watch, args=(bootstrap, topics, "halt", stamps,
                                                        stop), daemon=True)
        watcher.start()
        stack.callback(watcher.join, 10)
        stack.callback(stop.set)

        def alive() -> str | None:
            if worker.poll() is not None:
                return f"worker exited ({worker.returncode}):\n{log_tail(worker_log)}"
            return load.problem()

        client = stack.enter_context(Agentwatch(
            bootstrap_servers=bootstrap, topic=topics["events"], tenant_id=TENANT,
            agent_id=AGENT, control=True, control_topic=topics["control"]))
        print(f"kafka: worker starting, load {args.rate:,} events/s over {args.sessions:,} "
              "sessions; warming up until a loop is halted", file=sys.stderr, flush=True)
        warm = run_trials(client, 1, args.call_interval_ms / 1000, "halt-warm", timeout_s=180)
        if warm[0].halt_s is None:
            raise BenchError(f"warm-up loop never halted:\n{log_tail(worker_log)}")
        _wait(args.settle_s, alive)
        trials = run_trials(client, args.trials, args.call_interval_ms / 1000, "halt-run")
        _wait(3.0, alive)  # the watcher catches up
        errors = client.control_errors
    with stamps.lock:
        return _legs(trials, stamps, errors)


def _legs(trials: list[Trial], stamps: Stamps, errors: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in (
        "total", "producer", "worker", "follower", "baseline")}
    missed = 0
    for t in trials:
        if t.halt_s is None or not t.raised:
            missed += 1
            continue
        out["total"].append(t.halt_s - t.emit_s)
        event_s = stamps.event_s.get(t.session)
        control_s = stamps.control_s.get(t.session)
        alert_s = stamps.alert_s.get(t.session)
        if event_s is not None:
            out["producer"].append(event_s - t.emit_s)
        if event_s is not None and control_s is not None:
            out["worker"].append(control_s - event_s)
        if control_s is not None:
            out["follower"].append(t.halt_s - control_s)
        if alert_s is not None:
            out["baseline"].append(alert_s - t.emit_s)
    print(f"kafka: {len(trials) - missed}/{len(trials)} loops halted (AgentHalted raised); "
          f"control errors {errors}", flush=True)
    return out


# -- embedded --------------------------------------------------------------------------------

def run_embedded(args: argparse.Namespace, tmp: Path) -> dict[str, list[float]]:
    from agentwatch.cli.embedded import EmbeddedPipeline  # noqa: PLC0415
    from agentwatch.processors.core import Engine  # noqa: PLC0415
    from agentwatch.producer import Agentwatch, InProcessLog, InProcessTransport  # noqa: PLC0415
    from agentwatch.schemas import Alert, AlertState  # noqa: PLC0415
    from agentwatch.sinks import ChdbBackend, ClickHouseSink, SchemaConfig, migrate  # noqa: PLC0415

    alerted: dict[str, float] = {}

    def on_alert(alert: Alert) -> None:
        if alert.state is AlertState.FIRING and alert.session_id:
            alerted.setdefault(alert.session_id, time.time())

    log = InProcessLog()
    stop = threading.Event()
    with ExitStack() as stack:
        backend = stack.enter_context(ChdbBackend(tmp / "chdb"))
        migrate(backend, SchemaConfig(ttl_days=None))
        pipeline = EmbeddedPipeline(log, Engine(), ClickHouseSink(backend), on_alert=on_alert)
        pipeline.start()
        stack.callback(pipeline.stop)
        load_client = stack.enter_context(Agentwatch(transport=InProcessTransport(log)))
        events = live_fleet(args.rate, args.sessions, NO_FLEET_LOOPS, args.seed)
        load = threading.Thread(target=emit_live, args=(load_client, events, stop,
                                                        lambda *_: None), daemon=True)
        load.start()
        stack.callback(load.join, 10)
        stack.callback(stop.set)
        client = stack.enter_context(Agentwatch(
            transport=InProcessTransport(log), tenant_id=TENANT, agent_id=AGENT, control=True))
        run_trials(client, 1, args.call_interval_ms / 1000, "halt-warm")
        trials = run_trials(client, args.trials, args.call_interval_ms / 1000, "halt-emb")
    out: dict[str, list[float]] = {"total": [], "baseline": []}
    for t in trials:
        if t.halt_s is not None and t.raised:
            out["total"].append(t.halt_s - t.emit_s)
            if t.session in alerted:
                out["baseline"].append(alerted[t.session] - t.emit_s)
    print(f"embedded: {len(out['total'])}/{len(trials)} loops halted", flush=True)
    return out


def _report(name: str, legs: dict[str, list[float]]) -> None:
    print(f"{name}: halt latency (emit -> AgentHalted) {_ms(legs['total'])}", flush=True)
    for leg, label in (("producer", "producer -> Kafka (event stored)"),
                       ("worker", "worker -> control topic (halt stored)"),
                       ("follower", "control topic -> agent (halt seen)")):
        if leg in legs:
            print(f"  {label}: {_ms(legs[leg])}", flush=True)
    print(f"  baseline, alert latency (emit -> loop alert "
          f"{'on the alerts topic' if 'producer' in legs else 'raised'}): "
          f"{_ms(legs['baseline'])}", flush=True)
    if legs["total"] and legs["baseline"]:
        summary(f"halt_latency_{name}", "p99_s", _pct(legs["total"], 0.99),
                _pct(legs["baseline"], 0.99), higher_is_better=False)
        summary(f"halt_latency_{name}", "p50_s", statistics.median(legs["total"]),
                statistics.median(legs["baseline"]), higher_is_better=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=5000, help="background events/s")
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--generators", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--call-interval-ms", type=float, default=20.0)
    parser.add_argument("--settle-s", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--embedded", action="store_true", help="also the in-process pipeline")
    parser.add_argument("--no-kafka", action="store_true", help="only the in-process pipeline")
    args = parser.parse_args()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-halt-") as tmp_dir:
            tmp = Path(tmp_dir)
            if not args.no_kafka:
                with kafka_bootstrap() as bootstrap:
                    _report("kafka", run_kafka(args, tmp, bootstrap))
            if args.embedded or args.no_kafka:
                _report("embedded", run_embedded(args, tmp))
    except BenchError as exc:
        print(f"bench_halt: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
