"""worker memory and checkpoint cost: RSS growth of ONE ``agentwatch worker`` per 100,000
open sessions, and changelog bytes per event on the fleet workload, each against a peer
measured in the same run.

Two scenarios, each its own summary line, each against the peer below:

``worker_memory`` -- the deployment's mix: MB (10^6 bytes) of resident memory per 100,000
open sessions (goal <= 100 MB) of a fleet in its steady state. The fleet of
``bench/_fleet.py`` (6 agents, 2 tenants, llm and tool calls, a runaway loop every 3,000
events) with ``--active-sessions`` (2,000) sessions running at once: each sends
``session_start`` and 10-40 calls (~26 events) over ~1 minute of event time (0.43 events/s;
``--event-rate``, by default 2,000 x 26 / 60 = 867 events/s of event time), then goes
quiet without ``session_end``, so it stays open (the default idle timeout is 30 minutes of
event time) while the sessions that take its place move the watermark on, as in a
deployment, where most open sessions have finished their work. One stream of events: the
first ``--warm-sessions`` x 26 events (~5 minutes of event time by default: the steady
state is reached), then (phase 2) ``--sessions`` (40,000) x 26 more. The running sessions and those
quiet for less than ``pack_idle_sessions_s`` (60 s) are there at both measurements in about
the same numbers (~4,000); the growth is what the sessions opened in between cost, nearly
all quiet for more than 60 s by the second measurement (the exact mix at both measurements
is printed: ``quiet`` = no event for more than 60 s of event time before the newest event).

``worker_memory_active`` -- the same measure, every session active: ``--warm-sessions``
sessions, then ``--sessions`` more, with ``--events-per-session`` events each on average
(all inside the rules' windows, none finished: sessions of ``bench/_fleet.py`` cut short).

How either is measured: the worker starts on an empty 4-partition topic; phase 1's events
arrive through ``agentwatch.producer`` (default settings) while it runs (the warm-up:
imports, buffers, caches; ``before`` is read once it has committed them all); then phase
2's events arrive the same way; ``after`` is read once those are committed too. (A worker
that read phase 1 preloaded, as fast as it could, left memory free after that burst which
then took phase 2's sessions: the deployment's growth read -3 to 19 MB per 100,000 on main
and on the compact packing alike.) Events go
out at ``--pace`` events/s of wall clock (default 20,000, the fleet's rate; in the active
scenario event time runs at the same pace), so each checkpoint writes what one second of
such a fleet touches, as in a deployment; the emit loop also waits while the client's queue
is over half full, so none is dropped. No ``session_end`` is sent (each session stays open).
RSS: ``VmRSS`` of ``/proc/<pid>/status`` (the worker and its child
processes, if any); open sessions: the worker's own gauge (``open_sessions`` of its
``agentwatch worker stats`` line). Growth = (RSS after - RSS before) / (open sessions
after - before) x 100,000. For where it goes, the same is printed for the worker's session
stage alone on the same events (decode, detection core, checkpoints; no faust or Kafka).

Peer: a plain Python process that holds, for the same sessions and events (the same
generator, seeds and filter), the least an in-memory per-session detector of the default
rules needs: a dict of session -> a window object (``__slots__``) with a deque of the
session's events inside the window (ts in us, kind, cost, tool + arguments key), the
repeat count per tool + arguments, the running cost and step count, and the set of event ids
seen (deduplication), measured the same way (VmRSS before/after). Why not quixstreams'
state: it keeps window state in RocksDB, whose memory is its memtables and block cache
(sized by configuration, not by the number of keys), so its RSS says little per session;
the dict is the floor any Python detector holding the same windows pays.

``worker_changelog`` -- changelog bytes written per event (key + value of every changelog
record; goal <= 100 B) on the fleet workload (5,000 open sessions, 20,000 events/s of event
time, ``--fleet-events`` events) produced live at the events' own pace by the project's
producer (defaults) while a fresh worker consumes it (the steady state of a deployment:
each checkpoint writes the sessions touched in the last second). As the broker stores
them (the changelog topics' ``.log`` segment files, compressed as the worker's producer
sent them: like the peer); when the broker's files are not on this machine, from the
worker's counters (``changelog_bytes_total`` / ``events_total``, uncompressed, also printed
in every run) or the changelog topics read back.
Peer: the bytes the input events themselves take on the
events topic as the broker stores them (its ``.log`` segment files, compressed as the
producer sent them; when the broker's files are not on this machine, the records' key +
value bytes as read, uncompressed, said so), per event.

The machine's cores are shared by the broker, the worker and the load generator (printed).

    .venv/bin/python bench/bench_worker_memory.py [--sessions N] [--only memory|changelog]
        [--scenario deployment|active|both]
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` as a namespace package

from confluent_kafka import Consumer, TopicPartition  # type: ignore[import-untyped]

from bench._common import completed, summary
from bench._fleet import DEFAULT_START, fleet_events, produce_fleet, read_layout
from bench._kafka import (
    BenchError,
    GroupWatcher,
    Loaded,
    create_topics,
    fresh_name,
    kafka_bootstrap,
    log_tail,
    read_worker_stats,
    start_process,
    stop_process,
)
from bench._latency import listening_pid

AGENTWATCH = Path(sys.executable).parent / "agentwatch"  # the venv's console script
BASELINE_CHILD = "--baseline-child"  # argv marker: this file run as the dict peer
CORE_CHILD = "--core-child"  # argv marker: this file run as the session stage alone
MEMORY_GOAL_MB = 100.0
CHANGELOG_GOAL_B = 100.0
STATS_INTERVAL_S = 1.0
PER = 100_000  # sessions
DEPLOYMENT, ACTIVE = "deployment", "active"
#: calls of a session of the deployment scenario, then the events it sends on average
#: (session_start and its calls)
DEPLOY_CALLS = (10, 40)
DEPLOY_EVENTS_PER_SESSION = 26
DEPLOY_SESSION_S = 60.0  # how long a session of the deployment scenario runs, about
PACK_IDLE_S = 60.0  # the default pack_idle_sessions_s: sessions quiet for longer are packed


def log(message: str) -> None:
    print(f"worker_memory: {message}", file=sys.stderr, flush=True)


def cores_note() -> str:
    return (f"{os.cpu_count()} cores shared by the Kafka broker, the worker and the load "
            f"generator")


# --- the workload -----------------------------------------------------------------------------


def open_sessions_events(sessions: int, events_per_session: int, seed: int,
                         start: datetime, rate_per_s: float) -> Iterator[dict[str, Any]]:
    """Fleet events of ``sessions`` open sessions, ``events_per_session`` each on average,
    without ``session_end`` (the fleet replaces a session that would end: a few more
    sessions open than asked)."""
    for event in fleet_events(sessions * events_per_session, sessions=sessions, seed=seed,
                              rate_per_s=rate_per_s, start=start):
        if event["kind"] != "session_end":
            yield event


def phase_start(args: argparse.Namespace, phase: int) -> datetime:
    """Phase 2's events follow phase 1's in event time."""
    if phase == 1:
        return DEFAULT_START
    return DEFAULT_START + timedelta(
        seconds=args.warm_sessions * args.events_per_session / args.pace + 1)


def deploy_event_rate(args: argparse.Namespace) -> float:
    """Events/s of event time of the deployment scenario: its sessions last ~1 minute."""
    return float(args.event_rate or
                 args.active_sessions * DEPLOY_EVENTS_PER_SESSION / DEPLOY_SESSION_S)


def deployment_events(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    """The deployment scenario's one stream (both phases): the fleet of ``bench/_fleet.py``
    with ``--active-sessions`` sessions running at once, ``--event-rate`` events/s of event
    time (by default what makes a session last ~1 minute), each session ``session_start``
    then 10-40 calls (~26 events) spread over ~1 minute of event time, then quiet: its
    ``session_end`` is left out, so it stays open (the default idle timeout is 30 minutes)
    while the sessions that take its place move the watermark on."""
    for event in fleet_events((args.warm_sessions + args.sessions) * DEPLOY_EVENTS_PER_SESSION,
                              sessions=args.active_sessions, seed=args.seed,
                              rate_per_s=deploy_event_rate(args),
                              calls_per_session=DEPLOY_CALLS):
        if event["kind"] != "session_end":
            yield event


def phase_events(args: argparse.Namespace, phase: int) -> Iterator[dict[str, Any]]:
    if args.scenario == DEPLOYMENT:
        split = args.warm_sessions * DEPLOY_EVENTS_PER_SESSION
        stream = deployment_events(args)
        return islice(stream, split) if phase == 1 else islice(stream, split, None)
    sessions = args.warm_sessions if phase == 1 else args.sessions
    return open_sessions_events(sessions, args.events_per_session, args.seed + phase,
                                phase_start(args, phase), args.pace)


def produce_paced(bootstrap: str, topic: str, events: Iterator[dict[str, Any]],
                  pace_per_s: float) -> int:
    """Through ``agentwatch.producer`` (defaults) at ``pace_per_s`` events/s of wall clock,
    none dropped: the emit loop also waits while the client's queue is over half full (it
    then runs late). Returns the events sent."""
    from agentwatch.producer import Agentwatch  # noqa: PLC0415

    client = Agentwatch(bootstrap_servers=bootstrap, topic=topic)
    half = client.settings.queue_size // 2
    n = 0
    t0 = time.perf_counter()
    try:
        for event in events:
            if not n & 255:
                while client.stats.queue_depth > half:
                    time.sleep(0.002)
                ahead = t0 + n / pace_per_s - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
            client.emit(event)
            n += 1
        if not client.flush(timeout_s=300):
            raise BenchError(f"producing to {topic}: flush timed out ({client.stats})")
    finally:
        client.close()
    stats = client.stats
    if stats.sent != n:
        raise BenchError(f"producing to {topic}: {n:,} emitted, {stats}")
    took = time.perf_counter() - t0
    log(f"produced {n:,} events in {took:.1f} s ({n / took:,.0f}/s)")
    return n


# --- the worker -------------------------------------------------------------------------------


@dataclass
class Worker:
    proc: Any
    log: Path
    group: str


def start_worker(bootstrap: str, topic: str, tmp: Path, args: argparse.Namespace) -> Worker:
    group = fresh_name("bench-memory")
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "AGENTWATCH_EVENTS_TOPIC": topic,
        "AGENTWATCH_ALERTS_TOPIC": fresh_name("bench-alerts"),
        "AGENTWATCH_DLQ_TOPIC": fresh_name("bench-dlq"),
        "AGENTWATCH_WORKER_GROUP": group,
        "AGENTWATCH_DATA_DIR": str(tmp / group),
        "AGENTWATCH_STATS_INTERVAL_S": str(STATS_INTERVAL_S),
    }
    path = tmp / f"{group}.log"
    proc, _ = start_process([str(AGENTWATCH), "worker", "--loglevel", "info", *args.worker_arg],
                            env, path)
    return Worker(proc, path, group)


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its live descendants."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(text[text.rindex(")") + 2:].split()[1])
    out = [pid]
    for p in parents:
        q = p
        while q > 1 and q != pid:
            q = parents.get(q, 0)
        if q == pid and p != pid:
            out.append(p)
    return out


def status_kb(pid: int, field: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``); 0 when gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_bytes(pid: int) -> int:
    return sum(status_kb(p, "VmRSS") for p in tree_pids(pid)) * 1024


def wait_committed(worker: Worker, bootstrap: str, loaded: Loaded, timeout_s: float,
                   stall_s: float) -> float:
    """Until the worker's group has committed the end of every partition of ``loaded``, or
    neither its committed offsets nor its ``events_total`` moved for ``stall_s`` (then it
    says so: the figures are taken on what it read); returns the seconds waited."""
    watcher = GroupWatcher(bootstrap, worker.group, loaded)
    ends = loaded.end_offsets()
    t0 = moved_at = time.monotonic()
    seen: tuple[Any, ...] = ()
    try:
        while True:
            committed = watcher.committed()
            now = time.monotonic()
            if all(committed.get(p, 0) >= end for p, end in ends.items()):
                return now - t0
            if worker.proc.poll() is not None:
                raise BenchError(f"the worker exited ({worker.proc.returncode})",
                                 log_tail(worker.log))
            stats = latest_stats(worker, 0, timeout_s=0) or {}
            state = (tuple(sorted(committed.items())), stats.get("events_total"))
            if state != seen:
                seen, moved_at = state, now
            elif now - moved_at > stall_s:
                left = {p: end - committed.get(p, 0) for p, end in ends.items()}
                log(f"WARNING: the worker STALLED: nothing committed nor read for "
                    f"{stall_s:.0f} s with records left per partition {left} (its lag gauge: "
                    f"{stats.get('lag')}); figures below are taken on what it read "
                    f"({stats.get('events_total', 0):,.0f} of {loaded.events:,} events)")
                return now - t0
            if now - t0 > timeout_s:
                done = loaded.events_below(committed)
                raise BenchError(f"the worker committed {done:,} of {loaded.events:,} events "
                                 f"in {timeout_s:.0f} s", log_tail(worker.log))
            time.sleep(0.5)
    finally:
        watcher.close()


def latest_stats(worker: Worker, after_events: int, timeout_s: float = 10.0
                 ) -> dict[str, float] | None:
    """The worker's latest counters once a stats line counts ``after_events`` events (the
    processes' lines summed: ``--stages split`` logs one per process); None without any."""
    deadline = time.monotonic() + timeout_s
    while True:
        lines = read_worker_stats(worker.log)
        by_pid: dict[int, dict[str, Any]] = {}
        for line in lines:
            by_pid[int(line["_pid"])] = line
        total: dict[str, float] = {}
        for line in by_pid.values():
            for key in ("events_total", "changelog_bytes_total", "open_sessions",
                        "changelog_writes_total", "records_total", "lag"):
                total[key] = total.get(key, 0.0) + float(line.get(key) or 0)
        if total.get("events_total", 0) >= after_events or time.monotonic() > deadline:
            return total if lines else None
        time.sleep(0.25)


