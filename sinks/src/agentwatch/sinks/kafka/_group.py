"""Consumer-group helpers shared by ``agentwatch sink`` and ``agentwatch webhooks``:
logging, stopping on SIGINT/SIGTERM, starting a Kafka client while the broker is not up
yet, a rebalance listener, and reading committed offsets together with their metadata."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from agentwatch.schemas.errors import ConfigError
from agentwatch.schemas.kafka_security import KafkaSecurity, explain_connect_failure

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

__all__ = [
    "committed_with_metadata",
    "configure_logging",
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

    wait_s = 1.0
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
            log.warning(
                "%s: cannot reach Kafka at %s (%s); retrying in %.0f s",
                what,
                bootstrap_servers,
                exc,
                wait_s,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), wait_s)
            if stopping.is_set():
                return None
            wait_s = min(wait_s * 2, max_backoff_s)
        else:
            return client


async def committed_with_metadata(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
) -> dict[TopicPartition, tuple[int | None, str]]:
    """Committed offsets *and their metadata* (the public ``committed()`` drops the
    metadata). Uses the group coordinator aiokafka keeps (private API: aiokafka is pinned
    in ``agentwatch-sinks``)."""
    coordinator: Any = consumer._coordinator
    offsets = await coordinator.fetch_committed_offsets(partitions)
    out: dict[TopicPartition, tuple[int | None, str]] = {}
    for tp in partitions:
        meta = offsets.get(tp)
        if meta is None or meta.offset < 0:
            out[tp] = (None, "")
        else:
            out[tp] = (meta.offset, meta.metadata or "")
    return out
