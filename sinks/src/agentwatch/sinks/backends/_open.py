"""``open_backend(url_or_path)``: the one place that maps a location to a backend."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from agentwatch.schemas.errors import ConfigError
from agentwatch.sinks.backends.base import Backend
from agentwatch.sinks.backends.chdb import ChdbBackend
from agentwatch.sinks.backends.clickhouse import ClickHouseBackend

__all__ = ["open_backend"]

_SERVER_SCHEMES: Final = ("http://", "https://", "clickhouse://", "clickhouses://")
_CHDB_SCHEME: Final = "chdb://"


def open_backend(
    url_or_path: str | Path,
    *,
    user: str | None = None,
    password: str | None = None,
    database: str | None = None,
    secure: bool | None = None,
) -> Backend:
    """Open the backend a location names.

    - ``chdb:///abs/path``, ``chdb://rel/path`` or a plain path -> :class:`ChdbBackend`;
    - ``http(s)://host:port`` or ``clickhouse(s)://user:pw@host:port/db`` ->
      :class:`ClickHouseBackend` (``user``, ``password``, ``database``, ``secure``
      override what the URL says).
    """
    if isinstance(url_or_path, Path):
        return ChdbBackend(url_or_path)
    text = url_or_path.strip()
    lowered = text.lower()
    if lowered.startswith(_CHDB_SCHEME):
        path = text[len(_CHDB_SCHEME) :]
        if not path:
            raise ConfigError(f"chDB URL {url_or_path!r} names no path (chdb:///abs/path)")
        return ChdbBackend(path)
    if lowered.startswith(_SERVER_SCHEMES):
        return ClickHouseBackend.from_url(
            text, user=user, password=password, database=database, secure=secure
        )
    if "://" in text:
        raise ConfigError(
            f"unknown ClickHouse location {url_or_path!r}: use a path, chdb://PATH, "
            "http(s)://host:port or clickhouse://user:password@host:port/database"
        )
    return ChdbBackend(text)