# --- memory -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Growth:
    rss_before: int
    rss_after: int
    sessions_before: int
    sessions_after: int

    @property
    def mb_per_100k(self) -> float:
        return (self.rss_after - self.rss_before) / 1e6 / max(
            1, self.sessions_after - self.sessions_before) * PER

    def describe(self) -> str:
        per_session = (self.rss_after - self.rss_before) / max(
            1, self.sessions_after - self.sessions_before)
        return (f"RSS {self.rss_before / 1e6:,.0f} MB with {self.sessions_before:,} open "
                f"sessions -> {self.rss_after / 1e6:,.0f} MB with {self.sessions_after:,}: "
                f"{self.mb_per_100k:,.1f} MB per 100,000 sessions ({per_session:,.0f} B per "
                f"session)")


def describe_phase(args: argparse.Namespace, phase: int) -> str:
    if args.scenario == DEPLOYMENT:
        sessions = args.warm_sessions if phase == 1 else args.sessions
        return (f"~{sessions:,} {'' if phase == 1 else 'more '}sessions of a fleet with "
                f"{args.active_sessions:,} running at once at "
                f"{deploy_event_rate(args):,.0f} events/s of event time, "
                f"~{DEPLOY_EVENTS_PER_SESSION} events each, then quiet")
    if phase == 1:
        return f"{args.warm_sessions:,} sessions x ~{args.events_per_session} events"
    return f"{args.sessions:,} more sessions x ~{args.events_per_session} events, all active"


