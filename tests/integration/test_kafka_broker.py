"""Smoke test: the session broker really stores and serves records (aiokafka end to end)."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

pytestmark = pytest.mark.kafka

PARTITIONS = 4
RECORDS = 1_000
KEYS = 37
CONSUME_DEADLINE_S = 30.0


async def _create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name=topic, num_partitions=PARTITIONS, replication_factor=1)]
        )
        described = await admin.describe_topics([topic])
        assert len(described[0]["partitions"]) == PARTITIONS
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sends = []
        for seq in range(RECORDS):
            key = f"key-{seq % KEYS}".encode()
            sends.append(await producer.send(topic, key=key, value=str(seq).encode()))
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def _consume(bootstrap: str, topic: str) -> list[tuple[bytes, int, int]]:
    """(key, seq, partition) in the order the consumer returned them."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"{topic}-group",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    received: list[tuple[bytes, int, int]] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONSUME_DEADLINE_S
        while len(received) < RECORDS and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                received.extend((r.key, int(r.value), tp.partition) for r in records)
    finally:
        await consumer.stop()
    return received


def test_keyed_records_round_trip_once_each_and_in_key_order(
    kafka_bootstrap: str, topic_name: str
) -> None:
    async def scenario() -> list[tuple[bytes, int, int]]:
        await _create_topic(kafka_bootstrap, topic_name)
        await _produce(kafka_bootstrap, topic_name)
        return await _consume(kafka_bootstrap, topic_name)

    received = asyncio.run(scenario())

    assert sorted(seq for _, seq, _ in received) == list(range(RECORDS))
    by_key: dict[bytes, list[int]] = defaultdict(list)
    partitions: dict[bytes, set[int]] = defaultdict(set)
    for key, seq, partition in received:
        by_key[key].append(seq)
        partitions[key].add(partition)
    assert len(by_key) == KEYS
    for key, seqs in by_key.items():
        assert seqs == sorted(seqs), key
        assert len(partitions[key]) == 1, key
    assert len({p for parts in partitions.values() for p in parts}) > 1
