"""The Kafka transport: aiokafka on an event loop of its own, in a daemon thread.

The client's background thread calls :meth:`KafkaTransport.send` and ``flush``; both hand a
coroutine to the transport's loop and wait for it with a bound, so the caller's thread (and
the agent's own event loop, if it has one) never runs Kafka I/O. Records are produced
keyed ``<tenant_id>/<session_id>``: Kafka's default partitioner keeps a session on one
partition, and with idempotence on (the default) retries cannot reorder them.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer

from agentwatch.producer._settings import ProducerSettings
from agentwatch.schemas import TransportError

__all__ = ["KafkaTransport"]

T = TypeVar("T")

#: how long a send may wait for the broker to accept records into the producer's buffer
_SEND_TIMEOUT_S = 30.0


class KafkaTransport:
    """Produce packed records to one topic (acks=all and idempotence by default)."""

    def __init__(self, bootstrap_servers: str, topic: str, *, linger_ms: int = 5,
                 acks: str | int = "all", enable_idempotence: bool = True,
                 request_timeout_ms: int = 30_000) -> None:
        self.topic = topic
        self._config: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "linger_ms": linger_ms,
            "acks": acks,
            "enable_idempotence": enable_idempotence,
            "request_timeout_ms": request_timeout_ms,
        }
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="agentwatch-kafka", daemon=True)
        self._thread.start()
        self._producer: AIOKafkaProducer | None = None
        self._pending: list[asyncio.Future[Any]] = []
        self._closed = False

    @classmethod
    def from_settings(cls, settings: ProducerSettings) -> KafkaTransport:
        assert settings.bootstrap_servers is not None  # noqa: S101 -- the hook checks it
        return cls(settings.bootstrap_servers, settings.topic)

    # -- the Transport contract (called from the client's one background thread) --------------
    def send(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        if self._closed:
            raise TransportError("the Kafka transport is closed")
        self._run(self._send(list(records)), _SEND_TIMEOUT_S)

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

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(**self._config)
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def _send(self, records: list[tuple[bytes, bytes]]) -> None:
        producer = await self._ensure_producer()
        topic, pending = self.topic, self._pending
        for key, value in records:
            pending.append(await producer.send(topic, value, key=key))
        if len(pending) > 10_000:  # forget what is already delivered; keep failures
            self._pending = [f for f in pending if not f.done() or f.exception() is not None]

    async def _flush(self) -> bool:
        if self._producer is None:
            return not self._pending
        await self._producer.flush()
        pending, self._pending = self._pending, []
        results = await asyncio.gather(*pending, return_exceptions=True)
        return not any(isinstance(r, BaseException) for r in results)

    async def _stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
