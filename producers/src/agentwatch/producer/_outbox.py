"""Where packed records wait until the transport confirms their delivery.

The background thread appends every packed record to an outbox, sends what is
unsent, and forgets records only once they are delivered. When Kafka is down (at
start or later) records simply stay here, and the thread retries with backoff;
the outbox's bound is what keeps memory (or disk) bounded, because the thread
stops draining the emit queue while the outbox is full, and ``emit()`` then
drops and counts.

Records move through three zones, in order::

    [ in flight (sent, not yet confirmed) | unsent ]
      ^ acknowledge(n) pops from here        ^ take_unsent(n) moves from here

A delivery failure rewinds: every in-flight record becomes unsent again and is
re-sent in its original order (go-back-N). Records after the failed one that did
arrive are sent twice; events carry their ``event_id`` and later stages drop
duplicates, while per-session order is kept.

Two implementations: :class:`MemoryOutbox` (default, bounded in events) and
``agentwatch.producer._spool.DiskSpool`` (``spool_dir``: bounded in bytes,
survives an agent restart).
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from agentwatch.producer._settings import ProducerSettings
from agentwatch.producer.packing import PackedRecord

__all__ = ["MemoryOutbox", "Outbox", "open_outbox"]


def open_outbox(settings: ProducerSettings) -> Outbox:
    """A :class:`DiskSpool` on ``settings.spool_dir`` when set (it may hold records of a
    previous run, unsent), else a :class:`MemoryOutbox` of ``queue_size`` events."""
    if settings.spool_dir is None:
        return MemoryOutbox(settings.queue_size)
    from agentwatch.producer._spool import DiskSpool  # noqa: PLC0415 -- only with spool_dir

    return DiskSpool(settings.spool_dir, max_bytes=settings.spool_max_bytes)


class Outbox(Protocol):
    """Records waiting for confirmed delivery. Used by one thread only."""

    @property
    def events(self) -> int:
        """Events held: in flight plus unsent."""

    @property
    def in_flight(self) -> int:
        """Records handed to the transport and not yet acknowledged."""

    @property
    def unsent(self) -> int:
        """Records not handed to the transport yet."""

    def room_events(self, wanted: int) -> int:
        """How many more events (at most ``wanted``) the thread may take from the queue."""

    def append(self, records: list[PackedRecord]) -> None:
        """Add records at the end, in order. Never refuses: the caller respects the room."""

    def take_unsent(self, max_records: int) -> list[PackedRecord]:
        """The next ``max_records`` unsent records, in order; they are now in flight."""

    def acknowledge(self, count: int) -> int:
        """The oldest ``count`` in-flight records were delivered: forget them. Returns how
        many events they held."""

    def rewind(self) -> None:
        """Delivery failed: every in-flight record becomes unsent again, order kept."""

    def close(self) -> None:
        """Release resources. Records still held are lost (memory) or kept (disk)."""


class MemoryOutbox:
    """An outbox in memory, bounded by ``capacity_events``."""

    __slots__ = ("_capacity", "_events", "_flight", "_unsent")

    def __init__(self, capacity_events: int) -> None:
        self._capacity = capacity_events
        self._flight: deque[PackedRecord] = deque()
        self._unsent: deque[PackedRecord] = deque()
        self._events = 0

    @property
    def events(self) -> int:
        return self._events

    @property
    def in_flight(self) -> int:
        return len(self._flight)

    @property
    def unsent(self) -> int:
        return len(self._unsent)

    def room_events(self, wanted: int) -> int:
        return max(0, min(wanted, self._capacity - self._events))

    def append(self, records: list[PackedRecord]) -> None:
        self._unsent.extend(records)
        self._events += sum(r.events for r in records)

    def take_unsent(self, max_records: int) -> list[PackedRecord]:
        unsent, flight = self._unsent, self._flight
        taken = [unsent.popleft() for _ in range(min(max_records, len(unsent)))]
        flight.extend(taken)
        return taken

    def acknowledge(self, count: int) -> int:
        flight, events = self._flight, 0
        for _ in range(min(count, len(flight))):
            events += flight.popleft().events
        self._events -= events
        return events

    def rewind(self) -> None:
        self._flight.extend(self._unsent)
        self._flight, self._unsent = deque(), self._flight

    def close(self) -> None:
        self._flight.clear()
        self._unsent.clear()
        self._events = 0
