"""The Kafka transport's own logic, on a fake aiokafka producer: where records go, and how
their fate is reported to the client, in send order, without a broker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest
from aiokafka.errors import KafkaConnectionError, RecordListTooLargeError

import agentwatch.producer._kafka as kafka_module
from agentwatch.producer._kafka import KafkaTransport


class FakeCluster:
    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.listeners: list[Callable[[FakeCluster], None]] = []

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    def add_listener(self, listener: Callable[[FakeCluster], None]) -> None:
        self.listeners.append(listener)


class FakeProducer:
    """Records what is sent; its futures are resolved by the test."""

    instances: ClassVar[list[FakeProducer]] = []
    refuse_start = False

    def __init__(self, **config: Any) -> None:
        self.sent: list[tuple[bytes, bytes, int | None]] = []
        self.futures: list[asyncio.Future[Any]] = []
        self.client = type("Client", (), {"cluster": FakeCluster(4)})()
        self.stopped = False
        FakeProducer.instances.append(self)

    async def start(self) -> None:
        if FakeProducer.refuse_start:
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]")

    async def stop(self) -> None:
        self.stopped = True

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.client.cluster.partitions))

    async def send(self, topic: str, value: bytes, key: bytes | None = None,
                   partition: int | None = None) -> asyncio.Future[Any]:
        if len(value) > 100:
            raise RecordListTooLargeError("too large")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append((key or b"", value, partition))
        self.futures.append(future)
        return future


@pytest.fixture
def transport(monkeypatch: pytest.MonkeyPatch) -> Iterator[KafkaTransport]:
    FakeProducer.instances = []
    FakeProducer.refuse_start = False
    monkeypatch.setattr(kafka_module, "AIOKafkaProducer", FakeProducer)
    transport = KafkaTransport("events", {})
    yield transport
    transport.close()


def _settle(transport: KafkaTransport) -> None:
    """Let the transport's loop run what was handed to it (and the callbacks that follow)."""
    async def spin() -> None:
        for _ in range(5):
            await asyncio.sleep(0)

    transport._run(spin(), 5.0)


def _resolve(transport: KafkaTransport, future: asyncio.Future[Any],
             error: BaseException | None = None) -> None:
    if error is None:
        transport._loop.call_soon_threadsafe(future.set_result, None)
    else:
        transport._loop.call_soon_threadsafe(future.set_exception, error)
    _settle(transport)


def test_a_partition_batch_goes_to_its_partition_and_a_session_record_by_its_key(
    transport: KafkaTransport,
) -> None:
    transport.send([(b"~batch:3", b"[1]"), (b"acme/s1", b"[2]")])
    _settle(transport)
    (producer,) = FakeProducer.instances
    assert producer.sent == [(b"~batch:3", b"[1]", 3), (b"acme/s1", b"[2]", None)]


def test_deliveries_are_reported_in_send_order(transport: KafkaTransport) -> None:
    transport.send([(b"~batch:0", b"[%d]" % i) for i in range(3)])
    _settle(transport)
    futures = FakeProducer.instances[0].futures
    _resolve(transport, futures[2])
    _resolve(transport, futures[1])
    assert transport.poll_deliveries() == (0, None)  # the first is not confirmed yet
    _resolve(transport, futures[0])
    assert transport.poll_deliveries() == (3, None)
    assert transport.poll_deliveries() == (0, None)


def test_a_refused_record_is_reported_alone_and_the_rest_goes_on(
    transport: KafkaTransport,
) -> None:
    transport.send([(b"~batch:0", b"[1]"), (b"~batch:0", b"[" + b"x" * 200 + b"]"),
                    (b"~batch:0", b"[3]")])
    _settle(transport)
    for future in FakeProducer.instances[0].futures:
        _resolve(transport, future)
    assert transport.poll_deliveries() == (1, "reject")
    assert transport.poll_deliveries() == (1, None)


def test_a_failed_record_is_a_retry_and_every_record_is_forgotten(
    transport: KafkaTransport,
) -> None:
    transport.send([(b"~batch:0", b"[%d]" % i) for i in range(3)])
    _settle(transport)
    first = FakeProducer.instances[0]
    _resolve(transport, first.futures[0])
    _resolve(transport, first.futures[1], KafkaConnectionError("gone"))
    _resolve(transport, first.futures[2])  # too late: forgotten with the rest
    assert transport.poll_deliveries() == (1, "retry")
    assert transport.poll_deliveries() == (0, None)
    assert first.stopped


def test_records_sent_before_a_failure_was_polled_are_not_fed(
    transport: KafkaTransport,
) -> None:
    transport.send([(b"~batch:0", b"[0]")])
    _settle(transport)
    _resolve(transport, FakeProducer.instances[0].futures[0], KafkaConnectionError("gone"))
    transport.send([(b"~batch:0", b"[1]")])  # the client does not know of the failure yet
    _settle(transport)
    assert transport.poll_deliveries() == (0, "retry")
    transport.send([(b"~batch:0", b"[0]"), (b"~batch:0", b"[1]")])  # it sends it all again
    _settle(transport)
    assert [value for _, value, _ in FakeProducer.instances[-1].sent] == [b"[0]", b"[1]"]


def test_send_while_kafka_is_unreachable_raises_with_the_reason(
    transport: KafkaTransport,
) -> None:
    transport.send([(b"~batch:0", b"[0]")])
    _settle(transport)
    _resolve(transport, FakeProducer.instances[0].futures[0], KafkaConnectionError("gone"))
    assert transport.poll_deliveries() == (0, "retry")
    FakeProducer.refuse_start = True
    with pytest.raises(Exception, match="Unable to bootstrap"):
        transport.send([(b"~batch:0", b"[0]")])


def test_flush_waits_for_every_record_sent(transport: KafkaTransport) -> None:
    transport.send([(b"~batch:1", b"[0]"), (b"~batch:2", b"[1]")])
    _settle(transport)
    assert transport.flush(0.05) is False
    for future in FakeProducer.instances[0].futures:
        _resolve(transport, future)
    assert transport.flush(5.0) is True
    assert transport.poll_deliveries() == (2, None)


def test_the_partition_count_is_learnt_at_connection_and_on_each_metadata_refresh(
    transport: KafkaTransport,
) -> None:
    assert transport.partitions() == 4
    cluster = FakeProducer.instances[0].client.cluster
    cluster.partitions = 8
    for listener in cluster.listeners:  # aiokafka calls them after every metadata update
        transport._loop.call_soon_threadsafe(listener, cluster)
    _settle(transport)
    assert transport.partitions() == 8
