"""stages: the worker's two pure stages in one process (no Kafka, no faust), on the fleet
workload: where the worker's own CPU goes per event, apart from the broker and the client.

Workload: ``bench/_fleet.py`` (5,000 open sessions over 6 agents and 2 tenants, 20,000
events/s of event time, a runaway loop every 3,000 events), completed as the producer
completes it (tenant, priced cost) and packed as the producer packs it by default:
one partition batch per partition per 50 ms linger interval, 4 partitions.

Driven as ``agentwatch worker`` drives them: the session stage over each record, its
forwards to the rekeyed stage's partition (Kafka's default partitioner over the forward
key), a mark per input partition after each linger interval, and a checkpoint of both
stages every second of event time (``--checkpoint-s``). Printed: events/s through both
stages, and the share of process vs checkpoint time, with the changelog bytes per event
(the JSON written, before compression).

``--against REV``: the same, on git revision ``REV``'s stages and core (unpacked and
compiled as ``make setup`` does, ``_common.export_compiled_revision``), in child processes taking
turns with this tree's (the machine is shared and noisy): the best rate of each is
compared, e.g. ``--against HEAD`` for an uncommitted change.

    .venv/bin/python bench/bench_stages.py [--events 200000] [--against REV]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` as a namespace package

from bench._common import completed, export_compiled_revision, summary
from bench._fleet import fleet_events

LINGER_US = 50_000
PARTITIONS = 4


def build_records(n_events: int) -> list[list[tuple[int, bytes, bytes]]]:
    """Per linger interval, the (partition, key, value) records the producer would send."""
    from agentwatch.schemas import (  # noqa: PLC0415 -- after sys.path is set
        PartitionCache,
        default_price_table,
        partition_batch_key,
    )

    prices = default_price_table()
    owner = PartitionCache(PARTITIONS)
    intervals: list[list[tuple[int, bytes, bytes]]] = []
    pending: dict[int, list[dict[str, Any]]] = defaultdict(list)
    end_us = None
    for raw in fleet_events(n_events):
        ts_us = _ts_us(raw["ts"])
        if end_us is None:
            end_us = ts_us + LINGER_US
        if ts_us >= end_us:
            intervals.append([(p, partition_batch_key(p), orjson.dumps(evs))
                              for p, evs in sorted(pending.items())])
            pending.clear()
            end_us = ts_us + LINGER_US
        event = completed(raw, prices)
        pending[owner.get(event["tenant_id"], event["session_id"])].append(event)
    intervals.append([(p, partition_batch_key(p), orjson.dumps(evs))
                      for p, evs in sorted(pending.items())])
    return intervals


def _ts_us(ts: str) -> int:
    from datetime import datetime  # noqa: PLC0415

    return int(datetime.fromisoformat(ts).timestamp() * 1_000_000)


def run_once(intervals: list[list[tuple[int, bytes, bytes]]], checkpoint_s: float
             ) -> dict[str, float]:
    """Both stages over every interval; returns events, seconds and changelog bytes."""
    from agentwatch.processors.core import RulesConfig  # noqa: PLC0415
    from agentwatch.processors.worker import (  # noqa: PLC0415
        RekeyedStage,
        SessionStage,
        StageOutput,
    )
    from agentwatch.schemas import partition_for  # noqa: PLC0415

    config = RulesConfig.default()
    session = SessionStage(config, "events", PARTITIONS)
    try:
        rekeyed = RekeyedStage(config, "rekeyed", PARTITIONS)  # type: ignore[call-arg,arg-type,unused-ignore]
    except TypeError:  # a revision before the stage named its topic
        rekeyed = RekeyedStage(config, PARTITIONS)  # type: ignore[call-arg,arg-type,unused-ignore]
    for p in range(PARTITIONS):
        session.restore(p, [])
        rekeyed.restore(p, [])
    offsets = [0] * PARTITIONS
    rekeyed_offsets = [0] * PARTITIONS
    events = alerts = changelog_bytes = 0
    process_s = checkpoint_s_total = 0.0
    per_checkpoint = max(1, round(checkpoint_s * 1e6 / LINGER_US))
    for i, interval in enumerate(intervals, 1):
        t0 = time.perf_counter()
        routed: dict[int, list[tuple[int, bytes | None, bytes | None]]] = defaultdict(list)
        for partition, key, value in interval:
            out = StageOutput()
            session.process(partition, [(offsets[partition], key, value)], out)
            offsets[partition] += 1
            events += out.events
            alerts += len(out.alerts)
            for fkey, fvalue in out.forwards:
                q = partition_for(fkey, PARTITIONS)
                routed[q].append((rekeyed_offsets[q], fkey, fvalue))
                rekeyed_offsets[q] += 1
        for partition, _key, _value in interval:  # the marks, after the forwards
            mark = b'{"p":%d,"w":%d,"idle":false}' % (partition, session.max_ts_us(partition))
            for q in range(PARTITIONS):
                routed[q].append((rekeyed_offsets[q], b"~", mark))
                rekeyed_offsets[q] += 1
        for q, messages in sorted(routed.items()):
            out = StageOutput()
            rekeyed.process(q, messages, out)
            alerts += len(out.alerts)
        t1 = time.perf_counter()
        process_s += t1 - t0
        if i % per_checkpoint == 0:
            writes = []
            for p in range(PARTITIONS):
                writes += session.checkpoint(p, offsets[p])
                writes += rekeyed.checkpoint(p)
            changelog_bytes += sum(len(k) + len(v or b"") for _, k, v in writes)
            checkpoint_s_total += time.perf_counter() - t1
    return {"events": events, "alerts": alerts, "process_s": process_s,
            "checkpoint_s": checkpoint_s_total, "changelog_bytes": changelog_bytes}


def measure(events: int, checkpoint_s: float, rounds: int) -> dict[str, float]:
    from agentwatch.processors.worker.run import tune_gc  # noqa: PLC0415

    intervals = build_records(events)
    tune_gc()  # the worker's collector settings (it freezes what exists, the records here)
    best: dict[str, float] = {}
    for _ in range(rounds):
        run = run_once(intervals, checkpoint_s)
        run["rate"] = run["events"] / (run["process_s"] + run["checkpoint_s"])
        if run["rate"] > best.get("rate", 0.0):
            best = run
    return best


def describe(label: str, run: dict[str, float]) -> str:
    total_s = run["process_s"] + run["checkpoint_s"]
    return (f"stages ({label}): {run['rate']:,.0f} events/s ({run['events']:,.0f} events, "
            f"{run['alerts']:,.0f} alert changes; process {run['process_s'] / total_s:.0%}, "
            f"checkpoint {run['checkpoint_s'] / total_s:.0%}; changelog "
            f"{run['changelog_bytes'] / max(1, run['events']):.0f} B/event uncompressed)")


def child(events: int, checkpoint_s: float, rounds: int) -> None:
    from agentwatch.processors.core import COMPILED  # noqa: PLC0415

    run = measure(events, checkpoint_s, rounds)
    run["compiled"] = float(COMPILED)
    print(orjson.dumps(run).decode())


def run_child(args: argparse.Namespace, srcs: list[Path] | None) -> dict[str, float]:
    env = dict(os.environ)
    if srcs is not None:  # the other revision's packages first on the path
        env["PYTHONPATH"] = os.pathsep.join(map(str, srcs))
    done = subprocess.run(  # noqa: S603 -- this file, argv built here
        [sys.executable, __file__, "--child", "--events", str(args.events),
         "--checkpoint-s", str(args.checkpoint_s), "--rounds", "1"],
        env=env, capture_output=True, text=True, check=True)
    result: dict[str, float] = orjson.loads(done.stdout.strip().splitlines()[-1])
    return result


def against(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="agentwatch-bench-stages-") as tmp:
        tree = Path(tmp) / "tree"
        srcs = export_compiled_revision(args.against, tree)
        ours: dict[str, float] = {}
        theirs: dict[str, float] = {}
        for _ in range(args.rounds):
            run = run_child(args, None)
            ours = run if run["rate"] > ours.get("rate", 0.0) else ours
            run = run_child(args, srcs)
            theirs = run if run["rate"] > theirs.get("rate", 0.0) else theirs
    print(describe("this tree", ours), file=sys.stderr)
    print(describe(args.against, theirs), file=sys.stderr)
    if ours["alerts"] != theirs["alerts"]:
        print(f"stages: alert changes differ: {ours['alerts']:.0f} here, "
              f"{theirs['alerts']:.0f} at {args.against}", file=sys.stderr)
    summary(f"stages_vs_{args.against}", "events_per_s", ours["rate"], theirs["rate"],
            higher_is_better=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--checkpoint-s", type=float, default=1.0,
                        help="event time between checkpoints (the worker's default: ~1 s)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--against", default=None, metavar="REV")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.events, args.checkpoint_s, args.rounds)
        return
    if args.against:
        against(args)
        return
    run = measure(args.events, args.checkpoint_s, args.rounds)
    print(describe("this tree", run), file=sys.stderr)
    # the baseline: the same stages without checkpoints (what state saving costs)
    summary("stages", "events_per_s", run["rate"],
            run["events"] / run["process_s"], higher_is_better=True)


if __name__ == "__main__":
    main()
