"""`agentwatch worker` takes the three record forms of ``agentwatch.events`` (DESIGN.md,
"Kafka records"): one event, one session's array, a partition batch of many sessions; a
partition batch's event of another partition's session is a dead letter; a third-party
client hashing keys its own way (confluent-kafka) still gets every alert; a transactional
producer's markers (offsets with no record) are read past."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from sink_harness import group_offsets
from worker_harness import (
    Record,
    WorkerProcess,
    alert_set,
    assert_exactly,
    create_topic,
    pack,
    pack_partition_batches,
    produce,
    produce_confluent,
    read_alerts,
    read_records,
    read_topic,
    replay_alerts,
    topics_for,
)

from agentwatch.cli._fleet import FleetPlan, fleet_events
from agentwatch.schemas import is_partition_batch, partition_batch_key, partition_for, session_key

PARTITIONS = 4
#: as in test_worker_faults.py: the fleet goes much faster than real time, in records of
#: the producer's linger interval (4 events, ~2 s of event time)
IDLE_AFTER_S = 6.0
FLUSH_EVERY = 4


def _alerts_of_worker(kafka_bootstrap: str, topics: dict[str, str], group: str,
                      tmp_path: Path, expected: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Start a worker on what is on the events topic; every alert it writes."""
    worker = WorkerProcess(kafka_bootstrap, topics, group, tmp_path / "data",
                           tmp_path / "worker.log", idle_after_s=IDLE_AFTER_S).start()
    try:
        got = read_alerts(kafka_bootstrap, topics["alerts"], distinct=len(expected))
    finally:
        worker.stop()
    assert "Traceback" not in worker.log(), worker.log()[-3000:]
    return got


def _form(key: bytes | None, value: bytes) -> str:
    if is_partition_batch(key):
        return "partition batch"
    return "array" if value.startswith(b"[") else "event"


def _mixed_records(events: list[dict[str, Any]]) -> list[Record]:
    """Each linger interval of the fleet in one of the three forms, in turn."""
    records: list[Record] = []
    for n, i in enumerate(range(0, len(events), FLUSH_EVERY)):
        interval = events[i:i + FLUSH_EVERY]
        if n % 3 == 0:
            records += [(session_key(e["tenant_id"], e["session_id"]), orjson.dumps(e))
                        for e in interval]
        elif n % 3 == 1:
            records += pack(interval, flush_every=len(interval))
        else:
            records += pack_partition_batches(interval, PARTITIONS, flush_every=len(interval))
    return records


def test_mixed_record_forms_on_one_topic_give_exactly_the_alerts_of_replay(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    topics = topics_for(topic_name)
    create_topic(kafka_bootstrap, topics["events"], PARTITIONS)
    events = list(fleet_events(FleetPlan()))
    expected = replay_alerts(events)
    records = _mixed_records(events)
    forms = Counter(_form(r[0], r[1]) for r in records)
    assert set(forms) == {"event", "array", "partition batch"}, forms
    # partition batches of several sessions really are among them
    assert any(len({(e["tenant_id"], e["session_id"]) for e in orjson.loads(r[1])}) > 1
               for r in records if _form(r[0], r[1]) == "partition batch")
    # keyed forms by Kafka's default partitioner (aiokafka's is murmur2), partition batches
    # sent to their partition explicitly: a session stays on one partition, in order
    produce(kafka_bootstrap, topics["events"], records)
    got = _alerts_of_worker(kafka_bootstrap, topics, f"{topic_name}-g", tmp_path, expected)
    assert_exactly(got, expected)
    assert len(got) == len(expected)


def _session_on(partition: int, *, owned: bool) -> str:
    """A session id of tenant ``default`` that maps (or, ``owned=False``, does not map) to
    ``partition``."""
    return next(s for s in (f"s-{i}" for i in range(1000))
                if (partition_for(session_key("default", s), PARTITIONS) == partition) == owned)


def _call(i: int, session: str) -> dict[str, Any]:
    return {"event_id": f"00000000-0000-4000-8000-{i:012d}", "ts": f"2026-11-20T09:00:{i:02d}Z",
            "agent_id": "a", "session_id": session, "kind": "tool_call", "name": "lookup",
            "tool_args_hash": "same"}


def test_a_partition_batch_event_of_another_partitions_session_is_dead_lettered(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    topics = topics_for(topic_name)
    create_topic(kafka_bootstrap, topics["events"], PARTITIONS)
    partition = 1
    home, stray = _session_on(partition, owned=True), _session_on(partition, owned=False)
    stray_partition = partition_for(session_key("default", stray), PARTITIONS)
    good = [_call(i, home) for i in range(1, 7)]  # six identical calls: a runaway loop
    wrong = _call(40, stray)
    batch = [*good[:3], wrong, *good[3:]]
    produce(kafka_bootstrap, topics["events"],
            [(partition_batch_key(partition), orjson.dumps(batch), partition)])
    expected = replay_alerts(good)
    assert [(a["rule"], a["state"], a["session_id"]) for a in expected] == [
        ("loop_repeat", "firing", home)]
    worker = WorkerProcess(kafka_bootstrap, topics, f"{topic_name}-g", tmp_path / "data",
                           tmp_path / "worker.log").start()
    try:
        dead = [orjson.loads(v) for v in read_topic(
            kafka_bootstrap, topics["dlq"], until=lambda v: len(v) >= 1, timeout_s=60)]
        alerts = [orjson.loads(v) for v in read_topic(
            kafka_bootstrap, topics["alerts"], until=lambda v: len(v) >= 1, timeout_s=30)]
    finally:
        worker.stop()
    assert len(dead) == 1, dead
    letter = dead[0]
    assert letter["reason"].startswith(
        f"wrong partition: session default/{stray} belongs on partition {stray_partition} "
        f"of {PARTITIONS} "), letter["reason"]
    assert (letter["key"], letter["topic"], letter["partition"]) == (
        f"~batch:{partition}", topics["events"], partition)
    assert orjson.loads(letter["raw"])["event_id"] == wrong["event_id"]
    # the rest of the batch still counts: its loop, and only that
    assert alert_set(alerts) == alert_set(expected)


def test_a_confluent_kafka_producer_with_its_default_partitioner_gets_every_alert(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    """One event per record keyed ``<tenant>/<session>``, placed by librdkafka's default
    partitioner (CRC32, not murmur2): taken on whatever partition the key landed on."""
    topics = topics_for(topic_name)
    create_topic(kafka_bootstrap, topics["events"], PARTITIONS)
    events = list(fleet_events(FleetPlan()))
    expected = replay_alerts(events)
    produce_confluent(kafka_bootstrap, topics["events"], [
        (session_key(e["tenant_id"], e["session_id"]), orjson.dumps(e)) for e in events])
    on_topic = read_records(kafka_bootstrap, topics["events"],
                            until=lambda rs: len(rs) >= len(events), timeout_s=60, settle_s=0)
    assert len(on_topic) == len(events)
    placed: dict[bytes, set[int]] = defaultdict(set)
    for record in on_topic:
        assert record.key is not None
        placed[record.key].add(record.partition)
    assert all(len(ps) == 1 for ps in placed.values())  # a session on one partition
    # ...but not the one Kafka's default partitioner (and a partition batch) would give it
    moved = [k for k, ps in placed.items() if ps != {partition_for(k, PARTITIONS)}]
    assert len(moved) > len(placed) // 2, (len(moved), len(placed))
    got = _alerts_of_worker(kafka_bootstrap, topics, f"{topic_name}-g", tmp_path, expected)
    assert_exactly(got, expected)
    assert len(got) == len(expected)


def _produce_in_transactions(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]],
                             per_transaction: int) -> None:
    """A transactional producer (a third-party pattern): every transaction's commit marker
    takes an offset of its own, so the partitions' offsets have holes with no record."""
    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap,
                                    transactional_id=f"{topic}-tx")
        await producer.start()
        try:
            for i in range(0, len(records), per_transaction):
                async with producer.transaction():
                    for key, value in records[i:i + per_transaction]:
                        await producer.send(topic, value, key=key)
        finally:
            await producer.stop()

    asyncio.run(go())


