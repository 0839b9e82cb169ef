"""`agentwatch worker` killed at the two crash points of a checkpoint (DESIGN.md, "Worker
state: checkpoints"): a restarted worker gives exactly replay's alerts, none lost, none new.

The first worker dies by its test-only crash hook (``AGENTWATCH_TEST_CRASH_AT``) while a
paced producer keeps the stream flowing; the second starts on a fresh data dir, so its state
can only come from the changelog topics and the committed offsets.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

from worker_harness import (
    CRASH_ENV,
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
#: as in test_worker_faults.py: the fleet goes ~20x faster than real time, in records of
#: the producer's linger interval (4 events, ~2 s of event time)
IDLE_AFTER_S = 6.0
FLUSH_EVERY = 4
#: the crash comes at the tenth checkpoint with changelog writes, ~3 s into a ~25 s stream:
#: checkpoints take the 4 partitions in turn, so it is partition 1's in the third round,
#: partition 0 saved in this round and partitions 2 and 3 in the one before
CRASH_CHECKPOINT = 10


def _crash_then_recover(kafka_bootstrap: str, topic_name: str, tmp_path: Path,
                        crash_at: str) -> None:
    topics = topics_for(topic_name)
    create_topic(kafka_bootstrap, topics["events"], PARTITIONS)
    events = list(fleet_events(FleetPlan()))
    records = pack(events, flush_every=FLUSH_EVERY)
    expected = replay_alerts(events)
    group = f"{topic_name}-g"
    first = WorkerProcess(kafka_bootstrap, topics, group, tmp_path / "data",
                          tmp_path / "worker-1.log", idle_after_s=IDLE_AFTER_S,
                          crash_at=crash_at, stats_interval_s=1).start()
    # in the group before the stream starts: the crash then comes early in the stream, not
    # after it, whatever the worker's start-up time on a loaded machine
    assert first.wait_for_log("agentwatch worker: assigned", timeout_s=120), \
        first.log()[-3000:]
    producer = threading.Thread(target=produce, args=(kafka_bootstrap, topics["events"],
                                                      records), kwargs={"pace_s": 0.04})
    producer.start()
    try:
        exit_code = first.wait(timeout_s=120)
    finally:
        first.stop()  # (a no-op once it died) never leave it running if it did not
    stream_flowing = producer.is_alive()
    log_1 = first.log()
    assert f"{CRASH_ENV}={crash_at}: killing myself" in log_1, log_1[-3000:]
    assert exit_code == -signal.SIGKILL
    assert stream_flowing, "the stream ended before the crash: nothing was tested"
    time.sleep(1)
    # a fresh data dir (a new machine): the state can only come from the changelog topics
    second = WorkerProcess(kafka_bootstrap, topics, group, tmp_path / "data-2",
                           tmp_path / "worker-2.log", idle_after_s=IDLE_AFTER_S,
                           stats_interval_s=1).start()
    producer.join()
    try:
        got = read_alerts(kafka_bootstrap, topics["alerts"], distinct=len(expected))
    finally:
        second.stop()
    save_alerts(tmp_path / "alerts.jsonl", got)
    assert "Traceback" not in second.log(), second.log()[-3000:]
    assert "killing myself" not in second.log()
    assert_exactly(got, expected)


def test_a_worker_killed_during_a_checkpoint_write_recovers_exactly(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    """SIGKILL with half of the checkpoint's session-state writes handed to the producer:
    some keys' new state may be on the changelog, the others' not, no offset committed."""
    _crash_then_recover(kafka_bootstrap, topic_name, tmp_path, f"write:{CRASH_CHECKPOINT}")


def test_a_worker_killed_between_the_state_acks_and_the_offset_commit_recovers_exactly(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    """SIGKILL once every changelog write of the checkpoint is acknowledged, before any
    record is acked or offset committed: the restart re-reads records whose effects the
    saved state already holds (each key's last applied offset must skip them)."""
    _crash_then_recover(kafka_bootstrap, topic_name, tmp_path, f"commit:{CRASH_CHECKPOINT}")


def test_a_worker_killed_between_two_partitions_checkpoints_recovers_exactly(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    """SIGKILL right after one partition's checkpoint committed its offsets, before the
    next partition's begins: each partition restores its own checkpoint, taken at a
    different point of the stream, and reads again from its own committed offset."""
    _crash_then_recover(kafka_bootstrap, topic_name, tmp_path, f"after:{CRASH_CHECKPOINT}")
