"""The embedded pipeline (``agentwatch demo``) reports what ``agentwatch replay`` reports for
the same events in the same order: both are the engine behind an event-time driver."""

from __future__ import annotations

import math
import uuid
from collections import deque
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from agentwatch.cli._embedded import EmbeddedPipeline
from agentwatch.processors.core import Engine, RulesConfig, rules_from_mapping
from agentwatch.processors.replay import replay_lines
from agentwatch.producer import InProcessLog
from agentwatch.schemas import Alert
from agentwatch.sinks import ChdbBackend, ClickHouseSink, SchemaConfig, migrate

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
TOPIC = "agentwatch.events"


def _oscillating() -> list[dict[str, Any]]:
    """Two agents over 8 sessions for ten minutes, 4 tool calls a second each; every call's
    status keeps its agent's 300 s error share on 25 % +- 0.8 % (a 40 s sine)."""
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


def _records(events: list[dict[str, Any]], every: int = 8) -> list[tuple[bytes, bytes]]:
    """Per-session arrays of each run of ``every`` events (1 s), as a producer packs what
    it got in one linger interval: an agent's events arrive up to 1 s out of order."""
    records = []
    for start in range(0, len(events), every):
        sessions: dict[str, list[dict[str, Any]]] = {}
        for event in events[start:start + every]:
            sessions.setdefault(event["session_id"], []).append(event)
        records += [(f"default/{s}".encode(), orjson.dumps(group))
                    for s, group in sessions.items()]
    return records


def _dump(alerts: list[Alert]) -> list[dict[str, Any]]:
    return [a.model_dump(mode="json") for a in alerts]


@pytest.mark.parametrize("resolve_after_s", [None, 5])
def test_an_oscillating_error_share_gives_replays_alerts(
    tmp_path: Path, resolve_after_s: int | None
) -> None:
    config: RulesConfig = rules_from_mapping({"rules": {
        "loop_steps": {"enabled": False},
        "agent_error_rate": {"min_events": 600, "resolve_after_s": resolve_after_s},
    }})
    records = _records(_oscillating())
    in_log_order = [e for _, value in records for e in orjson.loads(value)]
    replayed: list[Alert] = []
    replay_lines((orjson.dumps(e) for e in in_log_order), Engine(config), replayed.append)
    expected = _dump(replayed)
    firings = sum(a["state"] == "firing" for a in expected)
    if resolve_after_s is None:
        assert firings == 2  # one per agent: no flapping
    else:
        assert firings > 5
        assert any("for 5 s" in a["reason"] for a in expected)

    log = InProcessLog()
    log.append(TOPIC, records)
    with ChdbBackend(tmp_path / "chdb") as backend:
        migrate(backend, SchemaConfig(ttl_days=None))
        pipeline = EmbeddedPipeline(log, Engine(config), ClickHouseSink(backend), topic=TOPIC)
        assert pipeline.process_available() == len(records)
        pipeline.stop()
    assert _dump(pipeline.stats.alerts) == expected
