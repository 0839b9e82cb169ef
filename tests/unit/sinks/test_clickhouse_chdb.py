"""The chDB backend and the schema, on a real on-disk chDB (one engine per module)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from agentwatch.schemas import Event
from agentwatch.schemas.errors import BackpressureError, SinkError
from agentwatch.sinks import (
    ALERT_COLUMNS,
    DEAD_LETTER_COLUMNS,
    EVENT_COLUMNS,
    MIGRATIONS,
    ChdbBackend,
    ClickHouseSink,
    SchemaConfig,
    applied_versions,
    migrate,
    open_backend,
)


def _columns(backend: ChdbBackend, table: str) -> list[str]:
    result = backend.query(
        "SELECT name FROM system.columns WHERE database = {db:String} AND table = {t:String} "
        "ORDER BY position",
        {"db": "agentwatch", "t": table},
    )
    return [row[0] for row in result.rows]


def test_ddl_column_order_matches_the_arrow_batches(backend: ChdbBackend) -> None:
    assert _columns(backend, "events") == [*EVENT_COLUMNS, "ingested_at"]
    assert _columns(backend, "alerts") == [*ALERT_COLUMNS, "delivery_status", "ingested_at"]
    assert _columns(backend, "dead_letters") == list(DEAD_LETTER_COLUMNS)


def test_migrate_twice_changes_nothing(backend: ChdbBackend) -> None:
    before = backend.query("SHOW CREATE TABLE agentwatch.events").rows
    assert migrate(backend) == []
    assert migrate(backend) == []
    assert backend.query("SHOW CREATE TABLE agentwatch.events").rows == before
    ledger = backend.query(
        "SELECT version, count() FROM agentwatch.schema_migrations GROUP BY version "
        "ORDER BY version"
    )
    assert ledger.rows == [(m.version, 1) for m in MIGRATIONS]


def test_migrate_records_every_version_in_order(backend: ChdbBackend) -> None:
    assert applied_versions(backend) == [m.version for m in MIGRATIONS]


def test_migrate_uses_the_configured_database_and_ttl(backend: ChdbBackend) -> None:
    config = SchemaConfig(database="aw_custom", ttl_days=7)
    assert migrate(backend, config) == [m.version for m in MIGRATIONS]
    create = backend.query("SHOW CREATE TABLE aw_custom.events").rows[0][0]
    assert "toIntervalDay(7)" in create
    assert "PARTITION BY toDate(ts)" in create
    assert "ORDER BY (tenant_id, agent_id, ts)" in create
    assert "non_replicated_deduplication_window = 1000" in create


def test_migrate_without_ttl_keeps_data(backend: ChdbBackend) -> None:
    migrate(backend, SchemaConfig(database="aw_forever", ttl_days=None))
    create = backend.query("SHOW CREATE TABLE aw_forever.events").rows[0][0]
    assert "TTL" not in create


def test_the_module_database_keeps_events_older_than_any_ttl(
    backend: ChdbBackend, make_event: Callable[..., Event]
) -> None:
    """The tests write events with fixed times (conftest T0): under the default 30-day
    TTL ClickHouse drops such rows as they are inserted once T0 is 30 days old."""
    old = make_event(event_id=str(uuid.uuid4()), ts=datetime.now(UTC) - timedelta(days=400))
    sink = ClickHouseSink(backend)
    sink.add_events([old])
    sink.flush()
    stored = backend.query(
        "SELECT count() FROM agentwatch.events WHERE event_id = {id:String}",
        {"id": old.event_id},
    ).rows
    assert stored == [(1,)]


def test_query_returns_names_and_typed_rows(backend: ChdbBackend) -> None:
    result = backend.query(
        "SELECT {n:UInt32} AS n, {s:String} AS s, {at:DateTime64(6, 'UTC')} AS at, "
        "{xs:Array(String)} AS xs, {m:Map(String, String)} AS m, {none:Nullable(String)} AS none",
        {
            "n": 7,
            "s": "x",
            "at": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
            "xs": ["a", "b"],
            "m": {"k": "v"},
            "none": None,
        },
    )
    assert result.column_names == ("n", "s", "at", "xs", "m", "none")
    assert result.rows == [
        (7, "x", datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), ["a", "b"], {"k": "v"}, None)
    ]
    assert result.dicts()[0]["n"] == 7


@pytest.mark.parametrize(
    "value",
    [
        "O'Brien",
        "'; DROP TABLE agentwatch.events; --",
        "back\\slash \t tab \n newline",
        "{x:String}",
        "ünïcödé ✓",
    ],
)
def test_parameters_are_data_not_sql(backend: ChdbBackend, value: str) -> None:
    result = backend.query("SELECT {v:String} AS v, length({v:String}) AS n", {"v": value})
    assert result.rows == [(value, len(value.encode()))]
    assert backend.query("EXISTS TABLE agentwatch.events").rows == [(1,)]


def test_a_quoted_array_element_round_trips(backend: ChdbBackend) -> None:
    values = ["it's", "a\\b", "x'); DROP TABLE y; --"]
    assert backend.query("SELECT {v:Array(String)}", {"v": values}).rows == [(values,)]


def test_insert_arrow_fills_defaults_and_stores_rows(backend: ChdbBackend) -> None:
    backend.command(
        "CREATE TABLE IF NOT EXISTS agentwatch.t_insert (a UInt32, b String DEFAULT 'd') "
        "ENGINE = MergeTree ORDER BY a SETTINGS non_replicated_deduplication_window = 100"
    )
    backend.insert_arrow("agentwatch.t_insert", pa.table({"a": pa.array([1, 2], pa.uint32())}))
    rows = backend.query("SELECT a, b FROM agentwatch.t_insert ORDER BY a").rows
    assert rows == [(1, "d"), (2, "d")]


def test_empty_insert_is_a_no_op(backend: ChdbBackend) -> None:
    backend.insert_arrow("agentwatch.no_such_table", pa.table({"a": pa.array([], pa.uint32())}))


def test_syntax_error_is_a_sink_error(backend: ChdbBackend) -> None:
    with pytest.raises(SinkError, match="Syntax error") as info:
        backend.query("SELEC 1")
    assert not isinstance(info.value, BackpressureError)


def test_missing_table_is_a_sink_error(backend: ChdbBackend) -> None:
    with pytest.raises(SinkError, match=r"UNKNOWN_TABLE|doesn't exist"):
        backend.insert_arrow("agentwatch.nope", pa.table({"a": [1]}))


def test_a_timeout_is_backpressure(backend: ChdbBackend) -> None:
    with pytest.raises(BackpressureError, match=r"TIMEOUT_EXCEEDED|Timeout"):
        backend.query(
            "SELECT count() FROM numbers(100000000000) "
            "SETTINGS max_execution_time = 0.05, timeout_overflow_mode = 'throw'"
        )


def test_threads_share_one_backend_safely(backend: ChdbBackend) -> None:
    backend.command(
        "CREATE TABLE IF NOT EXISTS agentwatch.t_threads (t UInt8, i UInt32) "
        "ENGINE = MergeTree ORDER BY (t, i)"
    )
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(5):
                data = pa.table(
                    {"t": pa.array([t] * 100, pa.uint8()), "i": pa.array(range(100), pa.uint32())}
                )
                backend.insert_arrow("agentwatch.t_threads", data, dedup_token=f"{t}:{i}")
                backend.query("SELECT count() FROM agentwatch.t_threads")
        except BaseException as exc:  # noqa: BLE001 (reported by the assertion below)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert backend.query("SELECT count() FROM agentwatch.t_threads").rows == [(4 * 5 * 100,)]


def test_a_second_path_in_the_same_process_is_refused_clearly(
    backend: ChdbBackend, tmp_path: Path
) -> None:
    with pytest.raises(SinkError, match="opening chDB"):
        ChdbBackend(tmp_path / "other")


def test_open_backend_maps_paths_and_chdb_urls(backend: ChdbBackend, chdb_path: Path) -> None:
    # The same path as the module's backend: chDB lets sessions share one engine path.
    for location in (f"chdb://{chdb_path}", str(chdb_path), chdb_path):
        other = open_backend(location)
        assert isinstance(other, ChdbBackend)
        assert other.path == chdb_path
        assert other.query("SELECT 1 AS one").rows == [(1,)]
        other.close()
    assert backend.query("SELECT 1").rows == [(1,)]


def test_invalid_utf8_strings_come_back_replaced(backend: ChdbBackend) -> None:
    result = backend.query("SELECT unhex('ff41') AS s, hex(unhex('ff41')) AS h")
    assert result.rows == [("\ufffdA", "FF41")]


def test_a_batch_spanning_many_days_is_not_refused(backend: ChdbBackend) -> None:
    backend.command(
        "CREATE TABLE IF NOT EXISTS agentwatch.t_days (d Date) "
        "ENGINE = MergeTree PARTITION BY d ORDER BY d"
    )
    days = pa.array(range(20_000, 20_150), pa.int32()).cast(pa.date32())
    backend.insert_arrow("agentwatch.t_days", pa.table({"d": days}))
    assert backend.query("SELECT count() FROM agentwatch.t_days").rows == [(150,)]


def test_a_closed_backend_raises_sink_error(chdb_path: Path) -> None:
    # A second session on the module's path (allowed), closed at once.
    other = ChdbBackend(chdb_path)
    other.close()
    other.close()  # idempotent
    assert other.closed
    with pytest.raises(SinkError, match="closed"):
        other.query("SELECT 1")
    with pytest.raises(SinkError, match="closed"):
        other.insert_arrow("agentwatch.events", pa.table({"a": [1]}))
