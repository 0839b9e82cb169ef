"""worker: sustained events/s of ONE `agentwatch worker` (default rules) on a real Kafka
broker, against a peer measured in the same run on the same events. Two figures:

``worker_fleet`` -- the fleet workload (``bench/_fleet.py``: 5,000 open sessions over 6 agents
and 2 tenants, Poisson arrivals at 20,000 events/s of event time, a runaway loop every 3,000
events) produced **by the project's producer with its default settings** (linger 50 ms, its
own record form), paced on the wall clock at the events' timestamps (so each record holds
what 50 ms of a real fleet packs), into a 4-partition topic; the events per record of that
topic are printed. Ours: the worker on the whole topic (goal >= 50,000 events/s), until
both its stages are through it: the input committed to its end *and* every message the
session stage forwarded read by the agent/tenant stage (its stats lines say when; the last
``disorder_s`` of event time stays buffered there until the idle marks release it, which
is waiting, not work). Peer:
quixstreams computing a per-session 60 s sliding-window sum (of ``cost_usd``) and count on
the same events (a prefix) one JSON event per record keyed ``<tenant_id>/<session_id>`` --
its best form: a sliding window is per message key, and a partition batch's key names a
partition, not a session, so quixstreams could only window it after a ``group_by`` through
a second topic.

``worker_single`` -- the same events (a prefix, ``--single-events``) one JSON event per
record, written by confluent-kafka with **its default partitioner** (CRC32 of the key: a
third-party client). Ours: the worker on that topic. Peer: a bare faust-streaming agent
that only decodes each record (``orjson.loads``), same consumer settings as the worker
(goal >= 0.8x the peer).

Method: each consumer is its own process with a fresh consumer group, reading its topic from
the start. Its rate is the events committed between the first and the last commit observed
(committed offsets polled every 50 ms, mapped to events through the topic's layout, read
back record by record) over the time between those two observations: start-up and group
join are excluded (and printed apart); the end is late by at most one commit interval
(printed as a bound). The quixstreams peer is measured over the first ``--quix-events``
events: that prefix includes its window's warm-up (the first 60 s of event time, when it
is faster), a bias in its favour.

The worker runs with ``AGENTWATCH_STATS_INTERVAL_S=1`` and ``--loglevel info``: its
``agentwatch worker stats {json}`` lines give checkpoint time, changelog bytes per event,
events per record, open sessions and RSS, printed after each run when present.

The machine's cores are shared by the broker, the worker and the load generator (printed).

``worker_fleet_split`` -- the same fleet topic and measure, the worker run as
``agentwatch worker --stages split`` (its agent/tenant stage in a child process: a second
core for one worker; its CPU per event sums both processes); peer: the default run above
(both stages in one process), so the ratio is what the split buys on this machine (left
out when ``--worker-arg`` is given).

    .venv/bin/python bench/bench_worker.py [--events 600000] [--only fleet|single]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` as a namespace package

from bench._common import Workload, build_workload, completed, summary
from bench._fleet import ProducedLayout, fleet_events, is_loop_session, produce_fleet
from bench._kafka import (
    BenchError,
    GroupWatcher,
    Loaded,
    Throughput,
    create_topics,
    fresh_name,
    kafka_bootstrap,
    log_tail,
    measure_group,
    preload,
    read_values,
    read_worker_stats,
    start_process,
    stop_process,
)
from bench._profile import finish_profile, start_profile

# bench_sink builds its workload from here (the session-packed records of the earlier bench)
__all__ = ["Workload", "build_workload", "main"]

AGENTWATCH = Path(sys.executable).parent / "agentwatch"  # the venv's console script
FLEET_GOAL_EVENTS_PER_S = 50_000
SINGLE_GOAL_RATIO = 0.8
MAX_TAIL_BOUND = 0.1  # above it, say the run was too short for the consumer's commit cadence
WINDOW_MS = 60_000
QUIX_CHILD = "--quix-child"  # argv marker: this file run as the quixstreams consumer
FAUST_CHILD = "--faust-child"  # argv marker: this file run as the bare faust agent
STATS_INTERVAL_S = 0.25  # also the resolution of "both stages through" (worker_fleet)
LOOP_REPEATS = 5  # the default rule `runaway loop: repeat` fires at this many repeats


def cores_note() -> str:
    return (
        f"note: this machine has {os.cpu_count()} cores, shared by the Kafka broker, the "
        f"consumer measured and the load generator; figures are from one run"
    )


def log(message: str) -> None:
    print(f"worker: {message}", file=sys.stderr, flush=True)


# --- peers, run as child processes ------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def _ts_from_value(value: Any, *_meta: Any) -> int:
    """quixstreams' TimestampExtractor: (value, headers, timestamp, timestamp_type)."""
    return (datetime.fromisoformat(value["ts"]) - _EPOCH) // _MS


