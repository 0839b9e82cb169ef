"""A cheap sufficient check that a completed event dict satisfies the Event contract.

Full pydantic validation (``validate_json``) costs ~5 µs per event, a quarter of
the background thread's time. Nearly every event is plain: strings, small
ints, finite floats and scalar attributes, with the id and timestamp made by the
client itself (the producer's case), or by our own producer (the sink's case, with
:func:`plain_event_id` and :func:`plain_ts`). :func:`plainly_valid` recognises those in
~1 µs; it answers True
only when pydantic would surely accept the event, and False when unsure, so the
caller then runs pydantic, which gives the exact error when there is one. It
never rejects by itself: the contract stays defined by ``agentwatch.schemas``
(a differential test checks the two against each other on random events).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from agentwatch.schemas._event import (
    MAX_ATTRIBUTE_TEXT,
    MAX_ATTRIBUTES,
    UUID_PATTERN,
    EventKind,
)

__all__ = [
    "KINDS",
    "parse_plain_ts",
    "parse_plain_ts_us",
    "plain_cost",
    "plain_event",
    "plain_event_id",
    "plain_event_ts",
    "plain_event_ts_us",
    "plain_fields",
    "plain_id",
    "plain_text",
    "plain_ts",
    "plainly_valid",
]

_MAX_SHORT: Final = 256
_MAX_TENANT: Final = 128
_INT64: Final = 1 << 63
_FLOAT_INT: Final = float(_INT64)  # also excludes nan and +-inf
_INF: Final = float("inf")
#: the ``kind`` values of the contract, as plain strings (emit() checks them too)
KINDS: Final = frozenset(kind.value for kind in EventKind)


_UUID: Final = re.compile(UUID_PATTERN)
#: "YYYY-MM-DDTHH:MM:SSZ" plus an optional fraction of 1 to 6 digits
_TS_LENGTHS: Final = frozenset({20, 22, 23, 24, 25, 26, 27})


def plain_event_id(value: Any) -> bool:
    """A UUID string, as the contract wants ``event_id``."""
    return type(value) is str and len(value) == 36 and _UUID.match(value) is not None


def plain_ts(value: Any) -> bool:
    """``YYYY-MM-DDTHH:MM:SS[.f{1,6}]Z`` naming a real instant (the form producers send)."""
    return parse_plain_ts(value) is not None


def parse_plain_ts(value: Any) -> datetime | None:
    """The instant of a :func:`plain_ts` value; None when it is not one."""
    if type(value) is not str or len(value) not in _TS_LENGTHS or value[-1] != "Z":
        return None
    if value[4] != "-" or value[7] != "-" or value[10] != "T" or value[13] != ":":
        return None
    # the seconds' colon too: fromisoformat takes "HH:MM.ff" (minutes with a fraction, no
    # seconds), which the contract (pydantic) refuses
    if value[16] != ":" or (len(value) > 20 and value[19] != "."):
        return None
    if not "1900" <= value[:4] <= "2299":  # Event.ts's range (a "Z" time: the year is UTC's)
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


#: "YYYY-MM-DDTHH:MM" -> microseconds since the epoch of that minute, for the minutes
#: seen lately (a stream's events share few): one datetime parse per minute, not per event.
#: Final (it is changed in place only): mypyc reads a Final global directly, a plain one
#: through a lookup in the module's globals dict
_MINUTES: Final[dict[str, int]] = {}
_MINUTES_MAX: Final = 4096
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)
_ZERO: Final = ord("0")
_FRACTION_SCALE: Final = (0, 100_000, 10_000, 1_000, 100, 10, 1)


def parse_plain_ts_us(value: Any) -> int | None:  # noqa: PLR0911 (one flat check, on purpose)
    """What ``to_us(parse_plain_ts(value))`` gives (None when that is None), in a third
    of its time: the minute's instant from a cache, seconds and fraction added here."""
    # the shape checks of parse_plain_ts, inlined: a shared helper taking the value as Any
    # made this function ~0.28 µs slower per event, compiled
    if type(value) is not str:
        return None
    n = len(value)
    if n not in _TS_LENGTHS or value[-1] != "Z":
        return None
    if value[4] != "-" or value[7] != "-" or value[10] != "T" or value[13] != ":":
        return None
    if value[16] != ":" or (n > 20 and value[19] != "."):
        return None
    minute = value[:16]
    base = _MINUTES.get(minute)
    if base is None:
        if not "1900" <= value[:4] <= "2299":  # Event.ts's range (see parse_plain_ts)
            return None
        try:
            # the same parser as parse_plain_ts, on this minute (date, hour and minute
            # are checked here once; seconds and fraction below)
            at = datetime.fromisoformat(minute + ":00Z")
        except ValueError:
            return None
        base = (at - _EPOCH) // _ONE_US
        if len(_MINUTES) >= _MINUTES_MAX:
            _MINUTES.clear()
        _MINUTES[minute] = base
    tens, ones = ord(value[17]) - _ZERO, ord(value[18]) - _ZERO
    if not (0 <= tens <= 5 and 0 <= ones <= 9):  # fromisoformat: seconds 00-59
        return None
    us = base + (tens * 10 + ones) * 1_000_000
    if n > 20:
        fraction = value[20:n - 1]
        if not (fraction.isascii() and fraction.isdigit()):
            return None
        us += int(fraction) * _FRACTION_SCALE[len(fraction)]
    return us