def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets on ``topic`` (its group also commits the rekeyed topic)."""
    return {partition: offset for (name, partition), (offset, _)
            in group_offsets(bootstrap, group).items() if name == topic}


def test_holes_left_by_a_transactional_producer_are_read_past_and_committed_over(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    """The worker checks every jump in a partition's offsets with the broker (records
    faust failed to deliver are read again): real holes, here transaction markers, are
    gone past, every alert comes, and the committed offsets reach the last records."""
    topics = topics_for(topic_name)
    create_topic(kafka_bootstrap, topics["events"], PARTITIONS)
    events = list(fleet_events(FleetPlan()))[:400]
    expected = replay_alerts(events)
    assert expected
    _produce_in_transactions(kafka_bootstrap, topics["events"], [
        (session_key(e["tenant_id"], e["session_id"]), orjson.dumps(e)) for e in events], 7)
    on_topic = read_records(kafka_bootstrap, topics["events"],
                            until=lambda rs: len(rs) >= len(events), timeout_s=60, settle_s=0)
    last: dict[int, int] = {}
    for record in on_topic:
        last[record.partition] = max(last.get(record.partition, -1), record.offset)
    offsets = sorted(r.offset for r in on_topic if r.partition == on_topic[0].partition)
    assert offsets[-1] - offsets[0] + 1 > len(offsets)  # there are holes
    group = f"{topic_name}-g"
    worker = WorkerProcess(kafka_bootstrap, topics, group, tmp_path / "data",
                           tmp_path / "worker.log", idle_after_s=IDLE_AFTER_S,
                           stats_interval_s=0.5).start()
    try:
        got = read_alerts(kafka_bootstrap, topics["alerts"], distinct=len(expected))
        deadline = time.monotonic() + 30
        committed = _committed(kafka_bootstrap, group, topics["events"])
        while time.monotonic() < deadline and any(
                committed.get(p, -1) < offset + 1 for p, offset in last.items()):
            time.sleep(0.5)
            committed = _committed(kafka_bootstrap, group, topics["events"])
    finally:
        worker.stop()
    assert "Traceback" not in worker.log(), worker.log()[-3000:]
    assert_exactly(got, expected)
    for partition, offset in last.items():
        assert committed.get(partition, -1) >= offset + 1, (partition, committed, last)
    stats = [orjson.loads(line.split("agentwatch worker stats ", 1)[1])
             for line in worker.log().splitlines() if "agentwatch worker stats " in line]
    assert stats, worker.log()[-3000:]
    # one hole per transaction marker on the way (some transactions span two partitions)
    assert stats[-1]["holes_real_total"] >= len(events) // 7 - PARTITIONS, stats[-1]
    assert stats[-1]["holes_read_again_total"] == 0, stats[-1]
    # every agent window got its events in time (none taken out of order)
    assert stats[-1]["late_events"] == 0, stats[-1]
