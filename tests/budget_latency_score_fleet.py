"""A fleet that exercises the budget, latency and score rules (issue 17, part B) for the
parity tests of the embedded pipeline and the worker against replay (importable from every
test directory, like ``oscillating_fleet``).

20 minutes of event time across midnight UTC, three agents of one tenant, ten events a
second: the tenant's daily budget crosses 50 % and 80 % before midnight, rolls over (both
resolve), and its forecast fires early in the next day; agent-1's llm calls get slow for
five minutes (p95 latency fires, then resolves); agent-2's helpfulness scores drop for six
minutes (the score rule fires, then resolves)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Final

T0: Final = datetime(2026, 11, 20, 23, 50, tzinfo=UTC)
TENANT: Final = "acme"

#: the rules the fleet is made for (rules_from_mapping form)
RULES: Final[dict[str, Any]] = {
    "disorder_s": 20,
    "rules": {
        "loop_steps": {"enabled": False},
        "daily_budget": {"type": "budget", "amount_usd": 8, "period": "day",
                         "forecast_window_s": 300},
        "agent_budget": {"type": "budget", "scope": "agent", "amount_usd": 3,
                         "period": "day", "timezone": "Europe/Paris", "fractions": [1.0],
                         "forecast_window_s": None},
        "llm_p95": {"type": "latency", "window_s": 60, "threshold_ms": 5000,
                    "min_samples": 20},
        "helpfulness": {"type": "score", "evaluation": "helpfulness", "threshold": 0.5,
                        "window_s": 120, "min_samples": 10},
    },
}


def budget_latency_score_fleet(seed: int = 17) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for i in range(20 * 60 * 10):
        t_s = i / 10
        agent = f"agent-{i % 3}"
        session = f"{agent}-s{(i // 300) % 5}"
        ts = (T0 + timedelta(seconds=t_s)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        base = {"event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "ts": ts,
                "tenant_id": TENANT, "agent_id": agent, "session_id": session}
        if i % 30 == 2 and agent == "agent-2":  # a score every 3 s
            low = 480 <= t_s < 840
            value = rng.uniform(0.0, 0.45) if low else rng.uniform(0.5, 1.0)
            events.append({**base, "kind": "score", "name": "helpfulness",
                           "attributes": {"gen_ai.evaluation.score.value": round(value, 3),
                                          "agentwatch.evaluation.source": "llm_judge"}})
        elif rng.random() < 0.4:
            slow = agent == "agent-1" and 300 <= t_s < 600 and rng.random() < 0.3
            duration = rng.uniform(5500, 9000) if slow else rng.uniform(200, 2500)
            events.append({**base, "kind": "llm_call", "model": "gpt-4o-mini",
                           "cost_usd": round(rng.uniform(0.001, 0.009), 6),
                           "duration_ms": round(duration, 1)})
        else:
            events.append({**base, "kind": "tool_call", "name": "search",
                           "tool_args_hash": f"{rng.getrandbits(64):016x}",
                           "duration_ms": round(rng.uniform(20, 300), 1)})
    return events
