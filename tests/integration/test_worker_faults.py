"""`agentwatch worker` under real conditions: bad input, SIGKILL, two workers in a group."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from worker_harness import (
    WorkerProcess,
    assert_exactly,
    assert_stages_ran,
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
#: scenarios here are produced ~100x faster than real time (see WorkerSettings.idle_after_s)
IDLE_AFTER_S = 6.0
#: the producer's linger, in events of the fleet (~2 s of event time): a real producer
#: flushes every 50-100 ms, so sessions sharing a partition stay within disorder_s of each
#: other; 40 events (~18 s) would put some of them out of order beyond it
FLUSH_EVERY = 4


def _good(i: int, session: str = "s-dlq") -> dict[str, Any]:
    return {"event_id": f"00000000-0000-4000-8000-{i:012d}", "ts": f"2026-11-20T09:00:{i:02d}Z",
            "agent_id": "a", "session_id": session, "kind": "tool_call", "name": "lookup",
            "tool_args_hash": "same"}


def test_bad_input_lands_in_the_dlq_with_reasons_and_good_events_still_count(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    topics = topics_for(topic_name)
    create_topic(kafka_bootstrap, topics["events"], PARTITIONS)
    wrong_type = {**_good(90), "input_tokens": "ten"}
    future_version = {**_good(91), "schema_version": 2}
    records: list[tuple[bytes | None, bytes]] = [
        (b"default/bad-1", b'{"event_id": "oops", "ts": '),  # malformed JSON
        (b"default/bad-2", orjson.dumps(wrong_type)),
        (b"default/bad-3", orjson.dumps(future_version)),
        # a packed record: two bad items among five good calls (a runaway loop)
        (b"default/s-dlq", orjson.dumps(
            [_good(1), _good(2), {"kind": "tool_call"}, _good(3), 42, _good(4), _good(5)])),
        (None, b"[]"),  # an empty array, no key
    ]
    produce(kafka_bootstrap, topics["events"], records)
    worker = WorkerProcess(kafka_bootstrap, topics, f"{topic_name}-g", tmp_path / "data",
                           tmp_path / "worker.log").start()
    try:
        dead = [orjson.loads(v) for v in read_topic(
            kafka_bootstrap, topics["dlq"], until=lambda v: len(v) >= 6, timeout_s=60)]
        alerts = [orjson.loads(v) for v in read_topic(
            kafka_bootstrap, topics["alerts"], until=lambda v: len(v) >= 1, timeout_s=30)]
    finally:
        worker.stop()
    assert len(dead) == 6
    by_key = Counter(d["key"] for d in dead)
    assert by_key == {"default/bad-1": 1, "default/bad-2": 1, "default/bad-3": 1,
                      "default/s-dlq": 2, None: 1}
    reasons = {(d["key"], d["index"]): d["reason"] for d in dead}
    assert reasons[("default/bad-1", None)].startswith("malformed JSON")
    assert "input_tokens" in reasons[("default/bad-2", None)]
    assert "schema_version" in reasons[("default/bad-3", None)]
    assert "event_id" in reasons[("default/s-dlq", 2)]  # the item with no id, at index 2
    assert "not an object" in reasons[("default/s-dlq", 4)]
    assert "empty array" in reasons[(None, None)]
    assert all(d["topic"] == topics["events"] and d["offset"] >= 0 for d in dead)
    assert orjson.loads(next(d["raw"] for d in dead if d["key"] == "default/bad-2")) == wrong_type
    # the five good calls of the packed record still made their loop alert
    assert [(a["rule"], a["state"], a["session_id"]) for a in alerts] == [
        ("loop_repeat", "firing", "s-dlq")]


def _paced_fleet(kafka_bootstrap: str, topic: str) -> tuple[list[dict[str, Any]], list[Any]]:
    events = list(fleet_events(FleetPlan()))
    return events, pack(events, flush_every=FLUSH_EVERY)


@pytest.mark.parametrize("stages", ["all", "split"])
def test_a_worker_killed_mid_stream_recovers_its_state_and_loses_no_alert(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path, stages: str
) -> None:
    """SIGKILL mid-stream, then a worker on a fresh data dir. ``split``: the killed
    worker's child (the agent/tenant stage) gets SIGTERM as its parent dies."""
    topics = topics_for(topic_name)
    create_topic(kafka_bootstrap, topics["events"], PARTITIONS)
    events, records = _paced_fleet(kafka_bootstrap, topics["events"])
    expected = replay_alerts(events)
    group = f"{topic_name}-g"
    first = WorkerProcess(kafka_bootstrap, topics, group, tmp_path / "data",
                          tmp_path / "worker-1.log", idle_after_s=IDLE_AFTER_S,
                          stages=stages).start()
    # the stream keeps flowing for ~20 s while the worker is killed and restarted
    producer = threading.Thread(target=produce, args=(kafka_bootstrap, topics["events"],
                                                      records), kwargs={"pace_s": 0.04})
    producer.start()
    alerts_before = read_topic(kafka_bootstrap, topics["alerts"],
                               until=lambda v: len(v) >= 2, timeout_s=60, settle_s=0)
    first.kill()
    assert producer.is_alive(), "the stream ended before the kill: nothing was tested"
    time.sleep(1)
    # a fresh data dir (a new machine): the state can only come from the changelog topics
    second = WorkerProcess(kafka_bootstrap, topics, group, tmp_path / "data-2",
                           tmp_path / "worker-2.log", idle_after_s=IDLE_AFTER_S,
                           stages=stages).start()
    producer.join()
    try:
        got = read_alerts(kafka_bootstrap, topics["alerts"], distinct=len(expected))
    finally:
        second.stop()
    assert len(alerts_before) >= 2
    assert "Traceback" not in second.log(), second.log()[-3000:]
    assert_stages_ran(second.log(), split=stages == "split")
    assert_exactly(got, expected)