def quix_child(argv: list[str]) -> None:
    """``QUIX_CHILD <bootstrap> <topic> <group> <state_dir> <commit_s>``: a per-session 60 s
    sliding-window sum of ``cost_usd`` and count, on one JSON event per record."""
    bootstrap, topic_name, group, state_dir, commit_interval_s = argv
    # only the child needs quixstreams (slow to import, warns on import: harmless)
    from quixstreams import Application  # noqa: PLC0415
    from quixstreams.dataframe.windows import Count, Sum  # noqa: PLC0415

    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        commit_interval=float(commit_interval_s),
        state_dir=state_dir,
        loglevel="WARNING",
    )
    topic = app.topic(
        topic_name,
        key_deserializer="str",
        value_deserializer="json",
        timestamp_extractor=_ts_from_value,
    )
    sdf = app.dataframe(topic)
    sdf.sliding_window(duration_ms=WINDOW_MS).agg(
        cost_usd=Sum("cost_usd"), events=Count()
    ).current()
    app.run()


def faust_child(argv: list[str]) -> None:
    """``FAUST_CHILD <bootstrap> <topic> <group> <data_dir> <commit_s> [eager]``: a
    faust-streaming agent that decodes each record with orjson and does nothing else; the
    worker's consumer settings (10,000 records per poll, a 64 Ki stream buffer). ``eager``:
    with the worker's eager delivery of fetched records (``agentwatch.processors.
    worker.eager_delivery``), to show how much of the ratio that alone makes."""
    bootstrap, topic_name, group, data_dir, commit_interval_s = argv[:5]
    import faust  # noqa: PLC0415 -- heavy, and parses sys.argv: only in the child

    if argv[5:] == ["eager"]:
        from agentwatch.processors.worker import eager_delivery  # noqa: PLC0415

        eager_delivery()

    app = faust.App(
        group,
        broker=[f"kafka://{hp.strip()}" for hp in bootstrap.split(",")],
        store="memory://",
        datadir=data_dir,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_max_poll_records=10_000,
        broker_commit_interval=float(commit_interval_s),
        stream_buffer_maxsize=65_536,
    )
    topic = app.topic(topic_name, key_type=bytes, value_type=bytes, value_serializer="raw",
                      key_serializer="raw")
    loads = orjson.loads

    @app.agent(topic)
    async def decode(stream: Any) -> None:
        async for value in stream:
            loads(value)

    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


# --- runs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    label: str
    result: Throughput
    log: Path
    alerts_topic: str = ""  # the worker's
    #: seconds from the first commit observed until both stages had read everything (the
    #: input committed to its end, and every forward read by the agent/tenant stage); None
    #: when not waited for (a peer, or a worker that forwards nothing)
    both_stages_s: float | None = None
    #: the agent/tenant stage's stats line at that moment
    rekeyed_line: dict[str, Any] | None = None

    @property
    def events_per_s(self) -> float:
        """The rate through both stages when that was measured, else the commits' rate."""
        if self.both_stages_s is None:
            return self.result.events_per_s
        return self.result.events / self.both_stages_s