def measure_worker_memory(bootstrap: str, tmp: Path, args: argparse.Namespace) -> Growth:
    topic = fresh_name("bench-memory")
    create_topics(bootstrap, [topic], args.partitions)
    worker = start_worker(bootstrap, topic, tmp, args)
    try:
        time.sleep(args.join_wait_s)  # the worker joins its group before the load starts
        log(f"{args.scenario}: phase 1: {describe_phase(args, 1)} through agentwatch.producer, "
            f"while the worker runs ...")
        sent1 = produce_paced(bootstrap, topic, phase_events(args, 1), args.pace)
        loaded = read_layout(bootstrap, topic)
        took = wait_committed(worker, bootstrap, loaded, args.timeout_s, args.stall_s)
        stats = latest_stats(worker, sent1)
        time.sleep(2)  # a quiet moment: the last checkpoint written, buffers released
        before = rss_bytes(worker.proc.pid)
        stats = latest_stats(worker, sent1)
        if stats is None:
            raise BenchError("the worker logs no `agentwatch worker stats` line: no open "
                             "sessions count", log_tail(worker.log))
        sessions_before = int(stats["open_sessions"])
        log(f"{args.scenario}: phase 1 read in {took:.0f} s: {sent1:,} events, "
            f"{sessions_before:,} open sessions, worker RSS {before / 1e6:,.0f} MB")
        log(f"{args.scenario}: phase 2: {describe_phase(args, 2)}, while the worker runs ...")
        sent2 = produce_paced(bootstrap, topic, phase_events(args, 2), args.pace)
        loaded = read_layout(bootstrap, topic)
        took = wait_committed(worker, bootstrap, loaded, args.timeout_s, args.stall_s)
        latest_stats(worker, sent1 + sent2)
        time.sleep(2)
        after = rss_bytes(worker.proc.pid)
        stats = latest_stats(worker, sent1 + sent2) or {}
        peak = sum(status_kb(p, "VmHWM") for p in tree_pids(worker.proc.pid)) * 1024
        growth = Growth(before, after, sessions_before, int(stats.get("open_sessions", 0)))
        read = int(stats.get("events_total", 0))
        per_record = loaded.events / max(1, loaded.records)
        log(f"{args.scenario}: phase 2: {sent2:,} events produced ({per_record:.1f} "
            f"per record on the topic), {took:.0f} s later the worker had read {read:,} of the "
            f"{sent1 + sent2:,} on the topic"
            + ("" if read >= sent1 + sent2 else " (the dict peer holds them all: its figure "
               "covers more events per session than ours)")
            + f"; worker {growth.describe()}; peak RSS {peak / 1e6:,.0f} MB")
    finally:
        stop_process(worker.proc)
    return growth


