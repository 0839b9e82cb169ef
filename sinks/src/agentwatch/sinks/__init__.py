"""agentwatch sinks: the ClickHouse schema, its backends and the batch writer.

::

    from agentwatch.sinks import ClickHouseSink, migrate, open_backend

    with open_backend("chdb:///var/lib/agentwatch") as backend:  # or http(s)://host:8123
        migrate(backend)                        # idempotent, forward only
        sink = ClickHouseSink(backend)
        sink.add_events(events)
        sink.flush(dedup_token_prefix="p0/1200-1499")   # then commit the offsets

The same DDL and SQL run on chDB (embedded, one engine per process) and on a
ClickHouse server (clickhouse-connect). Signed alert webhooks live in
:mod:`agentwatch.alerts`.
"""

from __future__ import annotations

from agentwatch.sinks._ddl import (
    ACKS_TABLE,
    ALERTS_TABLE,
    DEAD_LETTERS_TABLE,
    DEFAULT_DATABASE,
    DEFAULT_TTL_DAYS,
    EVENTS_TABLE,
    MIGRATIONS,
    ROLLUPS_TABLE,
    SCHEMA_MIGRATIONS_TABLE,
    VIEWS,
    Migration,
    SchemaConfig,
    applied_versions,
    migrate,
    schema_statements,
)
from agentwatch.sinks._identifiers import quote_identifier
from agentwatch.sinks._rows import (
    ALERT_COLUMNS,
    DEAD_LETTER_COLUMNS,
    DELIVERY_STATUS_COLUMN,
    EVENT_COLUMNS,
    DeadLetter,
    alerts_to_arrow,
    attribute_text,
    dead_letters_from_rejected,
    dead_letters_to_arrow,
    events_to_arrow,
)
from agentwatch.sinks._saved import SAVED_QUERIES, SavedQuery, saved_query
from agentwatch.sinks._session import SESSION_ALERTS_SQL, SESSION_SPANS_SQL, session_sql
from agentwatch.sinks._settings import (
    DEFAULT_CHDB_PATH,
    SinkSettings,
    StoreSettings,
)
from agentwatch.sinks._sink import ClickHouseSink, FlushStats, RowCounts, StagedFlush
from agentwatch.sinks.backends import (
    Backend,
    ChdbBackend,
    ClickHouseBackend,
    Parameters,
    QueryResult,
    open_backend,
)

__all__ = [
    "ACKS_TABLE",
    "ALERTS_TABLE",
    "ALERT_COLUMNS",
    "DEAD_LETTERS_TABLE",
    "DEAD_LETTER_COLUMNS",
    "DEFAULT_CHDB_PATH",
    "DEFAULT_DATABASE",
    "DEFAULT_TTL_DAYS",
    "DELIVERY_STATUS_COLUMN",
    "EVENTS_TABLE",
    "EVENT_COLUMNS",
    "MIGRATIONS",
    "ROLLUPS_TABLE",
    "SAVED_QUERIES",
    "SCHEMA_MIGRATIONS_TABLE",
    "SESSION_ALERTS_SQL",
    "SESSION_SPANS_SQL",
    "VIEWS",
    "Backend",
    "ChdbBackend",
    "ClickHouseBackend",
    "ClickHouseSink",
    "DeadLetter",
    "FlushStats",
    "Migration",
    "Parameters",
    "QueryResult",
    "RowCounts",
    "SavedQuery",
    "SchemaConfig",
    "SinkSettings",
    "StagedFlush",
    "StoreSettings",
    "alerts_to_arrow",
    "applied_versions",
    "attribute_text",
    "dead_letters_from_rejected",
    "dead_letters_to_arrow",
    "events_to_arrow",
    "migrate",
    "open_backend",
    "quote_identifier",
    "saved_query",
    "schema_statements",
    "session_sql",
]
