"""The background thread: drain the queue, complete and validate events, pack, send.

It wakes when the queue holds ``max_batch_events`` items or on the linger timer.
Each wake it turns queued items into validated event JSON and adds them to the
packer; records that reached a bound are sent at once, and once per linger
interval (or on flush / close) every open record is sent. Only this thread
touches the transport, so sends are strictly ordered and per-session order holds
end to end. ``send`` failures are retried with exponential backoff, then counted.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import orjson
from pydantic import ValidationError

from agentwatch.producer._helpers import _Context
from agentwatch.producer._packing import PackedRecord, Packer
from agentwatch.producer._queue import BoundedQueue, RateLimitedLog, logger
from agentwatch.producer._settings import ProducerSettings
from agentwatch.producer._transport import Transport
from agentwatch.schemas import Event, PriceTable, describe_validation_error

__all__ = ["Counters", "QueueItem", "Redactor", "Sender", "format_ts_ns", "new_event_id"]

#: What ``emit()`` enqueues: (wall-clock ns at emit, the caller's context, the event).
QueueItem: TypeAlias = tuple[int, _Context | None, dict[str, Any] | Event]
#: The ``redact`` hook: returns the (possibly changed) event dict, or None to drop it.
Redactor: TypeAlias = Callable[[dict[str, Any]], dict[str, Any] | None]

_NS_PER_S: Final = 1_000_000_000
_NS_PER_MS: Final = 1_000_000
_MAX_BACKOFF_MS: Final = 5_000


_VALIDATOR: Final = Event.__pydantic_validator__
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
        self._prices = prices
        self._redact = redact
        self._queue = queue
        self._wake = wake
        self._counters = counters
        self._log = log
        self._default_session_id = default_session_id
        self._packer = Packer(settings.max_batch_events, settings.max_batch_bytes)
        self._ts_second = -1
        self._ts_prefix = ""
        self._linger_ns = settings.linger_ms * _NS_PER_MS
        self._cond = threading.Condition()
        self._flush_pending = False
        self._flush_deadline_ns = 0
        self._flushed_seq = 0
        self._flush_ok = True
        self._closing = False
        self._close_deadline_ns = 0
        self._interrupt = threading.Event()  # cuts retry backoff short at close
        self._thread = threading.Thread(target=self._run, name="agentwatch-producer", daemon=True)

    # -- called from other threads ----------------------------------------
    def start(self) -> None:
        self._thread.start()

    def flush(self, timeout_s: float) -> bool:
        """Wait until everything queued before the call was handed to the transport and the
        transport flushed; False on timeout or when a send failed meanwhile."""
        timeout_s = max(0.0, float(timeout_s))
        failed_before = self._counters.failed
        with self._cond:
            target = self._queue.accepted
            self._flush_pending = True
            self._flush_deadline_ns = max(
                self._flush_deadline_ns, time.monotonic_ns() + int(timeout_s * _NS_PER_S)
            )
        self._wake.set()
        with self._cond:
            reached = self._cond.wait_for(lambda: self._flushed_seq >= target, timeout_s)
            ok = self._flush_ok
        return reached and ok and self._counters.failed == failed_before

    def stop(self, timeout_s: float) -> bool:
        """Send what is queued, flush and close the transport; True if done in time."""
        timeout_s = max(0.0, float(timeout_s))
        with self._cond:
            self._closing = True
            self._close_deadline_ns = time.monotonic_ns() + int(timeout_s * _NS_PER_S)
        self._interrupt.set()
        self._wake.set()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    # -- the thread --------------------------------------------------------
    def _run(self) -> None:
        next_tick_ns = time.monotonic_ns() + self._linger_ns
        while True:
            if self._linger_ns:
                self._wake.wait(max(0, next_tick_ns - time.monotonic_ns()) / _NS_PER_S)
            else:
                self._wake.wait()
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
                self._cycle(due=due, closing=closing, flush_deadline_ns=flush_deadline_ns)
            except Exception as exc:  # noqa: BLE001 -- the worker must outlive any bug
                self._counters.add("failed", self._packer.pending)
                self._packer = Packer(
                    self._settings.max_batch_events, self._settings.max_batch_bytes
                )
                self._log.warn_limited(
                    "worker", "agentwatch: internal error: %r", exc, exc_info=True
                )
            if closing:
                self._shut_transport()
                return

    def _cycle(self, *, due: bool, closing: bool, flush_deadline_ns: int | None) -> None:
        items, seq = self._queue.drain()
        for item in items:
            self._add(item)
        records = self._packer.take(all_open=due)
        if records:
            self._send(records)
        if flush_deadline_ns is None and not closing:
            return
        deadline_ns = self._close_deadline_ns if closing else flush_deadline_ns
        ok = self._flush_transport(deadline_ns or 0)
        with self._cond:
            if self._packer.pending == 0:
                self._flushed_seq = max(self._flushed_seq, seq)
            self._flush_ok = ok
            self._cond.notify_all()

    def _add(self, item: QueueItem) -> None:
        try:
            event = self._complete(item)
            if self._redact is not None:
                redacted = self._apply_redact(event)
                if redacted is None:
                    return
                event = redacted
            try:
                raw = orjson.dumps({k: v for k, v in event.items() if v is not None})
                model = _VALIDATOR.validate_json(raw)
            except ValidationError as exc:
                self._invalid(describe_validation_error(exc))
                return
            except TypeError as exc:  # orjson: a value that is not JSON
                self._invalid(str(exc))
                return
            # what was validated is what is sent (no re-encoding: it is the slow part)
            self._packer.add(f"{model.tenant_id}/{model.session_id}".encode(), raw)
        except Exception as exc:  # noqa: BLE001 -- one bad event must not stop the rest
            self._counters.add("failed")
            self._log.warn_limited("prepare", "agentwatch: could not prepare an event: %r", exc)

    def _complete(self, item: QueueItem) -> dict[str, Any]:
        """Fill what the caller left out: ids, time, session, agent, tenant, cost."""
        ts_ns, ctx, payload = item
        event: dict[str, Any]
        if isinstance(payload, Event):
            event = payload.model_dump(mode="json", exclude_none=True)
        else:
            event = payload
        if event.get("event_id") is None:
            event["event_id"] = new_event_id()
        if event.get("ts") is None:
            event["ts"] = self._format_ts(ts_ns)
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
        return event

    def _format_ts(self, ts_ns: int) -> str:
        seconds, rest = divmod(ts_ns, _NS_PER_S)
        if seconds != self._ts_second:  # one strftime per second of event time
            self._ts_second = seconds
            self._ts_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        return f"{self._ts_prefix}.{rest // 1000:06d}Z"

    def _fill_cost(self, event: dict[str, Any]) -> None:
        model = event.get("model")
        tokens = [event.get(k) for k in ("input_tokens", "output_tokens", "cached_input_tokens")]
        if not isinstance(model, str) or any(
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

    def _send(self, records: list[PackedRecord]) -> None:
        pairs = [(r.key, r.value) for r in records]
        count = sum(r.events for r in records)
        retries = self._settings.send_retries
        for attempt in range(retries + 1):
            try:
                self._transport.send(pairs)
            except Exception as exc:  # noqa: BLE001 -- any transport failure is retried, then counted
                if attempt == retries:
                    self._counters.add("failed", count)
                    self._log.warn_limited(
                        "send",
                        "agentwatch: could not send %d events after %d attempts: %r",
                        count,
                        attempt + 1,
                        exc,
                    )
                    return
                self._interrupt.wait(self._backoff_s(attempt))
                continue
            with self._counters.lock:
                self._counters.sent += count
                self._counters.records += len(records)
            return

    def _backoff_s(self, attempt: int) -> float:
        base_ms = min(self._settings.retry_backoff_ms << attempt, _MAX_BACKOFF_MS)
        jitter = 0.8 + 0.4 * random.random()  # noqa: S311 -- spreading retries, not security
        return base_ms * jitter / 1000.0

    def _flush_transport(self, deadline_ns: int) -> bool:
        remaining_s = max(0.0, (deadline_ns - time.monotonic_ns()) / _NS_PER_S)
        try:
            return bool(self._transport.flush(remaining_s))
        except Exception as exc:  # noqa: BLE001 -- a failing flush is a False, not a crash
            self._log.warn_limited("flush", "agentwatch: transport flush failed: %r", exc)
            return False

    def _shut_transport(self) -> None:
        try:
            self._transport.close()
        except Exception as exc:  # noqa: BLE001 -- closing is best effort
            logger.debug("agentwatch: transport close failed: %r", exc)