class SessionWindow:
    """What a minimal in-memory detector of the default session rules keeps per session."""

    __slots__ = ("calls", "cost", "events", "ids", "repeats")

    def __init__(self) -> None:
        self.events: deque[tuple[int, str, float, str | None]] = deque()
        self.repeats: dict[str, int] = {}
        self.cost = 0.0
        self.calls = 0
        self.ids: set[str] = set()

    def add(self, ts_us: int, kind: str, cost: float, key: str | None, event_id: str) -> None:
        self.events.append((ts_us, kind, cost, key))
        if key is not None:
            self.repeats[key] = self.repeats.get(key, 0) + 1
        self.cost += cost
        self.calls += kind in {"llm_call", "tool_call"}
        self.ids.add(event_id)


def child_args(argv: list[str]) -> argparse.Namespace:
    """A child's arguments: the parent's, as :func:`run_child` passes them (JSON)."""
    return argparse.Namespace(**orjson.loads(argv[0]))


def baseline_child(argv: list[str]) -> None:
    """``BASELINE_CHILD <args as JSON>``: the dict peer; prints ``{"rss_1":..., "rss_2":...,
    "sessions_1":..., "sessions_2":..., "quiet_1":..., "quiet_2":...}`` (``quiet_*``: the
    open sessions whose last event is more than ``pack_idle_sessions_s`` older than the
    newest event then: the mix the worker holds)."""
    from agentwatch.schemas import default_price_table  # noqa: PLC0415

    args = child_args(argv)
    prices = default_price_table()
    windows: dict[str, SessionWindow] = {}
    epoch = datetime(1970, 1, 1, tzinfo=DEFAULT_START.tzinfo)
    one_us = timedelta(microseconds=1)
    out: dict[str, int] = {}
    newest_us = 0
    for phase in (1, 2):
        for raw in phase_events(args, phase):
            event = completed(raw, prices)
            session = f"{event['tenant_id']}/{event['session_id']}"
            window = windows.get(session)
            if window is None:
                window = windows[session] = SessionWindow()
            name, args_hash = event.get("name"), event.get("tool_args_hash")
            ts_us = (datetime.fromisoformat(event["ts"]) - epoch) // one_us
            newest_us = max(newest_us, ts_us)
            window.add(ts_us, event["kind"],
                       float(event.get("cost_usd") or 0.0),
                       f"{name}\x00{args_hash}" if args_hash is not None else None,
                       event["event_id"])
        gc.collect()
        out[f"rss_{phase}"] = status_kb(os.getpid(), "VmRSS") * 1024
        out[f"sessions_{phase}"] = len(windows)
        quiet_before_us = newest_us - int(PACK_IDLE_S * 1_000_000)
        out[f"quiet_{phase}"] = sum(1 for w in windows.values()
                                    if w.events[-1][0] < quiet_before_us)
    print(orjson.dumps(out).decode(), flush=True)


