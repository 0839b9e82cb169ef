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

A PagerDuty endpoint (``format: pagerduty``) that has an alert's firing also gets the
Events v2 ``acknowledge`` (same ``dedup_key``) once, when the alert is acknowledged here;
an alert acknowledged before its firing arrives gets the acknowledge right after the
trigger. Until that ``acknowledge`` is finished (delivered or dead-lettered) the alert
stays in the journal with the endpoints it is owed to, so a crash meanwhile sends it
again after the restart, with the same delivery id.

What a restart keeps: acknowledgements are durable (the acks topic, read from its
beginning at start, or ``alert_acks`` in ClickHouse) and are applied before any alert is
escalated. The open alerts are durable too when a ``journal`` is given: each change of
an open alert (it fired; an escalation was delivered; it was acknowledged, resolved or
forgotten) is handed to ``journal(alert_id, record)`` (:meth:`EscalationState.encode`,
``None`` when it is closed), which the Kafka dispatcher writes to a compacted topic
before it commits past the alert. At start, :meth:`Escalator.restore` takes those
records back: times are wall-clock, so a level whose deadline passed while the
dispatcher was down escalates right after start, one still pending at its deadline, and
an acknowledged or resolved alert never; an alert acknowledged while the dispatcher was
down (or whose ``acknowledge`` was under way at the crash) gets its PagerDuty
``acknowledge`` then. An escalation is recorded once its delivery is
finished: a crash between the two sends it again, with the same delivery id.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from pydantic import ValidationError

from agentwatch.alerts._dispatcher import Dispatcher
from agentwatch.schemas import Ack, Alert, AlertState, encode_alert

__all__ = ["EscalationState", "EscalationStats", "Escalator", "escalations_topic"]

log = logging.getLogger("agentwatch.webhooks")

MAX_OPEN_ALERTS: Final = 100_000
"""Firing alerts remembered for escalation; past it the oldest are forgotten."""
MAX_ACKS: Final = 1_000_000
"""Acknowledgements remembered (the acks topic keeps them all)."""


def escalations_topic(acks_topic: str) -> str:
    """The compacted topic of the open alerts, next to the acks topic."""
    return f"{acks_topic}.escalations"


@dataclass(frozen=True, slots=True)
class EscalationState:
    """An open alert as it survives a restart: the firing, the endpoints that have it
    (with the wall-clock time, unix s, each got it) and those that got it by
    escalation."""

    alert: Alert
    received: Mapping[str, float]
    escalated: frozenset[str] = frozenset()
    partition: int | None = None
    """The alerts-topic partition it was read from: its owner restores it."""
    acknowledge: frozenset[str] = frozenset()
    """PagerDuty endpoints owed the ``acknowledge`` of this acknowledged alert."""

    def encode(self) -> bytes:
        data: dict[str, Any] = {
            "alert": orjson.Fragment(encode_alert(self.alert)),
            "received": dict(self.received),
            "escalated": sorted(self.escalated),
            "partition": self.partition,
        }
        if self.acknowledge:
            data["acknowledge"] = sorted(self.acknowledge)
        return orjson.dumps(data)

    @classmethod
    def decode(cls, raw: bytes) -> EscalationState:
        """An escalations-topic record value; ValueError naming the key otherwise."""
        try:
            data: Any = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")  # noqa: TRY004 - callers catch ValueError
        try:
            alert = Alert.model_validate_json(orjson.dumps(data.get("alert")))
        except ValidationError as exc:
            raise ValueError(f"alert: {exc.errors(include_url=False)[:1]}") from None
        received = data.get("received")
        if not isinstance(received, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in received.values()
        ):
            raise ValueError("received: not an object of endpoint -> unix seconds")
        escalated = data.get("escalated", [])
        if not isinstance(escalated, list) or not all(isinstance(n, str) for n in escalated):
            raise ValueError("escalated: not a list of endpoint names")
        partition = data.get("partition")
        if partition is not None and (not isinstance(partition, int) or partition < 0):
            raise ValueError("partition: not a partition number")
        acknowledge = data.get("acknowledge", [])
        if not isinstance(acknowledge, list) or not all(isinstance(n, str) for n in acknowledge):
            raise ValueError("acknowledge: not a list of endpoint names")
        return cls(
            alert,
            {str(k): float(v) for k, v in received.items()},
            frozenset(escalated),
            partition,
            frozenset(acknowledge),
        )


