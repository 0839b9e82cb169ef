"""An agent process for the fault matrix: emits the fleet of :func:`bench._fleet.fleet_events`
through ``agentwatch.producer.Agentwatch``, paced on the wall clock: each event at its own
time when ``--fleet-start-us`` dates the fleet from the clock (so its time is the time it is
emitted, as an agent stamps its events), else uniformly at ``--pace``.

It appends the index of every event ``emit()`` accepted to ``--log`` (one line each, written
right after ``emit()`` returns), so a process killed with SIGKILL can be started again with
``--start`` one past the last logged index and go on with the same fleet. With ``--spool``
the producer keeps its packed records on disk (``spool_dir``). Its stdout gets
``started recovered=N`` at start (N: events the spool held), ``spool-delivered <unix time>`` once
those are sent, and a final JSON line of the client's stats.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `bench` as a namespace package

from agentwatch.producer import Agentwatch
from bench._fleet import fleet_events, fleet_start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--pace", type=float, required=True, help="events/s")
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--loop-every", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--fleet-start-us", type=int, default=None,
                        help="the fleet's first event time (unix µs; default: the fixed date "
                        "of bench/_fleet.py)")
    parser.add_argument("--spool", default=None)
    args = parser.parse_args()

    client = Agentwatch(bootstrap_servers=args.bootstrap, topic=args.topic,
                        spool_dir=args.spool)
    recovered = client.stats.recovered
    print(f"started recovered={recovered}", flush=True)
    spool_pending = recovered > 0
    fd = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    events = fleet_events(args.events, sessions=args.sessions, rate_per_s=args.pace,
                          loop_every=args.loop_every, seed=args.seed,
                          start=fleet_start(args.fleet_start_us))
    t0 = time.perf_counter()
    try:
        for n, event in enumerate(itertools.islice(events, args.start, None)):
            if args.fleet_start_us is None:  # uniform pacing
                ahead = t0 + n / args.pace - time.perf_counter()
            else:  # at the event's own time: it is stamped when emitted, as agents stamp
                ahead = datetime.fromisoformat(event["ts"]).timestamp() - time.time()
            if ahead > 0.001:
                time.sleep(ahead)
            client.emit(event)
            os.write(fd, f"{args.start + n}\n".encode())
            if spool_pending and client.stats.sent >= recovered:
                spool_pending = False
                print(f"spool-delivered {time.time():.3f}", flush=True)
        flushed = client.flush(timeout_s=300)
        if spool_pending and client.stats.sent >= recovered:
            print(f"spool-delivered {time.time():.3f}", flush=True)
    finally:
        os.close(fd)
        client.close(timeout_s=30)
    print(json.dumps({"flushed": flushed, **asdict(client.stats)}), flush=True)
    return 0 if flushed else 1


if __name__ == "__main__":
    sys.exit(main())
