"""The demo fleet: three agents of the design, simulated in event time.

Pure and deterministic (seeded): :func:`fleet_events` yields event dicts in
event-time order. Among healthy traffic it injects the three failures agentwatch
is for, each with a known start so the demo (and its test) can check that the
right alert fires:

- a runaway loop: the supply-chain router calls ``reroute_shipment`` with the
  same arguments every 0.5 s for two minutes (loop_repeat, then loop_steps);
- a cost spike: one campaign-optimizer session sends huge prompts to
  claude-sonnet-4-5 (session_cost);
- an error burst: the concierge's ``purchase_history`` tool times out for two
  minutes (agent_error_rate), then recovers;
- a tool-policy violation: one campaign-optimizer session calls
  ``export_customer_list``, which :data:`FLEET_TOOL_POLICY` does not allow it
  (tool_policy; ``agentwatch demo`` adds that policy to its rules).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

__all__ = ["FLEET_AGENTS", "FLEET_TOOL_POLICY", "FleetPlan", "fleet_events"]

FLEET_AGENTS: Final = ("retail-concierge", "campaign-optimizer", "supply-chain-router")
#: the tools each agent of the fleet may call: a ``tool_policy`` rule (rules-file form)
FLEET_TOOL_POLICY: Final[dict[str, Any]] = {
    "type": "tool_policy",
    "policies": [
        {"agents": ["retail-*"], "allow": ["purchase_history", "draft_email"]},
        {"agents": ["campaign-*"], "allow": ["get_campaign_stats", "update_bids"]},
        {"agents": ["supply-*"], "allow": ["get_shipments", "reroute_shipment"]},
    ],
}


@dataclass(frozen=True, slots=True)
class FleetPlan:
    """When things happen, in seconds of event time from the start."""

    duration_s: int = 480
    loop_start_s: int = 60
    loop_len_s: int = 120
    spike_start_s: int = 150
    burst_start_s: int = 90
    burst_len_s: int = 120
    violation_s: int = 240
    tenant_id: str = "acme-retail"
    seed: int = 42


def fleet_events(plan: FleetPlan, start: datetime | None = None) -> Iterator[dict[str, Any]]:
    """All events of the simulated fleet, sorted by event time."""
    rng = random.Random(plan.seed)  # noqa: S311 -- a seeded simulation, not cryptography
    t0 = start or datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    events: list[tuple[float, int, dict[str, Any]]] = []
    seq = 0

    def add(at_s: float, agent: str, session: str, kind: str, **fields: Any) -> None:
        nonlocal seq
        seq += 1
        event = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "ts": (t0 + timedelta(seconds=at_s)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "tenant_id": plan.tenant_id,
            "agent_id": agent,
            "session_id": session,
            "kind": kind,
            **fields,
        }
        events.append((at_s, seq, event))

    # healthy sessions of every agent, all along
    for n in range(int(plan.duration_s / 4)):
        begin = n * 4 + rng.random() * 4
        agent = FLEET_AGENTS[n % 3]
        session = f"{agent.split('-')[0]}-{n:04d}"
        _healthy_session(add, rng, plan, agent, session, begin)

    # the runaway loop: same tool, same arguments, every 0.5 s
    loop = "supply-loop-0001"
    add(plan.loop_start_s, FLEET_AGENTS[2], loop, "session_start")
    n_calls = int(plan.loop_len_s / 0.5)
    for i in range(n_calls):
        at = plan.loop_start_s + 0.25 + i * 0.5
        add(at, FLEET_AGENTS[2], loop, "tool_call", name="reroute_shipment",
            tool_args_hash="9f2c4e1d0b7a6c35", duration_ms=180.0, status="ok")
        if i % 10 == 0:
            add(at + 0.1, FLEET_AGENTS[2], loop, "llm_call", model="gpt-4o-mini",
                input_tokens=1800, output_tokens=90, duration_ms=420.0)
    add(plan.loop_start_s + plan.loop_len_s + 1, FLEET_AGENTS[2], loop, "session_end")

    # the cost spike: huge prompts to an expensive model
    spike = "campaign-spike-0001"
    add(plan.spike_start_s, FLEET_AGENTS[1], spike, "session_start")
    for i in range(6):
        add(plan.spike_start_s + 2 + i * 6, FLEET_AGENTS[1], spike, "llm_call",
            model="claude-sonnet-4-5", provider="anthropic", name="retune_bids",
            input_tokens=110_000, output_tokens=4_000, duration_ms=9_500.0)
    add(plan.spike_start_s + 40, FLEET_AGENTS[1], spike, "session_end")

    # the error burst: purchase_history times out for a while
    for i in range(int(plan.burst_len_s / 1.5)):
        at = plan.burst_start_s + i * 1.5
        session = f"retail-burst-{i // 4:04d}"
        failed = rng.random() < 0.7
        add(at, FLEET_AGENTS[0], session, "tool_call", name="purchase_history",
            tool_args_hash=f"{rng.getrandbits(64):016x}", duration_ms=30_000.0 if failed else 95.0,
            status="error" if failed else "ok", error_type="TimeoutError" if failed else None)

    # the tool-policy violation: a campaign session exports the customer list
    exfil = "campaign-export-0001"
    add(plan.violation_s, FLEET_AGENTS[1], exfil, "session_start")
    for i, tool in enumerate(("get_campaign_stats", "export_customer_list", "update_bids")):
        add(plan.violation_s + 1 + i * 2, FLEET_AGENTS[1], exfil, "tool_call", name=tool,
            tool_args_hash=f"{rng.getrandbits(64):016x}", duration_ms=210.0, status="ok")
    add(plan.violation_s + 8, FLEET_AGENTS[1], exfil, "session_end")

    events.sort(key=lambda item: (item[0], item[1]))
    for _, _, event in events:
        yield {k: v for k, v in event.items() if v is not None}


def _healthy_session(add: Any, rng: random.Random, plan: FleetPlan, agent: str, session: str,
                     begin: float) -> None:
    add(begin, agent, session, "session_start")
    at = begin
    steps = {
        "retail-concierge": ("purchase_history", "draft_email"),
        "campaign-optimizer": ("get_campaign_stats", "update_bids"),
        "supply-chain-router": ("get_shipments", "reroute_shipment"),
    }[agent]
    model = {"retail-concierge": "gpt-4o-mini", "campaign-optimizer": "claude-haiku-4-5",
             "supply-chain-router": "gpt-4.1-mini"}[agent]
    for tool in steps:
        at += 0.3 + rng.random()
        add(at, agent, session, "llm_call", model=model, name="plan",
            input_tokens=rng.randint(600, 2500), output_tokens=rng.randint(40, 300),
            duration_ms=round(300 + rng.random() * 900, 1))
        at += 0.2 + rng.random()
        in_burst = plan.burst_start_s <= at < plan.burst_start_s + plan.burst_len_s
        failed = rng.random() < (0.5 if in_burst and tool == "purchase_history" else 0.02)
        add(at, agent, session, "tool_call", name=tool,
            tool_args_hash=f"{rng.getrandbits(64):016x}",
            duration_ms=round(40 + rng.random() * 200, 1),
            status="error" if failed else "ok", error_type="TimeoutError" if failed else None)
    add(at + 0.5, agent, session, "session_end")
