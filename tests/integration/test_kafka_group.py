"""The consumer-group helpers the sink and the dispatcher share (schemas/kafka_group.py), on
a real broker: committed offsets come back with their metadata, also when the broker is
away when asked (the rebalance callback that asks must not fail: a partition it does not
set up is never read). While Kafka cannot be reached (a port nobody listens on), a stop
ends the retries' waits: no further attempt is made."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata
from kafka_broker import KafkaBroker
from worker_harness import create_topic

from agentwatch.schemas.kafka_group import CommittedOffsets, start_with_retry
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


# -- a stop ends the retries' waits ------------------------------------------------------
@pytest.fixture
def nobody_listens() -> str:
    """``127.0.0.1:<port>`` with nothing listening: Kafka cannot be reached there."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


class _OnRetry(logging.Handler):
    """Calls ``act`` the first time ``logger`` says it is retrying (the wait comes next)."""

    def __init__(self, act: Callable[[], None]) -> None:
        super().__init__(logging.DEBUG)
        self.act = act
        self.retries = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "retrying" in record.getMessage():
            self.retries += 1
            if self.retries == 1:
                self.act()


@pytest.fixture
def on_retry() -> Iterator[Callable[[str, Callable[[], None]], _OnRetry]]:
    installed: list[tuple[logging.Logger, _OnRetry, int]] = []

    def install(name: str, act: Callable[[], None]) -> _OnRetry:
        logger = logging.getLogger(name)
        handler = _OnRetry(act)
        installed.append((logger, handler, logger.level))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        return handler

    yield install
    for logger, handler, level in installed:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_a_stop_during_start_with_retry_returns_none_without_another_attempt(
    nobody_listens: str, on_retry: Callable[[str, Callable[[], None]], _OnRetry]
) -> None:
    async def main() -> tuple[AIOKafkaConsumer | None, int]:
        stopping = asyncio.Event()
        handler = on_retry("test.start_with_retry", stopping.set)
        made: list[AIOKafkaConsumer] = []

        def make() -> AIOKafkaConsumer:
            made.append(AIOKafkaConsumer(bootstrap_servers=nobody_listens))
            return made[-1]

        client = await start_with_retry(
            make, stopping, log=logging.getLogger("test.start_with_retry"), what="test",
            bootstrap_servers=nobody_listens, max_backoff_s=3600.0, security=KafkaSecurity())
        assert handler.retries == 1
        return client, len(made)

    assert asyncio.run(main()) == (None, 1)


def test_a_stop_during_committed_offsets_retry_raises_instead_of_waiting(
    nobody_listens: str, on_retry: Callable[[str, Callable[[], None]], _OnRetry]
) -> None:
    async def main() -> int:
        stopping = asyncio.Event()
        handler = on_retry("agentwatch.kafka", stopping.set)
        committed = CommittedOffsets(nobody_listens, "g", KafkaSecurity(), stopping=stopping)
        try:
            with pytest.raises(KafkaError, match=r"committed offsets of g: .*\(stopping\)$"):
                await committed.read([TopicPartition("t", 0)])
        finally:
            await committed.close()
        return handler.retries

    assert asyncio.run(main()) == 1
