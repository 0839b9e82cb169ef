"""The embedded backend: chDB, the ClickHouse engine inside this process.

Tables live on disk under ``path`` and persist across sessions and processes.
chDB runs **one engine per process**: a second session on another path fails
while the first is open. So open one :class:`ChdbBackend` per process and share
it; it is safe to use from several threads (calls are serialized by a lock that
every ``ChdbBackend`` of the process shares). Close it before opening another path.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from agentwatch.schemas.errors import ConfigError, SinkError
from agentwatch.sinks._identifiers import qualified, quote_identifier
from agentwatch.sinks.backends._errors import sink_error
from agentwatch.sinks.backends._params import format_parameters
from agentwatch.sinks.backends.base import INSERT_SETTINGS, Backend, Parameters, QueryResult

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["INSTALL_HINT", "ChdbBackend"]

INSTALL_HINT: Final = "pip install chdb"

# One engine per process, so one lock per process: sessions share the engine.
_ENGINE_LOCK: Final = threading.RLock()


def _session_class() -> Any:
    try:
        from chdb.session import Session  # noqa: PLC0415 (optional backend, imported on use)
    except ImportError as exc:
        raise ImportError(f"the embedded ClickHouse backend needs chDB: {INSTALL_HINT}") from exc
    return Session


class ChdbBackend(Backend):
    """ClickHouse in-process (chDB) on the on-disk database at ``path``."""

    def __init__(self, path: str | Path) -> None:
        text = str(path)
        if not text or "?" in text:
            # chDB reads "?" as the start of engine options in its connection string.
            raise ConfigError(f"chDB path {text!r} must be a non-empty path without '?'")
        self._path = Path(path)
        session_class = _session_class()
        with _ENGINE_LOCK:
            try:
                self._session: Any = session_class(text)
            except Exception as exc:
                raise sink_error(f"opening chDB at {text}", exc) from exc

    @property
    def path(self) -> Path:
        return self._path

    @property
    def closed(self) -> bool:
        return self._session is None

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"ChdbBackend({str(self._path)!r}, {state})"

    def _run(self, what: str, sql: str, fmt: str, parameters: Parameters | None) -> Any:
        params = format_parameters(parameters)
        with _ENGINE_LOCK:
            if self._session is None:
                raise SinkError(f"{what} failed: the chDB backend is closed")
            try:
                return self._session.query(sql, fmt, params=params)
            except Exception as exc:
                raise sink_error(what, exc) from exc

    def command(self, sql: str, parameters: Parameters | None = None) -> None:
        self._run("command", sql, "TabSeparated", parameters)

    def query(self, sql: str, parameters: Parameters | None = None) -> QueryResult:
        table = self._run("query", sql, "ArrowTable", parameters)
        return arrow_to_result(table)

    def insert_arrow(self, table: str, data: pa.Table, *, dedup_token: str | None = None) -> None:
        if data.num_rows == 0:
            return
        columns = ", ".join(quote_identifier(name) for name in data.column_names)
        sql = (
            f"INSERT INTO {qualified(table)} ({columns}) "  # noqa: S608 (checked identifiers)
            "SELECT * FROM Python(_agentwatch_arrow_batch)"
        )
        settings = [f"{name} = {int(value)}" for name, value in INSERT_SETTINGS.items()]
        parameters: dict[str, Any] = {}
        if dedup_token is not None:
            settings.append("insert_deduplication_token = {dedup_token:String}")
            parameters["dedup_token"] = dedup_token
        sql += " SETTINGS " + ", ".join(settings)
        # chDB's Python() table function finds the Arrow table by this variable name,
        # looking it up in the calling frames (documented chDB behaviour).
        _agentwatch_arrow_batch = data
        self._run(f"insert into {table}", sql, "TabSeparated", parameters)

    def close(self) -> None:
        with _ENGINE_LOCK:
            session, self._session = self._session, None
            if session is not None:
                session.close()


def arrow_to_result(table: pa.Table) -> QueryResult:
    """A result in ClickHouse's Arrow output format -> :class:`QueryResult`."""
    columns = [_to_python(column) for column in table.columns]
    return QueryResult(tuple(table.column_names), list(zip(*columns, strict=True)))


def _to_python(column: pa.ChunkedArray) -> list[Any]:
    try:
        values: list[Any] = column.to_pylist(maps_as_pydicts="strict")
    except UnicodeDecodeError:
        # ClickHouse String is bytes; Arrow's string type promises UTF-8. Only a plain
        # String column can carry such bytes here: decode it leniently.
        import pyarrow as pa  # noqa: PLC0415 (only on this rare path)

        raw = column.cast(pa.binary()).to_pylist()
        return [None if v is None else v.decode("utf-8", "replace") for v in raw]
    return values
