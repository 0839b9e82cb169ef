"""Contract tests of the server backend (:class:`ClickHouseBackend`, clickhouse-connect).

Each test runs twice:

- ``server``: against a real ClickHouse server, only when ``CLICKHOUSE_URL`` names one
  (e.g. ``CLICKHOUSE_URL=http://default:@localhost:8123 pytest -m clickhouse_server``);
- ``chdb-dsn``: always, against chDB behind clickhouse-connect's own ``chdb://`` client,
  so the driver calls (parameter binding, insert settings, Arrow results) run here too.

Each test creates and drops its own database.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from agentwatch.schemas import Alert, Event
from agentwatch.schemas.errors import SinkError
from agentwatch.sinks import (
    EVENT_COLUMNS,
    MIGRATIONS,
    SAVED_QUERIES,
    ClickHouseBackend,
    ClickHouseSink,
    SchemaConfig,
    applied_versions,
    migrate,
    open_backend,
    saved_query,
)

_NO_SERVER = "set CLICKHOUSE_URL (e.g. http://localhost:8123) to run against a ClickHouse server"


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(
            "server",
            marks=[
                pytest.mark.clickhouse_server,
                pytest.mark.skipif(not os.environ.get("CLICKHOUSE_URL"), reason=_NO_SERVER),
            ],
        ),
        "chdb-dsn",
    ],
)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClickHouseBackend]:
    if request.param == "server":
        backend = open_backend(os.environ["CLICKHOUSE_URL"])
        assert isinstance(backend, ClickHouseBackend)
    else:
        import clickhouse_connect  # noqa: PLC0415 (only this variant needs it directly)

        path = tmp_path_factory.mktemp("chdb_dsn") / "db"
        client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
        backend = ClickHouseBackend(client, description="chDB through clickhouse-connect")
    yield backend
    backend.close()


@pytest.fixture
def database(server: ClickHouseBackend) -> Iterator[str]:
    name = f"aw_test_{uuid.uuid4().hex[:12]}"
    migrate(server, SchemaConfig(database=name, ttl_days=None))  # fixed event times
    yield name
    server.command(f"DROP DATABASE IF EXISTS {name}")


def test_migrate_is_idempotent_on_a_server(server: ClickHouseBackend, database: str) -> None:
    assert migrate(server, SchemaConfig(database=database)) == []
    assert applied_versions(server, SchemaConfig(database=database)) == [
        m.version for m in MIGRATIONS
    ]
    columns = server.query(
        "SELECT name FROM system.columns WHERE database = {db:String} AND table = 'events' "
        "ORDER BY position",
        {"db": database},
    )
    assert [r[0] for r in columns.rows] == [*EVENT_COLUMNS, "ingested_at"]


def test_events_round_trip_and_dedup_on_a_server(
    server: ClickHouseBackend, database: str, make_event: Callable[..., Event]
) -> None:
    sink = ClickHouseSink(server, database=database)
    events = [make_event(i, full=i % 2 == 0) for i in range(20)]
    for _ in range(2):
        sink.add_events(events)
        sink.flush("server/0-19")
    rows = server.query(f"SELECT event_id, ts, attributes FROM {database}.events ORDER BY ts").rows
    assert [(r[0], r[1]) for r in rows] == [(e.event_id, e.ts) for e in events]
    assert rows[0][2] == {"region": "eu", "retries": "2", "ratio": "0.25", "cached": "true"}


def test_alerts_round_trip_on_a_server(
    server: ClickHouseBackend, database: str, make_alert: Callable[..., Alert]
) -> None:
    sink = ClickHouseSink(server, database=database)
    alert = make_alert()
    sink.add_alerts([alert])
    sink.flush()
    rows = server.query(f"SELECT alert_id, event_ids, ts FROM {database}.alerts").rows
    assert rows == [(alert.alert_id, alert.event_ids, alert.ts)]


def test_parameters_are_data_on_a_server(server: ClickHouseBackend) -> None:
    value = "'; DROP TABLE x; -- O'Brien \\ \t"
    at = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    result = server.query(
        "SELECT {v:String}, {at:DateTime64(6, 'UTC')}, {xs:Array(String)}",
        {"v": value, "at": at, "xs": [value]},
    )
    assert result.rows == [(value, at, [value])]


def test_missing_table_is_a_sink_error_on_a_server(server: ClickHouseBackend) -> None:
    with pytest.raises(SinkError):
        server.insert_arrow("aw_no_such_db.events", pa.table({"a": [1]}))


def test_rollups_follow_events_and_a_retried_batch_on_a_server(
    server: ClickHouseBackend, database: str, make_event: Callable[..., Event]
) -> None:
    sink = ClickHouseSink(server, database=database)
    events = [make_event(i, full=i % 2 == 0) for i in range(30)]
    for _ in range(2):  # the retry carries the same token: neither table counts it twice
        sink.add_events(events)
        sink.flush("server/rollups/0-29")
    rollup = server.query(
        f"SELECT sum(events), sum(input_tokens) FROM {database}.rollups_1m"
    ).rows
    raw = server.query(
        f"SELECT count(), sum(ifNull(input_tokens, 0)) FROM {database}.events"
    ).rows
    assert rollup == raw
    assert raw[0][0] == len(events)


def test_every_saved_query_runs_on_a_server(
    server: ClickHouseBackend, database: str, make_event: Callable[..., Event]
) -> None:
    sink = ClickHouseSink(server, database=database)
    sink.add_events([make_event(i, full=True) for i in range(10)])
    sink.flush()
    for name, saved in SAVED_QUERIES.items():
        result = server.query(saved.sql(database), {"limit": 5})
        assert list(result.column_names) == [c for c, _ in saved.columns], name
    hourly = server.query(saved_query("cost-by-agent").sql(database), {"limit": 5})
    assert hourly.rows
    assert isinstance(hourly.rows[0][0], datetime)
