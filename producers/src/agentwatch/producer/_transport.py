"""The transport contract: where packed records go (Kafka, an in-process log, memory).

A record is ``(key, value)``, ``value`` a JSON array of 1..N events (DESIGN.md, "Kafka
records"). With a transport that knows its topic's partition count (optional
``partitions() -> int | None``, the Kafka transport), records are **partition batches**:
``key`` is ``b"~batch:<p>"`` and the events are those of every session Kafka's default
partitioner places on partition ``p``; the transport writes the record to ``p``
explicitly. Without it, ``key`` is ``b"<tenant_id>/<session_id>"`` and the events are one
session's. The transport owns its destination (topic, broker connection).

The client calls every method from its one background thread, never
concurrently, so a transport needs no locking of its own:

* ``send(records)`` hands records on **in order** (records of one key must keep
  their order). It may buffer; it may raise any exception, and the client then
  sends every record it has not seen confirmed again, in order, after a backoff
  (so a retried partial send can duplicate events: at least once; consumers
  deduplicate on ``event_id``). It should bound its own time.
* ``flush(timeout_s)`` waits until what was sent is delivered; True when it is.
* ``close()`` releases resources; ``send`` after ``close`` raises.
* optional ``partitions() -> int | None``: the topic's partition count when known; the
  client reads it on every wake (keep it cheap: a cached value).
* optional ``poll_deliveries() -> (delivered, failed)``: a transport that delivers
  asynchronously reports here. ``delivered`` is how many of the oldest records
  handed to ``send`` since the last report are confirmed (a prefix, in send
  order); ``failed`` says the record right after them failed. After a failure
  (or after ``send`` raised) the transport forgets every record it was tracking:
  the client sends them all again. Without this method, a ``send`` that returns
  means delivered.

``flush()`` and ``close()`` of the client stay bounded even when a transport hangs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeAlias, runtime_checkable

from agentwatch.producer._settings import ProducerSettings
from agentwatch.schemas import ConfigError

__all__ = ["Record", "Transport", "kafka_transport"]

#: One record: (key, value), both bytes.
Record: TypeAlias = tuple[bytes, bytes]


@runtime_checkable
class Transport(Protocol):
    """Where the producer's background thread hands packed records."""

    def send(self, records: Sequence[Record]) -> None:
        """Hand ``records`` on, in order. May raise: the client retries, then counts."""

    def flush(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for everything sent to be delivered."""

    def close(self) -> None:
        """Release resources. Called once, after the last ``flush``."""


def kafka_transport(
    settings: ProducerSettings, kafka_options: Mapping[str, Any] | None = None
) -> Transport:
    """Build the Kafka transport for ``settings.bootstrap_servers``. Imported here, lazily,
    so an agent that never uses Kafka never imports aiokafka."""
    try:
        from agentwatch.producer._kafka import KafkaTransport  # noqa: PLC0415
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"bootstrap_servers: the Kafka transport needs {exc.name!r}: "
            "pip install agentwatch-producer"
        ) from None
    return KafkaTransport.from_settings(settings, kafka_options or {})
