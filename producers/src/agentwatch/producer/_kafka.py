"""The Kafka transport: aiokafka on an event loop of its own, in a daemon thread.

The client's background thread calls :meth:`KafkaTransport.send`, ``flush`` and
``poll_deliveries``; each hands a coroutine to the transport's loop and waits for
it with a bound, so the caller's thread (and the agent's own event loop, if it has
one) never runs Kafka I/O. A partition batch (key ``~batch:<p>``) is written to
partition ``p`` explicitly; a one-session record (key ``<tenant_id>/<session_id>``,
sent only while the partition count is unknown) goes where Kafka's default partitioner
puts its key, which is the same partition. With idempotence on (the default)
aiokafka's own retries cannot reorder records.

The partition count (:meth:`KafkaTransport.partitions`) is the client's metadata for
the topic: learnt when the connection starts (which begins as soon as the transport is
made; the first call waits up to 2 s for it, so that the first records are partition
batches too) and learnt again on every metadata refresh of the client, so aiokafka's
periodic refresh (``metadata_max_age_ms``, 30 s here unless ``kafka_options`` says
otherwise) brings a topic's new partitions to the producer.

Delivery is tracked per record (aiokafka's future), in send order, and reported by
``poll_deliveries``. When Kafka is unreachable at start, ``send`` raises; when it
goes away later, aiokafka keeps what it holds and finally expires batches it could
not place (after ``request_timeout_ms``): either way the client re-sends everything
unconfirmed once Kafka answers again. A record Kafka can never take (larger than
the broker allows) is reported as rejected instead, so it cannot block the rest.

Settings mapping: the client packs a partition's events per ``linger_ms`` itself, so
aiokafka lingers only 5 ms; its batch size and request size are raised to hold a
packed record of ``max_batch_bytes``. ``compression='auto'`` picks zstd, else lz4
(both come with ``cramjam``, a dependency), else none.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections import deque
from collections.abc import Coroutine, Mapping, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Final, Literal, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.cluster import ClusterMetadata
from aiokafka.codec import has_gzip, has_lz4, has_zstd
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError

from agentwatch.producer._settings import ProducerSettings
from agentwatch.schemas import PARTITION_BATCH_PREFIX, ConfigError, TransportError

__all__ = ["KafkaTransport", "aiokafka_config"]

T = TypeVar("T")

#: how long a send may wait for aiokafka to take records into its buffer
_SEND_TIMEOUT_S: Final = 30.0
_POLL_TIMEOUT_S: Final = 10.0
_STOP_TIMEOUT_S: Final = 3.0
#: Kafka's default message.max.bytes is ~1 MiB; a request must hold at least one record
_MIN_REQUEST_BYTES: Final = 1 << 20
_TRANSPORT_LINGER_MS: Final = 5
#: how often aiokafka refreshes its metadata (its default is 5 minutes): how late the
#: producer may learn that partitions were added
_METADATA_MAX_AGE_MS: Final = 30_000
#: how long the first ``partitions()`` waits for the first connection attempt
_FIRST_CONNECT_WAIT_S: Final = 2.0
_BATCH_PREFIX_LEN: Final = len(PARTITION_BATCH_PREFIX)
#: errors that no retry can fix: the record is reported rejected, not re-sent
_REJECTED: Final = (MessageSizeTooLargeError, RecordListTooLargeError)
#: options the settings own (named by the setting that sets them)
_OWNED: Final[Mapping[str, str]] = {
    "bootstrap_servers": "bootstrap_servers",
    "acks": "acks",
    "enable_idempotence": "enable_idempotence",
    "compression_type": "compression",
    "key_serializer": "(records are bytes)",
    "value_serializer": "(records are bytes)",
    "loop": "(the transport's own loop)",
    "transactional_id": "(not supported)",
}
_AIOKAFKA_OPTIONS: Final = frozenset(inspect.signature(AIOKafkaProducer.__init__).parameters) - {
    "self",
    "loop",
}

Failure = Literal["retry", "reject"] | None


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a forgotten future's outcome as seen (asyncio logs unseen exceptions)."""
    if not future.cancelled():
        future.exception()


