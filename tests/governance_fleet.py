"""A fleet that exercises the governance rules of issue 17 (tool_policy, guardrail,
loop_cycle), for the parity tests of replay, the embedded pipeline and the worker
(importable from every test directory, like ``oscillating_fleet``).

Among healthy sessions of two agents, over ten minutes of event time from :data:`T0`:

- calls outside the tool policy in three sessions (two end, one expires);
- a burst of ``brand_safety`` guardrail trips of campaign-optimizer, spread over many
  sessions (agent scope: the worker's rekeyed stage), and one session tripping ``pii``
  three times (session scope);
- a session cycling ``purchase_history -> draft_email`` with new arguments each time
  (loop_cycle), broken after 8 repeats;
- a last event 20 minutes later, so windows empty and idle sessions expire.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Final

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)

#: the rules the fleet is for (YAML); 30 s of disorder covers a worker test's packing
GOVERNANCE_RULES: Final = """\
disorder_s: 30
session_idle_timeout_s: 300
rules:
  tool_policy:
    type: tool_policy
    policies:
      - agents: [retail-*]
        allow: [purchase_history, draft_*]
      - agents: [campaign-*]
        deny: [export_*]
  agent_guardrail:
    type: guardrail
    window_s: 120
    min_trips: 5
  session_guardrail:
    type: guardrail
    scope: session
    window_s: 60
    min_trips: 3
"""


def governance_fleet(seed: int = 17) -> list[dict[str, Any]]:
    """The fleet's events, sorted by event time (see the module doc)."""
    rng = random.Random(seed)
    events: list[tuple[float, int, dict[str, Any]]] = []

    def add(at_s: float, agent: str, session: str, kind: str, **fields: Any) -> None:
        event = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "ts": (T0 + timedelta(seconds=at_s)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "agent_id": agent, "session_id": session, "kind": kind, **fields,
        }
        events.append((at_s, len(events), event))

    def tool(at_s: float, agent: str, session: str, name: str) -> None:
        add(at_s, agent, session, "tool_call", name=name,
            tool_args_hash=f"{rng.getrandbits(64):016x}", duration_ms=120.0)

    tools = {"retail-concierge": ("purchase_history", "draft_email", "draft_sms"),
             "campaign-optimizer": ("get_campaign_stats", "update_bids")}
    for n in range(60):  # healthy sessions, one every 10 s
        agent = ("retail-concierge", "campaign-optimizer")[n % 2]
        session = f"{agent.split('-')[0]}-{n:03d}"
        at = n * 10 + rng.random()
        add(at, agent, session, "session_start")
        for _ in range(4):
            at += 0.5 + rng.random()
            tool(at, agent, session, rng.choice(tools[agent]))
            if agent == "campaign-optimizer":
                burst = 200 <= at < 260
                add(at + 0.2, agent, session, "guardrail", name="brand_safety",
                    status="error" if burst and rng.random() < 0.7 else "ok")
        add(at + 1, agent, session, "session_end")

    # calls outside the policy: an allow-list miss, a denied tool, and one that expires
    tool(100, "retail-concierge", "retail-bad-1", "purchase_history")
    tool(101, "retail-concierge", "retail-bad-1", "issue_refund")
    tool(102, "retail-concierge", "retail-bad-1", "issue_refund")
    add(103, "retail-concierge", "retail-bad-1", "session_end")
    tool(150, "campaign-optimizer", "campaign-bad-2", "export_audience")
    add(151, "campaign-optimizer", "campaign-bad-2", "session_end")
    tool(300, "retail-concierge", "retail-bad-3", "delete_account")  # never ends: expires

    # one session trips the pii guardrail three times in a minute
    for i in range(3):
        add(330 + i * 10, "retail-concierge", "retail-pii-1", "guardrail", name="pii",
            status="error")
    add(380, "retail-concierge", "retail-pii-1", "session_end")

    # a cycle with varying arguments, broken after 8 repeats
    for i in range(16):
        tool(400 + i * 2, "retail-concierge", "retail-cycle-1",
             ("purchase_history", "draft_email")[i % 2])
    tool(433, "retail-concierge", "retail-cycle-1", "draft_sms")
    add(440, "retail-concierge", "retail-cycle-1", "session_end")

    # much later: windows empty, idle sessions expire (sessions on every partition: a
    # worker's watermark is per partition)
    for i in range(16):
        add(1800, "campaign-optimizer", f"campaign-late-{i:02d}", "session_start")
    events.sort(key=lambda item: (item[0], item[1]))
    return [event for _, _, event in events]
