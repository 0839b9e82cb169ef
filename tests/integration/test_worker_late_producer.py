"""A producer whose records come late (it starts, or stalls, while the broker answers the
worker): the worker has announced every input partition idle by then, and the records
arrive together, read partition by partition. Its agent-scoped alerts must still be
replay's: an idle mark releases no event time beyond what some input partition has
announced (README, "Agent- and tenant-scoped windows, exactly"). Seen in the fault
matrix, where the agent process delivered its first records 3-7 s after their time."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from worker_harness import (
    WorkerProcess,
    assert_exactly,
    create_topic,
    pack_partition_batches,
    produce,
    read_alerts,
    replay_alerts,
    topics_for,
)

from agentwatch.cli._fleet import FleetPlan, fleet_events

PARTITIONS = 4


def test_records_delivered_after_every_partition_went_idle_give_replays_alerts(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    topics = topics_for(topic_name)
    create_topic(kafka_bootstrap, topics["events"], PARTITIONS)
    worker = WorkerProcess(kafka_bootstrap, topics, f"{topic_name}-g", tmp_path / "data",
                           tmp_path / "worker.log", idle_after_s=1.0, stats_interval_s=1.0)
    # small session-stage batches: the records of one fetch are forwarded (and marked)
    # a few at a time, partition 0's before the others'
    worker.env["AGENTWATCH_BATCH_MAX_RECORDS"] = "4"
    worker.start()
    try:
        assert worker.wait_for_log("agentwatch worker: assigned", 90), worker.log()[-3000:]
        time.sleep(4)  # every partition quiet since the assignment: announced idle
        plan = FleetPlan()
        # stamped by the clock: the fleet's 480 s end now, before its records come
        start = datetime.now(UTC) - timedelta(seconds=plan.duration_s + 1)
        events = list(fleet_events(plan, start=start))
        expected = replay_alerts(events)
        assert any(a["scope"] == "agent" for a in expected)  # the agent stage has work
        records = sorted(pack_partition_batches(events, PARTITIONS, flush_every=400),
                         key=lambda r: r[2])  # each partition's records in order, 0 first
        produce(kafka_bootstrap, topics["events"], records)
        got = read_alerts(kafka_bootstrap, topics["alerts"], distinct=len(expected), timeout_s=120)
        time.sleep(2)  # a stats line after the last alert
    finally:
        worker.stop()
    log = worker.log()
    assert "Traceback" not in log, log[-3000:]
    assert_exactly(got, expected)
    late = re.findall(r'"late_events":(\d+)', log)
    assert late, log[-3000:]
    assert int(late[-1]) == 0, late[-3:]
