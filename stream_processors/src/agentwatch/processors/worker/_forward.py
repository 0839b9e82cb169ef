"""What the session stage forwards to the rekeyed stage, and the table keys both use.

Forwarded events are compact JSON arrays with only what agent- and tenant-scoped
detectors read (cost already priced by the session stage); the rekeyed stage turns
them back into :class:`StageEvent` objects (the session stage's own events, what the
detectors read) without validating them again.

Messages on the internal topic (JSON objects):

* data, keyed by the scope key ``[tenant_id, agent_id]`` (or ``[tenant_id, tenant_id]``):
  ``{"s": "agent", "p": <input partition>, "e": [<compact event>, ...]}``
* marks, keyed ``"~"`` and sent to every partition: ``{"p": <input partition>,
  "w": <largest event time seen there, µs>, "idle": <bool>}``. They carry each input
  partition's progress to every rekeyed partition (see ``_rekeyed_stage.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, cast

import orjson

from agentwatch.schemas import Event, EventKind, EventStatus, decode_event, from_us, to_us

__all__ = [
    "MARK_KEY",
    "StageEvent",
    "compact_event",
    "core_event",
    "event_from_compact",
    "event_from_item",
    "event_from_model",
    "table_key",
]

MARK_KEY: Final = b"~"


class StageEvent:
    """An event as both stages hand it to the core: the attributes of :class:`Event` that
    the stages and the detectors read, in a class compiled by mypyc (a plain struct), not
    a pydantic model per event on the hot path (DESIGN.md, "Kafka records"). Built from
    what the contract's fast check accepted (:func:`event_from_item`), from a compact
    event (:func:`event_from_compact`) or, off the hot path, from a pydantic event
    (:func:`event_from_model`). The core types its events as :class:`Event` and reads
    them by attribute only; mypyc checks no argument of a non-native class such as Event,
    so :func:`core_event` hands a StageEvent over as one (the engine sets ``cost_usd``
    when it prices an event). ``origin``: the decoded JSON object or the pydantic event
    it came from (a dead letter's body), None for a forwarded one."""

    def __init__(self, event_id: str, ts_us: int, tenant_id: str, agent_id: str,
                 session_id: str, kind: EventKind, status: EventStatus,
                 cost_usd: float | None, name: str | None, tool_args_hash: str | None) -> None:
        self.event_id = event_id
        self.ts_us = ts_us
        self.tenant_id = tenant_id
        self.agent_id = agent_id
        self.session_id = session_id
        self.kind = kind
        self.status = status
        self.cost_usd = cost_usd
        self.name = name
        self.tool_args_hash = tool_args_hash
        self.duration_ms: float | None = None
        self.model: str | None = None
        self.attributes: dict[str, Any] | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.cached_input_tokens: int | None = None
        self.origin: dict[str, Any] | Event | None = None

    @property
    def ts(self) -> datetime:
        return from_us(self.ts_us)

    def to_model(self) -> Event:
        """The pydantic event it came from (for a dead letter's body)."""
        if isinstance(self.origin, Event):
            return self.origin
        if self.origin is not None:
            return decode_event(self.origin)
        return Event(event_id=self.event_id, ts=self.ts, tenant_id=self.tenant_id,
                     agent_id=self.agent_id, session_id=self.session_id, kind=self.kind,
                     status=self.status, cost_usd=self.cost_usd, name=self.name,
                     tool_args_hash=self.tool_args_hash, duration_ms=self.duration_ms,
                     model=self.model, attributes=self.attributes)


def core_event(event: StageEvent) -> Event:
    """``event`` for the core's ``Engine.process`` and ``is_new`` (see :class:`StageEvent`)."""
    return cast("Event", event)


_KINDS: Final = {k.value: k for k in EventKind}
_STATUSES: Final = {s.value: s for s in EventStatus}
_OK: Final = EventStatus.OK
_TENANT_DEFAULT: Final[str] = Event.model_fields["tenant_id"].get_default()
_PLAIN_FIELDS: Final = 10


def _number(value: Any) -> float | None:
    """A JSON int where a float is due becomes a float, as pydantic makes it."""
    return float(value) if type(value) is int else value


def event_from_item(item: dict[str, Any], ts_us: int) -> StageEvent:
    """The event of a decoded JSON object that the contract's fast check accepted
    (``agentwatch.schemas.fastcheck.plain_event_ts``; ``ts_us``: its instant), with the
    values the pydantic :class:`Event` of it would hold, without validating it again."""
    # item.get(...) each time, not a local ``get = item.get``: compiled, the first is a
    # direct dict lookup, the second a Python call of a bound method (ten an event)
    status = item.get("status")
    event = StageEvent(
        item["event_id"], ts_us, item.get("tenant_id", _TENANT_DEFAULT), item["agent_id"],
        item["session_id"], _KINDS[item["kind"]], _OK if status is None else _STATUSES[status],
        _number(item.get("cost_usd")), item.get("name"), item.get("tool_args_hash"))
    event.duration_ms = _number(item.get("duration_ms"))
    event.model = item.get("model")
    event.attributes = item.get("attributes")
    event.input_tokens = item.get("input_tokens")
    event.output_tokens = item.get("output_tokens")
    event.cached_input_tokens = item.get("cached_input_tokens")
    event.origin = item
    return event


def event_from_model(model: Event) -> StageEvent:
    """A validated pydantic event (the decoder's slow path) as a :class:`StageEvent`."""
    event = StageEvent(
        model.event_id, to_us(model.ts), model.tenant_id, model.agent_id, model.session_id,
        model.kind, model.status, model.cost_usd, model.name, model.tool_args_hash)
    event.duration_ms = model.duration_ms
    event.model = model.model
    event.attributes = model.attributes
    event.input_tokens = model.input_tokens
    event.output_tokens = model.output_tokens
    event.cached_input_tokens = model.cached_input_tokens
    event.origin = model
    return event


def compact_event(event: StageEvent) -> list[Any]:
    """Ten fields; three more (duration_ms, model, and a score's attributes: the latency
    and score rules read them) when one of them is set."""
    kind = event.kind
    # the enums themselves, not their .value (a Python-level property: ~0.3 µs of the
    # two per forwarded event): they are str, and orjson writes a str enum as its value
    compact: list[Any] = [
        event.event_id, event.ts_us, event.tenant_id, event.agent_id, event.session_id,
        kind, event.status, event.cost_usd, event.name, event.tool_args_hash,
    ]
    score = kind is EventKind.SCORE
    if score or event.duration_ms is not None or event.model is not None:
        compact += (event.duration_ms, event.model, event.attributes if score else None)
    return compact


def event_from_compact(c: list[Any]) -> StageEvent:
    """A compact event back (no validation: the session stage validated it, the rekeyed
    stage checked the compact form's types and ranges)."""
    event = StageEvent(c[0], c[1], c[2], c[3], c[4], _KINDS[c[5]], _STATUSES[c[6]], c[7],
                       c[8], c[9])
    if len(c) > _PLAIN_FIELDS:
        event.duration_ms, event.model, event.attributes = c[10], c[11], c[12]
    return event


def table_key(partition: int, *parts: Any) -> bytes:
    """Table keys start with the partition whose changelog holds them: a restarted worker
    finds a partition's keys without knowing how the producer hashed them."""
    return orjson.dumps([partition, *parts])
