"""Evaluation scores end to end on the real broker: ``aw.score(...)`` -> Kafka -> the
worker's score rule -> the alerts topic, and -> the sink -> ClickHouse's scores views."""

from __future__ import annotations

from pathlib import Path

import orjson
from sink_harness import SinkProcess, wait_caught_up
from worker_harness import WorkerProcess, create_topic, read_topic, topics_for

from agentwatch.producer import Agentwatch
from agentwatch.sinks import ChdbBackend

PARTITIONS = 4


def test_scores_sent_by_the_producer_fire_the_score_rule_and_land_in_the_scores_views(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    topics = topics_for(topic_name)
    create_topic(kafka_bootstrap, topics["events"], PARTITIONS)
    create_topic(kafka_bootstrap, topics["alerts"], 1)
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  quality:\n    type: score\n    evaluation: helpfulness\n"
                     "    threshold: 0.5\n    min_samples: 3\n")
    with Agentwatch(bootstrap_servers=kafka_bootstrap, topic=topics["events"],
                    agent_id="concierge", tenant_id="acme", linger_ms=20) as aw:
        with aw.session("conv-1"):
            with aw.llm_call(model="gpt-4o-mini") as span:
                span.input_tokens, span.output_tokens = 1000, 100
            for value in (0.4, 0.2, 0.3):
                aw.score("helpfulness", value, label="poor", source="llm_judge",
                         response_id="resp-1")
            aw.score("tone", label="friendly", source="human")
        assert aw.flush(timeout_s=60)
        assert (aw.stats.sent, aw.stats.invalid) == (7, 0)  # start, llm, 4 scores, end

    worker = WorkerProcess(kafka_bootstrap, topics, f"{topic_name}-g", tmp_path / "data",
                           tmp_path / "worker.log", rules=rules).start()
    try:
        alerts = [orjson.loads(v) for v in read_topic(
            kafka_bootstrap, topics["alerts"], until=lambda v: len(v) >= 1, timeout_s=180)]
    finally:
        worker.stop()
    assert "Traceback" not in worker.log(), worker.log()[-3000:]
    assert [(a["rule"], a["type"], a["state"], a["key"]) for a in alerts] == [
        ("quality", "score", "firing", "concierge")]
    assert alerts[0]["value"] == 0.3
    assert "the mean `helpfulness` score of 3 was 0.3" in alerts[0]["reason"]

    group = f"{topic_name}-sink"
    sink = SinkProcess(kafka_bootstrap, events_topic=topics["events"],
                       alerts_topic=topics["alerts"], group=group, chdb_path=tmp_path / "ch",
                       log_path=tmp_path / "sink.log").start()
    try:
        wait_caught_up(kafka_bootstrap, group, {topics["events"]: PARTITIONS,
                                                topics["alerts"]: 1}, timeout_s=180, sink=sink)
    finally:
        assert sink.stop() == 0, sink.log()[-3000:]
    with ChdbBackend(tmp_path / "ch") as db:
        scores = db.query("SELECT evaluation, value, label, source, response_id "
                          "FROM agentwatch.scores ORDER BY evaluation, value").rows
        per_session = db.query(
            "SELECT session_id, evaluation, scores, round(mean_value, 6), llm_calls, "
            "cost_usd > 0 FROM agentwatch.scores_per_session ORDER BY evaluation").rows
        stored = db.query("SELECT rule, type, state FROM agentwatch.alerts").rows
    assert scores == [
        ("helpfulness", 0.2, "poor", "llm_judge", "resp-1"),
        ("helpfulness", 0.3, "poor", "llm_judge", "resp-1"),
        ("helpfulness", 0.4, "poor", "llm_judge", "resp-1"),
        ("tone", None, "friendly", "human", None),
    ]
    assert per_session == [("conv-1", "helpfulness", 3, 0.3, 1, 1),
                           ("conv-1", "tone", 1, None, 1, 1)]
    assert stored == [("quality", "score", "firing")]
