"""Identifiers (database, table, column names) are the only names put into SQL text.

They come from configuration or from this package, never from event data, and are
checked against ClickHouse's plain identifier shape before use, then backquoted.
"""

from __future__ import annotations

import re
from typing import Final

from agentwatch.schemas.errors import ConfigError

__all__ = ["check_identifier", "qualified", "quote_identifier"]

_IDENTIFIER: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def check_identifier(name: str, *, what: str = "identifier") -> str:
    """Return ``name`` if it is a plain identifier, else raise :class:`ConfigError`."""
    if not _IDENTIFIER.fullmatch(name):
        raise ConfigError(
            f"{what} {name!r} is not a plain identifier "
            "(letters, digits and _, not starting with a digit, at most 128 characters)"
        )
    return name


def quote_identifier(name: str) -> str:
    return f"`{check_identifier(name)}`"


def qualified(table: str) -> str:
    """``db.table`` or ``table`` -> ```db`.`table``` (each part checked)."""
    parts = table.split(".")
    if len(parts) > 2:
        raise ConfigError(f"table name {table!r} has more than one dot")
    return ".".join(quote_identifier(p) for p in parts)
