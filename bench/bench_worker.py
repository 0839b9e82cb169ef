"""worker: sustained events/s through ONE `agentwatch worker` (faust-streaming, default rules)
on a real Kafka broker, against quixstreams computing a per-session 60 s sliding-window sum
(of ``cost_usd``) and count over the same events, both measured in the same run.

Workload: ``_common.synthetic_events`` (500 sessions plus one injected runaway-loop session
every 5,000 events, 5 agents, 500 events/s of event time), each event completed as the
project's producer completes it (``tenant_id`` "default", ``cost_usd`` from the price table)
and packed as it packs them: key ``<tenant_id>/<session_id>``, value a JSON array of that
session's events, ``agentwatch.producer._packing.Packer`` with a linger flush every
``--linger-events`` events (default 5,000: a fleet emitting 5,000 events per linger
interval). The same events are also preloaded one event (a JSON object) per record. Both
topics: 4 partitions, keys partitioned with murmur2 like Kafka's Java client and aiokafka.

Method: each consumer is its own process with a fresh consumer group, reading its topic from
the start. Its rate is the events committed between the first and the last commit observed
(committed offsets polled every 50 ms, mapped to events through the preloaded layout) over
the time between those two observations: start-up and group join are excluded (and printed
apart), and the end is late by at most one commit interval of the consumer (printed as a
bound; a run too short for the consumer's commit cadence fails and asks for more --events).

Ours: the worker on the whole packed topic (the ratio line); also the worker on the
one-event-per-record topic (an extra line against the same peer figure).
Peer: quixstreams on the one-event-per-record topic (how its users would consume it), and on
the packed topic with the arrays expanded by ``sdf.apply(..., expand=True)``; the faster of
the two is the peer. Its per-event cost grows with the events of a key inside the window
(each event updates every sliding window it falls in: ~60 here), so it is slow.
The slow runs (both quixstreams runs and the worker's one-event-per-record run) are measured
over the first ``--prefix-events`` events of their topic (default 100,000): for the peer that
prefix includes its window's warm-up (the first 60 s of event time, when it is faster), a
bias in its favour. Goal (issue 3, not asserted): >= 50,000 events/s per worker, and faster
than quixstreams.

``--peer-only`` runs the quixstreams half alone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` as a namespace package

from agentwatch.producer._packing import Packer
from agentwatch.schemas import default_price_table
from bench._common import summary, synthetic_events
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
    start_process,
    stop_process,
)

TENANT = "default"  # the producer's default tenant_id
AGENTWATCH = Path(sys.executable).parent / "agentwatch"  # the venv's console script
GOAL_EVENTS_PER_S = 50_000
MAX_TAIL_BOUND = 0.1  # above it, say the run was too short for the consumer's commit cadence
WINDOW_MS = 60_000
QUIX_CHILD = "--quix-child"  # argv marker: this file run as the quixstreams consumer


@dataclass(frozen=True)
class Workload:
    packed: list[tuple[bytes, bytes, int]]  # (key, JSON array, events in it)
    single: list[tuple[bytes, bytes, int]]  # (key, JSON object, 1)
    sessions: int
    mean_event_bytes: float


def producer_events(n_events: int, sessions: int) -> Iterator[tuple[bytes, bytes]]:
    """(key, event JSON) as ``agentwatch.producer`` completes and encodes each event."""
    prices = default_price_table()
    for line in synthetic_events(n_events, sessions=sessions):
        event: dict[str, Any] = orjson.loads(line)
        if event.get("tenant_id") is None:
            event["tenant_id"] = TENANT
        if event.get("cost_usd") is None and isinstance(event.get("model"), str):
            cost = prices.cost_usd(
                event["model"],
                event.get("input_tokens"),
                event.get("output_tokens"),
                event.get("cached_input_tokens"),
            )
            if cost is not None:
                event["cost_usd"] = cost
        yield f"{event['tenant_id']}/{event['session_id']}".encode(), orjson.dumps(event)


def build_workload(args: argparse.Namespace) -> Workload:
    packer = Packer(max_events=args.max_events, max_bytes=args.max_bytes)
    packed: list[tuple[bytes, bytes, int]] = []
    single: list[tuple[bytes, bytes, int]] = []
    keys: set[bytes] = set()
    nbytes = 0
    for i, (key, raw) in enumerate(producer_events(args.events, args.sessions), 1):
        keys.add(key)
        nbytes += len(raw)
        single.append((key, raw, 1))
        packer.add(key, raw)
        if i % args.linger_events == 0:  # one linger interval of the fleet's events
            packed.extend(packer.take(all_open=True))
    packed.extend(packer.take(all_open=True))
    return Workload(packed, single, len(keys), nbytes / max(1, len(single)))


# --- quixstreams, the peer (run as a child process: app.run() blocks) -------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def _ts_ms(event: dict[str, Any]) -> int:
    return (datetime.fromisoformat(event["ts"]) - _EPOCH) // _MS


def _ts_from_value(value: Any, *_meta: Any) -> int:
    """quixstreams' TimestampExtractor: (value, headers, timestamp, timestamp_type)."""
    return _ts_ms(value)


