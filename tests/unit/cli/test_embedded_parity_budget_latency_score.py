"""The embedded pipeline reports what replay reports on a fleet that exercises the budget
(fractions, forecast, rollover at midnight), latency and score rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from budget_latency_score_fleet import RULES, budget_latency_score_fleet

from agentwatch.cli.embedded import EmbeddedPipeline
from agentwatch.processors.core import Engine, rules_from_mapping
from agentwatch.processors.replay import replay_lines
from agentwatch.producer import InProcessLog
from agentwatch.schemas import Alert
from agentwatch.sinks import ChdbBackend, ClickHouseSink, SchemaConfig, migrate

TOPIC = "agentwatch.events"


def _records(events: list[dict[str, Any]], every: int = 10) -> list[tuple[bytes, bytes]]:
    """Per-session arrays of each run of ``every`` events (1 s of event time)."""
    records = []
    for start in range(0, len(events), every):
        sessions: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for event in events[start:start + every]:
            sessions.setdefault((event["tenant_id"], event["session_id"]), []).append(event)
        records += [(f"{t}/{s}".encode(), orjson.dumps(group))
                    for (t, s), group in sessions.items()]
    return records


def test_budget_latency_and_score_alerts_are_replays(tmp_path: Path) -> None:
    config = rules_from_mapping(RULES)
    records = _records(budget_latency_score_fleet())
    in_log_order = [e for _, value in records for e in orjson.loads(value)]
    replayed: list[Alert] = []
    replay_lines((orjson.dumps(e) for e in in_log_order), Engine(config), replayed.append)
    expected = [a.model_dump(mode="json") for a in replayed]
    changes = {(a["rule"], a["state"]) for a in expected}
    assert changes >= {("daily_budget", "firing"), ("daily_budget", "resolved"),
                       ("agent_budget", "firing"), ("llm_p95", "firing"),
                       ("llm_p95", "resolved"), ("helpfulness", "firing"),
                       ("helpfulness", "resolved")}
    assert any("runs out at" in a["reason"] for a in expected)

    log = InProcessLog()
    log.append(TOPIC, records)
    with ChdbBackend(tmp_path / "chdb") as backend:
        migrate(backend, SchemaConfig(ttl_days=None))
        pipeline = EmbeddedPipeline(log, Engine(config), ClickHouseSink(backend), topic=TOPIC)
        assert pipeline.process_available() == len(records)
        pipeline.stop()
    assert [a.model_dump(mode="json") for a in pipeline.stats.alerts] == expected
