"""The client: ``Agentwatch``. ``emit()`` enqueues; a background thread does the rest.

Counting (``client.stats``): every event given to ``emit()`` or made by a helper
is ``emitted``; each one ends as exactly one of ``sent`` (delivery confirmed),
``dropped`` (queue full, or emitted after ``close()``), ``invalid`` (breaks the
event contract), ``redacted`` (the redact hook returned None) or ``failed`` (the
hook raised, an internal error, or still undelivered when ``close()`` gave up
without a spool), or is still on its way (``queue_depth`` plus ``buffered``:
packed, awaiting delivery, or kept in the spool at close). Events found in the
spool at start are ``recovered`` and count as ``sent`` once delivered:
``emitted + recovered == sent + dropped + invalid + redacted + failed +
queue_depth + buffered``.
"""

from __future__ import annotations

import asyncio
import atexit
import math
import os
import threading
import time
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import orjson

from agentwatch.producer._outbox import MemoryOutbox, Outbox, open_outbox
from agentwatch.producer._queue import BoundedQueue, RateLimitedLog, logger
from agentwatch.producer._scopes import (
    _CTX,
    LLMCallScope,
    SessionScope,
    ToolCallScope,
    _Context,
)
from agentwatch.producer._sender import Counters, QueueItem, Redactor, Sender
from agentwatch.producer._settings import ProducerSettings
from agentwatch.producer._transport import Transport, kafka_transport
from agentwatch.producer.control import Control, Halt, OnHalt
from agentwatch.schemas import ConfigError, Event, PriceTable, default_price_table
from agentwatch.schemas.fastcheck import KINDS

__all__ = ["Agentwatch", "ProducerStats"]

_FIELDS: Final = frozenset(Event.model_fields)
#: a score event's attributes: OpenTelemetry's gen_ai.evaluation.result attribute names
#: (the source has no OTel name; it is agentwatch's)
SCORE_VALUE_KEY: Final = "gen_ai.evaluation.score.value"
SCORE_LABEL_KEY: Final = "gen_ai.evaluation.score.label"
SCORE_EXPLANATION_KEY: Final = "gen_ai.evaluation.explanation"
RESPONSE_ID_KEY: Final = "gen_ai.response.id"
SCORE_SOURCE_KEY: Final = "agentwatch.evaluation.source"
SCORE_SOURCES: Final = ("llm_judge", "human", "heuristic")


def _score_problem(name: object, value: object, label: object, source: object) -> str | None:
    """Why ``score()`` arguments make no score event (None: they do)."""
    if not isinstance(name, str) or not name:
        return f"`name`: the evaluation's name, a non-empty string (got {name!r})"
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                              or not math.isfinite(value)):
        return f"`value`: a finite number (got {value!r})"
    if label is not None and not isinstance(label, str):
        return f"`label`: a string (got {label!r})"
    if value is None and label is None:
        return "a score needs a `value` or a `label`"
    if source not in SCORE_SOURCES:
        return f"`source`: one of {', '.join(SCORE_SOURCES)} (got {source!r})"
    return None
_dumps: Final = orjson.dumps
_NEWLINE: Final = orjson.OPT_APPEND_NEWLINE
_DEFAULT_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class ProducerStats:
    """A snapshot of the client's counters (see the module docs for their meaning)."""

    emitted: int
    sent: int
    dropped: int
    failed: int
    redacted: int
    invalid: int
    queue_depth: int
    records: int  # records delivered
    buffered: int = 0  # events packed and not yet delivered (or kept in the spool at close)
    retries: int = 0  # failed deliveries, each followed by a retry
    recovered: int = 0  # events found in the spool at start (sent by this client)


