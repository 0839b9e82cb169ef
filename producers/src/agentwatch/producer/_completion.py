"""Event completion: what the producer's thread does to each queued event before packing.

Every event ``emit()`` queued gets what its caller left out — an id, the emit time, the
session, agent, trace and parent span of the caller's context, the client's agent and
tenant, a cost priced from the model table — then the ``redact`` hook, then a check: a
fast one for the common case, pydantic for anything unusual (it names what is wrong).
The fast check looks at what the caller gave
(:func:`agentwatch.schemas.fastcheck.plain_fields`, before anything is added) and at each
value the completion adds from elsewhere as it adds it (a context's ids, a cost); the id,
the time and the client's own agent, tenant and default session are made valid. What was
checked is what is sent: the JSON is encoded once. Invalid events are counted and logged,
never raised.
"""

from __future__ import annotations

import itertools
import os
import random
import time
from collections.abc import Callable
from typing import Any, Final, TypeAlias

import orjson
from pydantic import ValidationError

from agentwatch.producer._queue import RateLimitedLog
from agentwatch.producer._scopes import _Context
from agentwatch.producer._settings import ProducerSettings
from agentwatch.producer.packing import Packer
from agentwatch.schemas import Event, PriceTable, describe_validation_error
from agentwatch.schemas.fastcheck import plain_cost, plain_fields, plain_id, plain_text

__all__ = ["EventCompleter", "QueueItem", "Redactor"]

#: What ``emit()`` enqueues: (wall-clock ns at emit, the caller's context, the event:
#: its JSON as the caller gave it (``emit()`` of a dict), a dict (the helpers, or a
#: dict JSON cannot hold) or an ``Event``).
QueueItem: TypeAlias = tuple[int, _Context | None, bytes | dict[str, Any] | Event]
#: The ``redact`` hook: returns the (possibly changed) event dict, or None to drop it.
Redactor: TypeAlias = Callable[[dict[str, Any]], dict[str, Any] | None]

_VALIDATOR: Final = Event.__pydantic_validator__
# Event ids: a UUID in the version 4 layout whose first 74 bits are random, drawn once per
# process from a private generator seeded by the OS (drawn again in a forked child, so an
# agent that seeds the global `random` or forks cannot make ids repeat), and whose last 48
# bits count up from a random start: unique like random ids, ~3x cheaper to make.
_rng = random.Random()  # noqa: S311 -- unique ids, not secrets
_VERSION_CLEAR: Final = ~((0xF << 28) | (0x3 << 14))
_VERSION_SET: Final = (0x4 << 28) | (0x2 << 14)
_id_prefix = ""
_id_counter = itertools.count()


def _new_id_source() -> None:
    global _id_prefix, _id_counter  # noqa: PLW0603 -- one id source per process
    _rng.seed()
    h = f"{(_rng.getrandbits(80) & _VERSION_CLEAR) | _VERSION_SET:020x}"
    _id_prefix = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:]}-"
    # from 2**44 + (0 .. 2**46): 12 hex digits for 2**47 ids at least
    _id_counter = itertools.count((1 << 44) + _rng.getrandbits(46))


_new_id_source()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_id_source)


