"""Shared helpers for the benchmarks: one summary line each, ratio against a peer."""

from __future__ import annotations

import random
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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
    durations: bool = False,
) -> Iterator[bytes]:
    """A stated workload as JSON lines: ``sessions`` concurrent sessions over ``agents``
    agents, events ``1/rate_per_s`` apart in event time, 1/3 llm calls (gpt-4o-mini, priced
    from tokens), 2/3 tool calls with fresh arguments and 5 % errors, and every
    ``loops_every`` events a session that repeats one tool call 8 times (a runaway loop).
    ``durations``: llm calls carry a ``duration_ms`` (log-normal, median ~1 s), every 50th
    event is also followed by a ``score`` of its session (what the latency and score rules
    read)."""
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
            if durations:
                event["duration_ms"] = round(rng.lognormvariate(7, 0.6), 1)
        elif loop_left or session.startswith("loop-"):
            event.update(name="lookup_order", tool_args_hash="fixed")
        else:
            event.update(name=rng.choice(("search", "lookup_order", "send_email")),
                         tool_args_hash=f"{rng.getrandbits(64):016x}",
                         status="error" if rng.random() < 0.05 else "ok")
        yield orjson.dumps(event) + b"\n"
        if durations and i % 50 == 49:
            yield orjson.dumps({
                "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "ts": ts,
                "agent_id": event["agent_id"], "session_id": session, "kind": "score",
                "name": "helpfulness",
                "attributes": {"gen_ai.evaluation.score.value": rng.random()},
            }) + b"\n"


# --- the session-packed workload of the earlier worker bench (bench_sink feeds on it) -------


@dataclass(frozen=True)
class Workload:
    """``synthetic_events`` packed per session: the record shape before partition batches."""

    packed: list[tuple[bytes, bytes, int]]  # (key, JSON array of one session, events in it)
    single: list[tuple[bytes, bytes, int]]  # (key, JSON object, 1)
    sessions: int
    mean_event_bytes: float


def completed(event: dict[str, Any], prices: Any, tenant_id: str = "default") -> dict[str, Any]:
    """``event`` as ``agentwatch.producer`` completes it: ``tenant_id`` when absent and
    ``cost_usd`` from the price table when a model and tokens say it (``prices``: an
    ``agentwatch.schemas.PriceTable``)."""
    if event.get("tenant_id") is None:
        event["tenant_id"] = tenant_id
    if event.get("cost_usd") is None and isinstance(event.get("model"), str):
        cost = prices.cost_usd(
            event["model"],
            event.get("input_tokens"),
            event.get("output_tokens"),
            event.get("cached_input_tokens"),
        )
        if cost is not None:
            event["cost_usd"] = cost
    return event


def producer_events(n_events: int, sessions: int) -> Iterator[tuple[bytes, bytes]]:
    """(key, event JSON) of ``synthetic_events`` as ``agentwatch.producer`` completes and
    encodes each event."""
    from agentwatch.schemas import default_price_table  # noqa: PLC0415 -- light imports first

    prices = default_price_table()
    for line in synthetic_events(n_events, sessions=sessions):
        event = completed(orjson.loads(line), prices)
        yield f"{event['tenant_id']}/{event['session_id']}".encode(), orjson.dumps(event)


def build_workload(args: Any) -> Workload:
    """``args``: ``events``, ``sessions``, ``linger_events`` (a linger flush every that many
    events), ``max_events`` and ``max_bytes`` (the session packer's bounds)."""
    from agentwatch.producer.packing import Packer  # noqa: PLC0415 -- only this workload

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
            packed.extend((r.key, r.value, r.events) for r in packer.take(all_open=True))
    packed.extend((r.key, r.value, r.events) for r in packer.take(all_open=True))
    return Workload(packed, single, len(keys), nbytes / max(1, len(single)))


def export_revision(ref: str, dest: Path) -> list[Path]:
    """The workspace as it was at git revision ``ref``: every member's ``src`` (the members
    named by that revision's pyproject) and ``tools/``, unpacked under ``dest``. Returns the
    members' ``src`` folders, for a PYTHONPATH that runs that revision's code (its detection
    core is pure Python until ``dest/tools/build_core.py`` compiles it in place).
    Raises ``subprocess.CalledProcessError`` when git cannot give them."""
    root = Path(__file__).resolve().parents[1]
    git = ["git", "-C", str(root)]
    pyproject = subprocess.run([*git, "show", f"{ref}:pyproject.toml"],  # noqa: S603
                               check=True, capture_output=True, text=True).stdout
    members = tomllib.loads(pyproject)["tool"]["uv"]["workspace"]["members"]
    archive = subprocess.run(  # noqa: S603 -- argv built here; REF is the user's
        [*git, "archive", "--format=tar", ref, "tools", *(f"{m}/src" for m in members)],
        check=True, capture_output=True).stdout
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)  # noqa: S603, S607
    return [dest / m / "src" for m in members]


def export_compiled_revision(ref: str, dest: Path) -> list[Path]:
    """:func:`export_revision`, then that revision's ``tools/build_core.py`` compiles its
    modules in place, as ``make setup`` does (pure Python where it cannot)."""
    srcs = export_revision(ref, dest)
    subprocess.run([sys.executable, str(dest / "tools" / "build_core.py")],  # noqa: S603
                   check=False, capture_output=True)
    return srcs
