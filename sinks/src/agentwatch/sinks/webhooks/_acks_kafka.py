"""Acknowledgements on Kafka: the compacted ``agentwatch.acks`` topic.

One record per acknowledgement, key = alert id, value = :meth:`Ack.encode`. The topic
is compacted (``cleanup.policy=compact``): the latest ack of every alert stays, however
old. Writers: ``agentwatch alerts ack`` (:func:`write_ack`) and the dispatcher's link
server. Readers: every dispatcher (:class:`AckFollower`, no consumer group: each reads
the whole topic from its beginning at start, then follows it) and ``agentwatch sink``
(into ``alert_acks``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from agentwatch.schemas.backoff import Backoff, sleep_async
from agentwatch.schemas.errors import TransportError
from agentwatch.sinks.webhooks._acks import Ack

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient

__all__ = ["AckFollower", "ensure_acks_topic", "publish_ack", "write_ack"]

log = logging.getLogger("agentwatch.webhooks")

ACKS_PARTITIONS: Final = 1
"""Acks are a trickle (people clicking): one partition keeps them in order."""
_POLL_MS: Final = 200
_TOPIC_VISIBLE_WAIT_S: Final = 10.0
_MAX_RETRY_WAIT_S: Final = 30.0


async def ensure_acks_topic(bootstrap_servers: str, topic: str, *, timeout_s: float = 10.0) -> None:
    """Create the compacted acks topic when it is missing (TransportError when Kafka
    cannot be reached)."""
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415
    from aiokafka.errors import KafkaError  # noqa: PLC0415

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
    except (KafkaError, OSError, TimeoutError) as exc:
        await admin.close()
        raise TransportError(
            f"cannot reach Kafka at {bootstrap_servers} (KAFKA_BOOTSTRAP_SERVERS): "
            f"{exc or type(exc).__name__}"
        ) from None
    try:
        await _create_compacted(admin, topic)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise TransportError(
            f"cannot create the topic {topic} at {bootstrap_servers}: {exc or type(exc).__name__}"
        ) from None
    finally:
        await admin.close()


async def _create_compacted(admin: AIOKafkaAdminClient, topic: str) -> None:
    """Replication factor 1, as on a single broker: on a cluster, create the topic
    beforehand with yours (``cleanup.policy=compact``)."""
    from aiokafka.admin import NewTopic  # noqa: PLC0415
    from aiokafka.errors import TopicAlreadyExistsError  # noqa: PLC0415

    if topic in set(await admin.list_topics()):
        return
    log.info("creating the compacted topic %s", topic)
    with contextlib.suppress(TopicAlreadyExistsError):
        await admin.create_topics(
            [
                NewTopic(
                    topic,
                    ACKS_PARTITIONS,
                    1,
                    topic_configs={"cleanup.policy": "compact"},
                )
            ]
        )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _TOPIC_VISIBLE_WAIT_S
    while topic not in set(await admin.list_topics()):
        if loop.time() > deadline:
            raise TransportError(f"topic {topic} was created but does not show up")
        await asyncio.sleep(0.1)


async def publish_ack(producer: AIOKafkaProducer, topic: str, ack: Ack) -> None:
    """Write ``ack`` and wait for Kafka's acknowledgement."""
    await producer.send_and_wait(topic, ack.encode(), key=ack.alert_id.encode())


def write_ack(bootstrap_servers: str, topic: str, ack: Ack, *, timeout_s: float = 15.0) -> None:
    """``agentwatch alerts ack``: write one ack (creating the topic when missing).
    TransportError when Kafka cannot take it within ``timeout_s``."""
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415
    from aiokafka.errors import KafkaError  # noqa: PLC0415

    async def main() -> None:
        await ensure_acks_topic(bootstrap_servers, topic, timeout_s=timeout_s)
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            client_id="agentwatch-ack",
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=int(timeout_s * 1000),
        )
        await producer.start()
        try:
            await asyncio.wait_for(publish_ack(producer, topic, ack), timeout_s)
        finally:
            await producer.stop()

    try:
        asyncio.run(main())
    except (KafkaError, OSError, TimeoutError) as exc:
        raise TransportError(
            f"cannot write the acknowledgement to {topic} at {bootstrap_servers}: "
            f"{exc or type(exc).__name__}"
        ) from None


class AckFollower:
    """Read the acks topic from its beginning, then follow it; ``on_ack`` gets every
    readable record (unreadable ones are logged and skipped). :attr:`caught_up` is set
    once everything written before the start has been read."""

    def __init__(self, bootstrap_servers: str, topic: str, on_ack: Callable[[Ack], object]) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._topic = topic
        self._on_ack = on_ack
        self.caught_up = asyncio.Event()
        self.read = 0
        self.unreadable = 0

    def _consumer(self) -> AIOKafkaConsumer:
        from aiokafka import AIOKafkaConsumer  # noqa: PLC0415

        return AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            fetch_max_wait_ms=_POLL_MS,
        )

    async def run(self, stopping: asyncio.Event) -> None:
        """Follow the topic until ``stopping``; Kafka errors are logged and retried (the
        acks read so far stay applied; re-reading from the beginning is harmless)."""
        from aiokafka.errors import KafkaError  # noqa: PLC0415

        backoff = Backoff(1.0, _MAX_RETRY_WAIT_S)
        while not stopping.is_set():
            try:
                await self._follow(stopping)
            except (KafkaError, OSError) as exc:
                wait_s = backoff.next_s()
                log.warning(
                    "acks: cannot read %s (%s); retrying in %.0f s", self._topic, exc, wait_s
                )
                self.caught_up.set()  # do not hold the alerts back while Kafka is away
                await sleep_async(wait_s, stopping)

    async def _follow(self, stopping: asyncio.Event) -> None:
        from aiokafka.structs import TopicPartition  # noqa: PLC0415

        consumer = self._consumer()
        try:
            await consumer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise
        try:
            await consumer.topics()  # fresh metadata (a topic created just now)
            partitions = consumer.partitions_for_topic(self._topic) or {0}
            tps = [TopicPartition(self._topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps) if tps else {}
            pending = {tp: end for tp, end in ends.items() if end > 0}
            if not pending:
                self.caught_up.set()
            while not stopping.is_set():
                data = await consumer.getmany(timeout_ms=_POLL_MS)
                for tp, records in data.items():
                    for record in records:
                        self._take(record.value)
                    if tp in pending and records[-1].offset + 1 >= pending[tp]:
                        del pending[tp]
                if not pending:
                    self.caught_up.set()
                # a compacted or transactional tail may never show its last offset
                for tp in list(pending):
                    if await consumer.position(tp) >= pending[tp]:
                        del pending[tp]
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    def _take(self, value: bytes | None) -> None:
        try:
            ack = Ack.decode(value)
        except ValueError as exc:
            self.unreadable += 1
            log.warning("acks: a record that is not an acknowledgement, skipped: %s", exc)
            return
        self.read += 1
        self._on_ack(ack)
