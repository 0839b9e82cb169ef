"""sink: sustained events/s from the topic into chDB through ONE `agentwatch sink`, against
the limit: the bare chDB insert of the same rows, already in memory as Arrow tables, in the
same batch sizes, into the same schema (rollups materialized view included). Same run.

Workload: ``_common.synthetic_events`` completed and packed as ``agentwatch.producer`` does
(the worker bench's workload: 500 sessions, a linger flush every 5,000 events), preloaded on
a 4-partition topic. The sink reads it from the start with a fresh consumer group and its
default batches (100,000 events or 1 s); its rate is the events committed between the first
and the last commit observed over the time between them (``bench._kafka.measure_group``:
start-up, migration and group join excluded and printed apart).

The limit: the same records decoded to events in this process (not timed), turned into
Arrow tables of the same batch size (not timed), then only the ``insert_arrow`` calls timed,
into a fresh chDB database. ``ratio = sink / limit`` (1.0 would mean the sink adds nothing to
the insert itself). Goal (issue 5, not asserted): >= 100,000 events/s per sink process.

``--baseline REF`` also runs the sink as it was at git revision ``REF`` (every member's
``src`` at ``REF``, from ``git archive`` via ``_common.export_revision``, first on the sink
process's PYTHONPATH: modules move between the distributions, so one revision's sink needs
its own neighbours) on the same topic, alternating with the tree's sink ``--baseline-rounds``
times each, and prints the best rate of each and ``ratio = tree / REF`` (e.g. issue 20: the
sink service as a shell over ClickHouseSink, against its own write path before).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` as a namespace package

from agentwatch.schemas import decode_record
from agentwatch.sinks import ChdbBackend, SchemaConfig, events_to_arrow, migrate
from bench._common import export_revision, summary
from bench._kafka import (
    BenchError,
    GroupWatcher,
    Loaded,
    create_topics,
    fresh_name,
    kafka_bootstrap,
    log_tail,
    measure_group,
    preload,
    start_process,
    stop_process,
)
from bench.bench_worker import Workload, build_workload

GOAL_EVENTS_PER_S = 100_000


def run_sink(
    loaded: Loaded,
    bootstrap: str,
    tmp: Path,
    args: argparse.Namespace,
    *,
    label: str = "agentwatch sink",
    baseline_srcs: list[Path] | None = None,
) -> float:
    """One sink process over the loaded topic (fresh group, fresh chDB); its events/s.
    ``baseline_srcs``: run the packages found there (another revision's) instead of the
    tree's."""
    group = fresh_name("bench-sink")
    store = tmp / fresh_name("sink-chdb")
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "AGENTWATCH_EVENTS_TOPIC": loaded.topic,
        "AGENTWATCH_ALERTS_TOPIC": fresh_name("bench-alerts"),
        "AGENTWATCH_SINK_GROUP": group,
        "AGENTWATCH_SINK_BATCH_MAX_EVENTS": str(args.batch_events),
        "CLICKHOUSE_URL": str(store),
        # The workload's event times start on a fixed date: without this, once that date
        # is older than the default 30-day TTL, ClickHouse drops the rows as they arrive.
        "AGENTWATCH_TTL_DAYS": "none",
    }
    if baseline_srcs is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            [*map(str, baseline_srcs), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        _check_imported_from(next(p for p in baseline_srcs if p.parent.name == "sinks"), env)
    log = tmp / f"{group}.log"
    # BENCH_SINK_PREFIX: a command to run the sink under, e.g. a profiler
    cmd = [
        *os.environ.get("BENCH_SINK_PREFIX", "").split(),
        sys.executable,
        "-m",
        "agentwatch.cli",
        "sink",
    ]
    print(f"sink: running {label} ...", file=sys.stderr, flush=True)
    watcher = GroupWatcher(bootstrap, group, loaded)
    proc, launched_at = start_process(cmd, env, log)
    try:
        result = measure_group(
            watcher, loaded, proc, launched_at=launched_at, timeout_s=args.timeout_s
        )
    except BenchError as exc:
        raise BenchError(f"sink: {exc.reason}", f"--- tail of {log} ---\n{log_tail(log)}") from None
    finally:
        stop_process(proc)
        watcher.close()
    print(f"sink: {label}: {result.describe()}", file=sys.stderr, flush=True)
    with ChdbBackend(store) as db:
        stored = db.query("SELECT count() FROM agentwatch.events").rows[0][0]
    shutil.rmtree(store, ignore_errors=True)
    if stored != loaded.events:
        raise BenchError(f"{label} stored {stored:,} events of {loaded.events:,}")
    return result.events_per_s


def export_baseline(ref: str, tmp: Path) -> list[Path]:
    """The members' ``src`` folders as they were at git revision ``ref``, under ``tmp``."""
    try:
        return export_revision(ref, tmp / "baseline")
    except subprocess.CalledProcessError as exc:
        detail = exc.stderr.decode(errors="replace").strip() if exc.stderr else ""
        raise BenchError(f"--baseline {ref}: cannot export its sources: {detail}") from None


def _check_imported_from(sinks_src: Path, env: dict[str, str]) -> None:
    """The sink process would import ``agentwatch.sinks`` from ``sinks_src``, or fail."""
    where = subprocess.run(
        [sys.executable, "-c", "import agentwatch.sinks as s; print(s.__file__)"],
        env=env, capture_output=True, text=True, check=False,
    ).stdout.strip()
    if not where.startswith(str(sinks_src)):
        raise BenchError(f"the baseline sink imports agentwatch.sinks from {where!r}")


def run_limit(work: Workload, tmp: Path, args: argparse.Namespace) -> float:
    events = [e for record in work.packed for e in decode_record(record[1]).events]
    tables = [
        events_to_arrow(events[i : i + args.batch_events])
        for i in range(0, len(events), args.batch_events)
    ]
    best = 0.0
    for round_ in range(args.limit_rounds):
        with ChdbBackend(tmp / f"limit-chdb-{round_}") as db:
            migrate(db, SchemaConfig(ttl_days=None))
            started = time.perf_counter()
            for i, table in enumerate(tables):
                db.insert_arrow("agentwatch.events", table, dedup_token=f"limit/{i}")
            elapsed = time.perf_counter() - started
            stored = db.query("SELECT count() FROM agentwatch.events").rows[0][0]
        if stored != len(events):
            raise BenchError(f"limit stored {stored:,} of {len(events):,}")
        best = max(best, len(events) / elapsed)
    print(
        f"sink: limit (bare insert_arrow of {len(tables)} in-memory Arrow tables, best of "
        f"{args.limit_rounds}): {best:,.0f} events/s",
        file=sys.stderr,
        flush=True,
    )
    return best


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_200_000)
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--linger-events", type=int, default=5000)
    parser.add_argument("--max-events", type=int, default=500, help="Packer max_events")
    parser.add_argument("--max-bytes", type=int, default=1_000_000, help="Packer max_bytes")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--batch-events", type=int, default=100_000, help="sink batch size")
    parser.add_argument("--limit-rounds", type=int, default=2)
    parser.add_argument("--timeout-s", type=float, default=300.0)
    parser.add_argument("--baseline", default="", metavar="REF",
                        help="also run the sink of git revision REF and print tree/REF")
    parser.add_argument("--baseline-rounds", type=int, default=2,
                        help="with --baseline: runs of each sink, alternating (best counts)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    work = build_workload(args)
    n = sum(record[2] for record in work.packed)
    print(
        f"sink: workload {n:,} events of {work.sessions} sessions in {len(work.packed):,} "
        f"packed records ({n / len(work.packed):.1f} events/record), {args.partitions} "
        f"partitions",
        file=sys.stderr,
        flush=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="agentwatch-bench-sink-"))
    try:
        with kafka_bootstrap() as bootstrap:
            topic = fresh_name("bench-sink-events")
            create_topics(bootstrap, [topic], args.partitions)
            # (key, value, events): a PackedRecord also carries the partition count it was
            # packed for, which preload does not take
            records = [(r[0], r[1], r[2]) for r in work.packed]
            loaded = preload(bootstrap, topic, records)
            if args.baseline:
                baseline_srcs = export_baseline(args.baseline, tmp)
                ours, before = 0.0, 0.0
                for _ in range(max(1, args.baseline_rounds)):
                    before = max(before, run_sink(loaded, bootstrap, tmp, args,
                                                  label=f"sink at {args.baseline}",
                                                  baseline_srcs=baseline_srcs))
                    ours = max(ours, run_sink(loaded, bootstrap, tmp, args))
            else:
                ours = run_sink(loaded, bootstrap, tmp, args)
        limit = run_limit(work, tmp, args)
    except BenchError as exc:
        print(f"sink: FAILED: {exc.reason}", file=sys.stderr)
        if exc.detail:
            print(exc.detail, file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary("sink", "events_per_s", ours, limit, higher_is_better=True)
    if args.baseline:
        summary(f"sink vs {args.baseline}", "events_per_s", ours, before, higher_is_better=True)
    verdict = "met" if ours >= GOAL_EVENTS_PER_S else "missed"
    print(f"sink: goal >= {GOAL_EVENTS_PER_S:,} events/s per sink process: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