def _ts_of_event(value: Any, *_meta: Any) -> int:
    """For ``sdf.set_timestamp``: (value, key, timestamp, headers)."""
    return _ts_ms(value)


def _events_of_record(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def quix_child(argv: list[str]) -> None:
    """``QUIX_CHILD <bootstrap> <topic> <group> <single|packed> <state_dir> <commit_s>``."""
    bootstrap, topic_name, group, mode, state_dir, commit_interval_s = argv
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
    if mode == "single":
        topic = app.topic(
            topic_name,
            key_deserializer="str",
            value_deserializer="json",
            timestamp_extractor=_ts_from_value,
        )
        sdf = app.dataframe(topic)
    else:  # packed: one record holds a JSON array of one session's events
        topic = app.topic(topic_name, key_deserializer="str", value_deserializer="json")
        sdf = app.dataframe(topic).apply(_events_of_record, expand=True)
        sdf = sdf.set_timestamp(_ts_of_event)
    sdf.sliding_window(duration_ms=WINDOW_MS).agg(
        cost_usd=Sum("cost_usd"), events=Count()
    ).current()
    app.run()


# --- runs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    label: str
    result: Throughput


def measure(
    label: str,
    cmd: list[str],
    env: dict[str, str],
    *,
    bootstrap: str,
    group: str,
    loaded: Loaded,
    log: Path,
    timeout_s: float,
    until_events: int = 0,
) -> Run:
    print(f"worker: running {label} ...", file=sys.stderr, flush=True)
    watcher = GroupWatcher(bootstrap, group, loaded)
    proc, launched_at = start_process(cmd, env, log)
    try:
        result = measure_group(
            watcher,
            loaded,
            proc,
            launched_at=launched_at,
            timeout_s=timeout_s,
            until_events=until_events,
        )
    except BenchError as exc:
        raise BenchError(
            f"{label}: {exc.reason}", f"--- tail of {log} ---\n{log_tail(log)}"
        ) from None
    finally:
        stop_process(proc)
        watcher.close()
    print(f"worker: {label}: {result.describe()}", file=sys.stderr, flush=True)
    return Run(label, result)


def run_quix(mode: str, loaded: Loaded, bootstrap: str, tmp: Path, args: argparse.Namespace) -> Run:
    group = fresh_name(f"bench-quix-{mode}")
    state_dir = tmp / group
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        QUIX_CHILD,
        bootstrap,
        loaded.topic,
        group,
        mode,
        str(state_dir),
        str(args.quix_commit_s),
    ]
    what = (
        "one event per record"
        if mode == "single"
        else "packed records, arrays expanded with apply(expand=True)"
    )
    return measure(
        f"quixstreams ({what})",
        cmd,
        dict(os.environ),
        bootstrap=bootstrap,
        group=group,
        loaded=loaded,
        log=tmp / f"{group}.log",
        timeout_s=args.timeout_s,
        until_events=args.prefix_events,
    )


def run_worker(
    label: str,
    loaded: Loaded,
    bootstrap: str,
    tmp: Path,
    args: argparse.Namespace,
    *,
    until_events: int = 0,
) -> Run:
    group = fresh_name("bench-worker")
    data_dir = tmp / group
    data_dir.mkdir()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "AGENTWATCH_EVENTS_TOPIC": loaded.topic,
        "AGENTWATCH_ALERTS_TOPIC": fresh_name("bench-alerts"),
        "AGENTWATCH_DLQ_TOPIC": fresh_name("bench-dlq"),
        "AGENTWATCH_WORKER_GROUP": group,  # the worker's consumer group id
        "AGENTWATCH_DATA_DIR": str(data_dir),
    }
    return measure(
        f"agentwatch worker ({label})",
        [str(AGENTWATCH), "worker"],
        env,
        bootstrap=bootstrap,
        group=group,
        loaded=loaded,
        log=tmp / f"{group}.log",
        timeout_s=args.timeout_s,
        until_events=until_events,
    )


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


