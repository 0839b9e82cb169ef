"""Shared helpers for the benchmarks: one summary line each, ratio against a peer."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson


def summary(name: str, metric: str, ours: float, peer: float, *, higher_is_better: bool) -> str:
    """``<name>: <metric> ours=<v> peer=<v> ratio=<r>``; ratio > 1 means ours is better."""
    ratio = ours / peer if higher_is_better else peer / ours
    line = f"{name}: {metric} ours={ours:.6g} peer={peer:.6g} ratio={ratio:.2f}"
    print(line, flush=True)
    return line


def synthetic_events(
    n_events: int,
    *,
    sessions: int = 500,
    agents: int = 5,
    rate_per_s: int = 500,
    seed: int = 7,
    loops_every: int = 5000,
) -> Iterator[bytes]:
    """A stated workload as JSON lines: ``sessions`` concurrent sessions over ``agents``
    agents, events ``1/rate_per_s`` apart in event time, 1/3 llm calls (gpt-4o-mini, priced
    from tokens), 2/3 tool calls with fresh arguments and 5 % errors, and every
    ``loops_every`` events a session that repeats one tool call 8 times (a runaway loop)."""
    rng = random.Random(seed)
    t0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    step = timedelta(seconds=1 / rate_per_s)
    loop_left = 0
    loop_session = ""
    for i in range(n_events):
        ts = (t0 + i * step).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if i % loops_every == 0:
            loop_left, loop_session = 8, f"loop-{i}"
        if loop_left:
            loop_left -= 1
            session, kind = loop_session, "tool_call"
        else:
            session, kind = f"s{rng.randrange(sessions)}", rng.choice(
                ("llm_call", "tool_call", "tool_call"))
        event: dict[str, object] = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "ts": ts,
            "agent_id": f"agent-{hash(session) % agents}",
            "session_id": session,
            "kind": kind,
        }
        if kind == "llm_call":
            event.update(model="gpt-4o-mini", input_tokens=rng.randint(100, 3000),
                         output_tokens=rng.randint(10, 500))
        elif loop_left or session.startswith("loop-"):
            event.update(name="lookup_order", tool_args_hash="fixed")
        else:
            event.update(name=rng.choice(("search", "lookup_order", "send_email")),
                         tool_args_hash=f"{rng.getrandbits(64):016x}",
                         status="error" if rng.random() < 0.05 else "ok")
        yield orjson.dumps(event) + b"\n"
