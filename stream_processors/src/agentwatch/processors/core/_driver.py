"""Event time drives the engine: feed events, run timers on the watermark.

The watermark is the largest event time seen minus ``disorder_s``: no event older
than that is expected any more, so quiet keys may resolve and idle sessions
expire up to it. Timers run each time the watermark has moved ``advance_step_us``
(resolution times stay exact; only when a quiet key's resolution is reported
moves, by at most that much event time). Every runtime feeds the engine this
way, so they agree.
"""

from __future__ import annotations

from typing import Final

from agentwatch.processors.core._engine import Engine
from agentwatch.schemas import Alert, Event, to_us

__all__ = ["ADVANCE_STEP_US", "EventTimeDriver"]

ADVANCE_STEP_US: Final = 100_000


class EventTimeDriver:
    """An :class:`Engine` fed in arrival order, its timers run on the stream's watermark."""

    __slots__ = ("_disorder_us", "_step_us", "engine", "next_advance_us")

    def __init__(self, engine: Engine, *, advance_step_us: int = ADVANCE_STEP_US) -> None:
        self.engine = engine
        self._disorder_us = engine.config.disorder_us
        self._step_us = advance_step_us
        self.next_advance_us = -(1 << 62)

    def feed(self, event: Event) -> list[Alert]:
        """Process one event; returns the alert state changes it (and the time it marks)
        caused. Hot loops may inline this body (``agentwatch replay`` does)."""
        ts_us = to_us(event.ts)
        alerts = self.engine.process(event, ts_us)
        if ts_us >= self.next_advance_us:
            alerts += self.engine.advance(ts_us - self._disorder_us)
            self.next_advance_us = ts_us + self._step_us
        return alerts
