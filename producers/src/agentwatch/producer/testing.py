"""Fakes for your own tests: assert on the telemetry your agent emits.

::

    from agentwatch.producer.testing import collector

    def test_my_agent_reports_its_tool_calls():
        aw = collector(agent_id="support-bot")
        run_my_agent(aw)
        assert [e.name for e in aw.events if e.kind == "tool_call"] == ["search", "answer"]
        aw.close()

``events`` and ``records`` flush first, so what was emitted before is there.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from agentwatch.producer._client import Agentwatch
from agentwatch.producer._transport import Record
from agentwatch.schemas import Event, Rejected, decode_record

__all__ = ["CollectingTransport", "Collector", "collector"]


class CollectingTransport:
    """A transport that keeps every record in memory, in the order sent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[Record] = []
        self.closed = False

    def send(self, records: Sequence[Record]) -> None:
        with self._lock:
            self._records.extend(records)

    def flush(self, timeout_s: float) -> bool:
        return True

    def close(self) -> None:
        self.closed = True

    @property
    def records(self) -> list[Record]:
        """Every ``(key, value)`` record sent so far."""
        with self._lock:
            return list(self._records)

    @property
    def events(self) -> list[Event]:
        """Every event of every record, decoded and validated, in order."""
        return [e for _, value in self.records for e in decode_record(value).events]

    @property
    def rejected(self) -> list[Rejected]:
        """Anything in the records that is not a valid event (should stay empty)."""
        return [r for _, value in self.records for r in decode_record(value).rejected]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()


class Collector(Agentwatch):
    """An :class:`Agentwatch` wired to a :class:`CollectingTransport`."""

    def __init__(self, **settings: Any) -> None:
        self._collected = CollectingTransport()
        super().__init__(transport=self._collected, **settings)

    @property
    def transport(self) -> CollectingTransport:
        return self._collected

    @property
    def records(self) -> list[Record]:
        self.flush()
        return self._collected.records

    @property
    def events(self) -> list[Event]:
        self.flush()
        return self._collected.events


def collector(**settings: Any) -> Collector:
    """An :class:`Agentwatch` that keeps its telemetry in memory (same settings as
    ``Agentwatch`` except ``transport``)."""
    return Collector(**settings)
