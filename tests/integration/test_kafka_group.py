"""The consumer-group helpers the sink and the dispatcher share (schemas/kafka_group.py), on
a real broker: committed offsets come back with their metadata, also when the broker is
away when asked (the rebalance callback that asks must not fail: a partition it does not
set up is never read)."""

from __future__ import annotations

import asyncio
import threading
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from kafka_broker import KafkaBroker
from worker_harness import create_topic

from agentwatch.schemas.kafka_group import CommittedOffsets
from agentwatch.schemas.kafka_security import KafkaSecurity


def _commit(bootstrap: str, group: str, offsets: dict[TopicPartition, tuple[int, str]]) -> None:
    async def go() -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign(list(offsets))
            await consumer.commit({tp: OffsetAndMetadata(o, m) for tp, (o, m) in offsets.items()})
        finally:
            await consumer.stop()

    asyncio.run(go())


def test_committed_offsets_come_back_with_their_metadata_across_a_broker_restart(
    own_broker: KafkaBroker, topic_name: str
) -> None:
    bootstrap = own_broker.bootstrap_servers
    create_topic(bootstrap, topic_name, 2)
    group = f"{topic_name}-g"
    tp0, tp1 = TopicPartition(topic_name, 0), TopicPartition(topic_name, 1)
    _commit(bootstrap, group, {tp0: (7, "agentwatch-sink/2 ids 1 2")})

    async def read_twice() -> tuple[dict[TopicPartition, tuple[int | None, str]],
                                    dict[TopicPartition, tuple[int | None, str]], float]:
        committed = CommittedOffsets(bootstrap, group, KafkaSecurity())
        try:
            before = await committed.read([tp0, tp1])
            await asyncio.to_thread(own_broker.pause)  # stopped (SIGTERM) and gone
            restart = threading.Timer(2.0, own_broker.resume)  # back while read() waits
            restart.start()
            asked = time.monotonic()
            try:
                after = await committed.read([tp0, tp1])
            finally:
                await asyncio.to_thread(restart.join)
            return before, after, time.monotonic() - asked
        finally:
            await committed.close()

    before, after, waited_s = asyncio.run(read_twice())
    assert before == {tp0: (7, "agentwatch-sink/2 ids 1 2"), tp1: (None, "")}
    assert after == before
    assert waited_s > 2.0  # it was asked while the broker was away, and waited for it
