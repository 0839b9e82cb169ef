"""`agentwatch worker` on the real broker gives replay's alerts for the budget, latency
and score rules: agent- and tenant-scoped, so computed by the rekeyed stage from what the
session stage forwards (cost, duration_ms, a score's attributes)."""

from __future__ import annotations

from pathlib import Path

import orjson
from budget_latency_score_fleet import RULES, budget_latency_score_fleet
from worker_harness import (
    WorkerProcess,
    assert_exactly,
    create_topic,
    pack,
    produce,
    read_topic,
    replay_alerts,
    topics_for,
)

from agentwatch.processors.core import load_rules

PARTITIONS = 4


def test_budget_latency_and_score_alerts_of_the_worker_are_replays(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_bytes(orjson.dumps(RULES))  # JSON is YAML
    config = load_rules(rules)
    events = budget_latency_score_fleet()
    expected = replay_alerts(events, config)
    assert {a["rule"] for a in expected} == {
        "daily_budget", "agent_budget", "llm_p95", "helpfulness"}
    topics = topics_for(topic_name)
    create_topic(kafka_bootstrap, topics["events"], PARTITIONS)
    produce(kafka_bootstrap, topics["events"], pack(events))
    worker = WorkerProcess(kafka_bootstrap, topics, f"{topic_name}-g", tmp_path / "data",
                           tmp_path / "worker.log", rules=rules).start()
    try:
        got = [orjson.loads(v) for v in read_topic(
            kafka_bootstrap, topics["alerts"], until=lambda v: len(v) >= len(expected),
            timeout_s=120)]
    finally:
        worker.stop()
    assert "Traceback" not in worker.log(), worker.log()[-3000:]
    assert_exactly(got, expected)
    assert len(got) == len(expected)
