"""An in-process stand-in for Kafka: append-only logs per topic, offsets = list index.

The embedded pipeline (``agentwatch demo``) reads an :class:`InProcessLog`
where a deployment reads Kafka; :class:`InProcessTransport` writes into one.
Records are kept in memory for the life of the log (no retention).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

from agentwatch.producer._settings import DEFAULT_TOPIC
from agentwatch.producer._transport import Record
from agentwatch.schemas import TransportError

__all__ = ["InProcessLog", "InProcessTransport"]


class InProcessLog:
    """Thread-safe append-only logs of ``(key, value)`` records, one per topic."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._topics: dict[str, list[Record]] = {}
        self._closed = False

    def append(self, topic: str, records: Iterable[Record]) -> int:
        """Append ``records`` to ``topic`` in order; returns the offset of the first one."""
        batch = [(bytes(key), bytes(value)) for key, value in records]
        with self._cond:
            if self._closed:
                raise TransportError("the in-process log is closed")
            log = self._topics.setdefault(topic, [])
            first = len(log)
            log.extend(batch)
            if batch:
                self._cond.notify_all()
            return first

    def read(
        self, topic: str, offset: int, max_records: int = 1000
    ) -> list[tuple[int, bytes, bytes]]:
        """Up to ``max_records`` records from ``offset`` on, as ``(offset, key, value)``."""
        if offset < 0 or max_records < 1:
            raise ValueError(
                f"offset must be >= 0 and max_records >= 1, got {offset}, {max_records}"
            )
        with self._cond:
            chunk = self._topics.get(topic, [])[offset : offset + max_records]
        return [(offset + i, key, value) for i, (key, value) in enumerate(chunk)]

    def end_offset(self, topic: str) -> int:
        """The offset the next record of ``topic`` will get (= number of records)."""
        with self._cond:
            return len(self._topics.get(topic, ()))

    def wait(self, topic: str, offset: int, timeout_s: float) -> bool:
        """Block until a record exists at ``offset`` (True), or time out / close (False)."""
        with self._cond:
            return (
                self._cond.wait_for(
                    lambda: self._closed or len(self._topics.get(topic, ())) > offset,
                    timeout=max(0.0, timeout_s),
                )
                and len(self._topics.get(topic, ())) > offset
            )

    def topics(self) -> list[str]:
        with self._cond:
            return sorted(self._topics)

    def close(self) -> None:
        """Refuse further appends and wake every waiter (records stay readable)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class InProcessTransport:
    """A :class:`~agentwatch.producer.Transport` that appends to an :class:`InProcessLog`."""

    def __init__(self, log: InProcessLog, topic: str = DEFAULT_TOPIC) -> None:
        if not isinstance(log, InProcessLog):
            raise TypeError(f"log must be an InProcessLog, got {type(log).__name__}")
        if not isinstance(topic, str) or not topic:
            raise ValueError(f"topic must be a non-empty string, got {topic!r}")
        self.log = log
        self.topic = topic
        self._closed = False

    def send(self, records: Sequence[Record]) -> None:
        if self._closed:
            raise TransportError("InProcessTransport is closed")
        self.log.append(self.topic, records)

    def flush(self, timeout_s: float) -> bool:
        return True

    def close(self) -> None:
        self._closed = True
