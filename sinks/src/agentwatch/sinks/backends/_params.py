"""Query parameter values -> the text ClickHouse parses for ``{name:Type}``.

ClickHouse reads a top-level parameter in its *escaped* text format (a string is
not quoted; ``\\N`` is NULL) and the elements of arrays, tuples and maps as quoted
literals. chDB passes parameter values through ``str()``, so the chDB backend
formats them here; the server backend hands values to clickhouse-connect, which
applies the same rules (after :func:`for_clickhouse_connect` keeps microseconds).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime
from enum import Enum
from typing import Any, Final

__all__ = ["for_clickhouse_connect", "format_parameter", "format_parameters"]

_ESCAPES: Final = str.maketrans(
    {
        "\\": "\\\\",
        "'": "\\'",
        "\t": "\\t",
        "\n": "\\n",
        "\r": "\\r",
        "\0": "\\0",
        "\b": "\\b",
        "\f": "\\f",
    }
)


def _escape(text: str) -> str:
    return text.translate(_ESCAPES)


def format_datetime(value: datetime) -> str:
    """``YYYY-MM-DD hh:mm:ss[.ffffff]`` in UTC; naive datetimes are taken as UTC."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    if value.microsecond:
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _scalar_text(value: Any) -> str | None:
    """Unquoted text of a scalar, or None when ``value`` is a string-like that needs quoting."""
    if isinstance(value, bool):
        return "1" if value else "0"  # parses as Bool and as UInt8
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    return None


def _string_like(value: Any) -> str:
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8")
    raise TypeError(f"cannot pass a {type(value).__name__} as a query parameter")


def _literal(value: Any) -> str:
    """A quoted literal, for elements of arrays, tuples and maps."""
    if value is None:
        return "NULL"
    text = _scalar_text(value)
    if text is not None:
        return text
    if isinstance(value, list | tuple | Mapping):
        return _container(value)
    return "'" + _escape(_string_like(value)) + "'"


def _container(value: list[Any] | tuple[Any, ...] | Mapping[Any, Any]) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    inner = ", ".join(_literal(v) for v in value)
    return f"[{inner}]" if isinstance(value, list) else f"({inner})"


def format_parameter(value: Any) -> str:
    """The text ClickHouse parses for one top-level ``{name:Type}`` parameter."""
    if value is None:
        return "\\N"
    text = _scalar_text(value)
    if text is not None:
        return text
    if isinstance(value, list | tuple | Mapping):
        return _container(value)
    return _escape(_string_like(value))


def format_parameters(parameters: Mapping[str, Any] | None) -> dict[str, str]:
    return {name: format_parameter(v) for name, v in (parameters or {}).items()}


def for_clickhouse_connect(value: Any) -> Any:
    """clickhouse-connect formats ``datetime`` parameters without microseconds and
    enums by name in places; hand it strings for those instead (recursively)."""
    if isinstance(value, Enum):
        return for_clickhouse_connect(value.value)
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, list):
        return [for_clickhouse_connect(v) for v in value]
    if isinstance(value, tuple):
        return tuple(for_clickhouse_connect(v) for v in value)
    if isinstance(value, Mapping):
        return {for_clickhouse_connect(k): for_clickhouse_connect(v) for k, v in value.items()}
    return value
