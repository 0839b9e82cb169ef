"""The alert dispatcher: every alert to every matching endpoint, each endpoint on its own.

::

    dispatcher = Dispatcher(endpoints, on_dead_letter=store_failure, on_done=commit_later)
    dispatcher.submit(alert, ref=(partition, offset))   # returns at once
    ...
    dispatcher.close()

Each endpoint has a **lane**: its own queue (a heap ordered by when a job is due) and
``concurrency`` sending threads. A slow, hanging or dead endpoint only ever occupies its
own threads, so the others keep their latency. Within a lane, jobs of one ``alert_id``
go one after the other: a resolution is never sent before its firing, even when the
firing is being retried. A failed attempt goes back on the heap with its backoff delay
instead of holding a thread (see :mod:`agentwatch.alerts._sender` for the retry
policy); after the last attempt, or a final answer, ``on_dead_letter`` receives a
:class:`DeliveryFailure` and only once it returns is the delivery finished.

Callbacks run on the lane threads: ``on_result(ref, result)`` for each finished
delivery (delivered or dead-lettered), then ``on_done(ref)`` once every endpoint the
alert went to has finished. A runtime commits its input position only past alerts that
are done. :meth:`close` leaves unfinished deliveries unfinished (no callback): the
runtime will read those alerts again. So does a callback that raises (``on_dead_letter``
giving up while the runtime stops): that alert is never done here, and it no longer
counts in :attr:`Dispatcher.in_flight` (nothing can finish it) but in
:attr:`Dispatcher.abandoned`, so a stopping runtime does not wait for it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Final

from agentwatch.alerts._acks import AckLinks
from agentwatch.alerts._endpoints import EndpointConfig, check_escalations
from agentwatch.alerts._formats import pagerduty_acknowledge_body
from agentwatch.alerts._sender import (
    AttemptOutcome,
    DeliveryResult,
    backoff_delay_s,
    post_once,
)
from agentwatch.alerts._signing import delivery_id
from agentwatch.schemas import Alert, AlertState, DeliveryFailure

__all__ = ["Dispatcher", "EndpointStats"]

logger = logging.getLogger("agentwatch.webhooks")

_IDLE_WAIT_S: Final = 1.0


@dataclass(slots=True)
class EndpointStats:
    """Counters of one endpoint since start."""

    delivered: int = 0
    dead_lettered: int = 0
    attempts: int = 0
    retries: int = 0
    queued: int = 0
    """Deliveries not finished: waiting, being sent or between attempts."""


@dataclass(slots=True, eq=False)
class _Ticket:
    """One submitted alert: done when ``remaining`` deliveries have finished."""

    ref: object
    remaining: int
    abandoned: bool = False
    """A delivery of it was left unfinished: never done."""


@dataclass(slots=True, eq=False)
class _Job:
    """One alert state change to one endpoint."""

    alert: Alert
    body: bytes
    delivery_id: str
    ticket: _Ticket
    started_s: float
    attempts: int = 0
    due_s: float = 0.0
    acknowledge: bool = False
    """PagerDuty's ``acknowledge`` of ``alert``, not the alert."""


