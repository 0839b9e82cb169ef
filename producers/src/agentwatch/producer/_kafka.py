"""The Kafka transport: aiokafka on an event loop of its own, in a daemon thread.

The client's background thread calls :meth:`KafkaTransport.send`, ``flush`` and
``poll_deliveries``; the Kafka I/O runs on the transport's loop, so the caller's
thread (and the agent's own event loop, if it has one) never runs it. A partition
batch (key ``~batch:<p>``) is written to partition ``p`` explicitly; a one-session
record (key ``<tenant_id>/<session_id>``, sent only while the partition count is
unknown) goes where Kafka's default partitioner puts its key, which is the same
partition. With idempotence on (the default) aiokafka's own retries cannot reorder
records.

Neither ``send`` nor ``poll_deliveries`` waits for the loop (the client's thread shares
the interpreter lock with it and with the agent: every round trip between threads cost
milliseconds): ``send`` hands the records over, and one task on the loop gives them to
aiokafka in order (waiting, when a partition's batch is full, for aiokafka to drain it);
the loop learns each record's fate from aiokafka's futures and queues, in send order,
what ``poll_deliveries`` reads. Only a ``send`` while not connected (at start, or after
a failure) connects first, and raises when Kafka is unreachable. When Kafka goes away
later, aiokafka keeps what it holds and finally expires batches it could not place
(after ``request_timeout_ms``): either way the client re-sends everything unconfirmed
once Kafka answers again. A record Kafka can never take (larger than the broker
allows) is reported as rejected instead, so it cannot block the rest.

The partition count (:meth:`KafkaTransport.partitions`) is the client's metadata for
the topic: learnt when the connection starts (which begins as soon as the transport is
made; the first call waits up to 2 s for it, so that the first records are partition
batches too) and learnt again on every metadata refresh of the client, so aiokafka's
periodic refresh (``metadata_max_age_ms``, 30 s here unless ``kafka_options`` says
otherwise) brings a topic's new partitions to the producer.

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
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Final, Literal, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.cluster import ClusterMetadata
from aiokafka.codec import has_gzip, has_lz4, has_zstd
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError

from agentwatch.producer._settings import ProducerSettings
from agentwatch.schemas import PARTITION_BATCH_PREFIX, ConfigError, TransportError
from agentwatch.schemas.kafka_security import KafkaSecurity, explain_connect_failure

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
    settings: ProducerSettings, kafka_options: Mapping[str, Any],
    security: KafkaSecurity | None = None,
) -> dict[str, Any]:
    """The ``AIOKafkaProducer`` keyword arguments for ``settings``, plus ``kafka_options``
    (security, SASL, client id, timeouts...); a bad option raises ConfigError naming it."""
    if settings.enable_idempotence and settings.acks != "all":
        raise ConfigError(
            f"acks: idempotence needs acks='all' (got {settings.acks!r}); "
            "set enable_idempotence=False to use it"
        )
    config: dict[str, Any] = {
        # TLS/SASL from KAFKA_SECURITY_PROTOCOL ... (agentwatch.schemas.kafka_security), the
        # variables every agentwatch service reads; kafka_options may set them instead
        **(security or KafkaSecurity.from_env()).client_options(),
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

    def __init__(self, topic: str, config: Mapping[str, Any],
                 security: KafkaSecurity | None = None) -> None:
        self.topic = topic
        self.config = dict(config)
        #: the security settings the config was made from (None: kafka_options set them):
        #: a connection they make fail is explained by naming them
        self.security = security
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="agentwatch-kafka", daemon=True
        )
        self._thread.start()
        self._producer: AIOKafkaProducer | None = None
        # -- on the loop only: records taken by send() and not yet given to aiokafka, the
        # task that gives them, and one entry per record given and not yet reported:
        # aiokafka's future, or the exception that refused it at once
        self._waiting: deque[tuple[bytes, bytes]] = deque()
        self._feeder: asyncio.Task[None] | None = None
        self._flights: deque[asyncio.Future[Any] | BaseException] = deque()
        # -- written by the loop, read by poll_deliveries: what became of the records, in
        # send order: (records delivered, None) or (0, "reject" | "retry")
        self._reports: deque[tuple[int, Failure]] = deque()
        # failures so far (counted by the loop: each forgets the futures of the records
        # before it) and reported so far (by poll_deliveries): records sent before the
        # client learnt of a failure are not fed (it sends them again after it, in order)
        self._failures = 0
        self._failures_reported = 0
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
        security = KafkaSecurity.from_env()  # read once: the config and the explanations
        own = any(key.startswith(("security_", "sasl_", "ssl_")) for key in kafka_options)
        return cls(settings.topic, aiokafka_config(settings, kafka_options, security),
                   None if own else security)

    # -- the Transport contract (called from the client's one background thread) --------------
    def send(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        if self._closed:
            raise TransportError("the Kafka transport is closed")
        if self._producer is None:  # not connected (yet, or since a failure): connect first,
            # so that an unreachable Kafka is an error here, with its reason
            self._run(self._ensure_producer(), _SEND_TIMEOUT_S)
        self._loop.call_soon_threadsafe(self._accept, list(records), self._failures_reported)

    def poll_deliveries(self) -> tuple[int, Failure]:
        reports, delivered = self._reports, 0
        while reports:  # (the loop only appends, this thread only pops)
            count, failure = reports.popleft()
            delivered += count
            if failure == "retry":
                self._failures_reported += 1
            if failure is not None:
                return delivered, failure
        return delivered, None

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

    def partitions(self) -> int | None:
        """The topic's partition count as last learnt (None until a connection learnt it).
        The first call waits up to 2 s for the first connection attempt."""
        if not self._first_attempt.is_set():
            self._first_attempt.wait(_FIRST_CONNECT_WAIT_S)
        return self._partition_count

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Run ``coro`` on the transport's loop (its background thread), e.g. the control
        topic's follower; cancel the returned future to stop it."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

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
            except BaseException as exc:
                await producer.stop()
                security = self.security
                if (isinstance(exc, KafkaError) and security is not None
                        and security.protocol != "PLAINTEXT"):
                    refused = await explain_connect_failure(self.config["bootstrap_servers"],
                                                            security)
                    if refused is not None:
                        raise TransportError(refused) from exc
                raise
            self._producer = producer
            cluster = producer.client.cluster
            cluster.add_listener(self._learn_partitions)  # on every metadata refresh
            with contextlib.suppress(KafkaError, TimeoutError):
                await asyncio.wait_for(producer.partitions_for(self.topic), _SEND_TIMEOUT_S)
            self._learn_partitions(cluster)
        return self._producer

    def _learn_partitions(self, cluster: ClusterMetadata) -> None:
        """The topic's partition count as the client's metadata has it (aiokafka refreshes
        it every ``metadata_max_age_ms``); a refresh without the topic changes nothing."""
        known = cluster.partitions_for_topic(self.topic)
        if known:
            self._partition_count = len(known)

    def _accept(self, records: list[tuple[bytes, bytes]], failures_reported: int) -> None:
        if failures_reported != self._failures:
            return  # sent before the client learnt of a failure: it sends them again
        self._waiting.extend(records)
        if self._feeder is None or self._feeder.done():
            self._feeder = self._loop.create_task(self._feed())

    async def _feed(self) -> None:
        """Give the waiting records to aiokafka, in order, until none is left."""
        try:
            producer = await self._ensure_producer()
            topic, waiting = self.topic, self._waiting
            while waiting:
                key, value = waiting.popleft()
                # a partition batch goes to the partition it was packed for, explicitly
                partition = (int(key[_BATCH_PREFIX_LEN:]) if key.startswith(PARTITION_BATCH_PREFIX)
                             else None)
                try:
                    flight: asyncio.Future[Any] | BaseException = await producer.send(
                        topic, value, key=key, partition=partition)
                except _REJECTED as exc:  # too large for max_request_size: never fits
                    flight = exc
                self._track(flight)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 -- (Kafka went away) the client sends it all again
            self._fail()

    def _track(self, flight: asyncio.Future[Any] | BaseException) -> None:
        self._flights.append(flight)
        if isinstance(flight, asyncio.Future):
            failures = self._failures
            flight.add_done_callback(lambda _: self._advance(failures))
        else:
            self._advance(self._failures)

    def _advance(self, failures: int) -> None:
        """Report the records at the head of the flights whose fate is known, in order."""
        if failures != self._failures:
            return  # a future of a record forgotten at a failure since
        flights, delivered = self._flights, 0
        while flights:
            head = flights[0]
            if isinstance(head, asyncio.Future):
                if not head.done():
                    break
                exc = None if head.cancelled() else head.exception()
                if head.cancelled() or (exc is not None and not isinstance(exc, _REJECTED)):
                    self._reports.append((delivered, None))
                    self._fail()
                    return
            else:
                exc = head
            flights.popleft()
            if exc is None:
                delivered += 1
            else:  # refused for good: reported on its own, the rest goes on
                self._reports.append((delivered, None))
                self._reports.append((0, "reject"))
                delivered = 0
        if delivered:
            self._reports.append((delivered, None))

    def _fail(self) -> None:
        """A record failed (or the feeder did): report a retry and forget every record;
        a new producer starts on the next send.

        A new producer gets a new producer id: aiokafka's idempotent producer cannot
        resume after it expired batches (the broker answers OutOfOrderSequenceNumber),
        and what it still holds is re-sent by the client anyway."""
        self._reports.append((0, "retry"))
        self._failures += 1
        feeder, self._feeder = self._feeder, None
        if feeder is not None and feeder is not asyncio.current_task(self._loop):
            feeder.cancel()
        self._waiting.clear()
        for flight in self._flights:
            if isinstance(flight, asyncio.Future):
                flight.add_done_callback(_retrieve)
        self._flights.clear()
        producer, self._producer = self._producer, None
        if producer is not None:
            self._loop.create_task(self._stop_quietly(producer))

    @staticmethod
    async def _stop_quietly(producer: AIOKafkaProducer) -> None:
        with contextlib.suppress(TimeoutError, KafkaError):  # it is replaced anyway
            await asyncio.wait_for(producer.stop(), _STOP_TIMEOUT_S)

    async def _flush(self) -> bool:
        """Wait for every record sent to be given to aiokafka, then for every tracked
        record; True when all were delivered. (``asyncio.wait`` never cancels what it waits
        for, so a flush that times out changes nothing.)"""
        feeder = self._feeder
        if feeder is not None and not feeder.done():
            await asyncio.wait([feeder])
        if self._waiting:
            return False
        pending = [f for f in self._flights if isinstance(f, asyncio.Future)]
        if len(pending) < len(self._flights):
            return False
        if pending:
            await asyncio.wait(pending)
        return not any(f.cancelled() or f.exception() is not None for f in pending)

    async def _stop(self) -> None:
        if self._feeder is not None:
            self._feeder.cancel()
        if self._producer is not None:
            await self._producer.stop()