def measure(
    label: str,
    cmd: list[str],
    env: dict[str, str],
    *,
    bootstrap: str,
    group: str,
    loaded: Loaded,
    log_path: Path,
    timeout_s: float,
    until_events: int = 0,
    linger_for_stats: bool = False,
    alerts_topic: str = "",
    py_spy: str = "",
    both_stages: bool = False,
) -> Run:
    log(f"running {label} ...")
    watcher = GroupWatcher(bootstrap, group, loaded)
    proc, launched_at = start_process(cmd, env, log_path)
    profiler = start_profile(py_spy, proc.pid, log_path.parent, timeout_s)
    try:
        result = measure_group(
            watcher,
            loaded,
            proc,
            launched_at=launched_at,
            timeout_s=timeout_s,
            until_events=until_events,
        )
        both: tuple[float, dict[str, Any]] | None = None
        if both_stages:
            both = wait_for_both_stages(log_path, loaded.events, timeout_s=timeout_s)
        if linger_for_stats:  # let the worker log the stats of its last interval
            wait_for_stats(log_path, result.first_commit_events + result.events)
    except BenchError as exc:
        raise BenchError(
            f"{label}: {exc.reason}", f"--- tail of {log_path} ---\n{log_tail(log_path)}"
        ) from None
    finally:
        finish_profile(profiler, log, stop_now=True)
        stop_process(proc)
        watcher.close()
    log(f"{label}: {result.describe()}")
    if result.tail_bound > MAX_TAIL_BOUND:
        log(
            f"{label}: only {result.commits_seen} commits seen, the figure may be low by up "
            f"to {result.tail_bound:.0%}: raise --events"
        )
    if both is None:
        return Run(label, result, log_path, alerts_topic)
    done_s, line = both
    first_commit_s = launched_at + result.startup_s
    both_s = max(result.elapsed_s, done_s - first_commit_s)
    run = Run(label, result, log_path, alerts_topic, both_s, line)
    cpu = cpu_us_per_event(log_path, done_s)
    if cpu is not None:
        log(f"{label}: worker CPU {cpu:.1f} µs per event (every thread of its processes; from "
            f"the first stats "
            f"line with events to the one where both stages were through; the figure to "
            f"compare on a shared machine, where wall-clock rates swing)")
    log(
        f"{label}: both stages through the topic {both_s - result.elapsed_s:.2f} s after the "
        f"input's last commit (the agent/tenant stage had read "
        f"{line.get('rekeyed_forwards_total', 0):,} forward messages and applied "
        f"{line.get('rekeyed_events_total', 0):,} events; the rest, the last disorder_s of "
        f"event time, waits for the idle marks): {run.events_per_s:,.0f} events/s "
        f"(late by at most one stats interval, {STATS_INTERVAL_S} s)"
    )
    return run


def cpu_us_per_event(log_path: Path, done_s: float) -> float | None:
    """The worker's CPU time (``cpu_s`` of its stats lines, every thread, summed over its
    processes: ``--stages split`` runs the agent/tenant stage in a child) per input event,
    each process from its first stats line with events (input events, or forwarded ones
    for the child) to its line at ``done_s`` (monotonic); None when the lines lack it (an
    older worker)."""
    lines = read_worker_stats(log_path)
    by_pid: dict[int, list[dict[str, Any]]] = {}
    for line in lines:
        if "cpu_s" in line and (int(line.get("events_total") or 0) > 0
                                or int(line.get("rekeyed_events_total") or 0) > 0):
            by_pid.setdefault(line["_pid"], []).append(line)
    if not by_pid:
        return None
    cpu_s, events = 0.0, 0
    for mine in by_pid.values():
        first = mine[0]
        last = next((line for line in mine if float(line["monotonic_s"]) >= done_s), mine[-1])
        cpu_s += float(last["cpu_s"]) - float(first["cpu_s"])
        events += int(last.get("events_total") or 0) - int(first.get("events_total") or 0)
    return cpu_s / events * 1e6 if events > 0 else None


