"""The server backend: a ClickHouse server over HTTP(S), through clickhouse-connect.

Runs the same SQL as the chDB backend. Results are read in ClickHouse's Arrow
output format (``query_arrow``) on both backends, so values come back with the
same Python types. One client is safe to share between threads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit

from agentwatch.schemas.errors import BackpressureError, ConfigError, SinkError
from agentwatch.schemas.settings import TRUE_WORDS
from agentwatch.sinks._identifiers import check_identifier, qualified
from agentwatch.sinks.backends._errors import UNREACHABLE_RETRY_AFTER_S, sink_error
from agentwatch.sinks.backends._params import for_clickhouse_connect
from agentwatch.sinks.backends.base import INSERT_SETTINGS, Backend, Parameters, QueryResult
from agentwatch.sinks.backends.chdb import arrow_to_result

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["INSTALL_HINT", "ClickHouseBackend"]

INSTALL_HINT: Final = "pip install clickhouse-connect"
_SCHEMES: Final = {"http": False, "https": True, "clickhouse": False, "clickhouses": True}


def _clickhouse_connect() -> Any:
    try:
        import clickhouse_connect  # noqa: PLC0415 (optional backend, imported on use)
    except ImportError as exc:
        raise ImportError(f"the ClickHouse server backend needs {INSTALL_HINT}") from exc
    return clickhouse_connect


class ClickHouseBackend(Backend):
    """A ClickHouse server. Build it with :meth:`from_url`, or wrap a client you made."""

    def __init__(self, client: Any, *, description: str = "ClickHouse server") -> None:
        self._client: Any = client
        self._description = description

    @classmethod
    def from_url(
        cls,
        url: str,
        user: str | None = None,
        password: str | None = None,
        database: str | None = None,
        secure: bool | None = None,
        *,
        connect_timeout_s: float = 10.0,
        send_receive_timeout_s: float = 300.0,
    ) -> ClickHouseBackend:
        """Connect to ``http(s)://host[:port]`` or ``clickhouse(s)://user:pw@host:port/db``.

        Arguments win over what the URL says; ``secure`` defaults to the scheme
        (``https``/``clickhouses``) or ``?secure=true``. ``database`` is only the
        default for unqualified names: agentwatch always qualifies its tables.
        """
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES or not parts.hostname:
            raise ConfigError(
                f"ClickHouse URL {url!r} must look like http(s)://host:port or "
                "clickhouse://user:password@host:port/database"
            )
        query = dict(pair.split("=", 1) for pair in parts.query.split("&") if "=" in pair)
        if secure is None:
            secure = _SCHEMES[scheme] or query.get("secure", "").lower() in TRUE_WORDS
        if user is None and parts.username:
            user = unquote(parts.username)
        if password is None and parts.password:
            password = unquote(parts.password)
        if database is None and parts.path.strip("/"):
            database = unquote(parts.path.strip("/"))
        if database is not None:
            check_identifier(database, what="database")
        try:
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"ClickHouse URL {url!r} has an invalid port") from exc
        client_module = _clickhouse_connect()
        description = f"ClickHouse at {parts.hostname}:{port or 'default port'}"
        try:
            client = client_module.get_client(
                host=parts.hostname,
                port=port,
                username=user,
                password=password or "",
                database=database,
                secure=secure,
                connect_timeout=connect_timeout_s,
                send_receive_timeout=send_receive_timeout_s,
            )
        except Exception as exc:
            raise _error(f"connecting to {description}", exc) from exc
        return cls(client, description=description)

    @property
    def closed(self) -> bool:
        return self._client is None

    def __repr__(self) -> str:
        return f"ClickHouseBackend({self._description!r})"

    def _live_client(self, what: str) -> Any:
        if self._client is None:
            raise SinkError(f"{what} failed: the ClickHouse backend is closed")
        return self._client

    @staticmethod
    def _params(parameters: Parameters | None) -> dict[str, Any]:
        return {k: for_clickhouse_connect(v) for k, v in (parameters or {}).items()}

    def command(self, sql: str, parameters: Parameters | None = None) -> None:
        client = self._live_client("command")
        try:
            client.command(sql, parameters=self._params(parameters))
        except Exception as exc:
            raise _error("command", exc) from exc

    def query(self, sql: str, parameters: Parameters | None = None) -> QueryResult:
        client = self._live_client("query")
        try:
            table = client.query_arrow(sql, parameters=self._params(parameters), use_strings=True)
        except Exception as exc:
            raise _error("query", exc) from exc
        return arrow_to_result(table)

    def insert_arrow(self, table: str, data: pa.Table, *, dedup_token: str | None = None) -> None:
        if data.num_rows == 0:
            return
        client = self._live_client(f"insert into {table}")
        qualified(table)  # checks both parts
        database, _, name = table.rpartition(".")
        settings: dict[str, Any] = dict(INSERT_SETTINGS)
        if dedup_token is not None:
            settings["insert_deduplication_token"] = dedup_token
        try:
            client.insert_arrow(name, data, database=database or None, settings=settings)
        except Exception as exc:
            raise _error(f"insert into {table}", exc) from exc

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


def _error(what: str, exc: Exception) -> SinkError:
    """Unreachable server -> BackpressureError; ClickHouse error codes as for chDB."""
    from clickhouse_connect.driver import exceptions as cc  # noqa: PLC0415 (lazy, as above)

    if isinstance(exc, cc.OperationalError):  # connection refused, timeouts, 5xx
        code = getattr(exc, "code", None)
        error = sink_error(what, exc, code=code)
        if type(error) is SinkError and code is None:
            return BackpressureError(str(error), retry_after_s=UNREACHABLE_RETRY_AFTER_S)
        return error
    return sink_error(what, exc, code=getattr(exc, "code", None))
