"""Human escalation: a firing nobody acknowledged goes up the endpoints' chain.

::

    escalator = Escalator(dispatcher)
    escalator.submit(alert, ref)          # instead of dispatcher.submit(alert, ref)
    escalator.ack(Ack.now(alert_id, "maria"))
    ...
    escalator.close()

An endpoint with ``escalate_after_s`` and ``escalate_to`` (endpoints file) starts a timer
for each firing it receives. When the timer runs out and the alert is neither
acknowledged nor resolved, the firing is sent to ``escalate_to`` (whatever that
endpoint's filters say), which starts that endpoint's own timer if it has one: the chain
goes one level per timer, each endpoint getting the alert once. An acknowledgement or the
resolution stops the chain; the resolution is also sent to every endpoint the alert was
escalated to (a PagerDuty incident opened by an escalation is closed by it).

Timers run on the dispatcher's clock from the moment the firing is submitted (not the
alert's event time: a replayed backlog must not page everyone at once).

What a restart keeps and loses: acknowledgements are durable (the acks topic, read from
its beginning at start, or ``alert_acks`` in ClickHouse) and are applied before any alert
is escalated. Pending timers live in memory: a firing the dispatcher has committed
before it stopped is not read again, so its remaining escalation levels are not sent,
and its later resolution reaches only the endpoints its filters match (README,
"Escalation and acknowledgement").
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Final

from agentwatch.alerts._dispatcher import Dispatcher
from agentwatch.schemas import Ack, Alert, AlertState

__all__ = ["EscalationStats", "Escalator"]

log = logging.getLogger("agentwatch.webhooks")

MAX_OPEN_ALERTS: Final = 100_000
"""Firing alerts remembered for escalation; past it the oldest are forgotten."""
MAX_ACKS: Final = 1_000_000
"""Acknowledgements remembered (the acks topic keeps them all)."""


@dataclass(slots=True)
class EscalationStats:
    escalated: int = 0
    """Firings sent to an endpoint because nobody acknowledged them."""
    acked: int = 0
    """Acknowledgements applied (the first one per alert)."""
    stopped_by_ack: int = 0
    stopped_by_resolution: int = 0


@dataclass(slots=True, eq=False)
class _Open:
    """A firing alert with escalation timers running."""

    alert: Alert
    received: set[str] = field(default_factory=set)
    """Endpoints that have this firing (directly or by escalation)."""
    escalated: set[str] = field(default_factory=set)
    """Endpoints that got it by escalation only."""


class Escalator:
    """Escalation timers and acknowledgements over a :class:`Dispatcher` (module
    docstring). Thread-safe; one daemon thread fires the timers."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_escalate: Callable[[Alert, str, str], None] | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._configs = {e.name: e for e in dispatcher.endpoints}
        self._clock = clock
        self._on_escalate = on_escalate
        self._cond = threading.Condition()
        self._open: OrderedDict[str, _Open] = OrderedDict()
        self._acks: OrderedDict[str, Ack] = OrderedDict()
        self._heap: list[tuple[float, int, str, str, str]] = []
        """(due, seq, alert id, from endpoint, to endpoint)"""
        self._seq = itertools.count()
        self._closed = False
        self._running = 0
        self.stats = EscalationStats()
        self._thread = threading.Thread(target=self._run, name="agentwatch-escalation", daemon=True)
        if any(e.escalate_to for e in self._configs.values()):
            self._thread.start()

    @property
    def dispatcher(self) -> Dispatcher:
        return self._dispatcher

    # -- the runtimes' side -----------------------------------------------------------
    def submit(self, alert: Alert, ref: object = None, *, skip: Collection[str] = ()) -> int:
        """:meth:`Dispatcher.submit`, then start or stop this alert's escalation."""
        count = self._dispatcher.submit(alert, ref, skip=skip)
        direct = {name for name, e in self._configs.items() if e.matches(alert)}
        if alert.state is AlertState.FIRING:
            self._fired(alert, direct)
        else:
            self._resolved(alert, direct)
        return count

    def ack(self, ack: Ack) -> bool:
        """Apply an acknowledgement; True when it is the first for its alert."""
        with self._cond:
            if ack.alert_id in self._acks:
                return False
            self._acks[ack.alert_id] = ack
            while len(self._acks) > MAX_ACKS:
                self._acks.popitem(last=False)
            self.stats.acked += 1
            if self._open.pop(ack.alert_id, None) is not None:
                self.stats.stopped_by_ack += 1
                log.info("alert %s acknowledged by %s: escalation stopped", ack.alert_id, ack.by)
            return True

    def acked(self, alert_id: str) -> Ack | None:
        with self._cond:
            return self._acks.get(alert_id)

    @property
    def open_alerts(self) -> int:
        """Firing alerts with escalation timers running."""
        with self._cond:
            return len(self._open)

    @property
    def pending_timers(self) -> int:
        """Timers not run yet (a stopped chain's timers run out and do nothing)."""
        with self._cond:
            return len(self._heap) + self._running

    def wait_timers(self, timeout_s: float) -> bool:
        """Block until every timer has run (and its escalation is submitted); False at
        the timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._heap and not self._running, timeout_s)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- state ------------------------------------------------------------------------
    def _fired(self, alert: Alert, direct: set[str]) -> None:
        starting = [n for n in direct if self._configs[n].escalate_to is not None]
        with self._cond:
            if alert.alert_id in self._acks or alert.alert_id in self._open:
                return  # acknowledged already, or a firing read twice: its timers run
            if not starting:
                return
            self._open[alert.alert_id] = _Open(alert, received=set(direct))
            while len(self._open) > MAX_OPEN_ALERTS:
                self._open.popitem(last=False)
            for name in starting:
                self._schedule(alert.alert_id, name)

    def _schedule(self, alert_id: str, source: str) -> None:  # call with _cond held
        config = self._configs[source]
        if config.escalate_to is None or config.escalate_after_s is None:
            return
        due = self._clock() + config.escalate_after_s
        heapq.heappush(self._heap, (due, next(self._seq), alert_id, source, config.escalate_to))
        self._cond.notify_all()  # the timer thread, whoever else waits

    def _resolved(self, alert: Alert, direct: set[str]) -> None:
        with self._cond:
            state = self._open.pop(alert.alert_id, None)
            if state is None:
                return
            self.stats.stopped_by_resolution += 1
            extra = state.escalated - direct
        if extra:  # they got the firing by escalation: close it there too
            self._dispatcher.submit(alert, only=extra)

    # -- the timer thread ---------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                due = self._next_due()
                if due is None:
                    return
                alert_id, source, target = due
                state = self._open.get(alert_id)
                if state is None or target in state.received:
                    self._cond.notify_all()  # for wait_timers
                    continue  # acknowledged, resolved, or it has it already
                state.received.add(target)
                state.escalated.add(target)
                self._schedule(alert_id, target)
                self.stats.escalated += 1
                self._running += 1
                alert = state.alert
            try:
                self._escalate(alert, source, target)
            finally:
                with self._cond:
                    self._running -= 1
                    self._cond.notify_all()

    def _escalate(self, alert: Alert, source: str, target: str) -> None:
        alert_id = alert.alert_id
        log.warning(
            "alert %s not acknowledged within %.0f s of reaching %s: escalating to %s",
            alert_id,
            self._configs[source].escalate_after_s or 0.0,
            source,
            target,
        )
        try:
            self._dispatcher.submit(alert, only={target})
            if self._on_escalate is not None:
                self._on_escalate(alert, source, target)
        except Exception:
            log.exception("escalation of %s to %s failed", alert_id, target)

    def _next_due(self) -> tuple[str, str, str] | None:  # call with _cond held
        while not self._closed:
            if not self._heap:
                self._cond.wait()
                continue
            wait_s = self._heap[0][0] - self._clock()
            if wait_s <= 0:
                _due, _seq, alert_id, source, target = heapq.heappop(self._heap)
                return alert_id, source, target
            self._cond.wait(wait_s)
        return None