def _attributes(value: Any) -> bool:
    if type(value) is not dict or len(value) > MAX_ATTRIBUTES:
        return False
    for key, item in value.items():
        if type(key) is not str or len(key) > _MAX_SHORT:
            return False
        kind = type(item)
        if kind is str:
            if len(item) > MAX_ATTRIBUTE_TEXT:
                return False
        elif kind is bool:
            continue
        elif kind is int:
            if not -_INT64 <= item < _INT64:
                return False
        # a float this large may be an integer orjson could not hold (it makes those a
        # float): unsure, so pydantic, which reads the JSON text itself, decides
        elif kind is not float or not -_FLOAT_INT < item < _FLOAT_INT:
            return False
    return True


# What each field must be when present and not None, as a small code so that the check
# is one dict lookup and a few inline comparisons per field (no call per field: this
# runs once per event in the producer's thread and in the sink). ``event_id`` and
# ``ts`` are absent on purpose: the caller checks them or trusts them. The codes are Final
# ints, each its own line: mypyc writes a Final int into the code as a constant, where a
# plain module global (a tuple unpacked from range()) is a dict lookup in the module's
# globals at every use, up to seven of them per field (~0.4 µs of an event's ~1.9 µs).
_TEXT: Final = 0
_ID: Final = 1
_TENANT: Final = 2
_TOKENS: Final = 3
_NON_NEGATIVE: Final = 4
_KIND: Final = 5
_STATUS: Final = 6
_VERSION: Final = 7
_ATTRS: Final = 8
_CODES: Final[dict[str, int]] = {
    "agent_id": _ID,
    "session_id": _ID,
    "kind": _KIND,
    "schema_version": _VERSION,
    "tenant_id": _TENANT,
    "trace_id": _TEXT,
    "span_id": _TEXT,
    "parent_span_id": _TEXT,
    "name": _TEXT,
    "status": _STATUS,
    "error_type": _TEXT,
    "model": _TEXT,
    "provider": _TEXT,
    "input_tokens": _TOKENS,
    "output_tokens": _TOKENS,
    "cached_input_tokens": _TOKENS,
    "reasoning_tokens": _TOKENS,
    "cost_usd": _NON_NEGATIVE,
    "duration_ms": _NON_NEGATIVE,
    "tool_args_hash": _TEXT,
    "attributes": _ATTRS,
}
_STATUSES: Final = frozenset({"ok", "error"})


