"""replay: events/s through `agentwatch replay`'s core (parse + validate + default rules),
against a naive baseline that recomputes every window from the raw events of its key
(same parsing, same rules, same workload) measured in the same run.

Workload: see ``_common.synthetic_events`` (500 sessions, 5 agents, 500 events/s of event
time, injected runaway loops). Goal (issue 2): >= 100,000 events/s on one core.

``bench_replay.py N --more-rules``: the same workload with llm-call durations and scores
(``durations=True``), replayed with the default rules and then with the default rules plus
a tenant budget, an agent p95 latency rule and a score rule (issue 17); prints both rates
and their ratio (the goal: >= 0.9).

``bench_replay.py N --against REV``: the default rules of this tree against those of git
revision ``REV`` (e.g. the commit before a change: issue 17 asks for >= 0.9x the rate
before its rules), on the same events in the same run. ``REV``'s sources are unpacked in
a temporary folder (``_common.export_compiled_revision``), its core compiled with mypyc as
``make setup`` does, and each tree
is measured in child processes, taking turns (this machine is shared and noisy): the best
rate of each is compared.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Final

sys.path.insert(0, str(Path(__file__).parent))

from _common import export_compiled_revision, summary, synthetic_events

from agentwatch.processors.core import COMPILED, Engine, RulesConfig, rules_from_mapping
from agentwatch.processors.replay import replay_lines
from agentwatch.schemas import Event, default_price_table, to_us


def naive_replay(lines: list[bytes], config: RulesConfig) -> int:
    """Brute force: keep each key's raw events in its window, recompute sums every event."""
    rules = config.rules
    cost_w = rules["session_cost"].window_s * 1_000_000  # type: ignore[union-attr]
    err_w = rules["agent_error_rate"].window_s * 1_000_000  # type: ignore[union-attr]
    rep_w = rules["loop_repeat"].window_s * 1_000_000  # type: ignore[union-attr]
    prices = default_price_table()
    cost: dict[tuple[str, str], deque[tuple[int, float]]] = defaultdict(deque)
    errs: dict[tuple[str, str], deque[tuple[int, bool]]] = defaultdict(deque)
    reps: dict[tuple[str, str, str, str], deque[int]] = defaultdict(deque)
    steps: dict[tuple[str, str], int] = defaultdict(int)
    fired: set[tuple[str, tuple[str, ...]]] = set()
    for line in lines:
        ev = Event.model_validate_json(line)
        ts = to_us(ev.ts)
        prices.fill_cost(ev)
        skey = (ev.tenant_id, ev.session_id)
        if ev.cost_usd:
            q = cost[skey]
            q.append((ts, ev.cost_usd))
            while q[0][0] <= ts - cost_w:
                q.popleft()
            if sum(c for _, c in q) > 1.0:
                fired.add(("cost", skey))
        if ev.kind in ("llm_call", "tool_call"):
            akey = (ev.tenant_id, ev.agent_id)
            e = errs[akey]
            e.append((ts, ev.status == "error"))
            while e[0][0] <= ts - err_w:
                e.popleft()
            n_err = sum(1 for _, bad in e if bad)
            if len(e) >= 20 and n_err >= 0.25 * len(e):
                fired.add(("err", akey))
            steps[skey] += 1
            if steps[skey] > 200:
                fired.add(("steps", skey))
        if ev.kind == "tool_call" and ev.tool_args_hash:
            r = reps[(*skey, ev.name or "", ev.tool_args_hash)]
            r.append(ts)
            while r[0] <= ts - rep_w:
                r.popleft()
            if len(r) >= 5:
                fired.add(("rep", skey))
    return len(fired)


#: the rules ``--more-rules`` adds to the defaults
MORE_RULES: Final = {
    "tenant_budget": {"type": "budget", "amount_usd": 5000, "period": "day"},
    "agent_latency": {"type": "latency", "threshold_ms": 3000},
    "agent_quality": {"type": "score", "evaluation": "helpfulness", "threshold": 0.3},
}


def _best_rate(lines: list[bytes], config: RulesConfig) -> float:
    best = 0.0
    for _ in range(3):
        engine = Engine(config)
        t0 = time.perf_counter()
        stats = replay_lines(lines, engine, lambda _alert: None)
        best = max(best, stats.events / (time.perf_counter() - t0))
    return best


