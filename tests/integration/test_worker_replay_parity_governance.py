"""`agentwatch worker` on the real broker gives replay's alerts on the governance fleet:
tool_policy and session guardrails in the session stage, agent guardrails in the rekeyed
stage (trips of many sessions, over every partition), loop_cycle."""

from __future__ import annotations

from pathlib import Path

from governance_fleet import GOVERNANCE_RULES, governance_fleet
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
from agentwatch.schemas import partition_for, session_key

PARTITIONS = 4


def test_the_governance_fleet_gives_the_same_alerts_as_replay(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(GOVERNANCE_RULES)
    events = governance_fleet()
    late = {partition_for(session_key("default", e["session_id"]), PARTITIONS)
            for e in events if e["session_id"].startswith("campaign-late-")}
    assert late == set(range(PARTITIONS))  # every partition's watermark gets past the end
    expected = replay_alerts(events, load_rules(rules))
    assert {(a["rule"], a["state"]) for a in expected} >= {
        (rule, state) for rule in ("tool_policy", "agent_guardrail", "session_guardrail",
                                   "loop_cycle") for state in ("firing", "resolved")}
    topics = topics_for(topic_name)
    create_topic(kafka_bootstrap, topics["events"], PARTITIONS)
    produce(kafka_bootstrap, topics["events"], pack(events))
    got = worker_alerts(kafka_bootstrap, topics, f"{topic_name}-g", tmp_path,
                        lambda values: len(values) >= len(expected), rules=rules)
    assert_exactly(got, expected)
