"""The transport contract: where packed records go (Kafka, an in-process log, memory).

A record is ``(key, value)``, ``value`` a JSON array of 1..N events (DESIGN.md, "Kafka
records"). Its form depends on what the transport says about partitions (optional
``partitions() -> int | None``):

* an ``int`` (the Kafka transport, once connected): records are **partition batches**.
  ``key`` is ``b"~batch:<p>"`` and the events are those of one linger interval of every
  session that Kafka's default partitioner (murmur2 of ``<tenant_id>/<session_id>``)
  places on partition ``p`` of that many; the transport writes the record to ``p``
  explicitly. The client places records again before handing them on when the count
  changed since they were packed, so a record's events always belong to ``p`` under
  the count the transport last reported.
* ``None``, or no such method (the in-process log, the ``testing`` collector, most
  transports of your own): ``key`` is ``b"<tenant_id>/<session_id>"`` and the events
  are one session's (a transport without partitions keeps every record anyway). Such
  a transport may still get partition batches read back from a spool (``spool_dir``)
  written by a Kafka client.

The transport owns its destination (topic, broker connection).

The client calls every method from its one background thread, never
concurrently, so a transport needs no locking of its own:

* ``send(records)`` hands records on **in order** (records of one key must keep
  their order). It may buffer; it may raise any exception, and the client then
  sends every record it has not seen confirmed again, in order, after a backoff
  (so a retried partial send can duplicate events: at least once; consumers
  deduplicate on ``event_id``). It should bound its own time.
* ``flush(timeout_s)`` waits until what was sent is delivered; True when it is.
* ``close()`` releases resources; ``send`` after ``close`` raises.
* optional ``partitions() -> int | None``: the topic's partition count when known
  (None: not known, pack per session). The client reads it on every wake of its
  thread: keep it cheap (a cached value; the Kafka transport's first call waits up
  to 2 s for its first connection, once). A change of count is logged by the client.
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
