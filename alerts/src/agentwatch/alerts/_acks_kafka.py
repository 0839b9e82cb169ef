"""Acknowledgements on Kafka: the compacted ``agentwatch.acks`` topic.

One record per acknowledgement, key = alert id, value = :meth:`Ack.encode`. The topic
is compacted (``cleanup.policy=compact``): the latest ack of every alert stays, however
old. Writers: ``agentwatch alerts ack`` (:func:`write_ack`) and the dispatcher's link
server. Readers: every dispatcher (:class:`AckFollower`, no consumer group: each reads
the whole topic from its beginning at start, then follows it) and ``agentwatch sink``
(into ``alert_acks``).

:class:`CompactedReader` is the reading half for any compacted topic keyed by alert id:
the dispatcher also reads its escalations topic with it at start
(:mod:`agentwatch.alerts._escalation`), and creates that topic with
:func:`~agentwatch.schemas.kafka_group.ensure_compacted_topic`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from agentwatch.schemas import Ack
from agentwatch.schemas.backoff import Backoff, sleep_async
from agentwatch.schemas.errors import TransportError
from agentwatch.schemas.kafka_group import ensure_compacted_topic
from agentwatch.schemas.kafka_security import KafkaSecurity

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

__all__ = ["AckFollower", "CompactedReader", "publish_ack", "read_compacted", "write_ack"]

log = logging.getLogger("agentwatch.webhooks")

_POLL_MS: Final = 200
_MAX_RETRY_WAIT_S: Final = 30.0


async def publish_ack(producer: AIOKafkaProducer, topic: str, ack: Ack) -> None:
    """Write ``ack`` and wait for Kafka's acknowledgement."""
    await producer.send_and_wait(topic, ack.encode(), key=ack.alert_id.encode())


def write_ack(bootstrap_servers: str, topic: str, ack: Ack, *, timeout_s: float = 15.0) -> None:
    """``agentwatch alerts ack``: write one ack (creating the topic when missing).
    TransportError when Kafka cannot take it within ``timeout_s``."""
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415
    from aiokafka.errors import KafkaError  # noqa: PLC0415

    async def main() -> None:
        await ensure_compacted_topic(bootstrap_servers, topic, timeout_s=timeout_s)
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


class CompactedReader:
    """Read a compacted topic from its beginning, then follow it; ``on_record(key,
    value)`` gets every record. :attr:`caught_up` is set once everything written before
    the start has been read (or when Kafka cannot be read: nothing is held back)."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        on_record: Callable[[bytes | None, bytes | None], object],
        *,
        security: KafkaSecurity | None = None,
    ) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._security = security or KafkaSecurity()
        self._topic = topic
        self._on_record = on_record
        self.caught_up = asyncio.Event()
        self.errors = 0
        """Kafka errors met (each one sets :attr:`caught_up`, so nothing waits on Kafka)."""
        self.backoff = Backoff(1.0, _MAX_RETRY_WAIT_S)
        """The wait before reading again after an error; it starts over once the topic
        has been read to its end again."""

    def _consumer(self) -> AIOKafkaConsumer:
        from aiokafka import AIOKafkaConsumer  # noqa: PLC0415

        return AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            fetch_max_wait_ms=_POLL_MS,
            **self._security.client_options(),
        )

    async def run(self, stopping: asyncio.Event) -> None:
        """Follow the topic until ``stopping``; Kafka errors are logged and retried (the
        acks read so far stay applied; re-reading from the beginning is harmless)."""
        from aiokafka.errors import KafkaError  # noqa: PLC0415

        while not stopping.is_set():
            try:
                await self._follow(stopping)
            except (KafkaError, OSError) as exc:
                self.errors += 1
                wait_s = self.backoff.next_s()
                log.warning("cannot read %s (%s); retrying in %.0f s", self._topic, exc, wait_s)
                self.caught_up.set()  # do not hold the alerts back while Kafka is away
                await sleep_async(wait_s, stopping)

    def _read_to_end(self) -> None:
        """Everything written before this reading started has been read: caught up, and
        Kafka works again (the next error waits the first delay of the backoff)."""
        self.caught_up.set()
        self.backoff.reset()

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
                self._read_to_end()
            while not stopping.is_set():
                data = await consumer.getmany(timeout_ms=_POLL_MS)
                for tp, records in data.items():
                    for record in records:
                        self._on_record(record.key, record.value)
                    if tp in pending and records[-1].offset + 1 >= pending[tp]:
                        del pending[tp]
                if not pending:
                    self._read_to_end()
                # a compacted or transactional tail may never show its last offset
                for tp in list(pending):
                    if await consumer.position(tp) >= pending[tp]:
                        del pending[tp]
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()


async def read_compacted(
    bootstrap_servers: str, topic: str, *, timeout_s: float, security: KafkaSecurity | None = None
) -> tuple[dict[bytes, bytes], bool]:
    """The latest value of every key of a compacted topic (a tombstone, ``None``,
    removes its key), read to the end once; and whether the end was reached within
    ``timeout_s`` (False: Kafka was away or slow; what was read is returned)."""
    latest: dict[bytes, bytes] = {}

    def take(key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        if value is None:
            latest.pop(key, None)
        else:
            latest[key] = value

    reader = CompactedReader(bootstrap_servers, topic, take, security=security)
    stopping = asyncio.Event()
    task = asyncio.create_task(reader.run(stopping))
    try:
        await asyncio.wait_for(reader.caught_up.wait(), timeout_s)
        complete = reader.errors == 0
    except TimeoutError:
        complete = False
    finally:
        stopping.set()
        with contextlib.suppress(Exception):
            await task
    return latest, complete


class AckFollower(CompactedReader):
    """:class:`CompactedReader` of the acks topic: ``on_ack`` gets every readable
    acknowledgement (unreadable records are logged and skipped)."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        on_ack: Callable[[Ack], object],
        *,
        security: KafkaSecurity | None = None,
    ) -> None:
        super().__init__(bootstrap_servers, topic, self._take, security=security)
        self._on_ack = on_ack
        self.read = 0
        self.unreadable = 0

    def _take(self, _key: bytes | None, value: bytes | None) -> None:
        try:
            ack = Ack.decode(value)
        except ValueError as exc:
            self.unreadable += 1
            log.warning("acks: a record that is not an acknowledgement, skipped: %s", exc)
            return
        self.read += 1
        self._on_ack(ack)
