"""Bytes in and out (orjson), and validation errors as one readable sentence.

A Kafka record value (and a line of a replay file) is either one JSON event
object or a JSON array of events (one session's, or a partition batch of many
sessions': ``_records``). :func:`decode_record` accepts every form and never
raises for bad input: what does not validate comes back as a :class:`Rejected`
with the reason, so callers can dead-letter it and go on.

The hot path has no pydantic: the record is parsed once with orjson, and an item
that is *plainly* valid (``fastcheck.plain_event``: what producers send) becomes
an :class:`Event` directly (~1 µs, against ~4 µs of validation). Any other item is
validated by pydantic, which gives the exact reason when it is bad; a differential
test holds the two paths to the same events.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from agentwatch.schemas._alert import Alert
from agentwatch.schemas._event import Event, EventKind, EventStatus
from agentwatch.schemas.errors import EventValidationError
from agentwatch.schemas.fastcheck import plain_event_ts

__all__ = [
    "MAX_RECORD_BYTES",
    "OVERSIZED_RAW_KEPT",
    "DecodedRecord",
    "Rejected",
    "decode_event",
    "decode_record",
    "describe_validation_error",
    "encode_alert",
    "encode_event",
    "encode_events",
    "item_json",
    "oversized",
]

#: the largest record value (or replay line) decoded: larger ones are rejected whole, unread.
#: The producer's records stay below it (``max_batch_bytes`` is at most 8 MiB and one event
#: is at most ~3.5 MB under the Event limits); README, "Input limits".
MAX_RECORD_BYTES: Final = 16 * 1024 * 1024
#: how much of a record over :data:`MAX_RECORD_BYTES` its :class:`Rejected` keeps
OVERSIZED_RAW_KEPT: Final = 4096
_MAX_REASON_ERRORS: Final = 5
_EVENT_LIST: Final = TypeAdapter(list[Event])


@dataclass(frozen=True, slots=True)
class Rejected:
    """Input that is not a valid event: the raw bytes (or JSON value) and why."""

    raw: bytes
    reason: str
    index: int | None = None  # position inside a packed record, when it was one


@dataclass(slots=True)
class DecodedRecord:
    events: list[Event] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def describe_validation_error(exc: ValidationError, *, limit: int = _MAX_REASON_ERRORS) -> str:
    """``field `input_tokens`: Input should be greater than or equal to 0 (got -5)``; several
    problems are joined with ``; ``."""
    parts: list[str] = []
    errors = exc.errors(include_url=False)
    for err in errors[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "(event)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        got = err.get("input")
        if err["type"] in {"missing", "model_type", "dict_type"} or isinstance(got, dict | list):
            parts.append(f"field `{loc}`: {msg}")
        else:
            parts.append(f"field `{loc}`: {msg} (got {_short(got)})")
    if len(errors) > limit:
        parts.append(f"and {len(errors) - limit} more")
    return "; ".join(parts)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def decode_event(data: bytes | str | dict[str, Any]) -> Event:
    """One event from JSON bytes/str or a dict; raises :class:`EventValidationError`."""
    try:
        if isinstance(data, dict):
            return Event.model_validate_json(orjson.dumps(data))
        return Event.model_validate_json(data)
    except ValidationError as exc:
        raise EventValidationError(describe_validation_error(exc)) from None


#: every field in declaration order (pydantic's own ``__dict__`` order), with its default;
#: ``update`` keeps that order, so dumps of both paths are byte-identical
_DEFAULTS: Final = {
    name: None if info.is_required() else info.get_default(call_default_factory=True)
    for name, info in Event.model_fields.items()
}
_KINDS: Final = {k.value: k for k in EventKind}
_FLOATS: Final = ("cost_usd", "duration_ms")
_STATUSES: Final = {s.value: s for s in EventStatus}
_new_event = Event.__new__
_set = object.__setattr__


def event_from_plain(item: dict[str, Any], ts: datetime) -> Event:
    """The :class:`Event` pydantic would build from ``item``, which ``plain_event_ts``
    accepted (``ts``: what it returned), without validating it again (what
    ``model_construct`` does, ~10x faster)."""
    event = _new_event(Event)
    values = _DEFAULTS.copy()
    values.update(item)
    values["ts"] = ts
    values["kind"] = _KINDS[item["kind"]]
    status = item.get("status")
    if status is not None:
        values["status"] = _STATUSES[status]
    for name in _FLOATS:  # a JSON int where a float is due: pydantic makes it a float
        number = item.get(name)
        if type(number) is int:
            values[name] = float(number)
    _set(event, "__dict__", values)
    _set(event, "__pydantic_fields_set__", set(item))
    _set(event, "__pydantic_extra__", None)
    _set(event, "__pydantic_private__", None)
    return event


def oversized(value: bytes) -> Rejected | None:
    """The rejection of a record value over :data:`MAX_RECORD_BYTES` (its first
    :data:`OVERSIZED_RAW_KEPT` bytes kept), or None when it is not over."""
    if len(value) <= MAX_RECORD_BYTES:
        return None
    return Rejected(value[:OVERSIZED_RAW_KEPT], (
        f"record too large: {len(value)} bytes, the limit is {MAX_RECORD_BYTES} "
        f"(only its first {OVERSIZED_RAW_KEPT} bytes are kept here)"))


def decode_record(value: bytes) -> DecodedRecord:
    """Decode a record value (one event object or an array of events). Never raises."""
    too_large = oversized(value)
    if too_large is not None:
        return DecodedRecord(rejected=[too_large])
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        parsed = None  # the reference path below says why
    if type(parsed) is dict:
        ts = plain_event_ts(parsed)
        if ts is not None:
            return DecodedRecord([event_from_plain(parsed, ts)])
    elif type(parsed) is list and parsed:
        out = DecodedRecord()
        events = out.events
        for index, item in enumerate(parsed):
            ts = plain_event_ts(item) if type(item) is dict else None
            if ts is not None:
                events.append(event_from_plain(item, ts))
            else:
                _slow_item(index, item, out)
        return out
    return _decode_reference(value)


def item_json(index: int, item: Any) -> bytes | Rejected:
    """``item`` of a parsed array as JSON again, or its rejection when it cannot be: orjson
    parses 1,024 levels of nesting but writes only 254."""
    try:
        return orjson.dumps(item)
    except orjson.JSONEncodeError:
        return Rejected(b"", f"item {index} is nested too deeply (JSON of more than 254 "
                             "levels; its bytes are not kept)", index)


def _slow_item(index: int, item: Any, out: DecodedRecord) -> None:
    """One item of an array through pydantic: the event, or why it is not one."""
    raw = item_json(index, item)
    if isinstance(raw, Rejected):
        out.rejected.append(raw)
        return
    if not isinstance(item, dict):
        reason = f"item {index} is {type(item).__name__}, not an object"
        out.rejected.append(Rejected(raw, reason, index))
        return
    try:
        out.events.append(Event.model_validate_json(raw))
    except ValidationError as exc:
        out.rejected.append(Rejected(raw, describe_validation_error(exc), index))


def _decode_reference(value: bytes) -> DecodedRecord:
    """Every record through pydantic (malformed JSON, empty arrays, unusual single events)."""
    out = DecodedRecord()
    if value[:1] != b"[":
        stripped = value.lstrip()
        if stripped[:1] != b"[":
            try:
                out.events.append(Event.model_validate_json(value))
            except ValidationError as exc:
                out.rejected.append(Rejected(value, _reason_for(exc)))
            return out
        value = stripped
    try:
        # Fast path: the whole packed record validates in one call (JSON mode, strict).
        events = _EVENT_LIST.validate_json(value)
    except ValidationError:
        pass  # find out which items are bad, below
    else:
        if not events:
            out.rejected.append(Rejected(value, "empty array: a record carries 1..N events"))
        out.events.extend(events)
        return out
    try:
        items = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        out.rejected.append(Rejected(value, f"malformed JSON: {exc}"))
        return out
    if not isinstance(items, list) or not items:
        out.rejected.append(Rejected(value, "empty array: a record carries 1..N events"))
        return out
    for i, item in enumerate(items):
        _slow_item(i, item, out)
    return out


def _reason_for(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    if errors and errors[0]["type"] == "json_invalid":
        return f"malformed JSON: {errors[0]['msg']}"
    if errors and errors[0]["type"] == "model_type":
        return "not a JSON object"
    return describe_validation_error(exc)


def _dump(model: BaseModel) -> bytes:
    return model.__pydantic_serializer__.to_json(model, exclude_none=True)


def encode_event(event: Event) -> bytes:
    """Compact JSON bytes of one event; absent optional fields are left out."""
    return _dump(event)


def encode_events(events: Sequence[Event] | Iterable[Event]) -> bytes:
    """A packed record value: a JSON array of events."""
    return b"[" + b",".join(_dump(e) for e in events) + b"]"


def encode_alert(alert: Alert) -> bytes:
    """JSON bytes of an alert, every field present (nulls included): the webhook body."""
    return alert.__pydantic_serializer__.to_json(alert)
