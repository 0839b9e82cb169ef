"""``agentwatch db`` and ``agentwatch query``: the ClickHouse store from the command line.

Every command opens the store once and closes it (chDB allows one open path per
process). Read commands never create a chDB directory: a mistyped path is an error,
not a new empty database. ClickHouse errors are cut to one line.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, Final, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agentwatch.cli._render import Format, table_lines, write_csv, write_json_lines, write_table
from agentwatch.schemas import ConfigError, SinkError
from agentwatch.sinks import (
    ACKS_TABLE,
    ALERTS_TABLE,
    DEAD_LETTERS_TABLE,
    EVENTS_TABLE,
    MIGRATIONS,
    ROLLUPS_TABLE,
    SAVED_QUERIES,
    SCHEMA_MIGRATIONS_TABLE,
    Backend,
    QueryResult,
    SchemaConfig,
    StoreSettings,
    applied_versions,
    migrate,
    saved_query,
    schema_statements,
)

__all__ = [
    "ddl_text",
    "list_saved",
    "open_store",
    "parse_params",
    "run_migrate",
    "run_query",
    "run_status",
    "short_error",
]

#: Longest ClickHouse error message shown (its first line, then cut).
MAX_ERROR_CHARS: Final = 300
#: Tables whose row counts ``db status`` shows, in this order.
COUNTED_TABLES: Final = (EVENTS_TABLE, ROLLUPS_TABLE, ALERTS_TABLE, DEAD_LETTERS_TABLE, ACKS_TABLE)
#: First keywords of the statements ``agentwatch query`` runs.
READ_KEYWORDS: Final = ("select", "with", "show", "describe", "desc", "explain", "exists")
#: ... and of those it refuses (anything else goes to ClickHouse, which judges it).
WRITE_KEYWORDS: Final = frozenset(
    {
        "alter", "attach", "backup", "check", "create", "delete", "detach", "drop",
        "exchange", "grant", "insert", "kill", "move", "optimize", "rename", "replace",
        "restore", "revoke", "set", "system", "truncate", "undrop", "update", "use",
    }
)  # fmt: skip
_WRAPPABLE: Final = frozenset({"select", "with"})  # these take an outer LIMIT
_SYNTAX_ERROR: Final = 62
_NO_LIMIT: Final = 2**64 - 1  # UInt64 max: --limit 0 on a saved query

_CODE: Final = re.compile(r"\bCode:\s*(\d+)")
_DB_EXCEPTION: Final = re.compile(r"Code: \d+\. DB::Exception: ")
_ERROR_NAME: Final = re.compile(r"\(([A-Z][A-Z0-9_]+)\)")
_PARAM_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LEADING: Final = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/|\()*", re.DOTALL)
_TRAILING: Final = re.compile(r"[\s;]+\Z")
_FORMAT_CLAUSE: Final = re.compile(r"\bFORMAT\s+\w+\Z", re.IGNORECASE)


# -- errors and opening ---------------------------------------------------------------


def short_error(exc: SinkError) -> SinkError:
    """``exc`` with a message of one line and at most about 300 characters.

    ClickHouse messages can run to pages (the query, every token the parser expected,
    a server's driver preamble): keep ``what failed: Code: N. DB::Exception: ...`` up
    to the first line break, cut, and the error's name, e.g. ``(SYNTAX_ERROR)``.
    """
    text = str(exc).strip()
    match = _DB_EXCEPTION.search(text)
    if match is not None:
        what, sep, _ = text[: match.start()].partition(" failed: ")
        lead = f"{what}{sep}" if sep else ""
        text = lead + text[match.start() :]
    names = _ERROR_NAME.findall(text)
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    if len(line) > MAX_ERROR_CHARS:
        line = line[:MAX_ERROR_CHARS].rstrip() + "…"
    if names and f"({names[-1]})" not in line:
        line += f" ({names[-1]})"
    return SinkError(line)


def _check_chdb_path(path: Path) -> None:
    """A chDB directory to read: what to do when it is missing or is the demo's parent
    (``StoreSettings.open(create=False)`` refuses it too, without these hints)."""
    if not path.exists():
        raise ConfigError(
            f"no chDB database at {path}: create one with `agentwatch db migrate --url "
            f"{path}` (`agentwatch demo --data-dir D` leaves one at D/clickhouse)"
        )
    if not (path / "metadata").exists() and (path / "clickhouse" / "metadata").is_dir():
        raise ConfigError(
            f"{path} holds no chDB database but {path / 'clickhouse'} does "
            f"(`agentwatch demo` writes it there): use --url {path / 'clickhouse'}"
        )


@contextmanager
def open_store(settings: StoreSettings, *, create: bool = False) -> Iterator[Backend]:
    """The backend, closed on exit; every ``SinkError`` inside comes out one line long.

    ``create``: make the chDB directory if missing (else a missing one is an error).
    """
    path = settings.chdb_path
    if path is not None and not create:
        _check_chdb_path(path)
    try:
        with settings.open(create=create) as backend:
            yield backend
    except SinkError as exc:
        raise short_error(exc) from None


def _where(settings: StoreSettings) -> str:
    return f"{settings.describe()}, database {settings.database}"


def _table(config: SchemaConfig, name: str) -> str:
    return f"`{config.database}`.`{name}`"  # database and names are checked identifiers


# -- db -------------------------------------------------------------------------------


def run_migrate(
    settings: StoreSettings,
    out: TextIO,
    err: TextIO,
    *,
    cluster: str | None = None,
    ttl_given: bool = False,
) -> list[int]:
    """Apply the pending migrations; print what was done. Returns the versions applied."""
    config = settings.schema(cluster=cluster)
    if cluster is not None and settings.is_embedded:
        raise ConfigError(
            f"--cluster {cluster}: chDB is a single embedded engine, not a cluster "
            "(give --url of a ClickHouse server, or drop --cluster)"
        )
    known = max(m.version for m in MIGRATIONS)
    with open_store(settings, create=True) as backend:
        applied = migrate(backend, config)
        version = max(applied_versions(backend, config), default=0)
    where = _where(settings)
    if applied:
        plural = "s" if len(applied) > 1 else ""
        versions = ", ".join(str(v) for v in applied)
        out.write(f"applied migration{plural} {versions} to {where} (schema version {version})\n")
    elif version > known:
        out.write(
            f"schema is at version {version} in {where}, newer than this agentwatch "
            f"knows ({known}): nothing to do\n"
        )
    else:
        out.write(f"schema is up to date (version {version}) in {where}\n")
    if ttl_given and MIGRATIONS[0].version not in applied:
        err.write(
            "agentwatch: note: --ttl-days applies only to tables created now; the events "
            "table existed already (change its TTL with ALTER TABLE ... MODIFY TTL)\n"
        )
    return applied


def ddl_text(config: SchemaConfig) -> str:
    """Every statement ``migrate()`` can run, each followed by ``;`` and a blank line."""
    return "".join(f"{statement};\n\n" for statement in schema_statements(config))


def run_status(settings: StoreSettings, out: TextIO) -> None:
    """Applied migrations against the known ones, and the row counts of the tables."""
    config = settings.schema()
    db = {"db": config.database}
    with open_store(settings) as backend:
        db_exists = bool(
            backend.query("SELECT 1 FROM system.databases WHERE name = {db:String}", db).rows
        )
        tables = {
            str(row[0])
            for row in backend.query(
                "SELECT name FROM system.tables WHERE database = {db:String}", db
            ).rows
        }
        applied: dict[int, Any] = {}
        if SCHEMA_MIGRATIONS_TABLE in tables:
            ledger = _table(config, SCHEMA_MIGRATIONS_TABLE)
            result = backend.query(
                f"SELECT version, min(applied_at) FROM {ledger} GROUP BY version ORDER BY version"  # noqa: S608 (checked identifiers)
            )
            applied = {int(row[0]): row[1] for row in result.rows}
        counts = {
            name: int(backend.query(f"SELECT count() FROM {_table(config, name)}").rows[0][0])  # noqa: S608 (checked identifiers)
            for name in COUNTED_TABLES
            if name in tables
        }
    known = {m.version: m.name for m in MIGRATIONS}
    pending = [v for v in known if v not in applied]
    version = max(applied, default=0)
    if not db_exists:
        state = f"database {config.database} does not exist: run `agentwatch db migrate`"
    elif pending:
        state = (
            f"schema version {version}, {len(pending)} migration"
            f"{'s' if len(pending) > 1 else ''} pending: run `agentwatch db migrate`"
        )
    elif version > max(known):
        state = f"schema version {version}, newer than this agentwatch knows ({max(known)})"
    else:
        state = f"schema version {version}, up to date"
    rows = [
        (v, known.get(v, "(unknown to this agentwatch)"), applied.get(v, "pending"))
        for v in sorted(set(known) | set(applied))
    ]
    lines, _ = table_lines(("version", "migration", "applied at"), rows, max_cell=80)
    out.write(f"{settings.describe()}, database {config.database}: {state}\n")
    out.write("\n".join(lines) + "\n")
    if counts:
        out.write("rows: " + ", ".join(f"{name} {n:,}" for name, n in counts.items()) + "\n")


# -- query ----------------------------------------------------------------------------


def parse_params(items: Sequence[str]) -> dict[str, str]:
    """``--param name=value`` -> ``{name: value}`` (values stay text; ClickHouse parses
    them as the type the SQL names: ``{name:UInt32}``)."""
    params: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not _PARAM_NAME.fullmatch(name):
            raise ConfigError(
                f"--param {item!r}: expected name=value, the name made of letters, digits and _"
            )
        if name in params:
            raise ConfigError(f"--param {name} is given twice")
        params[name] = value
    return params


def _first_keyword(sql: str) -> str:
    """The first word after leading blanks, comments and opening brackets, lowercased."""
    leading = _LEADING.match(sql)
    rest = sql[leading.end() :] if leading else sql
    match = re.match(r"[A-Za-z]+", rest)
    return match.group(0).lower() if match else ""


def _code(exc: SinkError) -> int | None:
    match = _CODE.search(str(exc))
    return int(match.group(1)) if match else None


def _run_read(
    backend: Backend, sql: str, params: Mapping[str, Any], *, wrap_limit: int | None
) -> QueryResult:
    """Run ``sql``; with ``wrap_limit``, read at most that many rows of it.

    The column types come from ``DESCRIBE`` (analysis only, nothing is read) so that
    values the Arrow transport leaves raw read as what they are (see _typed).
    """
    body = sql if wrap_limit is None else f"SELECT * FROM (\n{sql}\n) LIMIT {int(wrap_limit)}"  # noqa: S608 (the user's own query)
    try:
        types = [str(row[1]) for row in backend.query(f"DESCRIBE TABLE (\n{sql}\n)", params).rows]
        result = backend.query(body, params)
    except SinkError as exc:
        if _code(exc) != _SYNTAX_ERROR:
            raise
        # The positions in the message count from our wrapper: let ClickHouse report on
        # the statement as written (it fails again, or runs: then no limit applies).
        return backend.query(sql, params)
    return _typed(result, types)


def run_query(
    settings: StoreSettings,
    out: TextIO,
    err: TextIO,
    *,
    sql: str | None,
    saved: str | None,
    fmt: Format,
    limit: int,
    params: Sequence[str] = (),
) -> int:
    """Run a read query (or a saved one) and print its result. Returns the rows shown."""
    if sql is not None and saved is not None:
        raise ConfigError("give SQL or --saved NAME, not both")
    if sql is None and saved is None:
        raise ConfigError(
            "give the SQL to run, or --saved NAME (`agentwatch query --list` shows them)"
        )
    if limit < 0:
        raise ConfigError(f"--limit {limit}: must be >= 0 (0: no limit)")
    values: dict[str, Any] = parse_params(params)
    fetch = None if limit == 0 else limit + 1  # one more tells whether there are more
    if saved is not None:
        if "limit" in values:
            raise ConfigError("--saved takes its limit from --limit, not --param limit=...")
        text = saved_query(saved).sql(settings.database)
        values["limit"] = _NO_LIMIT if fetch is None else fetch
        described, wrap = True, None
    else:
        text = _TRAILING.sub("", sql or "").strip()
        keyword = _first_keyword(text)
        if not keyword:
            raise ConfigError("the SQL is empty")
        if keyword in WRITE_KEYWORDS:
            raise ConfigError(
                f"agentwatch query runs read-only statements "
                f"({', '.join(k.upper() for k in READ_KEYWORDS)}), not {keyword.upper()}"
            )
        if _FORMAT_CLAUSE.search(text):
            raise ConfigError("drop the FORMAT clause from the SQL: --format picks the output")
        described = keyword in _WRAPPABLE  # a query DESCRIBE and an outer LIMIT take
        wrap = fetch if described else None
    with open_store(settings) as backend:
        if described:
            result = _run_read(backend, text, values, wrap_limit=wrap)
        else:
            result = backend.query(text, values)
    more = limit > 0 and len(result.rows) > limit
    rows = result.rows[:limit] if limit > 0 else result.rows
    columns = result.column_names
    if fmt == "table":
        footer = f"stopped at --limit {limit}: there are more" if more else ""
        write_table(out, columns, rows, footer=footer)
    else:
        if fmt == "csv":
            write_csv(out, columns, rows)
        else:
            write_json_lines(out, QueryResult(columns, rows).dicts())
        if more:
            err.write(
                f"agentwatch: note: stopped after {limit:,} rows (--limit); "
                "raise it for more (0: no limit)\n"
            )
    return len(rows)


def list_saved(out: TextIO, database: str) -> None:
    """The saved queries: name, the view they read, what they show."""
    rows = [(q.name, f"{database}.{q.view}", q.description) for q in SAVED_QUERIES.values()]
    lines, _ = table_lines(("name", "view", "description"), rows, max_cell=120)
    out.write("\n".join(lines) + "\n")
    out.write("\nrun one: agentwatch query --saved NAME (--limit N, --format csv or json)\n")


# -- values the Arrow transport leaves raw ---------------------------------------------
#
# Both backends read results as Arrow, which carries a DateTime as its epoch seconds
# (UInt32), an Enum as its number, Int128/256 and IPv6 as bytes, IPv4 as an integer.
# DESCRIBE gives the real types; these turn such values back into what they mean
# (values of any other Python type pass untouched).

Converter = Callable[[Any], Any]

_WRAPPER: Final = re.compile(r"^(?:Nullable|LowCardinality)\((.*)\)$")
_ARRAY: Final = re.compile(r"^Array\((.*)\)$")
_DATETIME: Final = re.compile(r"^DateTime(?:\(\s*'([^']*)'\s*\))?$")
_ENUM: Final = re.compile(r"^Enum(?:8|16)\((.*)\)$")
_ENUM_ITEM: Final = re.compile(r"'((?:[^'\\]|\\.)*)'\s*=\s*(-?\d+)")
_BIG_INT: Final = re.compile(r"^(U?)Int(?:128|256)$")
_FIXED_STRING: Final = re.compile(r"^FixedString\(\d+\)$")


def _zone(name: str | None) -> tzinfo:
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _converter(type_name: str) -> Converter | None:  # noqa: PLR0911 (one return per type)
    type_name = type_name.strip()
    while (wrapper := _WRAPPER.match(type_name)) is not None:
        type_name = wrapper.group(1).strip()
    if (match := _ARRAY.match(type_name)) is not None:
        inner = _converter(match.group(1))
        if inner is None:
            return None
        return lambda v: [None if x is None else inner(x) for x in v] if isinstance(v, list) else v
    if (match := _DATETIME.match(type_name)) is not None:
        zone = _zone(match.group(1))
        return lambda v: datetime.fromtimestamp(v, zone) if _is_int(v) else v
    if (match := _ENUM.match(type_name)) is not None:
        labels = {
            int(number): re.sub(r"\\(.)", r"\1", label)
            for label, number in _ENUM_ITEM.findall(match.group(1))
        }
        return lambda v: labels.get(v, v) if _is_int(v) else v
    if (match := _BIG_INT.match(type_name)) is not None:
        signed = not match.group(1)
        return lambda v: int.from_bytes(v, "little", signed=signed) if isinstance(v, bytes) else v
    if type_name == "IPv4":
        return lambda v: str(ipaddress.IPv4Address(v)) if _is_int(v) else v
    if type_name == "IPv6":
        return lambda v: (
            str(ipaddress.IPv6Address(v)) if isinstance(v, bytes) and len(v) == 16 else v
        )
    if _FIXED_STRING.match(type_name):
        return lambda v: v.rstrip(b"\0").decode("utf-8", "replace") if isinstance(v, bytes) else v
    return None


def _typed(result: QueryResult, types: Sequence[str]) -> QueryResult:
    """``result`` with raw values of the columns of ``types`` converted."""
    if len(types) != len(result.column_names):
        return result
    converters = [_converter(t) for t in types]
    if all(c is None for c in converters):
        return result
    rows = [
        tuple(
            value if c is None or value is None else c(value)
            for c, value in zip(converters, row, strict=True)
        )
        for row in result.rows
    ]
    return QueryResult(result.column_names, rows)