@dataclass(eq=False)
class _Lane:
    """One endpoint's queue and sending threads."""

    config: EndpointConfig
    owner: Dispatcher
    stats: EndpointStats = field(default_factory=EndpointStats)
    cond: threading.Condition = field(default_factory=threading.Condition)
    heap: list[tuple[float, int, _Job]] = field(default_factory=list)
    chains: dict[str, deque[_Job]] = field(default_factory=dict)
    """alert_id -> later jobs of that alert, waiting for the one under way."""
    closed: bool = False
    threads: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.endpoint = self.config.webhook_endpoint()
        self._seq = itertools.count()
        for index in range(self.config.concurrency):
            thread = threading.Thread(
                target=self._work,
                name=f"agentwatch-webhook-{self.config.name}-{index}",
                daemon=True,
            )
            self.threads.append(thread)
            thread.start()

    def put(self, job: _Job) -> None:
        with self.cond:
            self.stats.queued += 1
            waiting = self.chains.get(job.alert.alert_id)
            if waiting is not None:  # an earlier state of this alert is under way
                waiting.append(job)
                return
            self.chains[job.alert.alert_id] = deque()
            self._push(job)

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    # -- on the lane's threads ------------------------------------------------------
    def _push(self, job: _Job) -> None:  # call with cond held
        heapq.heappush(self.heap, (job.due_s, next(self._seq), job))
        self.cond.notify()

    def _take(self) -> _Job | None:
        clock = self.owner.clock
        with self.cond:
            while not self.closed:
                if not self.heap:
                    self.cond.wait()
                    continue
                wait_s = self.heap[0][0] - clock()
                if wait_s <= 0:
                    return heapq.heappop(self.heap)[2]
                self.cond.wait(wait_s)
            return None

    def _work(self) -> None:
        while (job := self._take()) is not None:
            try:
                self._attempt(job)
            except Exception:  # a callback failed: leave the delivery unfinished
                logger.exception(
                    "webhook %s: delivery %s left unfinished", self.config.name, job.delivery_id
                )
                self.owner.abandon(job.ticket)

    def _attempt(self, job: _Job) -> None:
        endpoint = self.endpoint
        outcome = post_once(endpoint, job.body, delivery_id=job.delivery_id)
        job.attempts += 1
        with self.cond:
            self.stats.attempts += 1
        if outcome.ok:
            self._finish(job, outcome)
            return
        if outcome.retryable and job.attempts < endpoint.max_attempts:
            delay_s = backoff_delay_s(
                endpoint, job.attempts, rng=self.owner.rng, retry_after_s=outcome.retry_after_s
            )
            logger.info(
                "webhook %s: attempt %d of delivery %s failed (%s); retrying in %.2f s",
                self.config.name,
                job.attempts,
                job.delivery_id,
                outcome.error,
                delay_s,
            )
            job.due_s = self.owner.clock() + delay_s
            with self.cond:
                self.stats.retries += 1
                if not self.closed:
                    self._push(job)
            return
        with self.cond:
            if self.closed:  # stopping: the next run tries this delivery again
                return
        failure = DeliveryFailure(
            alert=job.alert,
            endpoint=self.config.name,
            delivery_id=job.delivery_id,
            attempts=job.attempts,
            status_code=outcome.status_code,
            error=outcome.error or "failed",
            delivery="acknowledge" if job.acknowledge else "alert",
        )
        logger.warning("%s", failure.reason)
        self.owner.on_dead_letter(failure)  # returns once the failure is stored
        self._finish(job, outcome)

    def _finish(self, job: _Job, outcome: AttemptOutcome) -> None:
        with self.cond:
            self.stats.queued -= 1
            if outcome.ok:
                self.stats.delivered += 1
            else:
                self.stats.dead_lettered += 1
            waiting = self.chains.get(job.alert.alert_id)
            if waiting:
                following = waiting.popleft()
                following.due_s = 0.0
                self._push(following)
            else:
                self.chains.pop(job.alert.alert_id, None)
        result = DeliveryResult(
            delivered=outcome.ok,
            attempts=job.attempts,
            status_code=outcome.status_code,
            error=outcome.error,
            delivery_id=job.delivery_id,
            endpoint=self.config.name,
            elapsed_s=self.owner.clock() - job.started_s,
        )
        self.owner.finished(job.ticket, result)


def _ignore_result(_token: object, _result: DeliveryResult) -> None:
    return None


def _ignore_done(_token: object) -> None:
    return None