class EventCompleter:
    """Completes and checks queued events on the producer's thread (not thread-safe)."""

    def __init__(
        self,
        *,
        settings: ProducerSettings,
        prices: PriceTable,
        redact: Redactor | None,
        count: Callable[[str], object],
        log: RateLimitedLog,
        default_session_id: str,
    ) -> None:
        self._settings = settings
        self._prices = prices
        self._redact = redact
        self._count = count
        self._log = log
        self._default_session_id = default_session_id
        # the client's own agent, tenant and default session, as they are added to events
        self._defaults_plain = plain_fields({
            "agent_id": settings.agent_id, "tenant_id": settings.tenant_id,
            "session_id": default_session_id})
        self._ts_second = ""  # the seconds digits of the last emit time formatted, and
        self._ts_prefix = ""  # that second as RFC 3339, up to the "."

    def complete(self, items: list[QueueItem], keys: dict[str, dict[str, bytes]],
                 key_of: Callable[[str, str], bytes], packer: Packer) -> None:
        """Complete, check and encode each item, and add it to ``packer`` under its record
        key: ``keys[tenant_id][session_id]``, else ``key_of(tenant_id, session_id)`` (which
        remembers it in ``keys``: see ``_placement``). The hot loop: names bound locally,
        the common case inline (an event as ``emit()`` queues it: its JSON, without id,
        time, agent or tenant). ``event.get(...)`` each time, not a local ``get =
        event.get``: compiled, the first is a direct dict lookup, the second a Python call
        of a bound method."""
        loads, dumps = orjson.loads, orjson.dumps
        redact, settings = self._redact, self._settings
        agent_default, tenant_default = settings.agent_id, settings.tenant_id
        defaults_plain = self._defaults_plain
        second, ts_prefix = self._ts_second, self._ts_prefix
        for item in items:
            try:
                ts_ns, ctx, payload = item
                event: dict[str, Any] = (
                    loads(payload) if type(payload) is bytes else self._as_dict(payload))
                # what the caller gave (False: pydantic decides, after completion)
                plain = defaults_plain and plain_fields(event)
                if event.get("event_id") is None:
                    event["event_id"] = _id_prefix + hex(next(_id_counter))[2:]
                if event.get("ts") is None:  # one strftime per second of emit time
                    digits = str(ts_ns)  # (ns since the epoch: more than 9 digits)
                    if digits[:-9] != second:
                        second = digits[:-9]
                        ts_prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(int(second)))
                    event["ts"] = f"{ts_prefix}{digits[-9:-3]}Z"
                if ((ctx is not None or event.get("session_id") is None)
                        and not self._from_context(event, ctx)):
                    plain = False
                if event.get("agent_id") is None:
                    event["agent_id"] = agent_default
                if event.get("tenant_id") is None:
                    event["tenant_id"] = tenant_default
                if ("model" in event and event.get("cost_usd") is None
                        and not self._fill_cost(event)):
                    plain = False
                if redact is not None:
                    redacted = self._apply_redact(event)
                    if redacted is None:
                        continue
                    event = redacted
                    plain = False  # the hook may have changed any field: pydantic decides
                if plain and "kind" in event:  # the common case
                    raw = dumps(event)
                    tenant_id, session_id = event["tenant_id"], event["session_id"]
                else:
                    checked = self._checked(event)
                    if checked is None:
                        continue
                    raw, tenant_id, session_id = checked
                # what was checked is what is sent (no re-encoding: it is the slow part)
                sessions = keys.get(tenant_id)
                key = sessions.get(session_id) if sessions is not None else None
                packer.add(key if key is not None else key_of(tenant_id, session_id), raw)
            except Exception as exc:  # noqa: BLE001 -- one bad event must not stop the rest
                self._count("failed")
                self._log.warn_limited(
                    "prepare", "agentwatch: could not prepare an event: %r", exc)
        self._ts_second, self._ts_prefix = second, ts_prefix

    @staticmethod
    def _as_dict(payload: bytes | dict[str, Any] | Event) -> dict[str, Any]:
        if isinstance(payload, Event):
            return payload.model_dump(mode="json", exclude_none=True)
        if isinstance(payload, bytes):
            return dict(orjson.loads(payload))
        return payload

    def _from_context(self, event: dict[str, Any], ctx: _Context | None) -> bool:
        """The session (the context's, else the client's default) and, for an event of the
        context's own session, its agent, trace and parent span. False when a value taken
        from the context is not surely valid (pydantic then decides)."""
        plain = True
        session_id = event.get("session_id")
        if session_id is None:
            session_id = event["session_id"] = (
                ctx.session_id if ctx is not None else self._default_session_id
            )
            plain = plain_id(session_id)
        if ctx is None or session_id != ctx.session_id:
            return plain
        if event.get("agent_id") is None and ctx.agent_id is not None:
            event["agent_id"] = ctx.agent_id
            plain = plain and plain_id(ctx.agent_id)
        if event.get("trace_id") is None and ctx.trace_id is not None:
            event["trace_id"] = ctx.trace_id
            plain = plain and plain_text(ctx.trace_id)
        if (
            event.get("parent_span_id") is None
            and ctx.span_id is not None
            and event.get("span_id") != ctx.span_id
        ):
            event["parent_span_id"] = ctx.span_id
            plain = plain and plain_text(ctx.span_id)
        return plain

    def _checked(self, event: dict[str, Any]) -> tuple[bytes, str, str] | None:
        """pydantic decides, and names what is wrong: ``(JSON, tenant_id, session_id)``, or
        None when the event is invalid (counted and logged)."""
        try:
            raw = orjson.dumps({k: v for k, v in event.items() if v is not None})
            model = _VALIDATOR.validate_json(raw)
        except ValidationError as exc:
            self._invalid(describe_validation_error(exc))
            return None
        except TypeError as exc:  # orjson: a value that is not JSON
            self._invalid(str(exc))
            return None
        return raw, model.tenant_id, model.session_id

    def _fill_cost(self, event: dict[str, Any]) -> bool:
        """Price the event from the model table when it can be; False when the cost it
        added is not surely valid (pydantic then decides)."""
        model = event.get("model")
        if not isinstance(model, str):
            return True
        inp, out = event.get("input_tokens"), event.get("output_tokens")
        cached = event.get("cached_input_tokens")
        if ((inp is None or (type(inp) is int and inp >= 0))
                and (out is None or (type(out) is int and out >= 0))
                and (cached is None or (type(cached) is int and cached >= 0))):
            cost = self._prices.cost_usd(model, inp, out, cached)
            if cost is not None:
                event["cost_usd"] = cost
                return plain_cost(cost)
        return True  # (else unpriceable, or invalid: validation says why)

    def _apply_redact(self, event: dict[str, Any]) -> dict[str, Any] | None:
        assert self._redact is not None  # noqa: S101 -- checked by the caller
        try:
            result = self._redact(event)
        except Exception as exc:  # noqa: BLE001 -- never send what the hook failed to redact
            self._count("failed")
            self._log.warn_limited(
                "redact", "agentwatch: the redact hook raised %r; event not sent", exc
            )
            return None
        if result is None:
            self._count("redacted")
            return None
        if not isinstance(result, dict):
            self._count("failed")
            self._log.warn_limited(
                "redact",
                "agentwatch: the redact hook returned %s, not a dict or None; event not sent",
                type(result).__name__,
            )
            return None
        return result

    def _invalid(self, reason: str) -> None:
        self._count("invalid")
        self._log.warn_limited("invalid", "agentwatch: invalid event not sent: %s", reason)