def wait_for_both_stages(log_path: Path, events: int, *, timeout_s: float
                         ) -> tuple[float, dict[str, Any]] | None:
    """When (the machine's monotonic clock, from the worker's stats lines) the worker had
    read everything: ``events`` input events, and every message its session stage forwarded
    read by its agent/tenant stage; with that moment's totals. Summed over the processes
    that log stats (``--stages split`` runs the agent/tenant stage in a child). None when
    the worker forwards nothing or its stats lines lack the counters (an older worker)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = read_worker_stats(log_path)
        if lines and "monotonic_s" not in lines[-1]:
            return None
        latest: dict[int, dict[str, Any]] = {}
        for line in sorted(lines, key=lambda one: float(one["monotonic_s"])):
            latest[int(line["_pid"])] = line
            totals = _totals(latest.values())
            forwards = totals["forwards_total"]
            if totals["events_total"] >= events and totals["rekeyed_forwards_total"] >= forwards:
                return None if not forwards else (float(line["monotonic_s"]), totals)
        time.sleep(STATS_INTERVAL_S / 2)
    raise BenchError(f"the agent/tenant stage did not read every forward within "
                     f"{timeout_s:.0f} s of the input's end")


def wait_for_stats(log_path: Path, events: int, *, timeout_s: float = 4 * STATS_INTERVAL_S
                   ) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = read_worker_stats(log_path)
        if max((int(line.get("events_total") or 0) for line in lines), default=0) >= events:
            return
        time.sleep(0.2)


def _totals(lines: Iterable[dict[str, Any]]) -> dict[str, Any]:
    keys = ("events_total", "forwards_total", "rekeyed_forwards_total", "rekeyed_events_total")
    totals = dict.fromkeys(keys, 0)
    for line in lines:
        for key in keys:
            totals[key] += int(line.get(key) or 0)
    return totals


def run_worker(label: str, loaded: Loaded, bootstrap: str, tmp: Path, args: argparse.Namespace,
               *, both_stages: bool = False, extra: tuple[str, ...] = ()) -> Run:
    group = fresh_name("bench-worker")
    data_dir = tmp / group
    data_dir.mkdir()
    alerts_topic = fresh_name("bench-alerts")
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "AGENTWATCH_EVENTS_TOPIC": loaded.topic,
        "AGENTWATCH_ALERTS_TOPIC": alerts_topic,
        "AGENTWATCH_DLQ_TOPIC": fresh_name("bench-dlq"),
        "AGENTWATCH_WORKER_GROUP": group,  # the worker's consumer group id
        "AGENTWATCH_DATA_DIR": str(data_dir),
        "AGENTWATCH_STATS_INTERVAL_S": str(STATS_INTERVAL_S),
    }
    return measure(
        f"agentwatch worker ({label})",
        [str(AGENTWATCH), "worker", "--loglevel", "info", *args.worker_arg, *extra],
        env,
        bootstrap=bootstrap,
        group=group,
        loaded=loaded,
        log_path=tmp / f"{group}.log",
        timeout_s=args.timeout_s,
        linger_for_stats=True,
        alerts_topic=alerts_topic,
        py_spy=args.py_spy,
        both_stages=both_stages,
    )


def run_child(marker: str, label: str, loaded: Loaded, bootstrap: str, tmp: Path,
              args: argparse.Namespace, *, until_events: int = 0,
              extra: tuple[str, ...] = ()) -> Run:
    group = fresh_name(f"bench-{marker.strip('-')}")
    state_dir = tmp / group
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        marker,
        bootstrap,
        loaded.topic,
        group,
        str(state_dir),
        str(args.peer_commit_s),
        *extra,
    ]
    return measure(
        label,
        cmd,
        dict(os.environ),
        bootstrap=bootstrap,
        group=group,
        loaded=loaded,
        log_path=tmp / f"{group}.log",
        timeout_s=args.timeout_s,
        until_events=until_events,
    )


def print_worker_stats(name: str, run: Run) -> None:
    """What the worker said about itself (its stats lines): one line per process that
    logged some (the worker, and the child of ``--stages split``); or that it said nothing."""
    lines = read_worker_stats(run.log)
    if not lines:
        print(f"{name}: worker stats: absent (no `agentwatch worker stats` line in its log: "
              f"a worker without the stats line, or one that logged none in this run)",
              flush=True)
        return
    by_pid: dict[int, list[dict[str, Any]]] = {}
    for line in lines:
        by_pid.setdefault(int(line["_pid"]), []).append(line)
    events_all = max(float(ls[-1].get("events_total") or 0) for ls in by_pid.values())
    changelog_all = sum(float(ls[-1].get("changelog_bytes_total") or 0) for ls in by_pid.values())
    for pid, own in by_pid.items():
        who = f" [pid {pid}]" if len(by_pid) > 1 else ""
        print(f"{name}: worker stats{who} ({len(own)} lines): {_stats_text(own)}", flush=True)
    if len(by_pid) > 1 and events_all:
        print(f"{name}: worker stats, all processes: changelog_bytes_per_event="
              f"{changelog_all / events_all:.1f}", flush=True)


def _stats_text(lines: list[dict[str, Any]]) -> str:
    last = lines[-1]

    def total(key: str) -> float:
        return float(last.get(key) or 0)

    events, records = total("events_total"), total("records_total")
    checkpoints = total("checkpoints_total")
    changelog = total("changelog_bytes_total")
    busy = [float(line["events_per_s"]) for line in lines if line.get("events_per_s")]
    cp_max = max((float(line.get("checkpoint_s_max") or 0) for line in lines), default=0.0)
    rss = max((int(line.get("rss_bytes") or 0) for line in lines), default=0)
    sessions = max((int(line.get("open_sessions") or 0) for line in lines), default=0)
    parts = [
        f"events={events:,.0f} records={records:,.0f}",
        f"events_per_record={events / records:.1f}" if records else "events_per_record=n/a",
        f"peak_events_per_s={max(busy):,.0f}" if busy else "peak_events_per_s=n/a",
        (f"checkpoints={checkpoints:,.0f} checkpoint_s_mean="
         f"{total('checkpoint_s_total') / checkpoints:.4f}") if checkpoints else
        "checkpoints=0",
        f"checkpoint_s_max={cp_max:.4f}",
        f"changelog_bytes_per_event={changelog / events:.1f}" if events else
        "changelog_bytes_per_event=n/a",
        f"changelog_bytes={changelog:,.0f}",
        f"open_sessions_max={sessions:,}",
        f"rss_max_mb={rss / 1e6:.0f}",
        f"lag_at_end={last.get('lag')}",
        f"dead_letters={total('dead_letters_total'):,.0f} alerts={total('alerts_total'):,.0f}",
    ]
    if total("rekeyed_events_total"):
        parts.append(f"rekeyed_events={total('rekeyed_events_total'):,.0f}")
    return " ".join(parts)


# --- workload ---------------------------------------------------------------------------------


class LoopTally:
    """Counts, while events pass, the repeated tool calls of each injected loop session:
    a loop cut short by the end of the workload may not reach the rule's 5."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def count(self, events: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for event in events:
            if event["kind"] == "tool_call" and is_loop_session(event["session_id"]):
                self.calls[event["session_id"]] += 1
            yield event

    def complete(self) -> set[str]:
        """Loop sessions with enough repeats for the default rule (``runaway loop: repeat``,
        >= 5 in 120 s)."""
        return {session for session, calls in self.calls.items() if calls >= LOOP_REPEATS}