class Agentwatch:
    """Send agent telemetry without ever slowing down or breaking the agent.

    ``None`` settings fall back to environment variables (see
    :class:`ProducerSettings`). Exactly one of ``transport`` and
    ``bootstrap_servers`` (or ``AGENTWATCH_BOOTSTRAP_SERVERS``, else
    ``KAFKA_BOOTSTRAP_SERVERS``) says where records
    go; ``topic`` is used when the client builds the transport itself.
    """

    def __init__(
        self,
        *,
        transport: Transport | None = None,
        bootstrap_servers: str | None = None,
        tenant_id: str | None = None,
        agent_id: str | None = None,
        topic: str | None = None,
        queue_size: int | None = None,
        linger_ms: int | None = None,
        max_batch_events: int | None = None,
        max_batch_bytes: int | None = None,
        send_raw_tool_args: bool = False,
        redact: Redactor | None = None,
        prices: PriceTable | None = None,
        compression: str | None = None,
        acks: str | int | None = None,
        enable_idempotence: bool | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
        spool_max_bytes: int | None = None,
        kafka_options: Mapping[str, Any] | None = None,
        control: bool | None = None,
        control_fail_closed: bool | None = None,
        control_topic: str | None = None,
        on_halt: OnHalt | None = None,
    ) -> None:
        settings = ProducerSettings.resolve(
            tenant_id=tenant_id,
            agent_id=agent_id,
            topic=topic,
            bootstrap_servers=bootstrap_servers,
            queue_size=queue_size,
            linger_ms=linger_ms,
            max_batch_events=max_batch_events,
            max_batch_bytes=max_batch_bytes,
            send_raw_tool_args=send_raw_tool_args,
            compression=compression,
            acks=acks,
            enable_idempotence=enable_idempotence,
            spool_dir=spool_dir,
            spool_max_bytes=spool_max_bytes,
            control=control,
            control_fail_closed=control_fail_closed,
            control_topic=control_topic,
        )
        if on_halt is not None and not callable(on_halt):
            raise ConfigError(f"on_halt must be a callable or None, got {type(on_halt).__name__}")
        if redact is not None and not callable(redact):
            raise ConfigError(f"redact must be a callable or None, got {type(redact).__name__}")
        if prices is not None and not isinstance(prices, PriceTable):
            raise ConfigError(f"prices must be a PriceTable or None, got {type(prices).__name__}")
        if transport is not None:
            if bootstrap_servers is not None:
                raise ConfigError("pass either transport= or bootstrap_servers=, not both")
            if not isinstance(transport, Transport):
                raise ConfigError(
                    f"transport must have send(records), flush(timeout_s) and close(), "
                    f"got {type(transport).__name__}"
                )
            if kafka_options:
                raise ConfigError("kafka_options: only used with bootstrap_servers=")
        elif settings.bootstrap_servers is not None:
            transport = kafka_transport(settings, kafka_options or {})
        else:
            raise ConfigError(
                "no transport: pass transport=InProcessTransport(...) or bootstrap_servers= "
                "(or set AGENTWATCH_BOOTSTRAP_SERVERS or KAFKA_BOOTSTRAP_SERVERS)"
            )
        self._settings = settings
        self._transport = transport
        self._prices = prices if prices is not None else default_price_table()
        self._redact = redact
        self._default_session_id = settings.default_session_id or str(uuid.uuid4())
        self._log = RateLimitedLog()
        self._counters = Counters(threading.Lock())
        self._state_lock = threading.Lock()
        self._running = False
        self._closed = False
        self._outbox: Outbox = open_outbox(settings)  # raises ConfigError for a bad spool_dir
        self._recovered = self._outbox.events
        self._setup_pipeline()
        self._control: Control | None = None
        if settings.control:
            self._control = self._follow_control(on_halt)
        _track(self)
        if self._recovered:  # deliver what a previous run left in the spool, now
            self.start()

    def _setup_pipeline(self) -> None:
        s = self._settings
        self._wake = threading.Event()
        self._queue: BoundedQueue[QueueItem] = BoundedQueue(
            s.queue_size, self._wake, 1 if s.linger_ms == 0 else s.max_batch_events
        )
        self._sender = Sender(
            settings=s,
            transport=self._transport,
            prices=self._prices,
            redact=self._redact,
            queue=self._queue,
            wake=self._wake,
            counters=self._counters,
            log=self._log,
            default_session_id=self._default_session_id,
            outbox=self._outbox,
        )

    def _follow_control(self, on_halt: OnHalt | None) -> Control:
        s = self._settings
        control = Control(s.tenant_id, s.agent_id, fail_closed=s.control_fail_closed,
                          on_halt=on_halt, log=self._log)
        from agentwatch.producer._inprocess import InProcessTransport  # noqa: PLC0415

        transport = self._transport
        if isinstance(transport, InProcessTransport):
            control.follow_log(transport.log, s.control_topic)
        elif hasattr(transport, "submit") and hasattr(transport, "config"):  # KafkaTransport
            control.follow_kafka(transport, s.control_topic)  # type: ignore[arg-type]
        else:
            raise ConfigError(
                f"control: needs bootstrap_servers= (Kafka) or an InProcessTransport, got "
                f"transport={type(transport).__name__}")
        return control

    # -- control ---------------------------------------------------------------
    def halted(self, session_id: str | None = None) -> Halt | None:
        """The halt in force for ``session_id`` (default: the current ``session()``, else
        the client's default session), its agent or the tenant; None when it may run (or
        when the client does not follow control records: ``control=False``). A local
        lookup, never I/O. Never raises."""
        control = self._control
        if control is None:
            return None
        ctx = _CTX.get()
        if session_id is None:
            session_id = ctx.session_id if ctx is not None else self._default_session_id
        agent_id = (ctx.agent_id if ctx is not None else None) or self._settings.agent_id
        return control.halted(agent_id, str(session_id))

    def _check_halt(self, session_id: str, agent_id: str | None) -> None:
        control = self._control
        if control is not None:
            control.check(agent_id or self._settings.agent_id, session_id)

    @property
    def control_errors(self) -> int:
        """How many times the control topic could not be read (0 without ``control``)."""
        return 0 if self._control is None else self._control.errors

    # -- properties ------------------------------------------------------------
    @property
    def settings(self) -> ProducerSettings:
        return self._settings

    @property
    def transport(self) -> Transport:
        return self._transport

    @property
    def default_session_id(self) -> str:
        """Session id of events emitted outside any ``session()`` block."""
        return self._default_session_id

    @property
    def sends_raw_tool_args(self) -> bool:
        return self._settings.send_raw_tool_args

    @property
    def stats(self) -> ProducerStats:
        counters, queue = self._counters, self._queue
        return ProducerStats(
            emitted=queue.accepted + queue.dropped + counters.invalid_at_emit,
            sent=counters.sent,
            dropped=queue.dropped,
            failed=counters.failed,
            redacted=counters.redacted,
            invalid=counters.invalid + counters.invalid_at_emit,
            queue_depth=len(queue),
            records=counters.records,
            buffered=self._sender.buffered if self._running else counters.kept_on_disk,
            retries=counters.retries,
            recovered=self._recovered,
        )

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        """Start the background thread (``emit()`` does it on first use)."""
        self._ensure_started()

    def flush(self, timeout_s: float = _DEFAULT_TIMEOUT_S) -> bool:
        """Block up to ``timeout_s`` until everything emitted so far is handed on and the
        transport flushed. True when it was and nothing failed meanwhile. Never raises."""
        try:
            if not self._running:
                return len(self._queue) == 0
            return self._sender.flush(timeout_s)
        except Exception as exc:  # noqa: BLE001 -- telemetry never raises into the agent
            self._report("flush", exc)
            return False

    def close(self, timeout_s: float = _DEFAULT_TIMEOUT_S) -> None:
        """Send what is queued (waiting up to ``timeout_s``), then close the transport.
        Idempotent; later ``emit()`` calls are dropped. Never raises."""
        try:
            with self._state_lock:
                if self._closed:
                    return
                self._closed = True
                was_running, self._running = self._running, False
            if self._control is not None:
                self._control.close()
            if not was_running:
                self._transport.close()
                self._outbox.close()
                return
            atexit.unregister(self._at_exit)
            if self._sender.stop(timeout_s):
                leftover, _ = self._queue.drain()
                if leftover:
                    self._counters.add("failed", len(leftover))
            else:
                logger.warning(
                    "agentwatch: close() gave up after %.1f s (transport not answering); "
                    "%d queued events may be lost",
                    timeout_s,
                    len(self._queue),
                )
        except Exception as exc:  # noqa: BLE001 -- telemetry never raises into the agent
            self._report("close", exc)

    async def aflush(self, timeout_s: float = _DEFAULT_TIMEOUT_S) -> bool:
        """:meth:`flush` without blocking the event loop."""
        return await asyncio.to_thread(self.flush, timeout_s)

    async def aclose(self, timeout_s: float = _DEFAULT_TIMEOUT_S) -> None:
        """:meth:`close` without blocking the event loop."""
        await asyncio.to_thread(self.close, timeout_s)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _ensure_started(self) -> bool:
        with self._state_lock:
            if self._closed:
                return False
            if not self._running:
                self._sender.start()
                atexit.register(self._at_exit)
                self._running = True
            return True

    def _at_exit(self) -> None:
        self.close(_DEFAULT_TIMEOUT_S)

    # -- the hot path ----------------------------------------------------------
    def emit(self, event: Event | dict[str, Any]) -> None:
        """Queue one event (a dict or an :class:`Event`); returns at once, never raises.

        A dict needs only ``kind``; ``event_id``, ``ts`` (now), ``session_id``,
        ``trace_id`` and ``parent_span_id`` (from the current ``session()`` / span),
        ``agent_id``, ``tenant_id`` and ``cost_usd`` (from the price table) are filled
        in when absent. The dict is encoded to JSON at once (so later changes to it, or
        to anything inside it, do not reach the event); full validation happens on the
        background thread.
        """
        try:
            if isinstance(event, dict):
                kind = event.get("kind")
                if not (isinstance(kind, str) and kind in KINDS and event.keys() <= _FIELDS):
                    self._invalid_at_emit(event)
                    return
                try:
                    # JSON, not a copy of the dict: a queue of bytes holds no objects the
                    # garbage collector must scan (a burst of dicts waiting in the queue made
                    # it rescan the whole heap), and the dict is hot in cache here. Copied to
                    # a right-sized object: many orjson outputs alive at once cost ~2 µs each.
                    # The copy is a slice that drops a newline orjson added: ~0.16 µs less
                    # than bytes(memoryview(...)) of the output as it is
                    payload: bytes | dict[str, Any] = _dumps(event, option=_NEWLINE)[:-1]
                except TypeError:  # a value JSON cannot hold: the background thread says which
                    payload = dict(event)
                if not self._running and not self._ensure_started():
                    self._dropped_after_close()
                elif not self._queue.put((time.time_ns(), _CTX.get(), payload)):
                    self._queue_full()
            elif isinstance(event, Event):
                self._enqueue(event, None)
            else:
                self._invalid_at_emit(event)
        except Exception as exc:  # noqa: BLE001 -- telemetry never raises into the agent
            self._report("emit", exc)

    def _enqueue(self, payload: bytes | dict[str, Any] | Event, ctx: _Context | None) -> None:
        # (emit() of a dict does the same inline: it is the hot path)
        if not self._running and not self._ensure_started():
            self._dropped_after_close()
        elif not self._queue.put((time.time_ns(), ctx, payload)):
            self._queue_full()

    def _dropped_after_close(self) -> None:
        self._queue.drop()
        self._log.warn_limited("closed", "agentwatch: emit() after close(): event dropped")

    def _queue_full(self) -> None:
        self._log.warn_limited(
            "queue_full",
            "agentwatch: telemetry queue full (queue_size=%d), dropping events "
            "(%d dropped so far); the agent is not affected",
            self._settings.queue_size,
            self._queue.dropped,
        )

    def _invalid_at_emit(self, event: object) -> None:
        self._counters.add("invalid_at_emit")
        if not isinstance(event, dict):
            reason = f"expected an Event or a dict, got {type(event).__name__}"
        elif not isinstance(event.get("kind"), str) or event.get("kind") not in KINDS:
            reason = f"field `kind`: must be one of {sorted(KINDS)} (got {event.get('kind')!r})"
        else:
            unknown = sorted(str(k) for k in event.keys() - _FIELDS)
            reason = f"unknown field(s) {', '.join(unknown)}"
        self._log.warn_limited("invalid", "agentwatch: invalid event not sent: %s", reason)

    def _report(self, where: str, exc: BaseException) -> None:
        """Count and log a failure inside the telemetry code; never raises."""
        try:
            self._counters.add("failed")
            self._log.warn_limited("internal", "agentwatch: error in %s: %r", where, exc)
        except Exception:  # noqa: BLE001, S110 -- last resort: stay silent rather than raise
            pass

    # -- helpers -----------------------------------------------------------------
    def session(
        self,
        session_id: str | None = None,
        *,
        agent_id: str | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> SessionScope:
        """A session: ``with``/``async with``/decorator. Emits ``session_start`` and
        ``session_end`` (``status=error`` if the block raised; the error propagates).
        Without ``session_id`` a UUID is made; a trace id is made (or inherited)."""
        return SessionScope(
            self,
            None if session_id is None else str(session_id),
            None if agent_id is None else str(agent_id),
            attributes,
        )

    def llm_call(
        self,
        model: str | None = None,
        *,
        provider: str | None = None,
        name: str | None = None,
    ) -> LLMCallScope:
        """One ``llm_call`` event when the block or decorated call ends; the yielded
        :class:`Span` takes token counts, cost and attributes."""
        return LLMCallScope(self, model, provider, name)

    def tool_call(self, name: str | None = None, args: Any = None) -> ToolCallScope:
        """One ``tool_call`` event when the block or decorated call ends, with the hash
        of ``args`` (as a decorator: of the call's arguments by parameter name; the
        name defaults to the function's)."""
        return ToolCallScope(self, name, args)

    def score(
        self,
        name: str,
        value: float | None = None,
        *,
        label: str | None = None,
        explanation: str | None = None,
        source: str = "llm_judge",
        response_id: str | None = None,
        span_id: str | None = None,
        session_id: str | None = None,
    ) -> None:
        """One ``score`` event: the result of evaluation ``name`` (OpenTelemetry's
        ``gen_ai.evaluation.result``): a numeric ``value`` and/or a ``label``, from
        ``source`` (``llm_judge``, ``human`` or ``heuristic``). ``span_id``: the span it
        scores (sent as the event's ``parent_span_id``); ``response_id``: the response
        (``gen_ai.response.id``). Like ``emit()``, it never raises: a bad argument is
        counted invalid and logged."""
        try:
            problem = _score_problem(name, value, label, source)
            if problem is not None:
                self._counters.add("invalid_at_emit")
                self._log.warn_limited("invalid", "agentwatch: invalid score not sent: %s",
                                       problem)
                return
            attributes: dict[str, Any] = {SCORE_SOURCE_KEY: source}
            for key, item in ((SCORE_VALUE_KEY, value), (SCORE_LABEL_KEY, label),
                              (SCORE_EXPLANATION_KEY, explanation),
                              (RESPONSE_ID_KEY, response_id)):
                if item is not None:
                    attributes[key] = float(item) if key is SCORE_VALUE_KEY else str(item)
            event: dict[str, Any] = {"kind": "score", "name": name, "attributes": attributes}
            if span_id is not None:
                event["parent_span_id"] = str(span_id)
            if session_id is not None:
                event["session_id"] = str(session_id)
            self.emit(event)
        except Exception as exc:  # noqa: BLE001 -- telemetry never raises into the agent
            self._report("score", exc)

    def _after_fork_in_child(self) -> None:
        # The parent's thread does not exist here and its locks may be held: start afresh
        # (the parent sends what it had queued). The spool stays the parent's: the child
        # buffers in memory.
        if not isinstance(self._outbox, MemoryOutbox):
            logger.warning("agentwatch: forked child buffers in memory; spool_dir stays "
                           "with the parent process")
            self._outbox = MemoryOutbox(self._settings.queue_size)
        self._recovered = 0
        self._counters = Counters(threading.Lock())
        self._state_lock = threading.Lock()
        self._log = RateLimitedLog()
        self._setup_pipeline()
        if not self._closed:
            self._running = False


_CLIENTS: weakref.WeakSet[Agentwatch] = weakref.WeakSet()
_fork_hook_registered = False


def _track(client: Agentwatch) -> None:
    global _fork_hook_registered  # noqa: PLW0603 -- one process-wide fork hook
    _CLIENTS.add(client)
    if not _fork_hook_registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _fork_hook_registered = True


def _after_fork_in_child() -> None:
    for client in list(_CLIENTS):
        client._after_fork_in_child()
