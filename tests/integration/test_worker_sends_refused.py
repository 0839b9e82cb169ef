"""The broker refuses what the worker sends (a topic's ``max.message.bytes`` made too
small for its records, as a topic created or altered by hand can be): its checkpoint writes
to the session changelog, or its forwards to the agent/tenant stage (an output, as alerts
are). The worker must not commit offsets past state the changelog does not hold, nor past
outputs the broker did not take. It stops with one error naming the topic and the broker's
reason; once the topic takes records again, a worker restarted on a fresh data dir (the
state from the changelog alone) gives exactly replay's alerts.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import (  # type: ignore[import-untyped]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
)
from worker_harness import (
    WorkerProcess,
    assert_exactly,
    create_topic,
    pack,
    produce,
    read_alerts,
    replay_alerts,
    save_alerts,
    topics_for,
)

from agentwatch.cli._fleet import FleetPlan, fleet_events

PARTITIONS = 4
IDLE_AFTER_S = 6.0  # as in test_worker_checkpoints.py
FLUSH_EVERY = 4


def _checkpoints(log: str) -> int:
    """The worker's checkpoints so far, by its last stats line."""
    counts = re.findall(r'"checkpoints_total":(\d+)', log)
    return int(counts[-1]) if counts else 0


def _set_max_message_bytes(admin: AdminClient, topic: str, value: str | None) -> None:
    op = AlterConfigOpType.SET if value is not None else AlterConfigOpType.DELETE
    entry = ConfigEntry("max.message.bytes", value or "", incremental_operation=op)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


@pytest.mark.parametrize("refusing", ["session-state-changelog", "rekeyed"])
def test_a_refused_send_stops_the_worker_before_its_offsets_are_committed(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path, refusing: str
) -> None:
    topics = topics_for(topic_name)
    create_topic(kafka_bootstrap, topics["events"], PARTITIONS)
    events = list(fleet_events(FleetPlan()))
    records = pack(events, flush_every=FLUSH_EVERY)
    expected = replay_alerts(events)
    group = f"{topic_name}-g"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    first = WorkerProcess(kafka_bootstrap, topics, group, tmp_path / "data",
                          tmp_path / "worker-1.log", idle_after_s=IDLE_AFTER_S,
                          stats_interval_s=1).start()
    assert first.wait_for_log("agentwatch worker: assigned", timeout_s=120), \
        first.log()[-3000:]
    producer = threading.Thread(target=produce, args=(kafka_bootstrap, topics["events"],
                                                      records), kwargs={"pace_s": 0.04})
    producer.start()
    # faust: <app id>-<table>-changelog; the worker's rekeyed topic: <group>-rekeyed
    refused_topic = f"{group}-{refusing}"
    try:
        # a few checkpoints go through first: the restart has state to restore
        deadline = time.monotonic() + 60
        while refused_topic not in admin.list_topics(timeout=30).topics \
                or _checkpoints(first.log()) < 3:
            assert time.monotonic() < deadline, first.log()[-3000:]
            time.sleep(0.2)
        _set_max_message_bytes(admin, refused_topic, "64")
        exit_code = first.wait(timeout_s=60)
    finally:
        first.stop()  # (a no-op once it stopped) never leave it running if it did not
    stream_flowing = producer.is_alive()
    log_1 = first.log()
    assert exit_code != 0, log_1[-3000:]
    assert stream_flowing, "the stream ended before the refusal: nothing was tested"
    refused = [line for line in log_1.splitlines() if "checkpoint refused" in line]
    assert refused, log_1[-3000:]
    assert f"to {refused_topic}: " in refused[0]
    assert "MessageSizeTooLarge" in refused[0] or "too large" in refused[0].lower()
    assert "Traceback" not in log_1, log_1[-3000:]  # one line, no crash dump

    _set_max_message_bytes(admin, refused_topic, None)  # back to the broker's default
    second = WorkerProcess(kafka_bootstrap, topics, group, tmp_path / "data-2",
                           tmp_path / "worker-2.log", idle_after_s=IDLE_AFTER_S,
                           stats_interval_s=1).start()
    producer.join()
    try:
        got = read_alerts(kafka_bootstrap, topics["alerts"], distinct=len(expected))
    finally:
        second.stop()
    save_alerts(tmp_path / "alerts.jsonl", got)
    assert "checkpoint refused" not in second.log(), second.log()[-3000:]
    assert_exactly(got, expected)