def test_two_workers_split_the_partitions_and_together_match_one(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    topics = topics_for(topic_name)
    create_topic(kafka_bootstrap, topics["events"], PARTITIONS)
    events = list(fleet_events(FleetPlan()))
    expected = replay_alerts(events)
    group = f"{topic_name}-g"
    # the scenario is produced ~100x faster than real time: a partition quiet for a second
    # of wall time would be minutes of event time behind (see WorkerSettings.idle_after_s)
    workers = [WorkerProcess(kafka_bootstrap, topics, group, tmp_path / f"data-{i}",
                             tmp_path / f"worker-{i}.log", idle_after_s=IDLE_AFTER_S).start()
               for i in (1, 2)]
    try:
        # both in the group before any data: then they split the partitions
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(
                "partitions" in _assigned(w) for w in workers):
            time.sleep(0.5)
        produce(kafka_bootstrap, topics["events"], pack(events, flush_every=FLUSH_EVERY),
                pace_s=0.01)
        got = [orjson.loads(v) for v in read_topic(
            kafka_bootstrap, topics["alerts"], until=lambda v: len(v) >= len(expected),
            timeout_s=90)]
        owned = [_owned(w, topics["events"]) for w in workers]  # before one stops
    finally:
        for worker in workers:
            worker.stop()
    assert owned[0], owned
    assert owned[1], owned
    assert owned[0] | owned[1] == set(range(PARTITIONS))
    assert not owned[0] & owned[1]
    assert_exactly(got, expected)


def _assigned(worker: WorkerProcess) -> str:
    last = worker.log().rsplit("agentwatch worker: assigned", 1)
    return last[1].split("\n", 1)[0] if len(last) == 2 else ""


def _owned(worker: WorkerProcess, topic: str) -> set[int]:
    """Input partitions of the worker's last assignment (the log line the worker writes)."""
    line = _assigned(worker)
    match = re.search(r"partitions \[([0-9, ]*)\]", line)
    assert match is not None, worker.log()[-2000:]
    return {int(p) for p in match.group(1).split(",") if p.strip()}
