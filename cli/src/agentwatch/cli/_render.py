"""Query results as text: an aligned table for people, CSV and JSON Lines for programs.

Values arrive as :class:`~agentwatch.sinks.QueryResult` rows (Python values). The
table shortens long values and escapes control characters so that every row is one
line; CSV and JSON Lines keep every value whole. Datetimes are ISO 8601 (``Z`` for
UTC) in CSV and JSON; lists and maps are JSON text in the table and in CSV.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final, Literal, TextIO

import orjson
from rich.cells import cell_len

__all__ = [
    "FORMATS",
    "Format",
    "cell_text",
    "csv_text",
    "table_lines",
    "write_csv",
    "write_json_lines",
    "write_table",
]

Format = Literal["table", "csv", "json"]
FORMATS: Final[tuple[Format, ...]] = ("table", "csv", "json")

#: Longest value the table shows (in characters); longer ones end with an ellipsis.
MAX_CELL: Final = 40
_ELLIPSIS: Final = "…"
_JSON_OPTIONS: Final = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS
_INT64_MIN: Final = -(2**63)
_UINT64_MAX: Final = 2**64 - 1

# Control characters would break a table row: show them escaped.
_CONTROL: Final = {
    **{c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)},
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
}


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))  # exact, as a JSON number
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    raise TypeError(f"cannot write a {type(value).__name__} as JSON")


def _big_int(value: Any) -> bool:
    """Beyond 64 bits (Int128, UInt256): orjson refuses those, JSON has no limit."""
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and not _INT64_MIN <= value <= _UINT64_MAX
    )


def _fit(value: Any) -> Any:
    """``value`` with the integers orjson refuses turned into exact JSON numbers."""
    if _big_int(value):
        return orjson.Fragment(str(value))
    if isinstance(value, dict):
        return {k: _fit(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_fit(v) for v in value]
    return value


def _json(value: Any) -> bytes:
    return orjson.dumps(_fit(value), default=_json_default, option=_JSON_OPTIONS)


def iso_datetime(value: datetime) -> str:
    """ISO 8601 as orjson writes it with OPT_NAIVE_UTC | OPT_UTC_Z: ``...Z`` for UTC."""
    text = value.isoformat()
    if value.tzinfo is None:
        return text + "Z"
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _float_text(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        return str(value)  # nan, inf, -inf
    if value != 0 and abs(value) < 1e-6:
        return f"{value:.6g}"
    return repr(round(value, 6))  # sums of floats: 2.5372970000000006 -> 2.537297


def _fraction_digits(value: datetime) -> int:
    if value.microsecond % 1000:
        return 6
    return 3 if value.microsecond else 0


def _datetime_text(value: datetime, digits: int | None = None) -> str:
    """``YYYY-MM-DD hh:mm:ss[.fff[fff]]``, with the UTC offset unless it is UTC."""
    if digits is None:
        digits = _fraction_digits(value)
    text = value.strftime("%Y-%m-%d %H:%M:%S")
    if digits:
        text += f".{value.microsecond:06d}"[: digits + 1]
    if value.utcoffset():  # not UTC: show the offset
        text += value.strftime("%z")
    return text


def _plain_text(value: Any) -> str:
    """Text of a value that reads the same in the table and in CSV."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, date):  # a datetime is a date too: callers take those first
        return value.isoformat()
    if isinstance(value, list | tuple | dict):
        return _json(value).decode()
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def cell_text(value: Any) -> str:
    """One value as the table shows it (not shortened, not escaped yet)."""
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, datetime):
        return _datetime_text(value)
    return _plain_text(value)


def csv_text(value: Any) -> str:
    """One value as CSV carries it: NULL is an empty field, the rest round-trips."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # the shortest text that reads back as the same float
    if isinstance(value, datetime):
        return iso_datetime(value)
    return _plain_text(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _shorten(text: str, max_cell: int) -> tuple[str, bool]:
    text = text.translate(_CONTROL)
    if len(text) <= max_cell:
        return text, False
    return text[: max_cell - 1] + _ELLIPSIS, True


def table_lines(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], *, max_cell: int = MAX_CELL
) -> tuple[list[str], bool]:
    """Header, a rule of dashes, then one line per row; columns are two spaces apart and
    numbers align right. Returns the lines and whether a long value was shortened."""
    rows = list(rows)
    # one precision per datetime column, so that its values line up
    digits = [
        max((_fraction_digits(row[i]) for row in rows if isinstance(row[i], datetime)), default=0)
        for i in range(len(columns))
    ]
    shortened = False
    cells: list[list[str]] = []
    for row in rows:
        line: list[str] = []
        for i, value in enumerate(row):
            text = (
                _datetime_text(value, digits[i])
                if isinstance(value, datetime)
                else cell_text(value)
            )
            text, cut = _shorten(text, max_cell)
            shortened |= cut
            line.append(text)
        cells.append(line)
    header = [_shorten(name, max_cell)[0] for name in columns]
    widths = [cell_len(name) for name in header]
    for line in cells:
        for i, text in enumerate(line):
            widths[i] = max(widths[i], cell_len(text))
    right = [
        any(_is_number(row[i]) for row in rows)
        and all(row[i] is None or _is_number(row[i]) for row in rows)
        for i in range(len(columns))
    ]

    def join(texts: Sequence[str]) -> str:
        padded = []
        for i, text in enumerate(texts):
            pad = " " * (widths[i] - cell_len(text))
            padded.append(pad + text if right[i] else text + pad)
        return "  ".join(padded).rstrip()

    lines = [join(header), "  ".join("-" * w for w in widths)]
    lines.extend(join(line) for line in cells)
    return lines, shortened


def write_table(
    out: TextIO, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, footer: str = ""
) -> None:
    """The aligned table, then ``(N rows)`` (with ``footer`` added inside the brackets)."""
    lines, shortened = table_lines(columns, rows)
    notes = [f"{len(rows):,} row{'' if len(rows) == 1 else 's'}"]
    if footer:
        notes.append(footer)
    if shortened:
        notes.append(
            f"values longer than {MAX_CELL} characters are cut: "
            "--format csv or json shows them whole"
        )
    lines.append(f"({'; '.join(notes)})")
    out.write("\n".join(lines) + "\n")


def write_csv(out: TextIO, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A header line, then one line per row (RFC 4180 quoting, ``\\n`` line ends)."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([csv_text(value) for value in row] for row in rows)


def write_json_lines(out: TextIO, rows: Iterable[dict[str, Any]]) -> None:
    """One JSON object per row and line, keys in column order."""
    for row in rows:
        out.write(_json(row).decode())
        out.write("\n")
