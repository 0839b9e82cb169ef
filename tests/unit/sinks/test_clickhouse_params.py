"""Pure pieces of the ClickHouse layer: parameter text, identifiers, error mapping, URLs."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from agentwatch.schemas import AlertType
from agentwatch.schemas.errors import BackpressureError, ConfigError, SinkError
from agentwatch.sinks import SchemaConfig, open_backend
from agentwatch.sinks._ddl import split_statements
from agentwatch.sinks._identifiers import qualified
from agentwatch.sinks.backends._errors import error_code, sink_error
from agentwatch.sinks.backends._params import for_clickhouse_connect, format_parameter


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "\\N"),
        ("plain", "plain"),
        ("it's", "it\\'s"),
        ("tab\tnew\nline\\", "tab\\tnew\\nline\\\\"),
        (True, "1"),
        (42, "42"),
        (0.1, "0.1"),
        (float("inf"), "inf"),
        (AlertType.COST, "cost"),
        (date(2026, 1, 2), "2026-01-02"),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (["a", "b'c", None], "['a', 'b\\'c', NULL]"),
        ((1, "x"), "(1, 'x')"),
        ({"k": 1}, "{'k': 1}"),
    ],
)
def test_parameters_use_clickhouse_text_format(value: object, text: str) -> None:
    assert format_parameter(value) == text


def test_datetime_parameters_keep_microseconds_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    value = datetime(2026, 11, 20, 10, 0, 1, 250_001, tzinfo=paris)
    assert format_parameter(value) == "2026-11-20 09:00:01.250001"
    assert format_parameter([value]) == "['2026-11-20 09:00:01.250001']"


def test_datetimes_for_clickhouse_connect_become_text_with_microseconds() -> None:
    value = datetime(2026, 11, 20, 9, 0, 1, 5, tzinfo=UTC)
    assert for_clickhouse_connect({"at": [value]}) == {"at": ["2026-11-20 09:00:01.000005"]}


def test_unsupported_parameter_types_are_refused() -> None:
    with pytest.raises(TypeError, match="object"):
        format_parameter(object())


def test_table_names_are_checked_and_quoted() -> None:
    assert qualified("agentwatch.events") == "`agentwatch`.`events`"
    for bad in ("events; DROP TABLE x", "a.b.c", "ev`ents", "1abc", ""):
        with pytest.raises(ConfigError):
            qualified(bad)


def test_schema_config_refuses_a_bad_database_name() -> None:
    with pytest.raises(ConfigError, match="database"):
        SchemaConfig(database="agent-watch")


@pytest.mark.parametrize("ttl_days", [0, -1, 1.5, True])
def test_schema_config_refuses_a_bad_ttl(ttl_days: object) -> None:
    with pytest.raises(ConfigError, match="ttl_days"):
        SchemaConfig(ttl_days=ttl_days)  # type: ignore[arg-type]


def test_statements_split_outside_quotes_and_comments() -> None:
    sql = "-- intro; not a statement\nSELECT ';' AS a; -- tail;\nSELECT 'x\\';y';\n\n-- end\n"
    assert split_statements(sql) == [
        "-- intro; not a statement\nSELECT ';' AS a",
        "-- tail;\nSELECT 'x\\';y'",
    ]


def test_error_code_is_read_from_the_clickhouse_message() -> None:
    assert error_code("Code: 60. DB::Exception: Table x doesn't exist. (UNKNOWN_TABLE)") == 60
    assert error_code("no code here") is None


def test_overload_errors_become_backpressure() -> None:
    error = sink_error("insert into a.b", RuntimeError("Code: 252. DB::Exception: Too many parts"))
    assert isinstance(error, BackpressureError)
    assert error.retry_after_s > 0


def test_statement_errors_are_plain_sink_errors() -> None:
    error = sink_error("query", RuntimeError("Code: 62. DB::Exception: Syntax error"))
    assert type(error) is SinkError
    assert str(error).startswith("query failed: Code: 62.")


def test_unknown_url_schemes_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown ClickHouse location"):
        open_backend("ftp://example.com/db")


def test_chdb_url_without_a_path_is_refused() -> None:
    with pytest.raises(ConfigError, match="no path"):
        open_backend("chdb://")


def test_chdb_path_with_a_question_mark_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="without '\\?'"):
        open_backend(f"{tmp_path}/what?")


def test_unreachable_server_is_backpressure() -> None:
    # Port 1 on loopback refuses at once: no server needed, nothing leaves the machine.
    with pytest.raises(BackpressureError) as info:
        open_backend("http://127.0.0.1:1")
    assert "127.0.0.1:1" in str(info.value)