def core_child(argv: list[str]) -> None:
    """``CORE_CHILD <args as JSON>``: the
    same events through the worker's session stage alone (``SessionStage``: decode, the
    detection core, a checkpoint every ``pace`` events, i.e. every second of the workload;
    no faust, no Kafka, no agent/tenant stage), one event per record; prints the
    same figures as the dict peer, ``rss_*`` being the bytes of the Python objects it holds
    (``tracemalloc``: what the state retains, without the allocator's high-water)."""
    import tracemalloc  # noqa: PLC0415

    from agentwatch.processors.core import RulesConfig  # noqa: PLC0415
    from agentwatch.processors.worker import (  # noqa: PLC0415
        SessionStage,
        StageOutput,
    )
    from agentwatch.schemas import default_price_table  # noqa: PLC0415

    args = child_args(argv)
    prices = default_price_table()
    stage = SessionStage(RulesConfig.default(), "bench", 1)  # the worker's default rules
    tracemalloc.start(1)
    stage.restore(0, [])
    checkpoint_every = int(args.pace)  # events per second of the workload: 1 s checkpoints
    out: dict[str, int] = {}
    offset = 0
    records: list[tuple[int, bytes | None, bytes | None]] = []
    for phase in (1, 2):
        for raw in phase_events(args, phase):
            event = completed(raw, prices)
            records.append((offset, f"{event['tenant_id']}/{event['session_id']}".encode(),
                            orjson.dumps(event)))
            offset += 1
            if len(records) == 5000:
                stage.process(0, records, StageOutput())
                records = []
            if offset % checkpoint_every == 0:
                stage.checkpoint(0, offset)
        stage.process(0, records, StageOutput())
        records = []
        stage.checkpoint(0, offset)
        gc.collect()
        out[f"rss_{phase}"] = tracemalloc.get_traced_memory()[0]
        out[f"sessions_{phase}"] = stage.partitions[0].engine.stats.active_sessions
    print(orjson.dumps(out).decode(), flush=True)


@dataclass(frozen=True)
class Mix:
    """Open sessions, and of those the quiet ones (no event for ``pack_idle_sessions_s``
    of event time: the worker keeps them packed), at the two measurements."""

    sessions_1: int
    quiet_1: int
    sessions_2: int
    quiet_2: int

    def describe(self) -> str:
        return (f"{self.quiet_1:,} of {self.sessions_1:,} open sessions quiet for over "
                f"{PACK_IDLE_S:g} s of event time before, {self.quiet_2:,} of "
                f"{self.sessions_2:,} after ({self.quiet_2 - self.quiet_1:,} of the "
                f"{self.sessions_2 - self.sessions_1:,} more)")


