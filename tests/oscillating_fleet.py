"""A fleet whose agents' error share hovers around a threshold (the hysteresis tests of
the embedded pipeline and the worker; importable from every test directory: pytest puts
``tests/`` on the path for its conftest)."""

from __future__ import annotations

import math
import uuid
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def oscillating_error_share() -> list[dict[str, Any]]:
    """Two agents over 8 sessions for ten minutes of event time from :data:`T0`, 4 tool
    calls a second each; every call's status keeps its agent's 300 s error share on
    25 % +- 0.8 % (a 40 s sine)."""
    history: dict[str, deque[tuple[int, bool]]] = {"agent-0": deque(), "agent-1": deque()}
    events = []
    for i in range(600 * 4 * 2):
        t_s = i / 8
        agent = f"agent-{i % 2}"
        calls = history[agent]  # the agent's calls in its 300 s window, oldest first
        while calls and calls[0][0] <= int(t_s) - 300:
            calls.popleft()
        errors, n = sum(err for _, err in calls), len(calls) + 1
        target = 0.25 + 0.008 * math.sin(2 * math.pi * t_s / 40 + i % 2)
        error = abs((errors + 1) / n - target) < abs(errors / n - target)
        calls.append((int(t_s), error))
        events.append({
            "event_id": str(uuid.UUID(int=i + 1)),
            "ts": (T0 + timedelta(seconds=t_s)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "agent_id": agent, "session_id": f"s{(i // 2) % 4 * 2 + i % 2}",
            "kind": "tool_call", "status": "error" if error else "ok",
        })
    return events
