"""`agentwatch worker` on the real broker gives replay's alerts for the budget, latency
and score rules: agent- and tenant-scoped, so computed by the rekeyed stage from what the
session stage forwards (cost, duration_ms, a score's attributes)."""

from __future__ import annotations

from pathlib import Path

import orjson
from budget_latency_score_fleet import RULES, budget_latency_score_fleet
from worker_harness import (
    assert_exactly,
    create_topic,
    pack,
    produce,
    replay_alerts,
    topics_for,
    worker_alerts,
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
    got = worker_alerts(kafka_bootstrap, topics, f"{topic_name}-g", tmp_path,
                        lambda v: len(v) >= len(expected), rules=rules, timeout_s=120)
    assert_exactly(got, expected)
    assert len(got) == len(expected)