def more_rules(n_events: int) -> None:
    lines = list(synthetic_events(n_events, durations=True))
    gc.freeze()
    default = _best_rate(lines, RulesConfig.default())
    more = _best_rate(lines, rules_from_mapping({"rules": MORE_RULES}))
    print(f"replay --more-rules: {len(lines)} events; default rules {default:,.0f} events/s, "
          f"with budget, latency and score rules {more:,.0f} events/s: "
          f"ratio {more / default:.2f} (goal >= 0.9)")


#: a child's measurement: the default rules over a file of events, whatever tree is first
#: on PYTHONPATH; prints "<events/s> <compiled>"
_MEASURE: Final = """
import gc, sys, time
from agentwatch.processors.core import COMPILED, Engine, RulesConfig
from agentwatch.processors.replay import replay_lines
lines = open(sys.argv[1], "rb").read().splitlines()
gc.freeze()
best = 0.0
for _ in range(2):
    engine = Engine(RulesConfig.default())
    t0 = time.perf_counter()
    stats = replay_lines(lines, engine, lambda _alert: None)
    best = max(best, stats.events / (time.perf_counter() - t0))
print(best, COMPILED)
"""


def _measure(events_file: Path, srcs: list[Path] | None) -> tuple[float, bool]:
    env = dict(os.environ)
    if srcs is not None:  # the other revision's packages first on the path
        env["PYTHONPATH"] = os.pathsep.join(map(str, srcs))
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(events_file)], env=env,  # noqa: S603
                          capture_output=True, text=True, check=True)
    rate, compiled = done.stdout.split()
    return float(rate), compiled == "True"


def against(n_events: int, rev: str, rounds: int = 5) -> None:
    with tempfile.TemporaryDirectory(prefix="agentwatch-bench-replay-") as tmp:
        tree = Path(tmp) / "tree"
        srcs = export_compiled_revision(rev, tree)
        events_file = Path(tmp) / "events.jsonl"
        events_file.write_bytes(b"\n".join(synthetic_events(n_events)))
        ours = theirs = 0.0
        compiled: dict[str, bool] = {}
        for _ in range(rounds):
            rate, compiled["this tree"] = _measure(events_file, None)
            ours = max(ours, rate)
            rate, compiled[rev] = _measure(events_file, srcs)
            theirs = max(theirs, rate)
    print(f"replay --against {rev}: {n_events} events, default rules, best of {rounds} "
          f"turns; compiled cores: {compiled}", file=sys.stderr)
    summary(f"replay_vs_{rev}", "events_per_s", ours, theirs, higher_is_better=True)


def main() -> None:
    n_events = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
    if "--more-rules" in sys.argv[2:]:
        more_rules(n_events)
        return
    if "--against" in sys.argv[2:]:
        against(n_events, sys.argv[sys.argv.index("--against") + 1])
        return
    lines = list(synthetic_events(n_events))
    gc.freeze()  # the event list is long-lived: keep the collector off it, for both runs
    config = RulesConfig.default()

    best_ours = 0.0
    alerts: list[object] = []
    for _ in range(3):
        engine = Engine(config)
        alerts.clear()
        t0 = time.perf_counter()
        stats = replay_lines(lines, engine, alerts.append)
        best_ours = max(best_ours, stats.events / (time.perf_counter() - t0))

    naive_lines = lines[: min(len(lines), 60_000)]  # the baseline is slow: a prefix is enough
    t0 = time.perf_counter()
    naive_replay(naive_lines, config)
    naive_rate = len(naive_lines) / (time.perf_counter() - t0)
    print(f"replay: core {'compiled with mypyc' if COMPILED else 'pure Python'}; "
          f"{n_events} events, {len(alerts)} alert state changes, "
          f"engine stats {engine.stats}", file=sys.stderr)
    summary("replay", "events_per_s", best_ours, naive_rate, higher_is_better=True)
    if best_ours < 100_000:
        print(f"replay: below the 100,000 events/s goal ({best_ours:,.0f})", file=sys.stderr)


if __name__ == "__main__":
    main()
