"""agentwatch.producer's Kafka transport against the real broker."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import orjson
from aiokafka import AIOKafkaConsumer
from worker_harness import create_topic

from agentwatch.producer import Agentwatch

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


def test_events_arrive_packed_keyed_and_in_order_per_session(
    kafka_bootstrap: str, topic_name: str
) -> None:
    create_topic(kafka_bootstrap, topic_name, 4)
    with Agentwatch(bootstrap_servers=kafka_bootstrap, topic=topic_name, tenant_id="acme",
                    agent_id="concierge", linger_ms=20) as client:
        for i in range(PER_SESSION):
            for s in range(SESSIONS):  # sessions interleaved, as concurrent agents emit
                client.emit({"kind": "tool_call", "session_id": f"s{s}", "name": "lookup",
                             "attributes": {"seq": i}})
        assert client.flush(timeout_s=30)
        stats = client.stats
    assert stats.sent == SESSIONS * PER_SESSION
    assert stats.dropped == stats.failed == 0

    records = _consume_all(kafka_bootstrap, topic_name, SESSIONS * PER_SESSION)
    seqs: dict[str, list[int]] = defaultdict(list)
    partitions: dict[bytes, set[int]] = defaultdict(set)
    for key, partition, value in records:
        partitions[key].add(partition)
        events = orjson.loads(value)
        assert isinstance(events, list)
        for event in events:
            assert key == f"acme/{event['session_id']}".encode()
            assert event["agent_id"] == "concierge"
            seqs[event["session_id"]].append(event["attributes"]["seq"])
    assert all(len(p) == 1 for p in partitions.values())  # a session stays on one partition
    assert len({p for ps in partitions.values() for p in ps}) > 1  # sessions spread out
    assert seqs == {f"s{s}": list(range(PER_SESSION)) for s in range(SESSIONS)}
    assert len(records) < SESSIONS * PER_SESSION  # packed: fewer records than events