def _compression(name: str) -> str | None:
    codecs = {"zstd": has_zstd, "lz4": has_lz4, "gzip": has_gzip}
    if name == "none":
        return None
    if name == "auto":
        return next((codec for codec in ("zstd", "lz4") if codecs[codec]()), None)
    if not codecs[name]():
        raise ConfigError(
            f"compression: {name!r} needs the 'cramjam' package (pip install cramjam), "
            "or use compression='auto' or 'none'"
        )
    return name


def aiokafka_config(
    settings: ProducerSettings, kafka_options: Mapping[str, Any]
) -> dict[str, Any]:
    """The ``AIOKafkaProducer`` keyword arguments for ``settings``, plus ``kafka_options``
    (security, SASL, client id, timeouts...); a bad option raises ConfigError naming it."""
    if settings.enable_idempotence and settings.acks != "all":
        raise ConfigError(
            f"acks: idempotence needs acks='all' (got {settings.acks!r}); "
            "set enable_idempotence=False to use it"
        )
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "acks": settings.acks if settings.acks == "all" else int(settings.acks),
        "enable_idempotence": settings.enable_idempotence,
        "compression_type": _compression(settings.compression),
        "linger_ms": _TRANSPORT_LINGER_MS,
        "max_batch_size": max(16_384, settings.max_batch_bytes + 1024),
        "max_request_size": max(_MIN_REQUEST_BYTES, settings.max_batch_bytes + 65_536),
        "metadata_max_age_ms": _METADATA_MAX_AGE_MS,
    }
    for key, value in kafka_options.items():
        if key in _OWNED:
            raise ConfigError(f"kafka_options.{key}: set by the client; use {_OWNED[key]}")
        if key not in _AIOKAFKA_OPTIONS:
            raise ConfigError(f"kafka_options.{key}: not an AIOKafkaProducer option")
        config[key] = value
    return config