def plainly_valid(event: dict[str, Any], trusted: frozenset[str]) -> bool:
    """True when ``event`` (no None values) surely satisfies the contract. Fields named in
    ``trusted`` (made by the client: ``event_id``, ``ts``) are not looked at."""
    return (plain_fields(event, trusted)
            and "agent_id" in event and "session_id" in event and "kind" in event)


def plain_fields(event: dict[str, Any], trusted: frozenset[str] = frozenset()) -> bool:  # noqa: PLR0911, PLR0912 (one flat dispatch, on purpose)
    """True when every field of ``event`` is a contract field whose value surely satisfies
    the contract (None is not such a value); fields named in ``trusted`` are not looked at,
    and ``event_id`` and ``ts`` are not contract fields here unless trusted. Unlike
    :func:`plainly_valid` it does not ask for the required fields: the producer checks what
    the caller gave before it adds what it makes itself (:func:`plain_id`,
    :func:`plain_text`)."""
    codes = _CODES
    for name, value in event.items():
        code = codes.get(name)
        if code is None:
            if name in trusted:
                continue
            return False
        kind = type(value)
        if code <= _TENANT:  # text
            if kind is not str or len(value) > _MAX_SHORT:
                return False
            if code == _ID and not value:
                return False
            if code == _TENANT and (not value or len(value) > _MAX_TENANT or "/" in value):
                return False
        elif code == _TOKENS:
            if kind is not int or not 0 <= value < _INT64:
                return False
        elif code == _NON_NEGATIVE:  # pydantic's strict float takes a JSON int too
            if kind is float:
                # 0 <= x < inf: what ``x >= 0.0 and isfinite(x)`` says (nan fails both),
                # on an unboxed float, without a call of math.isfinite (a global lookup
                # and a Python call, compiled)
                number: float = value
                if not 0.0 <= number < _INF:
                    return False
            elif kind is not int or not 0 <= value < _INT64:
                return False
        elif code == _KIND:
            if kind is not str or value not in KINDS:
                return False
        elif code == _STATUS:
            if kind is not str or value not in _STATUSES:
                return False
        elif code == _VERSION:
            if kind is not int or value != 1:
                return False
        elif not _attributes(value):
            return False
    return True


def plain_id(value: Any) -> bool:
    """What ``agent_id`` and ``session_id`` must be: a non-empty string of at most 256
    characters."""
    return type(value) is str and 0 < len(value) <= _MAX_SHORT


def plain_text(value: Any) -> bool:
    """What the optional text fields (``trace_id``, ``parent_span_id``, ``name``...) must be:
    a string of at most 256 characters."""
    return type(value) is str and len(value) <= _MAX_SHORT


def plain_cost(value: Any) -> bool:
    """What ``cost_usd`` and ``duration_ms`` must be: a finite, non-negative number."""
    if type(value) is float:
        number: float = value
        return 0.0 <= number < _INF  # nan and inf fail (see plain_fields)
    return type(value) is int and 0 <= value < _INT64


_ID_AND_TS: Final = frozenset({"event_id", "ts"})


def plain_event(item: dict[str, Any]) -> bool:
    """A whole decoded event (``event_id`` and ``ts`` included) that surely validates."""
    return plain_event_ts(item) is not None


def _plain_but_ts(item: dict[str, Any]) -> bool:
    """Everything of a whole event but its ``ts`` surely validates."""
    return plain_event_id(item.get("event_id")) and plainly_valid(item, _ID_AND_TS)


def plain_event_ts_us(item: dict[str, Any]) -> int | None:
    """What ``plain_event_ts`` says, as microseconds since the epoch (the worker's form),
    through :func:`parse_plain_ts_us`."""
    ts_us = parse_plain_ts_us(item.get("ts"))
    return ts_us if ts_us is not None and _plain_but_ts(item) else None


def plain_event_ts(item: dict[str, Any]) -> datetime | None:
    """The event's instant when the whole event (``event_id`` and ``ts`` included) surely
    validates, else None (one parse of ``ts`` for the check and the value)."""
    ts = parse_plain_ts(item.get("ts"))
    return ts if ts is not None and _plain_but_ts(item) else None