def print_loop_alerts(name: str, bootstrap: str, run: Run, loops: set[str]) -> None:
    """Which injected loops the worker alerted on (and any other loop alerts)."""
    rules: Counter[str] = Counter()
    alerted: set[str] = set()
    others = 0
    for value in read_values(bootstrap, run.alerts_topic):
        try:
            alert = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(alert, dict) or alert.get("state") != "firing":
            continue
        rules[str(alert.get("rule"))] += 1
        if alert.get("type") == "runaway_loop":
            session = str(alert.get("session_id"))
            if session in loops:
                alerted.add(session)
            elif not is_loop_session(session):
                others += 1
    by_rule = " ".join(f"{rule}={n}" for rule, n in sorted(rules.items())) or "none"
    print(
        f"{name}: loops alerted={len(alerted)}/{len(loops)} (injected loops with >= "
        f"{LOOP_REPEATS} repeats; runaway-loop alerts on other sessions: {others}); firing "
        f"alerts by rule: {by_rule}",
        flush=True,
    )


def fleet_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"sessions": args.sessions, "rate_per_s": args.rate, "seed": args.seed}


def single_records(args: argparse.Namespace) -> Iterator[tuple[bytes, bytes, int]]:
    """The first ``--single-events`` fleet events, completed as the producer completes them
    (``cost_usd`` from the price table), one JSON object per record keyed
    ``<tenant_id>/<session_id>``."""
    from agentwatch.schemas import default_price_table  # noqa: PLC0415

    prices = default_price_table()
    for raw in fleet_events(args.single_events, **fleet_kwargs(args)):
        event = completed(raw, prices)
        key = f"{event['tenant_id']}/{event['session_id']}".encode()
        yield key, orjson.dumps(event), 1


