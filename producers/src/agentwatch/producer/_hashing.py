"""Stable hashing of tool arguments: the same call hashes alike in every process.

``hash_tool_args(args)`` is the lowercase hex SHA-256 of the canonical JSON form of
``args``, **truncated to 32 hex characters (128 bits)**. The canonical form:

* compact UTF-8 JSON (orjson), object keys sorted; no whitespace.
* numbers: a float with an integral value within the 64-bit range is written as
  that integer, so **``1`` and ``1.0`` hash alike** (they compare equal in Python
  and are the same JSON number; an LLM may emit either for the same call);
  ``-0.0`` is ``0``; other floats use the shortest round-trip text; NaN and
  infinities become the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``;
  integers outside the 64-bit range become their decimal string. ``True`` is
  not ``1``: booleans stay booleans. ``Decimal`` is read as a number.
* mapping keys become strings (``1`` -> ``"1"``, ``True`` -> ``"true"``,
  ``None`` -> ``"null"``, like :func:`json.dumps`); when two keys collide after
  that, the smaller canonical value wins, whatever the insertion order.
* tuples, lists and deques are arrays; sets and frozensets are arrays sorted by
  the canonical form of their items.
* bytes-like values are lowercase hex strings; aware datetimes are ISO 8601 in
  UTC, naive datetimes, dates and times are ISO 8601 as they are; timedeltas
  are seconds (a number); UUIDs are their string; paths are POSIX strings;
  enums are their value; dataclasses are objects of their fields; pydantic
  models are ``model_dump(mode="json")``.
* anything else is ``str(value)`` (give such types a stable ``__str__``);
  cycles become ``"<cycle>"`` and nesting deeper than 64 levels ``"<deep>"``.

Hashing never raises.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import PurePath
from typing import Any, Final
from uuid import UUID

import orjson

__all__ = ["HASH_HEX_CHARS", "canonical_json", "hash_tool_args"]

#: Length of :func:`hash_tool_args` results: 32 hex characters = 128 bits of SHA-256.
HASH_HEX_CHARS: Final = 32

_MAX_DEPTH: Final = 64
_I64_MIN: Final = -(2**63)
_U64_END: Final = 2**64
_INTEGRAL_FLOAT_LIMIT: Final = 2.0**63


def hash_tool_args(args: Any) -> str:
    """Hex SHA-256 of the canonical JSON of ``args``, truncated to 32 characters."""
    return hashlib.sha256(canonical_json(args)).hexdigest()[:HASH_HEX_CHARS]


def canonical_json(args: Any) -> bytes:
    """The canonical JSON bytes that :func:`hash_tool_args` hashes (see module docs)."""
    try:
        return orjson.dumps(_normalise(args, 0, set()), option=orjson.OPT_SORT_KEYS)
    except Exception:  # noqa: BLE001 -- hashing must never raise; the type name still identifies
        return orjson.dumps(f"<{type(args).__name__}>")


def _number(value: float) -> int | float | str:
    if math.isfinite(value):
        if value.is_integer() and -_INTEGRAL_FLOAT_LIMIT <= value < _INTEGRAL_FLOAT_LIMIT:
            return int(value)
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _int(value: int) -> int | str:
    return value if _I64_MIN <= value < _U64_END else str(value)


def _key(key: Any) -> str:
    if isinstance(key, str):
        return str(key)
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int | float | Decimal):
        return orjson.dumps(_normalise(key, 0, set())).decode().strip('"')
    return _text(key)


def _text(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # noqa: BLE001 -- a broken __str__ must not break hashing
        return f"<{type(value).__name__}>"


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _normalise(value: Any, depth: int, seen: set[int]) -> Any:  # noqa: PLR0911, PLR0912 -- one branch per type
    kind = type(value)
    if value is None or kind is str or kind is bool:
        return value
    if kind is int:
        return _int(value)
    if kind is float:
        return _number(value)
    if depth >= _MAX_DEPTH:
        return "<deep>"
    if kind is dict or kind is list or kind is tuple:
        return _container(value, depth, seen)
    if isinstance(value, Enum):
        return _normalise(value.value, depth + 1, seen)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool):  # pragma: no cover -- bool cannot be subclassed
        return bool(value)
    if isinstance(value, int):
        return _int(int(value))
    if isinstance(value, float):
        return _number(float(value))
    if isinstance(value, Decimal):
        if value.is_finite() and value == value.to_integral_value():
            return _int(int(value))
        return _number(float(value))
    if isinstance(value, Mapping | list | tuple | deque | set | frozenset):
        return _container(value, depth, seen)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, datetime):
        return (value.astimezone(UTC) if value.tzinfo is not None else value).isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return _number(value.total_seconds())
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, PurePath):
        return value.as_posix()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return _container(fields, depth, seen)
    dump: Callable[..., Any] | None = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        return _normalise(dump(mode="json"), depth + 1, seen)
    return _text(value)


def _container(value: Any, depth: int, seen: set[int]) -> Any:
    ident = id(value)
    if ident in seen:
        return "<cycle>"
    seen.add(ident)
    try:
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for k, v in value.items():
                key = _key(k)
                item = _normalise(v, depth + 1, seen)
                if key in out and _dumps(out[key]) <= _dumps(item):
                    continue  # collision after key normalisation: keep the smaller value
                out[key] = item
            return out
        items = [_normalise(v, depth + 1, seen) for v in value]
        if isinstance(value, set | frozenset):
            items.sort(key=_dumps)
        return items
    finally:
        seen.discard(ident)
