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

import string
from dataclasses import dataclass
from importlib import resources
from typing import Final

from agentwatch.schemas.errors import ConfigError
from agentwatch.sinks._identifiers import check_identifier, qualified, quote_identifier
from agentwatch.sinks.backends.base import Backend

__all__ = [
    "ALERTS_TABLE",
    "DEAD_LETTERS_TABLE",
    "DEFAULT_DATABASE",
    "DEFAULT_TTL_DAYS",
    "EVENTS_TABLE",
    "MIGRATIONS",
    "SCHEMA_MIGRATIONS_TABLE",
    "Migration",
    "SchemaConfig",
    "applied_versions",
    "migrate",
    "split_statements",
]

DEFAULT_DATABASE: Final = "agentwatch"
DEFAULT_TTL_DAYS: Final = 30
EVENTS_TABLE: Final = "events"
ALERTS_TABLE: Final = "alerts"
DEAD_LETTERS_TABLE: Final = "dead_letters"
SCHEMA_MIGRATIONS_TABLE: Final = "schema_migrations"

_BOOTSTRAP_FILE: Final = "000_bootstrap.sql"


@dataclass(frozen=True, slots=True)
class SchemaConfig:
    """Where the tables live and how long raw data is kept.

    ``ttl_days`` applies to ``events`` and ``dead_letters`` (whole daily
    partitions are dropped once older); ``None`` keeps them forever. Alerts are
    kept. The TTL is fixed when a table is created; change it later with
    ``ALTER TABLE ... MODIFY TTL``.
    """

    database: str = DEFAULT_DATABASE
    ttl_days: int | None = DEFAULT_TTL_DAYS

    def __post_init__(self) -> None:
        check_identifier(self.database, what="database")
        ttl = self.ttl_days
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1):
            raise ConfigError(f"ttl_days must be a whole number of days >= 1 or None, got {ttl!r}")

    def table(self, name: str) -> str:
        """``database.name`` (unquoted; backends quote it)."""
        return f"{self.database}.{check_identifier(name, what='table')}"

    def placeholders(self) -> dict[str, str]:
        ttl = ""
        if self.ttl_days is not None:
            ttl = f"TTL toDateTime({{column}}) + INTERVAL {int(self.ttl_days)} DAY DELETE"
        return {
            "database": quote_identifier(self.database),
            "events_ttl": ttl.format(column="ts"),
            "dead_letters_ttl": ttl.format(column="received_at"),
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
)


def _sql_text(file: str) -> str:
    return resources.files("agentwatch.sinks").joinpath("ddl", file).read_text("utf-8")


def render(file: str, config: SchemaConfig) -> list[str]:
    """The statements of ``ddl/<file>`` with the placeholders of ``config`` filled in."""
    text = string.Template(_sql_text(file)).substitute(config.placeholders())
    return split_statements(text)


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
