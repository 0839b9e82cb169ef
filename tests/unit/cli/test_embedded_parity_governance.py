"""The embedded pipeline reports what replay reports on the governance fleet (tool_policy,
guardrail at agent and session scope, loop_cycle)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import yaml
from governance_fleet import GOVERNANCE_RULES, governance_fleet

from agentwatch.cli.embedded import EmbeddedPipeline
from agentwatch.processors.core import Engine, rules_from_mapping
from agentwatch.processors.replay import replay_lines
from agentwatch.producer import InProcessLog
from agentwatch.schemas import Alert
from agentwatch.sinks import ChdbBackend, ClickHouseSink, SchemaConfig, migrate

TOPIC = "agentwatch.events"


def _records(events: list[dict[str, Any]], every: int = 8) -> list[tuple[bytes, bytes]]:
    """Per-session arrays of each run of ``every`` events, as a producer packs them."""
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


def test_the_governance_fleet_gives_replays_alerts(tmp_path: Path) -> None:
    config = rules_from_mapping(yaml.safe_load(GOVERNANCE_RULES))
    records = _records(governance_fleet())
    in_log_order = [e for _, value in records for e in orjson.loads(value)]
    replayed: list[Alert] = []
    replay_lines((orjson.dumps(e) for e in in_log_order), Engine(config), replayed.append)
    expected = _dump(replayed)
    assert {(a["rule"], a["state"]) for a in expected} >= {
        (rule, state) for rule in ("tool_policy", "agent_guardrail", "session_guardrail",
                                   "loop_cycle") for state in ("firing", "resolved")}

    log = InProcessLog()
    log.append(TOPIC, records)
    with ChdbBackend(tmp_path / "chdb") as backend:
        migrate(backend, SchemaConfig(ttl_days=None))
        pipeline = EmbeddedPipeline(log, Engine(config), ClickHouseSink(backend), topic=TOPIC)
        assert pipeline.process_available() == len(records)
        pipeline.stop()
    assert _dump(pipeline.stats.alerts) == expected