def produce_fleet_topic(bootstrap: str, args: argparse.Namespace, tally: LoopTally
                       ) -> ProducedLayout:
    topic = fresh_name("bench-fleet")
    create_topics(bootstrap, [topic], args.partitions)
    pace = "at the events' timestamps" if args.pace is None else f"at {args.pace:,.0f}/s"
    log(
        f"producing {args.events:,} fleet events ({args.sessions:,} open sessions, "
        f"{args.rate:,.0f} events/s of event time) through agentwatch.producer (defaults), "
        f"paced {pace} on the wall clock, into {args.partitions} partitions ..."
    )
    layout = produce_fleet(
        bootstrap, topic, tally.count(fleet_events(args.events, **fleet_kwargs(args))),
        pace_per_s=args.pace,
    )
    log(f"fleet topic: {layout.describe()}")
    forms = ", ".join(f"{form}={n}" for form, n in sorted(layout.forms.items()))
    print(
        f"worker_fleet: events_per_record={layout.events_per_record:.1f} ({layout.events:,} "
        f"events in {layout.records:,} records; forms {forms}; producer paced "
        f"{layout.achieved_per_s:,.0f} events/s, {layout.dropped:,} dropped)",
        flush=True,
    )
    if layout.events < args.events:
        log(f"the topic holds {layout.events:,} of {args.events:,} events emitted "
            f"(the rest dropped or failed in the producer)")
    return layout


def preload_single(bootstrap: str, args: argparse.Namespace) -> Loaded:
    topic = fresh_name("bench-single")
    create_topics(bootstrap, [topic], args.partitions)
    single = preload(bootstrap, topic, single_records(args), partitioner="consistent_random")
    log(
        f"single topic: {single.events:,} events one per record, confluent-kafka's default "
        f"partitioner (consistent_random, CRC32 of the key), {args.partitions} partitions"
    )
    return single


# --- main -------------------------------------------------------------------------------------