CHILD_ARGS = ("scenario", "warm_sessions", "sessions", "events_per_session", "seed", "pace",
              "active_sessions", "event_rate")


def run_child_raw(marker: str, args: argparse.Namespace, timeout_s: float = 1800
                  ) -> dict[str, int]:
    """This file run as ``marker`` on the benchmark's sessions; its figures."""
    import subprocess  # noqa: PLC0415

    try:
        done = subprocess.run(  # noqa: S603 -- this file, argv built here
            [sys.executable, str(Path(__file__).resolve()), marker,
             orjson.dumps({k: getattr(args, k) for k in CHILD_ARGS}).decode()],
            capture_output=True, text=True,
            timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{marker} did not finish in {timeout_s:.0f} s") from None
    if done.returncode != 0:
        raise BenchError(f"{marker} exited with {done.returncode}", done.stderr[-3000:])
    out: dict[str, int] = orjson.loads(done.stdout.strip().splitlines()[-1])
    return out


def run_child(marker: str, args: argparse.Namespace, timeout_s: float = 1800) -> Growth:
    out = run_child_raw(marker, args, timeout_s)
    return Growth(out["rss_1"], out["rss_2"], out["sessions_1"], out["sessions_2"])


def measure_baseline(args: argparse.Namespace) -> tuple[Growth, Mix]:
    out = run_child_raw(BASELINE_CHILD, args)
    growth = Growth(out["rss_1"], out["rss_2"], out["sessions_1"], out["sessions_2"])
    mix = Mix(out["sessions_1"], out["quiet_1"], out["sessions_2"], out["quiet_2"])
    log(f"{args.scenario}: peer (a dict of per-session window objects, plain Python): "
        f"{growth.describe()}")
    log(f"{args.scenario}: the sessions' mix: {mix.describe()}")
    return growth, mix


def measure_core(args: argparse.Namespace) -> None:
    """Where the worker's memory goes: its session stage alone, same events."""
    try:
        growth = run_child(CORE_CHILD, args, args.core_timeout_s)
    except BenchError as exc:
        log(f"the session stage alone: not measured ({exc.reason})")
        return
    log(f"{args.scenario}: where it goes: Python objects held by the worker's session stage "
        f"alone on the same events (decode, detection core, checkpoints; no faust, Kafka or "
        f"agent/tenant stage; tracemalloc, not RSS): {growth.describe().replace('RSS ', '', 1)}")


# --- changelog --------------------------------------------------------------------------------


def broker_log_dirs(bootstrap: str) -> list[Path]:
    """The broker's ``log.dirs`` when it runs on this machine (from its command line's
    properties file), else empty."""
    if "," in bootstrap:
        return []
    pid = listening_pid(int(bootstrap.rsplit(":", 1)[1]))
    if pid is None:
        return []
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []
    for arg in argv:
        if arg.endswith(b".properties") and b"log4j" not in arg:
            try:
                text = Path(arg.decode()).read_text()
            except OSError:
                continue
            for line in text.splitlines():
                key, _, value = line.partition("=")
                if key.strip() in {"log.dirs", "log.dir"}:
                    return [Path(v.strip()) for v in value.split(",") if v.strip()]
    return []


def stored_bytes(log_dirs: list[Path], topic: str) -> int | None:
    """Bytes of ``topic``'s ``.log`` segments on the broker's disk (None: not found)."""
    total, found = 0, False
    for base in log_dirs:
        for part in base.glob(f"{topic}-*"):
            if part.name.rsplit("-", 1)[0] != topic:
                continue
            found = True
            total += sum(f.stat().st_size for f in part.glob("*.log"))
    return total if found else None


def read_sizes(bootstrap: str, topic: str, timeout_s: float = 120.0) -> tuple[int, int]:
    """(records, key + value bytes) of ``topic`` from its start to its end as of now."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": fresh_name("bench-size"),
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "log_level": 3})
    records = size = 0
    try:
        meta = consumer.list_topics(topic, timeout=30).topics.get(topic)
        if meta is None or meta.error is not None:
            return 0, 0
        ends = {}
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        deadline = time.monotonic() + timeout_s
        while ends and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, timeout=0.5):
                if msg.error() is not None:
                    continue
                records += 1
                size += len(msg.key() or b"") + len(msg.value() or b"")
                if msg.offset() + 1 >= ends.get(msg.partition(), 0):
                    ends.pop(msg.partition(), None)
    finally:
        consumer.close()
    return records, size


@dataclass(frozen=True)
class Changelog:
    ours: float
    peer: float


def measure_changelog(bootstrap: str, tmp: Path, args: argparse.Namespace) -> Changelog:
    topic = fresh_name("bench-fleet-live")
    create_topics(bootstrap, [topic], args.partitions)
    worker = start_worker(bootstrap, topic, tmp, args)
    try:
        time.sleep(args.join_wait_s)  # the worker joins its group before the load starts
        log(f"changelog: producing {args.fleet_events:,} fleet events live (5,000 open "
            f"sessions, paced at the events' 20,000/s) while the worker consumes ...")
        layout = produce_fleet(bootstrap, topic, fleet_events(args.fleet_events,
                                                              seed=args.seed))
        log(f"changelog: fleet topic: {layout.describe()}")
        took = wait_committed(worker, bootstrap, layout, args.timeout_s, args.stall_s)
        stats = latest_stats(worker, layout.events)
        lines = read_worker_stats(worker.log)
    finally:
        stop_process(worker.proc)
    busy = [float(line["events_per_s"]) for line in lines if line.get("events_per_s")]
    log(f"changelog: the worker committed the end {took:.1f} s after the producer's last "
        f"flush (peak {max(busy, default=0):,.0f} events/s; it kept up when this is ~1 s)")
    if took > 3 * STATS_INTERVAL_S:
        log("changelog: the worker fell behind the live pace, so each checkpoint covered more "
            "events per session than in a worker that keeps up: the bytes per event below are "
            "LOWER than such a worker would write")
    if stats and stats.get("events_total"):
        events = stats["events_total"]
        ours_bytes = stats["changelog_bytes_total"]
        source = (f"the worker's counters: {ours_bytes:,.0f} bytes in "
                  f"{stats.get('changelog_writes_total', 0):,.0f} writes for {events:,.0f} "
                  f"events")
    else:
        events = float(layout.events)
        ours_bytes = 0.0
        writes = 0
        for table in ("session-state", "rekeyed-state"):
            n, size = read_sizes(bootstrap, f"{worker.group}-{table}-changelog")
            writes += n
            ours_bytes += size
        source = (f"the changelog topics read back (no worker stats): {ours_bytes:,.0f} bytes "
                  f"in {writes:,} records for {events:,.0f} events")
    dirs = broker_log_dirs(bootstrap)
    on_disk = stored_bytes(dirs, topic)
    if on_disk is not None:
        peer = on_disk / layout.events
        peer_source = (f"the events topic's segment files: {on_disk:,} bytes for "
                       f"{layout.events:,} events (as the broker stores them, compressed)")
        stored = []
        for table in ("session-state", "rekeyed-state"):
            changelog_disk = stored_bytes(dirs, f"{worker.group}-{table}-changelog")
            if changelog_disk is not None:
                stored.append(changelog_disk)
                log(f"changelog: {table} changelog on the broker's disk: {changelog_disk:,} "
                    f"bytes ({changelog_disk / events:.1f} per event)")
        if len(stored) == 2:  # like the peer: as the broker stores them (compressed)
            log(f"changelog: ours as written, before the producer's compression: "
                f"{ours_bytes / events:.1f} B per event ({source})")
            ours_bytes = float(sum(stored))
            source = (f"the changelog topics' segment files: {ours_bytes:,.0f} bytes for "
                      f"{events:,.0f} events (as the broker stores them, compressed)")
    else:
        _records, size = read_sizes(bootstrap, topic)
        peer = size / layout.events
        peer_source = (f"the events topic's key + value bytes as read (uncompressed: the "
                       f"broker's files are not on this machine): {size:,} for "
                       f"{layout.events:,} events")
    log(f"changelog: ours from {source}")
    log(f"changelog: peer from {peer_source}; uncompressed values "
        f"{layout.value_bytes / layout.events:.0f} B per event")
    return Changelog(ours_bytes / events, peer)


# --- main -------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=None,
                        help="sessions opened after the warm-up (the growth is over them; "
                             "default: 40,000 in the deployment scenario, whose sessions "
                             "then all stay inside the 30-minute idle timeout, 100,000 "
                             "all active)")
    parser.add_argument("--warm-sessions", type=int, default=10_000)
    parser.add_argument("--events-per-session", type=int, default=10)
    parser.add_argument("--pace", type=float, default=20_000,
                        help="events/s (wall clock and event time) of the sessions' events")
    parser.add_argument("--fleet-events", type=int, default=400_000,
                        help="fleet events produced live for the changelog figure")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-s", type=float, default=900.0,
                        help="for the worker to read a phase")
    parser.add_argument("--join-wait-s", type=float, default=8.0)
    parser.add_argument("--stall-s", type=float, default=60.0,
                        help="a worker that reads and commits nothing for this long stalled")
    parser.add_argument("--worker-arg", action="append", default=[],
                        help="an extra argument of `agentwatch worker` (repeat it)")
    parser.add_argument("--core-timeout-s", type=float, default=1800.0,
                        help="for the session-stage-alone breakdown (tracemalloc is slow)")
    parser.add_argument("--only", choices=("memory", "changelog"), default=None)
    parser.add_argument("--no-core", action="store_true",
                        help="skip the session-stage-alone breakdown (tracemalloc: slow)")
    parser.add_argument("--scenario", choices=tuple(SCENARIOS), default="both",
                        help="memory: the deployment's mix (worker_memory), all sessions "
                             "active (worker_memory_active), or both")
    parser.add_argument("--active-sessions", type=int, default=2_000,
                        help="deployment: sessions running at once")
    parser.add_argument("--event-rate", type=float, default=0.0,
                        help="deployment: events/s of event time (default: what makes a "
                             "session last ~1 minute)")
    parser.add_argument("--keep-tmp", action="store_true")
    return parser.parse_args()


SCENARIOS = {DEPLOYMENT: (DEPLOYMENT,), ACTIVE: (ACTIVE,), "both": (DEPLOYMENT, ACTIVE)}
SUMMARY_NAMES = {DEPLOYMENT: "worker_memory", ACTIVE: "worker_memory_active"}
#: phase 2's sessions by default: the deployment's 40,000 (~20 minutes of its event time,
#: after ~5 of warm-up) all stay open; more would pass the 30-minute idle timeout, and the
#: open count would stop growing at ~60,000 while RSS took the churn
DEFAULT_SESSIONS = {DEPLOYMENT: 40_000, ACTIVE: 100_000}


def memory_scenario(bootstrap: str, tmp: Path, args: argparse.Namespace) -> bool:
    """One scenario's figures and summary line; False when it failed (said why)."""
    name = SUMMARY_NAMES[args.scenario]
    try:
        ours = measure_worker_memory(bootstrap, tmp, args)
        peer, mix = measure_baseline(args)
        if not args.no_core:
            measure_core(args)
    except BenchError as exc:
        print(f"{name}: FAILED: {exc.reason}\n{exc.detail}", flush=True)
        return False
    summary(name, "MB_per_100k_sessions", ours.mb_per_100k, peer.mb_per_100k,
            higher_is_better=False)
    verdict = "met" if ours.mb_per_100k <= MEMORY_GOAL_MB else "MISSED"
    if args.scenario == DEPLOYMENT:
        what = (f"a deployment's mix: {mix.quiet_2 - mix.quiet_1:,} of the "
                f"{mix.sessions_2 - mix.sessions_1:,} more sessions quiet for over "
                f"{PACK_IDLE_S:g} s, the ~{args.active_sessions:,} running ones there at both "
                f"measurements")
    else:
        what = f"all active, ~{args.events_per_session} events per session"
    print(f"{name}: goal <= {MEMORY_GOAL_MB:g} MB per 100,000 open sessions: {verdict} "
          f"({ours.mb_per_100k:,.1f} MB; {what}; {cores_note()})", flush=True)
    return True


def main() -> int:
    args = parse_args()
    print(f"worker_memory: note: {cores_note()}; figures are from one run", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-worker-memory-"))
    failed = False
    try:
        with kafka_bootstrap() as bootstrap:
            if args.only != "changelog":
                for scenario in SCENARIOS[args.scenario]:
                    sessions = args.sessions or DEFAULT_SESSIONS[scenario]
                    failed |= not memory_scenario(bootstrap, tmp, argparse.Namespace(
                        **{**vars(args), "scenario": scenario, "sessions": sessions}))
            if args.only != "memory":
                try:
                    got = measure_changelog(bootstrap, tmp, args)
                    summary("worker_changelog", "bytes_per_event", got.ours, got.peer,
                            higher_is_better=False)
                    verdict = "met" if got.ours <= CHANGELOG_GOAL_B else "MISSED"
                    print(f"worker_changelog: goal <= {CHANGELOG_GOAL_B:g} B per event on the "
                          f"fleet workload: {verdict} ({got.ours:,.1f} B; {cores_note()})",
                          flush=True)
                except BenchError as exc:
                    print(f"worker_changelog: FAILED: {exc.reason}\n{exc.detail}", flush=True)
                    failed = True
    except BenchError as exc:  # no broker
        print(f"worker_memory: FAILED: {exc.reason}\n{exc.detail}", flush=True)
        failed = True
    finally:
        if args.keep_tmp:
            log(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == BASELINE_CHILD:
        baseline_child(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == CORE_CHILD:
        core_child(sys.argv[2:])
    else:
        sys.exit(main())