@dataclass(frozen=True, slots=True)
class _EscalationRef:
    """The ``ref`` of an escalation's delivery: its end is recorded in the journal."""

    alert_id: str
    target: str


@dataclass(frozen=True, slots=True, eq=False)
class _AcknowledgeRef:
    """The ``ref`` of a PagerDuty ``acknowledge``: its end closes the alert's journal
    record."""

    alert_id: str


@dataclass(slots=True)
class EscalationStats:
    escalated: int = 0
    """Firings sent to an endpoint because nobody acknowledged them."""
    acked: int = 0
    """Acknowledgements applied (the first one per alert)."""
    stopped_by_ack: int = 0
    stopped_by_resolution: int = 0
    restored: int = 0
    """Open alerts taken back from the journal at start."""
    pagerduty_acknowledged: int = 0
    """PagerDuty ``acknowledge`` events submitted."""


@dataclass(slots=True, eq=False)
class _Open:
    """A firing alert with escalation timers running, or with a PagerDuty endpoint to
    acknowledge it to."""

    alert: Alert
    received: dict[str, float] = field(default_factory=dict)
    """Endpoints that have this firing (directly or by escalation) -> when (wall s)."""
    escalated: set[str] = field(default_factory=set)
    """Endpoints that got it by escalation only."""
    durable: dict[str, float] = field(default_factory=dict)
    """What the journal has of ``received``: an escalation counts once delivered."""
    partition: int | None = None
    acknowledging: set[str] = field(default_factory=set)
    """Acknowledged: the PagerDuty endpoints whose ``acknowledge`` is not finished."""
    acknowledges: int = 0
    """``acknowledge`` submissions under way."""

    def record(self) -> bytes:
        return EscalationState(
            self.alert,
            dict(self.durable),
            frozenset(self.escalated & self.durable.keys()),
            self.partition,
            frozenset(self.acknowledging),
        ).encode()