def worker_available() -> str | None:
    """None when ``agentwatch worker`` exists, else why not."""
    try:
        done = subprocess.run(  # noqa: S603 -- the venv's own console script
            [str(AGENTWATCH), "worker", "--help"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`{AGENTWATCH} worker --help` failed: {exc}"
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return f"`{AGENTWATCH} worker --help` exited with {done.returncode}: " + (
            " ".join(line.strip(" │╭╮╰╯─") for line in lines[-3:]).strip()
        )
    return None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=600_000, help="fleet events produced")
    parser.add_argument("--sessions", type=int, default=5000, help="open sessions")
    parser.add_argument("--rate", type=float, default=20_000, help="events/s of event time")
    parser.add_argument(
        "--pace",
        type=float,
        default=None,
        help="produce at this many events/s of wall clock (default: at the events' "
        "timestamps, i.e. --rate with its Poisson bursts)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--single-events",
        type=int,
        default=200_000,
        help="fleet events (a prefix) preloaded one per record by confluent-kafka",
    )
    parser.add_argument(
        "--quix-events",
        type=int,
        default=100_000,
        help="measure quixstreams over this many events from the start of its topic",
    )
    parser.add_argument("--timeout-s", type=float, default=300.0, help="per consumer run")
    parser.add_argument(
        "--peer-commit-s",
        type=float,
        default=1.0,
        help="the peers' commit interval (the worker commits at its ~1 s checkpoints; "
        "quixstreams' 5 s and faust's 2.8 s defaults would blur the end of a run)",
    )
    parser.add_argument(
        "--worker-arg",
        action="append",
        default=[],
        help="an extra argument of `agentwatch worker` (repeat it), e.g. --worker-arg=--stages "
        "--worker-arg=split",
    )
    parser.add_argument("--only", choices=("fleet", "single"), default=None)
    parser.add_argument(
        "--ours-only", action="store_true", help="run only the worker (no peers, no ratio)"
    )
    parser.add_argument(
        "--py-spy", default="", help="a py-spy executable: profile the worker through its run"
    )
    parser.add_argument(
        "--keep-tmp", action="store_true", help="keep the scratch dir (consumer logs, state dirs)"
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    missing = worker_available()
    if missing is not None:
        log(f"FAILED: {missing}")
        return 1
    print(cores_note(), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="agentwatch-bench-worker-"))
    try:
        with kafka_bootstrap() as bootstrap:
            return run_all(args, bootstrap, tmp)
    except BenchError as exc:
        log(f"FAILED: {exc.reason}")
        if exc.detail:
            print(exc.detail, file=sys.stderr)
        return 1
    finally:
        if args.keep_tmp:
            log(f"logs and state kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def run_all(args: argparse.Namespace, bootstrap: str, tmp: Path) -> int:
    fleet: ProducedLayout | None = None
    tally = LoopTally()
    if args.only != "single":
        fleet = produce_fleet_topic(bootstrap, args, tally)
    single = Loaded("", 0, 0, {})  # the quixstreams peer and worker_single read it
    if args.only != "fleet" or not args.ours_only:
        single = preload_single(bootstrap, args)

    lines: list[str] = []
    if fleet is not None:
        ours = run_worker("fleet, the producer's records", fleet, bootstrap, tmp, args,
                          both_stages=True)
        print_worker_stats("worker_fleet", ours)
        print_loop_alerts("worker_fleet", bootstrap, ours, tally.complete())
        if not args.ours_only:
            peer = run_child(
                QUIX_CHILD,
                "quixstreams (per-session 60 s sliding sum+count, one event per record)",
                single, bootstrap, tmp, args, until_events=args.quix_events,
            )
            lines.append(summary("worker_fleet", "events/s", ours.events_per_s,
                                 peer.result.events_per_s, higher_is_better=True))
        rate = ours.events_per_s
        verdict = "met" if rate >= FLEET_GOAL_EVENTS_PER_S else "MISSED"
        print(f"worker_fleet: goal >= {FLEET_GOAL_EVENTS_PER_S:,} events/s per worker: "
              f"{verdict} ({rate:,.0f}; {os.cpu_count()} cores shared by broker, worker and "
              f"load generator)", flush=True)
        if not args.worker_arg:
            # the same worker command with its agent/tenant stage in a child process
            # (--stages split: a second core for one worker), against the default run
            split = run_worker("fleet, the producer's records, --stages split", fleet,
                               bootstrap, tmp, args, both_stages=True,
                               extra=("--stages", "split"))
            print_worker_stats("worker_fleet_split", split)
            print_loop_alerts("worker_fleet_split", bootstrap, split, tally.complete())
            lines.append(summary("worker_fleet_split", "events/s", split.events_per_s,
                                 ours.events_per_s, higher_is_better=True))
            verdict = "met" if split.events_per_s >= FLEET_GOAL_EVENTS_PER_S else "MISSED"
            print(f"worker_fleet_split: goal >= {FLEET_GOAL_EVENTS_PER_S:,} events/s per "
                  f"worker: {verdict} ({split.events_per_s:,.0f}, one `agentwatch worker "
                  f"--stages split`, two processes; peer = the same worker with both stages "
                  f"in one process, this run; {os.cpu_count()} cores shared by broker, worker "
                  f"and load generator)", flush=True)

    if args.only != "fleet":
        ours = run_worker("one event per record, confluent-kafka", single, bootstrap, tmp,
                          args)
        print_worker_stats("worker_single", ours)
        if not args.ours_only:
            peer = run_child(FAUST_CHILD, "faust-streaming agent that only decodes", single,
                             bootstrap, tmp, args)
            lines.append(summary("worker_single", "events/s", ours.result.events_per_s,
                                 peer.result.events_per_s, higher_is_better=True))
            ratio = ours.result.events_per_s / peer.result.events_per_s
            verdict = "met" if ratio >= SINGLE_GOAL_RATIO else "MISSED"
            print(f"worker_single: goal >= {SINGLE_GOAL_RATIO}x the bare faust agent: "
                  f"{verdict} ({ratio:.2f}x; {os.cpu_count()} cores shared by broker, worker "
                  f"and load generator)", flush=True)
            # the worker delivers fetched records without faust's four tasks per record:
            # the same bare agent with that too, so the ratio's share of it is known
            eager = run_child(FAUST_CHILD, "the same agent with the worker's eager delivery",
                              single, bootstrap, tmp, args, extra=("eager",))
            print(f"worker_single: against the bare agent with the worker's eager delivery "
                  f"of records (_faust_internals.eager_delivery) too: "
                  f"{ours.result.events_per_s / eager.result.events_per_s:.2f}x "
                  f"(ours={ours.result.events_per_s:,.0f} "
                  f"peer={eager.result.events_per_s:,.0f} events/s); the bare agent "
                  f"with it {eager.result.events_per_s / peer.result.events_per_s:.2f}x "
                  f"the one without", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == QUIX_CHILD:
        quix_child(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == FAUST_CHILD:
        faust_child(sys.argv[2:])
    else:
        sys.exit(main())
