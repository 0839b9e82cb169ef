"""The embedded pipeline (``agentwatch demo``) reports what ``agentwatch replay`` reports for
the same events in the same order: both are the engine behind an event-time driver."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from oscillating_fleet import oscillating_error_share

from agentwatch.cli.embedded import EmbeddedPipeline
from agentwatch.processors.core import Engine, RulesConfig, rules_from_mapping
from agentwatch.processors.replay import replay_lines
from agentwatch.producer import InProcessLog
from agentwatch.schemas import Alert
from agentwatch.sinks import ChdbBackend, ClickHouseSink, SchemaConfig, migrate

TOPIC = "agentwatch.events"


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
    records = _records(oscillating_error_share())
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