class Escalator:
    """Escalation timers and acknowledgements over a :class:`Dispatcher` (module
    docstring). Thread-safe; one daemon thread fires the timers."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        on_escalate: Callable[[Alert, str, str], None] | None = None,
        journal: Callable[[str, bytes | None], None] | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._configs = {e.name: e for e in dispatcher.endpoints}
        self._paged = {e.name for e in dispatcher.endpoints if e.format == "pagerduty"}
        self._clock = clock
        self._wall_clock = wall_clock
        self._on_escalate = on_escalate
        self._journal = journal
        self._inner_done = dispatcher.on_done
        dispatcher.on_done = self._on_done  # escalations' ends are recorded; others go on
        self._cond = threading.Condition()
        self._open: OrderedDict[str, _Open] = OrderedDict()
        self._owed: dict[str, _Open] = {}
        """Acknowledged alerts whose PagerDuty ``acknowledge`` is not finished."""
        self._acks: OrderedDict[str, Ack] = OrderedDict()
        self._heap: list[tuple[float, int, str, str, str]] = []
        """(due, seq, alert id, from endpoint, to endpoint)"""
        self._seq = itertools.count()
        self._closed = False
        self._held = False
        self._running = 0
        self.stats = EscalationStats()
        self._thread = threading.Thread(target=self._run, name="agentwatch-escalation", daemon=True)
        if any(e.escalate_to for e in self._configs.values()):
            self._thread.start()

    @property
    def dispatcher(self) -> Dispatcher:
        return self._dispatcher

    # -- the runtimes' side -----------------------------------------------------------
    def submit(
        self,
        alert: Alert,
        ref: object = None,
        *,
        skip: Collection[str] = (),
        partition: int | None = None,
    ) -> int:
        """:meth:`Dispatcher.submit`, then start or stop this alert's escalation
        (``partition``: where the alert was read, kept in the journal)."""
        count = self._dispatcher.submit(alert, ref, skip=skip)
        direct = {name for name, e in self._configs.items() if e.matches(alert)}
        if alert.state is AlertState.FIRING:
            self._fired(alert, direct, sent=direct - set(skip), partition=partition)
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
            state = self._open.pop(ack.alert_id, None)
            if state is None:
                return True
            self.stats.stopped_by_ack += 1
            log.info("alert %s acknowledged by %s: escalation stopped", ack.alert_id, ack.by)
            owed = self._owe(state, state.received.keys())
        self._acknowledge(state.alert, owed)
        return True

    def restore(self, states: Iterable[EscalationState]) -> int:
        """Take back the open alerts of a journal (call after the acks are applied and
        before alerts are submitted); returns how many were restored. Acknowledged ones
        and those already open are left out; endpoints no longer configured are
        ignored."""
        restored = 0
        acknowledge: list[tuple[Alert, set[str]]] = []
        wall_now, now = self._wall_clock(), self._clock()
        with self._cond:
            for saved in states:
                alert_id = saved.alert.alert_id
                if alert_id in self._acks or saved.acknowledge:
                    # acknowledged while down, or its acknowledge was under way: closed
                    # for good once PagerDuty has the acknowledge
                    if alert_id not in self._owed:
                        state = _Open(saved.alert, durable=dict(saved.received),
                                      partition=saved.partition)
                        owed = (saved.received.keys() | saved.acknowledge) & self._paged
                        if owed := self._owe(state, owed):
                            acknowledge.append((saved.alert, owed))
                    continue
                if alert_id in self._open:
                    continue
                received = {n: t for n, t in saved.received.items() if n in self._configs}
                state = _Open(
                    saved.alert,
                    received=dict(received),
                    escalated=set(saved.escalated) & received.keys(),
                    durable=dict(received),
                    partition=saved.partition,
                )
                self._open[alert_id] = state
                restored += 1
                for name, at in received.items():
                    config = self._configs[name]
                    if config.escalate_to is None or config.escalate_to in received:
                        continue
                    if config.escalate_after_s is not None:
                        left_s = max(0.0, at + config.escalate_after_s - wall_now)
                        self._schedule(alert_id, name, due=now + left_s)
            self._trim()
            self.stats.restored += restored
        for alert, owed in acknowledge:
            self._acknowledge(alert, owed)
        return restored

    def acked(self, alert_id: str) -> Ack | None:
        with self._cond:
            return self._acks.get(alert_id)

    def hold(self) -> None:
        """Let no timer run until :meth:`release` (while the alerts written during a
        restart are read: one may resolve an alert whose deadline has passed)."""
        with self._cond:
            self._held = True

    def release(self) -> None:
        with self._cond:
            self._held = False
            self._cond.notify_all()

    def forget(self, partitions: Collection[int]) -> int:
        """Drop the open alerts read from ``partitions`` (revoked: their next owner
        restores them from the journal); returns how many."""
        with self._cond:
            gone = [a for a, state in self._open.items() if state.partition in partitions]
            for alert_id in gone:
                del self._open[alert_id]
            for alert_id in [a for a, s in self._owed.items() if s.partition in partitions]:
                del self._owed[alert_id]  # its next owner sends the acknowledge again
            self._cond.notify_all()
        return len(gone)

    @property
    def open_alerts(self) -> int:
        """Firing alerts with escalation timers running or a PagerDuty incident open."""
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
    def _fired(
        self, alert: Alert, direct: set[str], sent: set[str], partition: int | None
    ) -> None:
        starting = [n for n in direct if self._configs[n].escalate_to is not None]
        with self._cond:
            if alert.alert_id in self._acks:  # acknowledged already: PagerDuty is told
                acknowledge: set[str] = set()
                if sent & self._paged:  # (again: a trigger sent anew needs it after it)
                    owed = self._owed.get(alert.alert_id) or _Open(alert, partition=partition)
                    acknowledge = self._owe(owed, sent)
            elif alert.alert_id in self._open:
                return  # a firing read twice: its timers run
            else:
                acknowledge = set()
                if starting or direct & self._paged:
                    wall_now = self._wall_clock()
                    received = dict.fromkeys(direct, wall_now)
                    self._open[alert.alert_id] = _Open(
                        alert, received=received, durable=dict(received), partition=partition
                    )
                    self._save(alert.alert_id, self._open[alert.alert_id].record())
                    self._trim()
                    for name in starting:
                        self._schedule(alert.alert_id, name)
        if acknowledge:
            self._acknowledge(alert, acknowledge)

    def _trim(self) -> None:  # call with _cond held
        while len(self._open) > MAX_OPEN_ALERTS:
            alert_id, _state = self._open.popitem(last=False)
            self._save(alert_id, None)

    def _save(self, alert_id: str, record: bytes | None) -> None:  # call with _cond held
        if self._journal is not None:
            self._journal(alert_id, record)

    def _owe(self, state: _Open, endpoints: Collection[str]) -> set[str]:
        """The acknowledged ``state`` owes PagerDuty's ``acknowledge`` to the pagerduty
        endpoints among ``endpoints``: journaled until it is finished (else closed in the
        journal now). Returns them; call with _cond held, then :meth:`_acknowledge`."""
        alert_id = state.alert.alert_id
        owed = set(endpoints) & self._paged
        if not owed:
            if alert_id not in self._owed:
                self._save(alert_id, None)
            return owed
        state.acknowledging |= owed
        state.acknowledges += 1
        self._owed[alert_id] = state
        self._save(alert_id, state.record())
        return owed

    def _acknowledge(self, alert: Alert, paged: set[str]) -> None:
        """PagerDuty's ``acknowledge`` to ``paged`` (from :meth:`_owe`)."""
        if not paged:
            return
        with self._cond:
            self.stats.pagerduty_acknowledged += len(paged)
        log.info("alert %s acknowledged: telling PagerDuty (%s)", alert.alert_id, sorted(paged))
        self._dispatcher.submit(
            alert, _AcknowledgeRef(alert.alert_id), only=paged, acknowledge=True
        )

    def _on_done(self, ref: object) -> None:
        """The dispatcher's ``on_done``: an escalation's or an acknowledge's end goes to
        the journal."""
        if isinstance(ref, _AcknowledgeRef):
            with self._cond:
                state = self._owed.get(ref.alert_id)
                if state is not None:
                    state.acknowledges -= 1
                    if state.acknowledges <= 0:
                        del self._owed[ref.alert_id]
                        self._save(ref.alert_id, None)
            return
        if not isinstance(ref, _EscalationRef):
            self._inner_done(ref)
            return
        with self._cond:
            state = self._open.get(ref.alert_id)
            if state is not None and ref.target in state.received:
                state.durable[ref.target] = state.received[ref.target]
                self._save(ref.alert_id, state.record())

    def _schedule(self, alert_id: str, source: str, *, due: float | None = None) -> None:
        # call with _cond held
        config = self._configs[source]
        if config.escalate_to is None or config.escalate_after_s is None:
            return
        if due is None:
            due = self._clock() + config.escalate_after_s
        heapq.heappush(self._heap, (due, next(self._seq), alert_id, source, config.escalate_to))
        self._cond.notify_all()  # the timer thread, whoever else waits

    def _resolved(self, alert: Alert, direct: set[str]) -> None:
        with self._cond:
            if self._owed.pop(alert.alert_id, None) is not None:  # resolved: nothing to ack
                self._save(alert.alert_id, None)
            state = self._open.pop(alert.alert_id, None)
            if state is None:
                return
            self._save(alert.alert_id, None)
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
                state.received[target] = self._wall_clock()
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
            self._dispatcher.submit(alert, _EscalationRef(alert_id, target), only={target})
            if self._on_escalate is not None:
                self._on_escalate(alert, source, target)
        except Exception:
            log.exception("escalation of %s to %s failed", alert_id, target)

    def _next_due(self) -> tuple[str, str, str] | None:  # call with _cond held
        while not self._closed:
            if not self._heap or self._held:
                self._cond.wait()
                continue
            wait_s = self._heap[0][0] - self._clock()
            if wait_s <= 0:
                _due, _seq, alert_id, source, target = heapq.heappop(self._heap)
                return alert_id, source, target
            self._cond.wait(wait_s)
        return None
