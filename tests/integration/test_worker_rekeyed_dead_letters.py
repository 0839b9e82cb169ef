"""`agentwatch worker` on the real broker: a malformed message on its internal rekeyed
topic is a dead letter with its reason, not a crash, and the alerts stay replay's."""

from __future__ import annotations

from pathlib import Path

import orjson
from worker_harness import (
    WorkerProcess,
    assert_exactly,
    create_topic,
    pack,
    produce,
    read_alerts,
    read_topic,
    replay_alerts,
    topics_for,
)

from agentwatch.cli._fleet import FleetPlan, fleet_events

PARTITIONS = 4
IDLE_AFTER_S = 6.0  # as test_worker_faults: the scenario runs ~100x faster than real time


def test_garbage_on_the_rekeyed_topic_is_dead_lettered_and_alerts_equal_replay(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    topics = topics_for(topic_name)
    create_topic(kafka_bootstrap, topics["events"], PARTITIONS)
    events = list(fleet_events(FleetPlan()))
    expected = replay_alerts(events)
    group = f"{topic_name}-g"
    rekeyed = f"{group}-rekeyed"  # WorkerSettings.rekeyed_topic
    worker = WorkerProcess(kafka_bootstrap, topics, group, tmp_path / "data",
                           tmp_path / "worker.log", idle_after_s=IDLE_AFTER_S).start()
    garbage = [(b'["default","agent-1"]', b"\x00 not json", 0),
               (b"~", b'{"p": 99, "w": 5, "idle": false}', 1),
               (b'["default","agent-1"]', b'{"s":"agent","p":0,"e":[["id",1.5]]}', 2)]
    try:
        assert worker.wait_for_log("assigned partitions", 60), worker.log()[-3000:]
        produce(kafka_bootstrap, rekeyed, garbage)
        produce(kafka_bootstrap, topics["events"], pack(events, flush_every=4), pace_s=0.01)
        dead = [orjson.loads(v) for v in read_topic(
            kafka_bootstrap, topics["dlq"], until=lambda v: len(v) >= len(garbage),
            timeout_s=60, settle_s=0)]
        got = read_alerts(kafka_bootstrap, topics["alerts"], distinct=len(expected))
    finally:
        worker.stop()
    assert "Traceback" not in worker.log(), worker.log()[-3000:]
    by_partition = {d["partition"]: d for d in dead}
    assert sorted(by_partition) == [0, 1, 2]
    assert all(d["topic"] == rekeyed and d["offset"] >= 0 for d in dead)
    assert by_partition[0]["reason"].startswith("malformed JSON")
    assert 'field "p" must be an input partition, an integer 0..3, got 99' in (
        by_partition[1]["reason"])
    assert "event 0: 2 fields, not 10 or 13" in by_partition[2]["reason"]
    assert by_partition[2]["raw"] == garbage[2][1].decode()
    assert_exactly(got, expected)
