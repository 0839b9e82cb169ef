"""The one source of the ClickHouse schema, and ``migrate()``.

The DDL lives in ``ddl/*.sql`` next to this module (readable as plain SQL, with
column comments that BI tools show). :data:`MIGRATIONS` lists them in order as
``(version, name, file)``; :func:`migrate` applies, forward only, those not yet
recorded in ``<database>.schema_migrations``. Every statement is
``IF NOT EXISTS``, so a migration interrupted halfway is simply run again, and
running :func:`migrate` twice changes nothing.

Adding a migration: write ``ddl/NNN_what.sql`` and append it to
:data:`MIGRATIONS`. Never edit a released one.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from importlib import resources
from typing import Final

from agentwatch.schemas.errors import ConfigError
from agentwatch.sinks._identifiers import check_identifier, qualified, quote_identifier
from agentwatch.sinks.backends.base import Backend

__all__ = [
    "ACKS_TABLE",
    "ALERTS_TABLE",
    "CONTROL_LOG_TABLE",
    "DEAD_LETTERS_TABLE",
    "DEFAULT_DATABASE",
    "DEFAULT_TTL_DAYS",
    "EVENTS_TABLE",
    "MIGRATIONS",
    "ROLLUPS_TABLE",
    "SCHEMA_MIGRATIONS_TABLE",
    "VIEWS",
    "Migration",
    "SchemaConfig",
    "applied_versions",
    "migrate",
    "schema_statements",
    "split_statements",
]

DEFAULT_DATABASE: Final = "agentwatch"
DEFAULT_TTL_DAYS: Final = 30
EVENTS_TABLE: Final = "events"
ALERTS_TABLE: Final = "alerts"
DEAD_LETTERS_TABLE: Final = "dead_letters"
ROLLUPS_TABLE: Final = "rollups_1m"
CONTROL_LOG_TABLE: Final = "control_log"
ACKS_TABLE: Final = "alert_acks"
#: The view of every alert's latest state with its acknowledgement (migration 5).
ALERT_STATUS_VIEW: Final = "alert_status"
#: The BI views (migrations 3, 6 and 7), in the order the README documents them.
VIEWS: Final = (
    "cost_per_agent_hourly",
    "error_rate_per_agent_5m",
    "top_sessions_by_cost",
    "open_alerts",
    "loop_incidents",
    "scores",  # migration 6
    "scores_per_session",
    "scores_per_agent_hourly",
    "tool_call_audit",  # migration 7
)
#: Tables that hold data (as opposed to the ledger): on a cluster each gets a
#: Distributed ``<name>_all`` table next to it, which the views read.
DATA_TABLES: Final = (EVENTS_TABLE, ROLLUPS_TABLE, ALERTS_TABLE, DEAD_LETTERS_TABLE,
                      CONTROL_LOG_TABLE, ACKS_TABLE)
SCHEMA_MIGRATIONS_TABLE: Final = "schema_migrations"

_BOOTSTRAP_FILE: Final = "000_bootstrap.sql"


@dataclass(frozen=True, slots=True)
class SchemaConfig:
    """Where the tables live and how long raw data is kept.

    ``ttl_days`` applies to ``events`` and ``dead_letters`` (whole daily
    partitions are dropped once older); ``None`` keeps them forever. Alerts are
    kept. The TTL is fixed when a table is created; change it later with
    ``ALTER TABLE ... MODIFY TTL``. ``rollups_ttl_days`` does the same for
    ``rollups_1m`` (default: kept; a minute of one agent is a few rows).

    ``cluster`` names a ClickHouse cluster (``<remote_servers>``): the DDL then
    carries ``ON CLUSTER``, MergeTree engines become their Replicated* form, each
    data table gets a Distributed ``<name>_all`` table, and the BI views read
    those. Leave it ``None`` for one server and for chDB.
    """

    database: str = DEFAULT_DATABASE
    ttl_days: int | None = DEFAULT_TTL_DAYS
    rollups_ttl_days: int | None = None
    cluster: str | None = None

    def __post_init__(self) -> None:
        check_identifier(self.database, what="database")
        for name in ("ttl_days", "rollups_ttl_days"):
            ttl = getattr(self, name)
            if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1):
                raise ConfigError(
                    f"{name} must be a whole number of days >= 1 or None, got {ttl!r}"
                )
        if self.cluster is not None:
            check_identifier(self.cluster, what="cluster")

    def table(self, name: str) -> str:
        """``database.name`` (unquoted; backends quote it)."""
        return f"{self.database}.{check_identifier(name, what='table')}"

    def placeholders(self) -> dict[str, str]:
        ttl = ""
        if self.ttl_days is not None:
            ttl = f"TTL toDateTime({{column}}) + INTERVAL {int(self.ttl_days)} DAY DELETE"
        rollups_ttl = ""
        if self.rollups_ttl_days is not None:
            rollups_ttl = f"TTL minute + INTERVAL {int(self.rollups_ttl_days)} DAY DELETE"
        read_suffix = "" if self.cluster is None else "_all"
        database = quote_identifier(self.database)
        return {
            "database": database,
            "events_ttl": ttl.format(column="ts"),
            "dead_letters_ttl": ttl.format(column="received_at"),
            "rollups_ttl": rollups_ttl,
            "events_read": f"{database}.{quote_identifier(EVENTS_TABLE + read_suffix)}",
            "rollups_read": f"{database}.{quote_identifier(ROLLUPS_TABLE + read_suffix)}",
            "alerts_read": f"{database}.{quote_identifier(ALERTS_TABLE + read_suffix)}",
            "acks_read": f"{database}.{quote_identifier(ACKS_TABLE + read_suffix)}",
        }


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    file: str

    def statements(self, config: SchemaConfig) -> list[str]:
        return render(self.file, config)


#: Every migration, in order. Forward only: append, never edit or reorder.
MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(1, "events, alerts and dead_letters tables", "001_core_tables.sql"),
    Migration(2, "rollups_1m and the materialized view that feeds it", "002_rollups_1m.sql"),
    Migration(3, "BI views", "003_bi_views.sql"),
    Migration(4, "control_log: every halt and resume", "004_control_log.sql"),
    Migration(5, "alert_acks and the alert_status view", "005_alert_acks.sql"),
    Migration(6, "evaluation scores views", "006_scores_views.sql"),
    Migration(7, "tool-call audit view", "007_tool_audit.sql"),
)


def _sql_text(file: str) -> str:
    return resources.files("agentwatch.sinks").joinpath("ddl", file).read_text("utf-8")


def render(file: str, config: SchemaConfig) -> list[str]:
    """The statements of ``ddl/<file>`` with the placeholders of ``config`` filled in
    (in their cluster form when ``config.cluster`` is set)."""
    text = string.Template(_sql_text(file)).substitute(config.placeholders())
    statements = split_statements(text)
    if config.cluster is None:
        return statements
    return [out for statement in statements for out in _for_cluster(statement, config)]


def schema_statements(config: SchemaConfig | None = None) -> list[str]:
    """Every statement ``migrate()`` can run, in order: the bootstrap, then each
    migration. ``agentwatch db ddl`` prints these (``--cluster`` for the cluster form)."""
    config = config or SchemaConfig()
    statements = render(_BOOTSTRAP_FILE, config)
    for migration in sorted(MIGRATIONS, key=lambda m: m.version):
        statements.extend(migration.statements(config))
    return statements


_CREATE: Final = re.compile(
    r"^(?P<head>(?:--[^\n]*\n|\s)*CREATE\s+(?:DATABASE|TABLE|(?:MATERIALIZED\s+)?VIEW)"
    r"\s+IF\s+NOT\s+EXISTS\s+)(?P<name>[`\w.]+)",
    re.IGNORECASE,
)
_ENGINE: Final = re.compile(r"\bENGINE\s*=\s*(?P<engine>\w*MergeTree)\b(?!\s*\()")


def _for_cluster(statement: str, config: SchemaConfig) -> list[str]:
    """One statement in its cluster form: ``ON CLUSTER``, Replicated* engines, and a
    Distributed ``<table>_all`` after each data table."""
    cluster_name = config.cluster or "default"
    match = _CREATE.match(statement)
    if match is None:
        return [statement]
    name = match.group("name")
    cluster = quote_identifier(cluster_name)
    clustered = f"{match.group('head')}{name} ON CLUSTER {cluster}{statement[match.end() :]}"
    table = name.replace("`", "").rpartition(".")[2]
    path = f"/clickhouse/tables/{{shard}}/{config.database}/{table}"
    clustered = _ENGINE.sub(
        lambda m: f"ENGINE = Replicated{m.group('engine')}('{path}', '{{replica}}')", clustered
    )
    out = [clustered]
    if table in DATA_TABLES and re.search(r"\bENGINE\s*=", statement):
        database = quote_identifier(config.database)
        out.append(
            f"CREATE TABLE IF NOT EXISTS {database}.{quote_identifier(table + '_all')} "
            f"ON CLUSTER {cluster} AS {database}.{quote_identifier(table)}\n"
            f"ENGINE = Distributed('{cluster_name}', '{config.database}', '{table}', rand())"
        )
    return out


def split_statements(text: str) -> list[str]:
    """Split SQL on ``;`` outside quotes and ``--`` comments; drop empty statements."""
    statements: list[str] = []
    current: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(text):
        char = text[i]
        if quote is not None:
            current.append(char)
            if char == "\\" and i + 1 < len(text):
                current.append(text[i + 1])
                i += 1
            elif char == quote:
                quote = None
        elif char in "'`\"":
            quote = char
            current.append(char)
        elif text.startswith("--", i):
            end = text.find("\n", i)
            end = len(text) if end == -1 else end
            current.append(text[i:end])
            i = end
            continue
        elif char == ";":
            statements.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    statements.append("".join(current))
    return [s.strip() for s in statements if _has_code(s)]


def _has_code(statement: str) -> bool:
    return any(
        line.strip() and not line.strip().startswith("--") for line in statement.splitlines()
    )


def applied_versions(backend: Backend, config: SchemaConfig | None = None) -> list[int]:
    """Versions recorded in ``schema_migrations`` (the table must exist)."""
    config = config or SchemaConfig()
    table = config.table(SCHEMA_MIGRATIONS_TABLE)
    result = backend.query(
        f"SELECT DISTINCT version FROM {qualified(table)} ORDER BY version"  # noqa: S608 (checked identifiers)
    )
    return [int(row[0]) for row in result.rows]


def migrate(
    backend: Backend,
    config: SchemaConfig | None = None,
    *,
    migrations: tuple[Migration, ...] = MIGRATIONS,
) -> list[int]:
    """Create the database and apply the migrations not applied yet, in order.

    Returns the versions applied by this call (``[]`` when up to date).
    """
    config = config or SchemaConfig()
    for statement in render(_BOOTSTRAP_FILE, config):
        backend.command(statement)
    done = set(applied_versions(backend, config))
    applied: list[int] = []
    ledger = qualified(config.table(SCHEMA_MIGRATIONS_TABLE))
    for migration in sorted(migrations, key=lambda m: m.version):
        if migration.version in done:
            continue
        for statement in migration.statements(config):
            backend.command(statement)
        backend.command(
            f"INSERT INTO {ledger} (version, name) "
            "SELECT {version:UInt32}, {name:String} "
            "SETTINGS insert_deduplication_token = {token:String}",
            {
                "version": migration.version,
                "name": migration.name,
                "token": f"schema_migration:{migration.version}",
            },
        )
        applied.append(migration.version)
    return applied