class Dispatcher:
    """Deliver alerts to endpoints; see the module docstring."""

    def __init__(
        self,
        endpoints: Sequence[EndpointConfig],
        *,
        on_dead_letter: Callable[[DeliveryFailure], None],
        on_result: Callable[[object, DeliveryResult], None] = _ignore_result,
        on_done: Callable[[object], None] = _ignore_done,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
        ack_links: AckLinks | None = None,
    ) -> None:
        names = [e.name for e in endpoints]
        if len(set(names)) != len(names):
            raise ValueError(f"endpoint names must be unique (got {names})")
        check_escalations(list(endpoints))
        self.ack_links = ack_links
        """When set, every firing's body carries a signed acknowledgement link."""
        self.on_dead_letter = on_dead_letter
        self.on_result = on_result
        self.on_done = on_done
        self.rng = rng
        self.clock = clock
        self._lock = threading.Condition()
        self._in_flight = 0
        self._abandoned = 0
        self._lanes = [_Lane(config, self) for config in endpoints]

    @property
    def endpoints(self) -> list[EndpointConfig]:
        return [lane.config for lane in self._lanes]

    @property
    def in_flight(self) -> int:
        """Alerts submitted and not done (nor left unfinished)."""
        with self._lock:
            return self._in_flight

    @property
    def abandoned(self) -> int:
        """Alerts a delivery of which was left unfinished (a callback raised): never done
        in this run; the runtime reads them again after a restart."""
        with self._lock:
            return self._abandoned

    def stats(self) -> dict[str, EndpointStats]:
        """A snapshot of every endpoint's counters."""
        out: dict[str, EndpointStats] = {}
        for lane in self._lanes:
            with lane.cond:
                s = lane.stats
                out[lane.config.name] = EndpointStats(
                    s.delivered, s.dead_lettered, s.attempts, s.retries, s.queued
                )
        return out

    def submit(
        self,
        alert: Alert,
        ref: object = None,
        *,
        skip: Collection[str] = (),
        only: Collection[str] | None = None,
        acknowledge: bool = False,
    ) -> int:
        """Queue ``alert`` for every matching endpoint not named in ``skip`` (those that
        already have it); returns how many. With none, ``on_done(ref)`` runs at once
        (on the caller's thread). ``only`` names the endpoints instead of their filters
        (an escalation). ``acknowledge`` sends, instead of the alert, PagerDuty's
        ``acknowledge`` event to the ``pagerduty`` endpoints among ``only``."""
        lanes = [
            lane
            for lane in self._lanes
            if lane.config.name not in skip
            and (lane.config.matches(alert) if only is None else lane.config.name in only)
            and (not acknowledge or lane.config.format == "pagerduty")
        ]
        if not lanes:
            self.on_done(ref)
            return 0
        ticket = _Ticket(ref, len(lanes))
        with self._lock:
            self._in_flight += 1
        now = self.clock()
        json_body: bytes | None = None
        links = self.ack_links if alert.state is AlertState.FIRING else None
        for lane in lanes:
            if acknowledge:
                body = pagerduty_acknowledge_body(alert.alert_id, lane.config.routing_key or "")
                did = delivery_id(alert.alert_id, "acknowledged", lane.config.name)
                lane.put(_Job(alert, body, did, ticket, started_s=now, acknowledge=True))
                continue
            ack_url = None if links is None else links.url(alert.alert_id, lane.config)
            if lane.config.format == "json" and ack_url is None:  # one encoding for all
                json_body = json_body or lane.config.body(alert)
                body = json_body
            else:
                body = lane.config.body(alert, ack_url)
            did = delivery_id(alert.alert_id, alert.state, lane.config.name)
            lane.put(_Job(alert, body, did, ticket, started_s=now))
        return len(lanes)

    def finished(self, ticket: _Ticket, result: DeliveryResult) -> None:
        """A lane finished one delivery (called on the lane's thread)."""
        with self._lock:
            ticket.remaining -= 1
            done = ticket.remaining == 0 and not ticket.abandoned
            if done:
                self._in_flight -= 1
                self._lock.notify_all()
        self.on_result(ticket.ref, result)
        if done:
            self.on_done(ticket.ref)

    def abandon(self, ticket: _Ticket) -> None:
        """A lane left one delivery of ``ticket`` unfinished: the alert is never done."""
        with self._lock:
            if ticket.abandoned:
                return
            ticket.abandoned = True
            self._in_flight -= 1
            self._abandoned += 1
            self._lock.notify_all()

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until every submitted alert is done; False at the timeout."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._in_flight:
                left_s = deadline - time.monotonic()
                if left_s <= 0:
                    return False
                self._lock.wait(min(left_s, _IDLE_WAIT_S))
            return True

    def close(self, join_timeout_s: float = 0.0) -> None:
        """Stop every lane. A request under way ends (it is bounded by the endpoint's
        timeout); nothing is retried or dead-lettered after this. With a
        ``join_timeout_s``, wait that long for the threads."""
        for lane in self._lanes:
            lane.close()
        deadline = time.monotonic() + join_timeout_s
        for lane in self._lanes:
            for thread in lane.threads:
                thread.join(max(0.0, deadline - time.monotonic()))
