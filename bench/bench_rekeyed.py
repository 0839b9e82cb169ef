"""rekeyed stage: events/s through the worker's stage 2 (``RekeyedStage.process``, the
agent- and tenant-scoped rules over the internal rekeyed topic) on well-formed messages,
this tree against git revision ``REV`` (default ``main``) measured in the same run.

Why: stage 2 is 11-20 % of the worker's CPU, and issue 16 (hostile input) made it check
every message of its topic (a malformed one becomes a dead letter instead of a crash); the
check must not slow the well-formed path down. Goal: ratio >= 0.97.

Workload: the fleet (``bench/_fleet.py``: 5,000 open sessions, 6 agents, 2 tenants,
20,000 events/s of event time), completed as the producer completes it, packed into
partition batches of 4 input partitions (one per 1,000 events of the fleet: the producer's
linger), run through the worker's session stage (``SessionStage.process``, the default
rules) batch by batch, taking its forwards and, after each batch, the mark the shell
sends (then the idle marks of the stream's end): the messages one rekeyed partition
receives, in the order the input partitions took turns. Each tree (``REV``'s unpacked by
``_common.export_compiled_revision``, its core compiled as ``make setup`` does) feeds them to a
fresh ``RekeyedStage`` in batches of 500 messages (faust's batch) in child processes,
taking turns (this machine is shared and noisy); the best rate of each is compared.

    .venv/bin/python bench/bench_rekeyed.py [N_EVENTS] [--against REV] [--rounds K]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Final

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` as a namespace package

from agentwatch.processors.core import RulesConfig
from agentwatch.processors.worker import MARK_KEY, SessionStage, StageOutput
from agentwatch.schemas import default_price_table, partition_batch_key, partition_for
from bench._common import completed, export_compiled_revision, summary
from bench._fleet import fleet_events

INPUTS: Final = 4
LINGER_EVENTS: Final = 1000


def rekeyed_messages(n_events: int) -> tuple[list[tuple[bytes, bytes]], int]:
    """The messages one rekeyed partition gets (key, value) and the events they carry."""
    prices = default_price_table()
    stage = SessionStage(RulesConfig.default(), "agentwatch.events", INPUTS)
    for p in range(INPUTS):
        stage.restore(p, [])
    offsets = [0] * INPUTS
    messages: list[tuple[bytes, bytes]] = []
    pending: list[list[bytes]] = [[] for _ in range(INPUTS)]

    def flush() -> None:
        for p in range(INPUTS):
            if not pending[p]:
                continue
            value = b"[" + b",".join(pending[p]) + b"]"
            pending[p] = []
            out = StageOutput()
            stage.process(p, [(offsets[p], partition_batch_key(p), value)], out)
            offsets[p] += 1
            messages.extend(out.forwards)
            messages.append((MARK_KEY, orjson.dumps(
                {"p": p, "w": stage.max_ts_us(p), "idle": False})))

    for i, emitted in enumerate(fleet_events(n_events), 1):
        event = completed(emitted, prices)
        key = f"{event['tenant_id']}/{event['session_id']}".encode()
        pending[partition_for(key, INPUTS)].append(orjson.dumps(event))
        if i % LINGER_EVENTS == 0:
            flush()
    flush()
    for p in range(INPUTS):  # the stream stops: every partition turns idle
        w = stage.max_ts_us(p)
        messages.append((MARK_KEY, orjson.dumps({"p": p, "w": w, "idle": True, "t": w})))
    events = sum(len(orjson.loads(v)["e"]) for k, v in messages if k != MARK_KEY)
    return messages, events


#: a child's measurement: the messages (JSON lines of [key, value]) through a fresh
#: RekeyedStage of whatever tree is first on PYTHONPATH; prints "<messages/s> <compiled>"
_MEASURE: Final = """
import gc, inspect, sys, time
import orjson
from agentwatch.processors.core import COMPILED, RulesConfig
from agentwatch.processors.worker import RekeyedStage, StageOutput
rows = [orjson.loads(line) for line in open(sys.argv[1], "rb").read().splitlines()]
messages = [(o, k.encode(), v.encode()) for o, (k, v) in enumerate(rows)]
gc.freeze()
with_topic = "topic" in inspect.signature(RekeyedStage).parameters
best = 0.0
for _ in range(int(sys.argv[2])):
    config = RulesConfig.default()
    stage = (RekeyedStage(config, "bench-rekeyed", 4) if with_topic
             else RekeyedStage(config, 4))
    stage.restore(0, [])
    out = StageOutput()
    t0 = time.perf_counter()
    for lo in range(0, len(messages), 500):
        stage.process(0, messages[lo:lo + 500], out)
    elapsed = time.perf_counter() - t0
    assert not out.dead_letters and out.events > 0, (len(out.dead_letters), out.events)
    best = max(best, len(messages) / elapsed)
print(best, COMPILED)
"""


def _measure(messages_file: Path, srcs: list[Path] | None, repeats: int) -> tuple[float, bool]:
    env = dict(os.environ)
    if srcs is not None:  # the other revision's packages first on the path
        env["PYTHONPATH"] = os.pathsep.join(map(str, srcs))
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(messages_file),  # noqa: S603
                           str(repeats)], env=env, capture_output=True, text=True, check=True)
    rate, compiled = done.stdout.split()
    return float(rate), compiled == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("events", nargs="?", type=int, default=200_000,
                        help="fleet events through the session stage")
    parser.add_argument("--against", default="main", help="git revision to compare with")
    parser.add_argument("--rounds", type=int, default=5, help="turns of each tree")
    args = parser.parse_args()
    messages, events = rekeyed_messages(args.events)
    with tempfile.TemporaryDirectory(prefix="agentwatch-bench-rekeyed-") as tmp:
        tree = Path(tmp) / "tree"
        srcs = export_compiled_revision(args.against, tree)
        messages_file = Path(tmp) / "messages.jsonl"
        messages_file.write_bytes(b"\n".join(
            orjson.dumps([k.decode(), v.decode()]) for k, v in messages))
        ours = theirs = 0.0
        compiled: dict[str, bool] = {}
        for _ in range(args.rounds):
            rate, compiled["this tree"] = _measure(messages_file, None, 2)
            ours = max(ours, rate)
            rate, compiled[args.against] = _measure(messages_file, srcs, 2)
            theirs = max(theirs, rate)
    per_message = events / len(messages)
    print(f"rekeyed --against {args.against}: {len(messages)} messages ({events} events, "
          f"{per_message:.1f} per message) of {args.events} fleet events, best of "
          f"{args.rounds} turns; this tree {ours * per_message:,.0f} events/s, "
          f"{args.against} {theirs * per_message:,.0f} events/s; compiled cores: {compiled}",
          file=sys.stderr)
    summary(f"rekeyed_vs_{args.against}", "messages_per_s", ours, theirs,
            higher_is_better=True)


if __name__ == "__main__":
    main()
