"""``make faults``: run the fault matrix, print the table, exit 1 naming the rows that
missed the goal (every row is run and printed either way).

    .venv/bin/python -m bench.faults [--rows baseline,broker-stop,...] [--pace 250]
                                     [--fleet-s 40] [--out DIR] [--seed N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `bench` as a namespace package

from bench.faults._matrix import ROWS, Fleet, markdown, run_row


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.faults")
    parser.add_argument("--rows", default="all",
                        help="comma-separated row keys: " + ", ".join(r.key for r in ROWS))
    parser.add_argument("--pace", type=float, default=250.0, help="fleet events/s")
    parser.add_argument("--fleet-s", type=float, default=40.0, help="fleet seconds per row")
    parser.add_argument("--seed", type=int, default=int(os.environ.get("FAULTS_SEED", "16")))
    parser.add_argument("--worker-idle-after-s", type=float, default=None,
                        help="the worker's AGENTWATCH_IDLE_AFTER_S (default: its own, 1 s)")
    parser.add_argument("--out", default=None,
                        help="logs and per-row results (default: a temp dir, kept on failure)")
    args = parser.parse_args()
    keys = [r.key for r in ROWS] if args.rows == "all" else args.rows.split(",")
    unknown = set(keys) - {r.key for r in ROWS}
    if unknown:
        parser.error(f"unknown rows: {', '.join(sorted(unknown))}")
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="agentwatch-faults-"))
    fleet = Fleet(pace=args.pace, seconds=args.fleet_s)
    print(f"faults: {len(keys)} rows; fleet {fleet.events:,} events at {fleet.pace:.0f}/s "
          f"({fleet.sessions} sessions, a runaway loop every {fleet.loop_every} events); "
          f"seed {args.seed}; logs in {out}", file=sys.stderr, flush=True)
    results = []
    t0 = time.monotonic()
    for row in (r for r in ROWS if r.key in keys):
        print(f"== {row.key}: {row.fault}", file=sys.stderr, flush=True)
        result = run_row(row, fleet, out, args.seed,
                         idle_after_s=args.worker_idle_after_s)
        results.append(result)
        verdict = "at goal" if not result.failures else "MISSED: " + "; ".join(result.failures)
        print(f"   {result.seconds:.0f} s, {verdict}", file=sys.stderr, flush=True)
        for note in result.notes:
            print(f"   {note}", file=sys.stderr, flush=True)
        if result.error:
            print(result.error, file=sys.stderr, flush=True)
    print(f"\nfault matrix ({time.monotonic() - t0:.0f} s; {os.cpu_count()} cores; "
          f"fleet {fleet.events:,} events at {fleet.pace:.0f}/s):\n")
    print(markdown(results))
    failed = [r for r in results if r.failures]
    if failed:
        print("\nrows that missed the goal:", file=sys.stderr)
        for r in failed:
            print(f"- {r.fault}: {'; '.join(r.failures)}", file=sys.stderr)
        print(f"logs kept in {out}", file=sys.stderr)
        return 1
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
