"""agentwatch.producer's Kafka transport against the real broker: partition batches, each
written to the partition that owns its sessions (DESIGN.md, "Kafka records")."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions
from worker_harness import create_topic

from agentwatch.producer import Agentwatch
from agentwatch.producer._kafka import KafkaTransport
from agentwatch.schemas import partition_batch_key, partition_for, session_key

SESSIONS = 20
PER_SESSION = 150


def _consume_all(bootstrap: str, topic: str, expected_events: int) -> list[tuple[bytes, int,
                                                                                 bytes]]:
    async def go() -> list[tuple[bytes, int, bytes]]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                    auto_offset_reset="earliest")
        await consumer.start()
        out: list[tuple[bytes, int, bytes]] = []
        n = 0
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while n < expected_events and loop.time() < deadline:
                batch = await consumer.getmany(timeout_ms=200)
                for tp, messages in batch.items():
                    for m in messages:
                        assert m.key is not None
                        assert m.value is not None
                        out.append((m.key, tp.partition, m.value))
                        n += len(orjson.loads(m.value))
        finally:
            await consumer.stop()
        return out

    return asyncio.run(go())


def _send_interleaved(client: Agentwatch, sessions: int, per_session: int,
                      phase: int = 0) -> None:
    for i in range(per_session):
        for s in range(sessions):  # sessions interleaved, as concurrent agents emit
            client.emit({"kind": "tool_call", "session_id": f"s{s}", "name": "lookup",
                         "attributes": {"seq": i, "phase": phase}})


def _home(event: dict[str, Any], partitions: int) -> int:
    return partition_for(session_key(event["tenant_id"], event["session_id"]), partitions)


def test_every_record_is_a_partition_batch_of_its_partitions_sessions(
    kafka_bootstrap: str, topic_name: str
) -> None:
    create_topic(kafka_bootstrap, topic_name, 4)
    with Agentwatch(bootstrap_servers=kafka_bootstrap, topic=topic_name, tenant_id="acme",
                    agent_id="concierge", linger_ms=20) as client:
        _send_interleaved(client, SESSIONS, PER_SESSION)
        assert client.flush(timeout_s=30)
        stats = client.stats
    assert stats.sent == SESSIONS * PER_SESSION
    assert stats.dropped == stats.failed == 0

    records = _consume_all(kafka_bootstrap, topic_name, SESSIONS * PER_SESSION)
    assert sum(len(orjson.loads(value)) for _, _, value in records) == SESSIONS * PER_SESSION
    sessions_per_record = []
    for key, partition, value in records:
        assert key == partition_batch_key(partition)
        events = orjson.loads(value)
        assert {_home(event, 4) for event in events} == {partition}
        assert {event["agent_id"] for event in events} == {"concierge"}
        sessions_per_record.append(len({event["session_id"] for event in events}))
    assert len({partition for _, partition, _ in records}) > 1  # sessions spread out
    assert sum(sessions_per_record) / len(records) > 2  # many sessions per record


def test_a_sessions_events_keep_their_order_across_records(
    kafka_bootstrap: str, topic_name: str
) -> None:
    create_topic(kafka_bootstrap, topic_name, 4)
    with Agentwatch(bootstrap_servers=kafka_bootstrap, topic=topic_name, linger_ms=5,
                    max_batch_events=25) as client:
        _send_interleaved(client, SESSIONS, PER_SESSION)
        assert client.flush(timeout_s=30)

    records = _consume_all(kafka_bootstrap, topic_name, SESSIONS * PER_SESSION)
    seqs: dict[str, list[int]] = defaultdict(list)
    records_of: dict[str, set[int]] = defaultdict(set)
    for n, (_, _, value) in enumerate(records):  # in offset order within each partition
        for event in orjson.loads(value):
            seqs[event["session_id"]].append(event["attributes"]["seq"])
            records_of[event["session_id"]].add(n)
    assert seqs == {f"s{s}": list(range(PER_SESSION)) for s in range(SESSIONS)}
    assert min(len(r) for r in records_of.values()) > 1  # every session spans records


def _add_partitions(bootstrap: str, topic: str, total: int) -> None:
    async def go() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_partitions({topic: NewPartitions(total)})
        finally:
            await admin.close()

    asyncio.run(go())


def test_partitions_added_to_the_topic_are_noticed_and_followed(
    kafka_bootstrap: str, topic_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    create_topic(kafka_bootstrap, topic_name, 2)
    client = Agentwatch(bootstrap_servers=kafka_bootstrap, topic=topic_name, linger_ms=20,
                        kafka_options={"metadata_max_age_ms": 500})
    transport = client.transport
    assert isinstance(transport, KafkaTransport)
    _send_interleaved(client, SESSIONS, 10, phase=2)
    assert client.flush(timeout_s=30)
    assert transport.partitions() == 2
    _add_partitions(kafka_bootstrap, topic_name, 4)
    deadline = time.monotonic() + 30
    while transport.partitions() != 4:  # the client's next metadata refresh
        assert time.monotonic() < deadline, "the producer never saw the new partitions"
        time.sleep(0.05)
    with caplog.at_level(logging.WARNING, logger="agentwatch.producer"):
        _send_interleaved(client, SESSIONS, 10, phase=4)
        assert client.flush(timeout_s=30)
    stats = client.stats
    client.close()
    assert (stats.sent, stats.failed) == (2 * SESSIONS * 10, 0)

    records = _consume_all(kafka_bootstrap, topic_name, 2 * SESSIONS * 10)
    partitions_seen = set()
    for key, partition, value in records:
        assert key == partition_batch_key(partition)
        events = orjson.loads(value)
        (count,) = {event["attributes"]["phase"] for event in events}  # one phase a record
        assert {_home(event, count) for event in events} == {partition}
        partitions_seen.add(partition)
    assert partitions_seen & {2, 3}  # the new partitions are written to
    changes = [r.getMessage() for r in caplog.records if "partitions" in r.getMessage()]
    assert len(changes) == 1
    assert "now has 4 partitions (was 2)" in changes[0]
