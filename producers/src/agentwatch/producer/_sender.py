"""The background thread: drain the queue, complete and validate events, pack, deliver.

It wakes when the queue holds ``max_batch_events`` items, on the linger timer, and
while records await delivery every 20 ms. Each wake it turns queued items into
validated event JSON and adds them to the packer; records that reached a bound go
to the outbox at once, and once per linger interval (or on flush / close) every
open record does. Only this thread touches the transport, so sends are strictly
ordered and per-session order holds end to end.

Delivery (see ``_outbox``): records stay in the outbox until the transport confirms
them (``poll_deliveries`` for a transport that reports, acceptance otherwise). A
failed send or delivery sends every unconfirmed record again, in order, after an
exponential backoff (``retry_backoff_ms`` doubled up to 5 s), for as long as it
takes. While the outbox is full the thread stops taking from the queue, so a
broker that is down fills the queue and ``emit()`` drops and counts: memory stays
bounded and the agent never waits.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import orjson
from pydantic import ValidationError

from agentwatch.producer._helpers import _Context
from agentwatch.producer._outbox import MemoryOutbox, Outbox
from agentwatch.producer._packing import Packer
from agentwatch.producer._queue import BoundedQueue, RateLimitedLog, logger
from agentwatch.producer._settings import ProducerSettings
from agentwatch.producer._transport import Transport
from agentwatch.schemas import (
    Event,
    PartitionCache,
    PriceTable,
    describe_validation_error,
    partition_batch_key,
)
from agentwatch.schemas._fastcheck import plainly_valid

__all__ = ["Counters", "QueueItem", "Redactor", "Sender", "format_ts_ns", "new_event_id"]

#: What ``emit()`` enqueues: (wall-clock ns at emit, the caller's context, the event).
QueueItem: TypeAlias = tuple[int, _Context | None, dict[str, Any] | Event]
#: The ``redact`` hook: returns the (possibly changed) event dict, or None to drop it.
Redactor: TypeAlias = Callable[[dict[str, Any]], dict[str, Any] | None]

_NS_PER_S: Final = 1_000_000_000
_NS_PER_MS: Final = 1_000_000
_MAX_BACKOFF_MS: Final = 5_000
#: while records await confirmation, the thread looks for delivery reports this often
_POLL_NS: Final = 20 * _NS_PER_MS


_VALIDATOR: Final = Event.__pydantic_validator__
# which fields the client made itself for the event at hand (the fast check skips them)
_MADE_NOTHING: Final = frozenset[str]()
_MADE_ID: Final = frozenset({"event_id"})
_MADE_TS: Final = frozenset({"ts"})
_MADE_ID_AND_TS: Final = frozenset({"event_id", "ts"})
_UUID4_CLEAR: Final = ~((0xF << 76) | (0x3 << 62))
_UUID4_SET: Final = (0x4 << 76) | (0x2 << 62)
# Event ids come from a private generator seeded by the OS (and reseeded in a forked
# child), so an agent that seeds the global `random` cannot make ids repeat.
_rng = random.Random()  # noqa: S311 -- unique ids, not secrets
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_rng.seed)


def new_event_id() -> str:
    """A random (version 4) UUID string; about 3x faster than ``str(uuid.uuid4())``."""
    h = f"{(_rng.getrandbits(128) & _UUID4_CLEAR) | _UUID4_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def format_ts_ns(ts_ns: int) -> str:
    """Epoch nanoseconds -> RFC 3339 UTC with microseconds (``...T09:00:01.250000Z``)."""
    seconds, rest = divmod(ts_ns, _NS_PER_S)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest // 1000:06d}Z"


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
        self._prices = prices
        self._redact = redact
        self._queue = queue
        self._wake = wake
        self._counters = counters
        self._log = log
        self._default_session_id = default_session_id
        self._packer = Packer(settings.max_batch_events, settings.max_batch_bytes)
        #: the transport's partition count, when it has one (Kafka): events are then packed
        #: per partition (partition batches) instead of per session
        self._partitions: Callable[[], int | None] | None = getattr(
            transport, "partitions", None)
        self._owner: PartitionCache | None = None
        self._batch_keys: list[bytes] = []
        self._ts_second = -1
        self._ts_prefix = ""
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
        the transport's latest, read once per wake; a change starts a new mapping."""
        count = self._partitions() if self._partitions is not None else None
        if count == (None if self._owner is None else self._owner.partitions):
            return
        if count is None or count < 1:
            self._owner = None
            return
        if self._owner is not None:
            logger.warning("agentwatch: %s now has %d partitions (was %d): sessions move to "
                           "the partitions Kafka's default partitioner gives them now",
                           self._settings.topic, count, self._owner.partitions)
        self._owner = PartitionCache(count)
        self._batch_keys = [partition_batch_key(p) for p in range(count)]

    def _take_from_queue(self, *, due: bool, unbounded: bool) -> None:
        self._refresh_partitions()
        limit = None if unbounded else self._room()
        items, seq = self._queue.drain(limit)
        self._held_back = limit is not None and len(self._queue) > 0
        for item in items:
            self._add(item)
        records = self._packer.take(all_open=due)
        if records:
            self._outbox.append(records)
            self._appended_records += len(records)
        if self._packer.pending == 0 and (not self._marks or self._marks[-1][1] < seq):
            self._marks.append((self._appended_records, seq))
            self._advance_delivered()

    def _pump(self) -> None:
        """Hand every unsent record to the transport, unless a retry is not due yet."""
        outbox = self._outbox
        if not outbox.unsent or time.monotonic_ns() < self._retry_at_ns:
            return
        records = outbox.take_unsent(outbox.unsent)
        try:
            self._transport.send([(r.key, r.value) for r in records])
        except Exception as exc:  # noqa: BLE001 -- any transport failure: keep, retry later
            self._delivery_failed(exc)
            return
        if self._poll is None:  # a plain transport: accepted means delivered
            self._acknowledge(len(records))

    def _poll_deliveries(self) -> None:
        while self._poll is not None and self._outbox.in_flight:
            try:
                delivered, failure = self._poll()
            except Exception as exc:  # noqa: BLE001 -- a failing poll: re-send to be sure
                delivered, failure = 0, "retry"
                self._log.warn_limited("poll", "agentwatch: delivery poll failed: %r", exc)
            if delivered:
                self._acknowledge(delivered)
            if failure == "retry":
                self._delivery_failed(None)
            elif failure == "reject":
                self._reject_oldest()
                continue  # more may be confirmed behind it
            return

    def _reject_oldest(self) -> None:
        """The transport can never deliver the oldest record in flight (e.g. larger than
        the broker takes): count its events as failed and go on with the rest."""
        events = self._outbox.acknowledge(1)
        self._acked_records += 1
        self._counters.add("failed", events)
        self._log.warn_limited(
            "reject", "agentwatch: Kafka refused a record of %d events for good; dropped", events
        )
        self._advance_delivered()

    def _acknowledge(self, records: int) -> None:
        events = self._outbox.acknowledge(records)
        self._acked_records += records
        self._attempt = 0
        with self._counters.lock:
            self._counters.sent += events
            self._counters.records += records
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

    def _add(self, item: QueueItem) -> None:
        try:
            event, made = self._complete(item)
            if self._redact is not None:
                redacted = self._apply_redact(event)
                if redacted is None:
                    return
                event = redacted
                made = _MADE_NOTHING  # the hook may have changed any field
            try:
                if plainly_valid(event, made):  # the common case: ~1 µs
                    raw = orjson.dumps(event)
                    tenant_id, session_id = event["tenant_id"], event["session_id"]
                else:  # pydantic decides, and names what is wrong
                    raw = orjson.dumps({k: v for k, v in event.items() if v is not None})
                    model = _VALIDATOR.validate_json(raw)
                    tenant_id, session_id = model.tenant_id, model.session_id
            except ValidationError as exc:
                self._invalid(describe_validation_error(exc))
                return
            except TypeError as exc:  # orjson: a value that is not JSON
                self._invalid(str(exc))
                return
            # what was checked is what is sent (no re-encoding: it is the slow part)
            owner = self._owner
            if owner is not None:  # a partition batch: every session of partition p
                key = self._batch_keys[owner.get(tenant_id, session_id)]
            else:  # a transport without partitions: one session's events per record
                key = f"{tenant_id}/{session_id}".encode()
            self._packer.add(key, raw)
        except Exception as exc:  # noqa: BLE001 -- one bad event must not stop the rest
            self._counters.add("failed")
            self._log.warn_limited("prepare", "agentwatch: could not prepare an event: %r", exc)

    def _complete(self, item: QueueItem) -> tuple[dict[str, Any], frozenset[str]]:
        """Fill what the caller left out: ids, time, session, agent, tenant, cost. Returns
        the event and which of ``event_id`` and ``ts`` the client made itself."""
        ts_ns, ctx, payload = item
        event: dict[str, Any]
        if isinstance(payload, Event):
            event = payload.model_dump(mode="json", exclude_none=True)
        else:
            event = payload
        made = _MADE_NOTHING
        if event.get("event_id") is None:
            event["event_id"] = new_event_id()
            made = _MADE_ID
        if event.get("ts") is None:
            event["ts"] = self._format_ts(ts_ns)
            made = _MADE_ID_AND_TS if made is _MADE_ID else _MADE_TS
        session_id = event.get("session_id")
        if session_id is None:
            session_id = event["session_id"] = (
                ctx.session_id if ctx is not None else self._default_session_id
            )
        agent_id = None
        if ctx is not None and session_id == ctx.session_id:
            agent_id = ctx.agent_id
            if event.get("trace_id") is None and ctx.trace_id is not None:
                event["trace_id"] = ctx.trace_id
            if (
                event.get("parent_span_id") is None
                and ctx.span_id is not None
                and event.get("span_id") != ctx.span_id
            ):
                event["parent_span_id"] = ctx.span_id
        if event.get("agent_id") is None:
            event["agent_id"] = agent_id or self._settings.agent_id
        if event.get("tenant_id") is None:
            event["tenant_id"] = self._settings.tenant_id
        if event.get("cost_usd") is None:
            self._fill_cost(event)
        return event, made

    def _format_ts(self, ts_ns: int) -> str:
        seconds, rest = divmod(ts_ns, _NS_PER_S)
        if seconds != self._ts_second:  # one strftime per second of event time
            self._ts_second = seconds
            self._ts_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        return f"{self._ts_prefix}.{rest // 1000:06d}Z"

    def _fill_cost(self, event: dict[str, Any]) -> None:
        model = event.get("model")
        if not isinstance(model, str):
            return
        tokens = [event.get(k) for k in ("input_tokens", "output_tokens", "cached_input_tokens")]
        if any(
            t is not None and (type(t) is not int or t < 0) for t in tokens
        ):
            return  # unpriceable, or invalid (validation says why)
        cost = self._prices.cost_usd(model, tokens[0], tokens[1], tokens[2])
        if cost is not None:
            event["cost_usd"] = cost

    def _apply_redact(self, event: dict[str, Any]) -> dict[str, Any] | None:
        assert self._redact is not None  # noqa: S101 -- checked by the caller
        try:
            result = self._redact(event)
        except Exception as exc:  # noqa: BLE001 -- never send what the hook failed to redact
            self._counters.add("failed")
            self._log.warn_limited(
                "redact", "agentwatch: the redact hook raised %r; event not sent", exc
            )
            return None
        if result is None:
            self._counters.add("redacted")
            return None
        if not isinstance(result, dict):
            self._counters.add("failed")
            self._log.warn_limited(
                "redact",
                "agentwatch: the redact hook returned %s, not a dict or None; event not sent",
                type(result).__name__,
            )
            return None
        return result

    def _invalid(self, reason: str) -> None:
        self._counters.add("invalid")
        self._log.warn_limited("invalid", "agentwatch: invalid event not sent: %s", reason)

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
