"""The transport contract: where packed records go (Kafka, an in-process log, memory).

A record is ``(key, value)``: ``key`` is ``b"<tenant_id>/<session_id>"`` and
``value`` a JSON array of 1..N events of that session (DESIGN.md, "Kafka records").
The transport owns its destination (topic, broker connection).

The client calls every method from its one background thread, never
concurrently, so a transport needs no locking of its own:

* ``send(records)`` hands records on **in order** (records of one key must keep
  their order). It may buffer; it may raise any exception, and the client then
  retries the whole call a bounded number of times with backoff before counting
  its events as failed (so a retried partial send can duplicate events: at least
  once; consumers deduplicate on ``event_id``). It should bound its own time.
* ``flush(timeout_s)`` waits until what was sent is delivered; True when it is.
* ``close()`` releases resources; ``send`` after ``close`` raises.

``flush()`` and ``close()`` of the client stay bounded even when a transport hangs.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Protocol, TypeAlias, runtime_checkable

from agentwatch.producer._settings import ProducerSettings
from agentwatch.schemas import ConfigError

__all__ = ["Record", "Transport", "kafka_transport"]

#: One record: (key, value), both bytes.
Record: TypeAlias = tuple[bytes, bytes]

# Module of the Kafka transport (aiokafka), imported only when bootstrap_servers is set.
_KAFKA_MODULE = "agentwatch.producer._kafka"


@runtime_checkable
class Transport(Protocol):
    """Where the producer's background thread hands packed records."""

    def send(self, records: Sequence[Record]) -> None:
        """Hand ``records`` on, in order. May raise: the client retries, then counts."""

    def flush(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for everything sent to be delivered."""

    def close(self) -> None:
        """Release resources. Called once, after the last ``flush``."""


def kafka_transport(settings: ProducerSettings) -> Transport:
    """Build the Kafka transport for ``settings.bootstrap_servers``.

    Hook for ``agentwatch.producer._kafka``: that module provides
    ``KafkaTransport.from_settings(settings) -> Transport``. It is imported lazily
    so an agent that never uses Kafka never imports aiokafka.
    """
    try:
        module = importlib.import_module(_KAFKA_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name == _KAFKA_MODULE:
            raise ConfigError(
                "bootstrap_servers: the Kafka transport is not available yet in this version "
                "of agentwatch-producer; pass transport=InProcessTransport(...) instead"
            ) from None
        raise ConfigError(
            f"bootstrap_servers: the Kafka transport needs {exc.name!r}: "
            "pip install agentwatch-producer"
        ) from None
    transport: Transport = module.KafkaTransport.from_settings(settings)
    return transport
