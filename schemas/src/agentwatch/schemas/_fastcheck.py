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
from collections.abc import Callable
from datetime import datetime
from math import isfinite
from typing import Any, Final

from agentwatch.schemas._event import UUID_PATTERN, EventKind

__all__ = ["KINDS", "plain_event_id", "plain_ts", "plainly_valid"]

_MAX_SHORT: Final = 256
_MAX_TENANT: Final = 128
_INT64: Final = 1 << 63
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
    if type(value) is not str or len(value) not in _TS_LENGTHS or value[-1] != "Z":
        return False
    if value[4] != "-" or value[7] != "-" or value[10] != "T" or value[13] != ":":
        return False
    if len(value) > 20 and value[19] != ".":
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _short_text(value: Any) -> bool:
    return type(value) is str and len(value) <= _MAX_SHORT


def _id(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= _MAX_SHORT


def _tenant(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= _MAX_TENANT and "/" not in value


def _tokens(value: Any) -> bool:
    return type(value) is int and 0 <= value < _INT64


def _non_negative(value: Any) -> bool:
    return type(value) is float and isfinite(value) and value >= 0.0


def _kind(value: Any) -> bool:
    return type(value) is str and value in KINDS


def _status(value: Any) -> bool:
    return type(value) is str and value in ("ok", "error")


def _schema_version(value: Any) -> bool:
    return type(value) is int and value == 1


def _attributes(value: Any) -> bool:
    if type(value) is not dict:
        return False
    for key, item in value.items():
        if type(key) is not str or len(key) > _MAX_SHORT:
            return False
        kind = type(item)
        if kind is str or kind is bool:
            continue
        if kind is int:
            if not -_INT64 <= item < _INT64:
                return False
        elif kind is not float or not isfinite(item):
            return False
    return True


#: field -> check of a present, non-None value. ``event_id`` and ``ts`` are absent on
#: purpose: the client makes them itself; a caller's own go through pydantic.
_CHECKS: Final[dict[str, Callable[[Any], bool]]] = {
    "agent_id": _id,
    "session_id": _id,
    "kind": _kind,
    "schema_version": _schema_version,
    "tenant_id": _tenant,
    "trace_id": _short_text,
    "span_id": _short_text,
    "parent_span_id": _short_text,
    "name": _short_text,
    "status": _status,
    "error_type": _short_text,
    "model": _short_text,
    "provider": _short_text,
    "input_tokens": _tokens,
    "output_tokens": _tokens,
    "cached_input_tokens": _tokens,
    "reasoning_tokens": _tokens,
    "cost_usd": _non_negative,
    "duration_ms": _non_negative,
    "tool_args_hash": _short_text,
    "attributes": _attributes,
}
_REQUIRED: Final = ("agent_id", "session_id", "kind")


def plainly_valid(event: dict[str, Any], trusted: frozenset[str]) -> bool:
    """True when ``event`` (no None values) surely satisfies the contract. Fields named in
    ``trusted`` (made by the client: ``event_id``, ``ts``) are not looked at."""
    checks = _CHECKS
    for name, value in event.items():
        check = checks.get(name)
        if check is None:
            if name in trusted:
                continue
            return False
        if not check(value):
            return False
    return all(name in event for name in _REQUIRED)
