"""The background thread: drain the queue, complete events (``_completion``), pack, deliver.

It wakes when the queue holds ``max_batch_events`` items, on the linger timer, and
while records await delivery every 20 ms. Each wake it turns queued items into
validated event JSON and adds them to the packer; records that reached a bound go
to the outbox at once, and once per linger interval (or on flush / close) every
open record does. Only this thread touches the transport, so sends are strictly
ordered and per-session order holds end to end.

Partition batches (DESIGN.md, "Kafka records"; ``_placement``): when the transport
knows its topic's partition count (``partitions()``, read once per wake), every event of
one linger interval bound for partition ``p`` goes into one record keyed ``~batch:<p>``,
whatever its session; otherwise each session's events form their own records. A change
of count closes the open records and is logged; records packed for another count are
placed again when they are sent.

Delivery (see ``_outbox``): records stay in the outbox until the transport confirms
them (``poll_deliveries`` for a transport that reports, acceptance otherwise). A
failed send or delivery sends every unconfirmed record again, in order, after an
exponential backoff (``retry_backoff_ms`` doubled up to 5 s), for as long as it
takes. While the outbox is full the thread stops taking from the queue, so a
broker that is down fills the queue and ``emit()`` drops and counts: memory stays
bounded and the agent never waits.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from agentwatch.producer._completion import EventCompleter, QueueItem, Redactor
from agentwatch.producer._outbox import MemoryOutbox, Outbox
from agentwatch.producer._placement import Parts, Placement
from agentwatch.producer._queue import BoundedQueue, RateLimitedLog, logger
from agentwatch.producer._settings import ProducerSettings
from agentwatch.producer._transport import Record, Transport
from agentwatch.producer.packing import PackedRecord, Packer
from agentwatch.schemas import PriceTable

__all__ = ["Counters", "QueueItem", "Redactor", "Sender"]

_NS_PER_S: Final = 1_000_000_000
_NS_PER_MS: Final = 1_000_000
_MAX_BACKOFF_MS: Final = 5_000
#: while records await confirmation, the thread looks for delivery reports this often
_POLL_NS: Final = 20 * _NS_PER_MS


@dataclass(slots=True)
class Counters:
    """Counts written by the worker thread (and a few by callers, under ``lock``)."""

    lock: threading.Lock
    sent: int = 0
    failed: int = 0
    redacted: int = 0
    invalid: int = 0
    invalid_at_emit: int = 0
    records: int = 0
    retries: int = 0
    kept_on_disk: int = 0

    def add(self, name: str, count: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + count)


class Sender:
    """Owns the background thread; everything here runs on it except the request methods."""

    def __init__(
        self,
        *,
        settings: ProducerSettings,
        transport: Transport,
        outbox: Outbox,
        prices: PriceTable,
        redact: Redactor | None,
        queue: BoundedQueue[QueueItem],
        wake: threading.Event,
        counters: Counters,
        log: RateLimitedLog,
        default_session_id: str,
    ) -> None:
        self._settings = settings
        self._transport = transport
        self._outbox = outbox
        self._keeps_on_disk = not isinstance(outbox, MemoryOutbox)  # a spool keeps records
        self._poll: Callable[[], tuple[int, str | None]] | None = getattr(
            transport, "poll_deliveries", None
        )
        self._queue = queue
        self._wake = wake
        self._counters = counters
        self._log = log
        self._completer = EventCompleter(
            settings=settings, prices=prices, redact=redact, count=counters.add, log=log,
            default_session_id=default_session_id)
        self._packer = Packer(settings.max_batch_events, settings.max_batch_bytes)
        #: the transport's partition count, when it has one (Kafka): events are then packed
        #: per partition (partition batches) instead of per session
        self._partitions: Callable[[], int | None] | None = getattr(
            transport, "partitions", None)
        self._placement = Placement(0)
        self._parts = Parts()  # transport records per outbox record in flight
        self._linger_ns = settings.linger_ms * _NS_PER_MS
        # delivery bookkeeping: records ever appended to / acknowledged by the outbox, and
        # marks (records appended, queue seq): every item up to seq is in those records
        self._recovered_records = outbox.unsent  # a previous run's, first in line (spool)
        self._appended_records = self._recovered_records
        self._acked_records = 0
        self._marks: deque[tuple[int, int]] = deque()
        self._held_back = False  # the last drain left items in the queue for lack of room
        self._attempt = 0  # failed deliveries in a row
        self._retry_at_ns = 0
        self._cond = threading.Condition()
        self._delivered_seq = 0  # every queue item up to here is delivered (or discarded)
        self._flush_pending = False
        self._flush_target = 0
        self._flush_deadline_ns = 0
        self._closing = False
        self._close_deadline_ns = 0
        self._thread = threading.Thread(target=self._run, name="agentwatch-producer", daemon=True)

    # -- called from other threads ----------------------------------------
    def start(self) -> None:
        self._thread.start()

    @property
    def buffered(self) -> int:
        """Events in packed records not yet confirmed delivered (a racy read: a hint)."""
        return self._outbox.events + self._packer.pending

    def flush(self, timeout_s: float) -> bool:
        """Wait until everything queued before the call is delivered (confirmed by the
        transport); False on timeout or when an event failed meanwhile."""
        timeout_s = max(0.0, float(timeout_s))
        failed_before = self._counters.failed
        with self._cond:
            target = self._queue.accepted
            self._flush_target = max(self._flush_target, target)
            self._flush_pending = True
            self._flush_deadline_ns = max(
                self._flush_deadline_ns, time.monotonic_ns() + int(timeout_s * _NS_PER_S)
            )
        self._wake.set()
        with self._cond:
            reached = self._cond.wait_for(
                lambda: self._delivered_seq >= target
                and self._acked_records >= self._recovered_records,
                timeout_s,
            )
        return reached and self._counters.failed == failed_before

    def stop(self, timeout_s: float) -> bool:
        """Deliver what is queued (up to ``timeout_s``), then close the transport and the
        outbox; True if the thread ended in time."""
        timeout_s = max(0.0, float(timeout_s))
        with self._cond:
            self._closing = True
            self._close_deadline_ns = time.monotonic_ns() + int(timeout_s * _NS_PER_S)
        self._wake.set()
        self._thread.join(timeout_s + 1.0)  # the thread keeps to the deadline; 1 s grace
        return not self._thread.is_alive()

    # -- the thread --------------------------------------------------------
    def _run(self) -> None:
        next_tick_ns = time.monotonic_ns() + self._linger_ns
        while True:
            self._wake.wait(self._wait_s(next_tick_ns))
            self._wake.clear()
            with self._cond:
                flush_deadline_ns = self._flush_deadline_ns if self._flush_pending else None
                self._flush_pending = False
                closing = self._closing
            try:
                now_ns = time.monotonic_ns()
                due = closing or flush_deadline_ns is not None or now_ns >= next_tick_ns
                if due:
                    next_tick_ns = now_ns + self._linger_ns
                if closing:
                    self._finish()
                else:
                    self._cycle(due=due, flush_deadline_ns=flush_deadline_ns)
            except Exception as exc:  # noqa: BLE001 -- the worker must outlive any bug
                self._counters.add("failed", self._packer.pending)
                self._packer = Packer(
                    self._settings.max_batch_events, self._settings.max_batch_bytes
                )
                self._packer.partitions = self._placement.partitions
                self._log.warn_limited(
                    "worker", "agentwatch: internal error: %r", exc, exc_info=True
                )
            if closing:
                self._shut_down()
                return

    def _wait_s(self, next_tick_ns: int) -> float | None:
        """How long to sleep: to the linger tick, and no later than a due retry; with
        ``linger_ms=0`` only while records await delivery (to poll for it)."""
        now_ns = time.monotonic_ns()
        if self._held_back and self._room() > 0:
            return 0.0  # the queue holds what a full outbox held back: take it now
        wait_ns: int | None = max(0, next_tick_ns - now_ns) if self._linger_ns else None
        if self._outbox.events:
            poll_ns = _POLL_NS
            if self._outbox.unsent and self._retry_at_ns > now_ns:
                poll_ns = max(poll_ns, self._retry_at_ns - now_ns)
            wait_ns = poll_ns if wait_ns is None else min(wait_ns, poll_ns)
        return None if wait_ns is None else wait_ns / _NS_PER_S

    def _cycle(self, *, due: bool, flush_deadline_ns: int | None) -> None:
        self._take_from_queue(due=due, unbounded=False)
        self._poll_deliveries()
        self._pump()
        if flush_deadline_ns is None:
            return
        if self._outbox.in_flight:
            self._flush_transport(flush_deadline_ns)
            self._poll_deliveries()
        with self._cond:  # not there yet: keep the flush going on later wakes
            waiting = (self._delivered_seq < self._flush_target
                       or self._acked_records < self._recovered_records)
            if waiting and time.monotonic_ns() < flush_deadline_ns:
                self._flush_pending = True

    def _finish(self) -> None:
        """Closing: move everything out of the queue (into the spool even past its bound:
        nothing is lost there), and deliver until done or the close deadline."""
        deadline_ns = self._close_deadline_ns
        while True:
            self._take_from_queue(due=True, unbounded=self._keeps_on_disk)
            self._poll_deliveries()
            failures = self._attempt
            self._pump()
            if self._outbox.in_flight:
                self._flush_transport(deadline_ns)
                self._poll_deliveries()
            if not self._outbox.events and not len(self._queue):
                return
            now_ns = time.monotonic_ns()
            if now_ns >= deadline_ns or (self._keeps_on_disk and self._attempt > failures):
                return  # (on disk, the next start delivers it: no need to wait here)
            time.sleep(max(0, min(deadline_ns, max(self._retry_at_ns, now_ns + _POLL_NS))
                           - now_ns) / _NS_PER_S)

    def _room(self) -> int:
        return max(0, self._outbox.room_events(self._settings.queue_size) - self._packer.pending)

    def _refresh_partitions(self) -> None:
        """Partition batches need the topic's partition count (DESIGN.md, "Kafka records"):
        the transport's latest, read once per wake. A change closes the open records (they
        were packed for the old count: they are placed again when sent) and starts a new
        mapping; a change between two known counts is logged."""
        count = self._partitions() if self._partitions is not None else None
        count = count if count is not None and count >= 1 else 0
        current = self._placement.partitions
        if count == current:
            return
        self._to_outbox(self._packer.take(all_open=True))
        if current and count:
            logger.warning("agentwatch: %s now has %d partitions (was %d): sessions move to "
                           "the partitions Kafka's default partitioner gives them now; "
                           "records not yet sent are placed again",
                           self._settings.topic, count, current)
        self._placement = Placement(count)
        self._packer.partitions = count

    def _to_outbox(self, records: list[PackedRecord]) -> None:
        if records:
            self._outbox.append(records)
            self._appended_records += len(records)

    def _take_from_queue(self, *, due: bool, unbounded: bool) -> None:
        self._refresh_partitions()
        limit = None if unbounded else self._room()
        items, seq = self._queue.drain(limit)
        self._held_back = limit is not None and len(self._queue) > 0
        if items:
            self._pack(items)
        self._to_outbox(self._packer.take(all_open=due))
        if self._packer.pending == 0 and (not self._marks or self._marks[-1][1] < seq):
            self._marks.append((self._appended_records, seq))
            self._advance_delivered()

    def _pump(self) -> None:
        """Hand every unsent record to the transport, unless a retry is not due yet."""
        outbox = self._outbox
        if not outbox.unsent or time.monotonic_ns() < self._retry_at_ns:
            return
        records = outbox.take_unsent(outbox.unsent)
        wire: list[Record] = []
        placement, parts = self._placement, self._parts
        for record in records:
            placed = placement.wire(record)
            wire += placed
            parts.sent(len(placed))
        try:
            self._transport.send(wire)
        except Exception as exc:  # noqa: BLE001 -- any transport failure: keep, retry later
            self._delivery_failed(exc)
            return
        if self._poll is None:  # a plain transport: accepted means delivered
            parts.clear()
            self._acknowledge(len(records), len(wire))

    def _poll_deliveries(self) -> None:
        while self._poll is not None and self._outbox.in_flight:
            try:
                delivered, failure = self._poll()
            except Exception as exc:  # noqa: BLE001 -- a failing poll: re-send to be sure
                delivered, failure = 0, "retry"
                self._log.warn_limited("poll", "agentwatch: delivery poll failed: %r", exc)
            if delivered:
                self._acknowledge(self._parts.confirmed(delivered), delivered)
            if failure == "retry":
                self._delivery_failed(None)
            elif failure == "reject":
                self._reject_oldest()
                continue  # more may be confirmed behind it
            return

    def _reject_oldest(self) -> None:
        """The transport can never deliver the oldest record in flight (e.g. larger than
        the broker takes): count its events as failed and go on with the rest. (When that
        record was split, its other parts count with it, whatever becomes of them.)"""
        if not self._parts.refused():
            return  # one more part of a record refused already
        events = self._outbox.acknowledge(1)
        self._acked_records += 1
        self._counters.add("failed", events)
        self._log.warn_limited(
            "reject", "agentwatch: Kafka refused a record of %d events for good; dropped", events
        )
        self._advance_delivered()

    def _acknowledge(self, records: int, wire_records: int) -> None:
        """``records`` of the outbox are delivered, as ``wire_records`` transport records."""
        events = self._outbox.acknowledge(records)
        self._acked_records += records
        self._attempt = 0
        with self._counters.lock:
            self._counters.sent += events
            self._counters.records += wire_records
        self._advance_delivered()

    def _advance_delivered(self) -> None:
        marks, seq = self._marks, self._delivered_seq
        while marks and marks[0][0] <= self._acked_records:
            seq = marks.popleft()[1]
        with self._cond:
            self._delivered_seq = max(self._delivered_seq, seq)
            self._cond.notify_all()

    def _delivery_failed(self, exc: BaseException | None) -> None:
        """Go back: every record in flight is sent again, in order, after a backoff."""
        self._outbox.rewind()
        self._parts.clear()
        backoff_s = self._backoff_s(self._attempt)
        self._attempt += 1
        self._retry_at_ns = time.monotonic_ns() + int(backoff_s * _NS_PER_S)
        with self._counters.lock:
            self._counters.retries += 1
        self._log.warn_limited(
            "send",
            "agentwatch: delivery failed (%s); %d events kept, retrying in %.1f s",
            "a record was not acknowledged" if exc is None else repr(exc),
            self._outbox.events,
            backoff_s,
        )

    def _pack(self, items: list[QueueItem]) -> None:
        """Complete and check each item (:class:`EventCompleter`), and add it to the
        record of its partition (or session)."""
        placement = self._placement
        self._completer.complete(items, placement.keys, placement.key_of, self._packer)

    def _backoff_s(self, attempt: int) -> float:
        base_ms = min(self._settings.retry_backoff_ms << min(attempt, 16), _MAX_BACKOFF_MS)
        jitter = 0.8 + 0.4 * random.random()  # noqa: S311 -- spreading retries, not security
        return base_ms * jitter / 1000.0

    def _flush_transport(self, deadline_ns: int) -> bool:
        remaining_s = max(0.0, (deadline_ns - time.monotonic_ns()) / _NS_PER_S)
        try:
            return bool(self._transport.flush(remaining_s))
        except Exception as exc:  # noqa: BLE001 -- a failing flush is a False, not a crash
            self._log.warn_limited("flush", "agentwatch: transport flush failed: %r", exc)
            return False

    def _shut_down(self) -> None:
        """Close the transport and the outbox; what the outbox still holds is kept on disk
        (``spool_dir``) or counted as failed (memory)."""
        try:
            self._transport.close()
        except Exception as exc:  # noqa: BLE001 -- closing is best effort
            logger.debug("agentwatch: transport close failed: %r", exc)
        left = self._outbox.events + self._packer.pending
        if left and self._keeps_on_disk:
            self._counters.add("kept_on_disk", left)
            logger.info("agentwatch: %d undelivered events kept in the spool for the next start",
                        left)
        elif left:
            self._counters.add("failed", left)
            self._log.warn_limited(
                "close", "agentwatch: closing with %d undelivered events: they are lost", left
            )
        try:
            self._outbox.close()
        except Exception as exc:  # noqa: BLE001 -- closing is best effort
            logger.debug("agentwatch: outbox close failed: %r", exc)