def describe_workload(args: argparse.Namespace, work: Workload, compression: str) -> None:
    n = len(work.single)
    per_record = [events for _, _, events in work.packed]
    packed_bytes = sum(len(value) for _, value, _ in work.packed)
    print(
        f"worker: workload {n:,} events of {work.sessions} sessions "
        f"({args.sessions} + injected runaway loops), {n / 500:.0f} s of event time at "
        f"500 events/s, mean {work.mean_event_bytes:.0f} B/event; "
        f"{args.partitions} partitions, murmur2 key partitioning, compression {compression}\n"
        f"worker: packed as agentwatch.producer packs (Packer max_events={args.max_events}, "
        f"max_bytes={args.max_bytes}, a linger flush every {args.linger_events} events): "
        f"{len(per_record):,} records, mean {n / len(per_record):.1f} events/record "
        f"(max {max(per_record)}), mean {packed_bytes / len(per_record):,.0f} B/record; "
        f"one-event-per-record topic: {n:,} records",
        file=sys.stderr,
        flush=True,
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument(
        "--linger-events",
        type=int,
        default=5000,
        help="events the fleet emits per producer linger interval",
    )
    parser.add_argument("--max-events", type=int, default=500, help="Packer max_events")
    parser.add_argument("--max-bytes", type=int, default=1_000_000, help="Packer max_bytes")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--compression", default="none", choices=("none", "gzip", "snappy", "lz4", "zstd")
    )
    parser.add_argument(
        "--prefix-events",
        type=int,
        default=100_000,
        help="measure the slow runs (quixstreams, the worker on one event per record) over "
        "this many events from the start of their topic (0: all)",
    )
    parser.add_argument("--timeout-s", type=float, default=300.0, help="per consumer run")
    parser.add_argument(
        "--quix-commit-s",
        type=float,
        default=1.0,
        help="quixstreams commit_interval (its default, 5 s, would blur the "
        "end of a run by up to 5 s)",
    )
    parser.add_argument(
        "--keep-tmp", action="store_true", help="keep the scratch dir (consumer logs, state dirs)"
    )
    parser.add_argument(
        "--peer-only",
        action="store_true",
        help="run only the quixstreams peer (no `agentwatch worker`)",
    )
    parser.add_argument(
        "--ours-only",
        action="store_true",
        help="run only the worker on packed records (no peer, no ratio): for profiling",
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if not args.peer_only:
        missing = worker_available()
        if missing is not None:
            print(
                f"worker: FAILED: {missing}; run with --peer-only for the peer alone",
                file=sys.stderr,
            )
            return 1
    work = build_workload(args)
    describe_workload(args, work, args.compression)
    tmp = Path(tempfile.mkdtemp(prefix="agentwatch-bench-worker-"))
    try:
        with kafka_bootstrap() as bootstrap:
            return run_all(args, work, bootstrap, tmp)
    except BenchError as exc:
        print(f"worker: FAILED: {exc.reason}", file=sys.stderr)
        if exc.detail:
            print(exc.detail, file=sys.stderr)
        return 1
    finally:
        if args.keep_tmp:
            print(f"worker: logs and state kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def run_all(args: argparse.Namespace, work: Workload, bootstrap: str, tmp: Path) -> int:
    packed_topic = fresh_name("bench-events-packed")
    single_topic = fresh_name("bench-events-single")
    create_topics(bootstrap, [packed_topic, single_topic], args.partitions)
    packed = preload(bootstrap, packed_topic, work.packed, compression=args.compression)
    single = preload(bootstrap, single_topic, work.single, compression=args.compression)

    if args.ours_only:
        ours = run_worker("packed records", packed, bootstrap, tmp, args)
        print(f"worker_ours: events_per_s packed = {ours.result.events_per_s:.6g}")
        return 0
    peers = [
        run_quix("single", single, bootstrap, tmp, args),
        run_quix("packed", packed, bootstrap, tmp, args),
    ]
    peer = max(peers, key=lambda run: run.result.events_per_s)
    peer_rate = peer.result.events_per_s
    print(
        f"worker: peer = {peer.label}: {peer_rate:,.0f} events/s (the faster variant)",
        file=sys.stderr,
        flush=True,
    )
    if args.peer_only:
        for run in peers:
            print(f"worker_peer: events_per_s {run.label} = {run.result.events_per_s:.6g}")
        return 0

    ours = run_worker("packed records", packed, bootstrap, tmp, args)
    ours_single = run_worker(
        "one event per record", single, bootstrap, tmp, args, until_events=args.prefix_events
    )
    summary("worker", "events_per_s", ours.result.events_per_s, peer_rate, higher_is_better=True)
    # same peer figure; ours on the records a third-party producer might send
    summary(
        "worker_one_event_per_record",
        "events_per_s",
        ours_single.result.events_per_s,
        peer_rate,
        higher_is_better=True,
    )
    for run in (ours, ours_single):
        if run.result.tail_bound > MAX_TAIL_BOUND:
            print(
                f"worker: {run.label}: only {run.result.commits_seen} commits seen, the "
                f"figure may be low by up to {run.result.tail_bound:.0%}: raise --events",
                file=sys.stderr,
            )
    if ours.result.events_per_s < GOAL_EVENTS_PER_S:
        print(
            f"worker: below the {GOAL_EVENTS_PER_S:,} events/s goal "
            f"({ours.result.events_per_s:,.0f})",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == QUIX_CHILD:
        quix_child(sys.argv[2:])
    else:
        sys.exit(main())