class KafkaTransport:
    """Produce packed records to one topic, tracking the delivery of each."""

    def __init__(self, topic: str, config: Mapping[str, Any]) -> None:
        self.topic = topic
        self.config = dict(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="agentwatch-kafka", daemon=True
        )
        self._thread.start()
        self._producer: AIOKafkaProducer | None = None
        # one entry per record sent and not yet reported: aiokafka's future, or the
        # exception that refused it at once
        self._flights: deque[asyncio.Future[Any] | BaseException] = deque()
        self._closed = False
        self._partition_count: int | None = None
        self._starting = asyncio.Lock()
        # connect now, in the background: the partition count is then known before the
        # first records are packed, and they are partition batches too
        self._first_attempt = threading.Event()
        asyncio.run_coroutine_threadsafe(self._connect_early(), self._loop)

    @classmethod
    def from_settings(
        cls, settings: ProducerSettings, kafka_options: Mapping[str, Any]
    ) -> KafkaTransport:
        return cls(settings.topic, aiokafka_config(settings, kafka_options))

    # -- the Transport contract (called from the client's one background thread) --------------
    def send(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        if self._closed:
            raise TransportError("the Kafka transport is closed")
        self._run(self._send(list(records)), _SEND_TIMEOUT_S)

    def poll_deliveries(self) -> tuple[int, Failure]:
        return self._run(self._poll(), _POLL_TIMEOUT_S)

    def flush(self, timeout_s: float) -> bool:
        if self._closed:
            return True
        try:
            return self._run(self._flush(), timeout_s)
        except (TransportError, TimeoutError):
            return False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._run(self._stop(), 10.0)
        except (TransportError, TimeoutError):
            pass
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5.0)
            if not self._thread.is_alive():
                self._loop.close()

    # -- on the transport's loop --------------------------------------------------------------
    def _run(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout_s)
        except FutureTimeout:
            future.cancel()
            raise TimeoutError(f"Kafka did not answer within {timeout_s:g} s") from None
        except TransportError:
            raise
        except Exception as exc:
            raise TransportError(f"Kafka: {exc or type(exc).__name__}") from exc

    async def _connect_early(self) -> None:
        try:
            with contextlib.suppress(Exception):  # the first send retries, and reports
                await self._ensure_producer()
        finally:
            self._first_attempt.set()

    async def _ensure_producer(self) -> AIOKafkaProducer:
        async with self._starting:
            return await self._start_producer()

    async def _start_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(**self.config)
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
            cluster = producer.client.cluster
            cluster.add_listener(self._learn_partitions)  # on every metadata refresh
            with contextlib.suppress(KafkaError, TimeoutError):
                await asyncio.wait_for(producer.partitions_for(self.topic), _SEND_TIMEOUT_S)
            self._learn_partitions(cluster)
        return self._producer

    async def _send(self, records: list[tuple[bytes, bytes]]) -> None:
        try:
            producer = await self._ensure_producer()
            topic, flights = self.topic, self._flights
            for key, value in records:
                # a partition batch goes to the partition it was packed for, explicitly
                partition = (int(key[_BATCH_PREFIX_LEN:]) if key.startswith(PARTITION_BATCH_PREFIX)
                             else None)
                try:
                    flights.append(await producer.send(topic, value, key=key,
                                                       partition=partition))
                except _REJECTED as exc:  # too large for max_request_size: never fits
                    flights.append(exc)
        except BaseException:
            await self._reset()  # the client re-sends everything unconfirmed
            raise

    def _learn_partitions(self, cluster: ClusterMetadata) -> None:
        """The topic's partition count as the client's metadata has it (aiokafka refreshes
        it every ``metadata_max_age_ms``); a refresh without the topic changes nothing."""
        known = cluster.partitions_for_topic(self.topic)
        if known:
            self._partition_count = len(known)

    def partitions(self) -> int | None:
        """The topic's partition count as last learnt (None until a connection learnt it).
        The first call waits up to 2 s for the first connection attempt."""
        if not self._first_attempt.is_set():
            self._first_attempt.wait(_FIRST_CONNECT_WAIT_S)
        return self._partition_count

    async def _poll(self) -> tuple[int, Failure]:
        flights, delivered = self._flights, 0
        while flights:
            head = flights[0]
            if isinstance(head, BaseException):
                flights.popleft()
                return delivered, "reject"
            if not head.done():
                break
            exc = None if head.cancelled() else head.exception()
            if head.cancelled() or exc is not None:
                if isinstance(exc, _REJECTED):
                    flights.popleft()
                    return delivered, "reject"
                await self._reset()
                return delivered, "retry"
            flights.popleft()
            delivered += 1
        return delivered, None

    async def _reset(self) -> None:
        """Forget every tracked record and start a new producer on the next send.

        A new producer gets a new producer id: aiokafka's idempotent producer cannot
        resume after it expired batches (the broker answers OutOfOrderSequenceNumber),
        and what it still holds is re-sent by the client anyway."""
        for flight in self._flights:
            if isinstance(flight, asyncio.Future):
                flight.add_done_callback(_retrieve)
        self._flights.clear()
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(TimeoutError, KafkaError):  # it is replaced anyway
                await asyncio.wait_for(producer.stop(), _STOP_TIMEOUT_S)

    async def _flush(self) -> bool:
        """Wait for every tracked record; True when all were delivered. (``asyncio.wait``
        never cancels what it waits for, so a flush that times out changes nothing.)"""
        pending = [f for f in self._flights if isinstance(f, asyncio.Future)]
        if len(pending) < len(self._flights):
            return False
        if pending:
            await asyncio.wait(pending)
        return not any(f.cancelled() or f.exception() is not None for f in pending)

    async def _stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
