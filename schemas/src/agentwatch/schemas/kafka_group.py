"""Consumer-group helpers shared by ``agentwatch sink`` and ``agentwatch webhooks``:
logging, stopping on SIGINT/SIGTERM, starting a Kafka client while the broker is not up
yet, a rebalance listener, reading committed offsets together with their metadata
(through the public admin API), and creating a compacted topic when it is missing.

Public because two distributions use it (``agentwatch-sinks`` and ``agentwatch-alerts``);
it needs aiokafka: ``agentwatch-schemas[kafka]``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from agentwatch.schemas.backoff import Backoff, sleep_async
from agentwatch.schemas.errors import ConfigError, TransportError
from agentwatch.schemas.kafka_security import KafkaSecurity, explain_connect_failure

if TYPE_CHECKING:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.structs import TopicPartition

__all__ = [
    "CommittedOffsets",
    "configure_logging",
    "ensure_compacted_topic",
    "install_signal_handlers",
    "rebalance_listener",
    "start_with_retry",
]


class _Client(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


C = TypeVar("C", bound=_Client)


class _Stoppable(Protocol):
    def stop(self) -> None: ...


def configure_logging(loglevel: str) -> None:
    """The services' log format, at ``loglevel`` (debug, info, warning or error)."""
    logging.basicConfig(
        level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def install_signal_handlers(runner: _Stoppable) -> None:
    """SIGINT and SIGTERM call ``runner.stop()`` (call inside the running event loop)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, runner.stop)


def rebalance_listener(
    on_revoked: Callable[[list[TopicPartition]], Awaitable[None]],
    on_assigned: Callable[[list[TopicPartition]], Awaitable[None]],
) -> Any:
    """An aiokafka ``ConsumerRebalanceListener`` calling these coroutines with lists."""
    from aiokafka.abc import ConsumerRebalanceListener  # noqa: PLC0415

    class Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # untyped base
        async def on_partitions_revoked(self, revoked: Any) -> None:
            await on_revoked(list(revoked))

        async def on_partitions_assigned(self, assigned: Any) -> None:
            await on_assigned(list(assigned))

    return Listener()


async def start_with_retry(
    make: Callable[[], C],
    stopping: asyncio.Event,
    *,
    log: logging.Logger,
    what: str,
    bootstrap_servers: str,
    max_backoff_s: float,
    security: KafkaSecurity,
) -> C | None:
    """Start a client from ``make()``, retrying with backoff (1 s doubling up to
    ``max_backoff_s``) while Kafka cannot be reached: a service often starts before its
    broker, or the broker restarts. None when ``stopping`` is set meanwhile.

    Refused credentials or a failed TLS handshake are not retried: they raise ConfigError
    naming the settings to fix (a wrong password does not heal by waiting)."""
    from aiokafka.errors import KafkaError  # noqa: PLC0415 (optional runtime dependency)

    backoff = Backoff(min(1.0, max_backoff_s), max_backoff_s)
    while True:
        client = make()
        try:
            await client.start()
        except KafkaError as exc:
            with contextlib.suppress(Exception):
                await client.stop()
            if security.protocol != "PLAINTEXT":
                refused = await explain_connect_failure(bootstrap_servers, security)
                if refused is not None:
                    raise ConfigError(refused) from None
            wait_s = backoff.next_s()
            log.warning(
                "%s: cannot reach Kafka at %s (%s); retrying in %.0f s",
                what,
                bootstrap_servers,
                exc,
                wait_s,
            )
            if await sleep_async(wait_s, stopping):
                return None
        else:
            return client


#: how long CommittedOffsets.read retries retriable errors before it raises
_READ_RETRY_S = 120.0
_log = logging.getLogger("agentwatch.kafka")


class CommittedOffsets:
    """A group's committed offsets *and their metadata* (the sink's recent-id ranges, the
    dispatcher's progress), read with the admin API's public ``list_consumer_group_offsets``
    (Kafka's OffsetFetch; the consumer's public ``committed()`` drops the metadata). One
    admin client, started on first use (a rebalance callback, so Kafka is reachable) and
    kept until :meth:`close`. ``stopping``: the service's stop event; set, it ends a
    retry's wait at once (:meth:`read` then raises)."""

    def __init__(self, bootstrap_servers: str, group_id: str, security: KafkaSecurity,
                 *, stopping: asyncio.Event | None = None) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._group_id = group_id
        self._security = security
        self._stopping = asyncio.Event() if stopping is None else stopping
        self._admin: Any = None

    async def read(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, tuple[int | None, str]]:
        """``partition -> (committed offset, metadata)``; ``(None, "")`` when none.

        Retriable errors (no coordinator yet, a broker just back from an outage) are
        retried for up to ``_READ_RETRY_S``, with a fresh admin client after each: the
        caller is a rebalance callback, and a partition it fails to set up is never read.

        An answer that leaves out a partition asked for is retried too. The broker answers
        a partition without a commit with offset -1; it leaves them all out when the answer
        is a group-level error (OffsetFetch v2+: "coordinator load in progress" right after
        a restart), which aiokafka (its admin client and its consumer alike) does not check:
        taken as it is, every partition would look never committed and be read again from
        the start."""
        from aiokafka.errors import KafkaError  # noqa: PLC0415 (optional runtime dependency)

        deadline = asyncio.get_running_loop().time() + _READ_RETRY_S
        backoff = Backoff(0.1, 2.0)
        while True:
            try:
                admin = await self._started()
                offsets = await admin.list_consumer_group_offsets(
                    self._group_id, partitions=partitions)
            except KafkaError as exc:
                if not exc.retriable:
                    raise
                problem = str(exc)
            else:
                left_out = [tp for tp in partitions if tp not in offsets]
                if not left_out:
                    break
                problem = f"the answer left out {len(left_out)} of the partitions asked for"
            if asyncio.get_running_loop().time() > deadline or self._stopping.is_set():
                raise KafkaError(f"committed offsets of {self._group_id}: {problem}")
            wait_s = backoff.next_s()
            _log.info("committed offsets of %s: %s; retrying in %.1f s",
                      self._group_id, problem, wait_s)
            with contextlib.suppress(Exception):
                await self.close()
            if await sleep_async(wait_s, self._stopping):
                raise KafkaError(f"committed offsets of {self._group_id}: {problem} "
                                 "(stopping)")
        out: dict[TopicPartition, tuple[int | None, str]] = {}
        for tp in partitions:
            meta = offsets.get(tp)
            if meta is None or meta.offset < 0:
                out[tp] = (None, "")
            else:
                out[tp] = (meta.offset, meta.metadata or "")
        return out

    async def _started(self) -> Any:
        if self._admin is None:
            from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415 (optional runtime)

            admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap_servers,
                                        client_id=f"{self._group_id}-offsets",
                                        **self._security.client_options())
            try:
                await admin.start()
            except BaseException:
                await admin.close()
                raise
            self._admin = admin
        return self._admin

    async def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            await admin.close()


_TOPIC_VISIBLE_WAIT_S: Final = 10.0


async def ensure_compacted_topic(
    bootstrap_servers: str, topic: str, *, timeout_s: float = 10.0,
    security: KafkaSecurity | None = None,
) -> None:
    """Create the compacted one-partition ``topic`` when it is missing (the acks topic:
    acks are a trickle, one partition keeps them in order); TransportError when Kafka
    cannot be reached."""
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415
    from aiokafka.errors import KafkaError  # noqa: PLC0415

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        request_timeout_ms=int(timeout_s * 1000),
        **(security or KafkaSecurity()).client_options(),
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
    _log.info("creating the compacted topic %s", topic)
    with contextlib.suppress(TopicAlreadyExistsError):
        await admin.create_topics(
            [
                NewTopic(
                    topic,
                    1,
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
