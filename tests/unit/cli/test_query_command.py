"""`agentwatch query`: SQL and saved queries on a real chDB store, in every format."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from cli_helpers import error_line, run

from agentwatch.cli.__main__ import main
from agentwatch.cli._render import table_lines, write_json_lines
from agentwatch.schemas import (
    Alert,
    AlertScope,
    AlertState,
    AlertType,
    Event,
    EventKind,
    EventStatus,
    Severity,
)
from agentwatch.sinks import SAVED_QUERIES, ChdbBackend, ClickHouseSink, SchemaConfig, migrate

T0 = datetime(2026, 11, 20, 9, 0, 1, 250_001, tzinfo=UTC)
LOOP_ID = str(uuid.uuid4())




def alert(**fields: object) -> Alert:
    base: dict[str, object] = {
        "alert_id": str(uuid.uuid4()),
        "rule": "session_cost",
        "type": AlertType.COST,
        "state": AlertState.FIRING,
        "severity": Severity.WARNING,
        "scope": AlertScope.SESSION,
        "key": "s1",
        "tenant_id": "acme",
        "agent_id": "agent-a",
        "session_id": "s1",
        "value": 1.25,
        "threshold": 1.0,
        "window_s": 60,
        "ts": T0 + timedelta(seconds=5),
        "reason": "Session s1 spent 1.25 USD in 60 s (limit 1.00).",
        "event_ids": [str(uuid.uuid4())],
    }
    return Alert(**(base | fields))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated chDB store with three events, an open cost alert and a resolved loop."""
    path = tmp_path_factory.mktemp("query") / "chdb"
    events = [
        Event(
            event_id=str(uuid.uuid4()),
            ts=T0,
            agent_id="agent-a",
            session_id="s1",
            kind=EventKind.LLM_CALL,
            tenant_id="acme",
            input_tokens=1000,
            output_tokens=200,
            cost_usd=0.5,
            attributes={"region": "eu"},
        ),
        Event(
            event_id=str(uuid.uuid4()),
            ts=T0 + timedelta(seconds=1),
            agent_id="agent-a",
            session_id="s1",
            kind=EventKind.TOOL_CALL,
            tenant_id="acme",
            name="search",
            status=EventStatus.ERROR,
            error_type="TimeoutError",
        ),
        Event(
            event_id=str(uuid.uuid4()),
            ts=T0 + timedelta(seconds=2),
            agent_id="agent-b",
            session_id="s2",
            kind=EventKind.LLM_CALL,
            tenant_id="acme",
            cost_usd=0.25,
            name="line one\nline two",
        ),
    ]
    loop = {
        "alert_id": LOOP_ID,
        "rule": "loop_repeat",
        "type": AlertType.RUNAWAY_LOOP,
        "key": "s2",
        "agent_id": "agent-b",
        "session_id": "s2",
        "value": 5.0,
        "threshold": 5.0,
    }
    with ChdbBackend(path) as backend:
        # No TTL: with the default 30 days, ClickHouse would drop these fixed-time rows
        # as they are inserted once the wall clock is 30 days past T0.
        migrate(backend, SchemaConfig(ttl_days=None))
        sink = ClickHouseSink(backend)
        sink.add_events(events)
        sink.add_alerts(
            [
                alert(),
                alert(**loop),
                alert(**loop, state=AlertState.RESOLVED, ts=T0 + timedelta(seconds=9)),
            ]
        )
        sink.flush()
    return str(path)


EVENTS_SQL = (
    "SELECT agent_id, ts, kind, status, cost_usd, input_tokens, attributes "
    "FROM agentwatch.events ORDER BY ts"
)


def test_table_is_aligned_with_numbers_right_and_a_row_count(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys,
        "query",
        "--url",
        store,
        "SELECT agent_id, count() AS n, sum(cost_usd) AS cost "
        "FROM agentwatch.events GROUP BY agent_id ORDER BY agent_id",
    )
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "agent_id  n  cost",
        "--------  -  ----",
        "agent-a   2   0.5",
        "agent-b   1  0.25",
        "(2 rows)",
    ]


def test_table_keeps_each_row_on_one_line(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "query",
        "--url",
        store,
        "SELECT name, repeat('x', 60) AS long FROM agentwatch.events WHERE agent_id = 'agent-b'",
    )
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 4
    assert lines[2].startswith("line one\\nline two  xxx")
    assert lines[2].endswith("x…")
    assert lines[3].startswith("(1 row; values longer than 40 characters are cut")


def test_csv_values_read_back_exactly(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "query", "--url", store, "--format", "csv", EVENTS_SQL)
    assert (code, err) == (0, "")
    rows = list(csv.reader(io.StringIO(out)))
    assert rows == [
        ["agent_id", "ts", "kind", "status", "cost_usd", "input_tokens", "attributes"],
        [
            "agent-a",
            "2026-11-20T09:00:01.250001Z",
            "llm_call",
            "ok",
            "0.5",
            "1000",
            '{"region":"eu"}',
        ],
        ["agent-a", "2026-11-20T09:00:02.250001Z", "tool_call", "error", "0.0", "", "{}"],
        ["agent-b", "2026-11-20T09:00:03.250001Z", "llm_call", "ok", "0.25", "", "{}"],
    ]


def test_json_lines_read_back_exactly(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "query", "--url", store, "--format", "json", EVENTS_SQL)
    assert (code, err) == (0, "")
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows[0] == {
        "agent_id": "agent-a",
        "ts": "2026-11-20T09:00:01.250001Z",
        "kind": "llm_call",
        "status": "ok",
        "cost_usd": 0.5,
        "input_tokens": 1000,
        "attributes": {"region": "eu"},
    }
    assert [r["input_tokens"] for r in rows] == [1000, None, None]
    assert [r["status"] for r in rows] == ["ok", "error", "ok"]


def test_values_arrow_leaves_raw_come_out_as_what_they_are(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Arrow carries DateTime as epoch seconds, Int128 as bytes, Enum as its number.
    sql = (
        "SELECT toDateTime('2026-11-20 09:00:00', 'UTC') AS t, "
        "toDateTime('2026-11-20 09:00:00', 'Asia/Tokyo') AS tokyo, "
        "toNullable(toDateTime('2026-11-20 10:00:00', 'UTC')) AS maybe, "
        "[toDateTime('2026-11-20 11:00:00', 'UTC')] AS many, toInt128(-5) AS i128, "
        "toUInt256(7) AS u256, toIPv4('1.2.3.4') AS ip4, toIPv6('::1') AS ip6, "
        "CAST('b', 'Enum8(\\'a\\' = 1, \\'b\\' = 2)') AS e, toFixedString('ab', 4) AS fs"
    )
    code, out, err = run(capsys, "query", "--url", store, "-f", "json", "--limit", "0", sql)
    assert (code, err) == (0, "")
    assert json.loads(out) == {
        "t": "2026-11-20T09:00:00Z",
        "tokyo": "2026-11-20T09:00:00+09:00",
        "maybe": "2026-11-20T10:00:00Z",
        "many": ["2026-11-20T11:00:00Z"],
        "i128": -5,
        "u256": 7,
        "ip4": "1.2.3.4",
        "ip6": "::1",
        "e": "b",
        "fs": "ab",
    }


def test_params_are_passed_as_text_clickhouse_parses(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys,
        "query",
        "--url",
        store,
        "-f",
        "json",
        "SELECT count() AS n, {text:String} AS text FROM agentwatch.events "
        "WHERE agent_id = {agent:String} AND ts >= {since:DateTime64(6)}",
        "--param",
        "agent=agent-a",
        "-p",
        "since=2026-11-20 09:00:02",
        "-p",
        "text=it's a \\ =",
    )
    assert (code, err) == (0, "")
    assert json.loads(out) == {"n": 1, "text": "it's a \\ ="}


@pytest.mark.parametrize("bad", ["noequals", "=x", "1x=2", "a b=1"])
def test_a_malformed_param_is_a_one_line_error(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "query", "--url", "unused", "SELECT 1", "--param", bad)
    assert code == 2
    assert "expected name=value" in error_line(err)


def test_a_param_given_twice_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "query", "SELECT 1", "-p", "a=1", "-p", "a=2")
    assert code == 2
    assert error_line(err) == "agentwatch: error: --param a is given twice"


def test_a_missing_param_names_it(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "query", "--url", store, "SELECT {agent:String}")
    assert code == 2
    assert "Substitution `agent` is not set" in error_line(err)


def test_limit_stops_early_and_says_so(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    sql = "SELECT number FROM numbers(250)"
    code, out, err = run(capsys, "query", "--url", store, "-f", "json", sql)
    assert code == 0
    assert [json.loads(line)["number"] for line in out.splitlines()] == list(range(100))
    assert "stopped after 100 rows" in error_line(err.replace("note", "error"))
    code, out, err = run(capsys, "query", "--url", store, "-f", "csv", "--limit", "0", sql)
    assert (code, err) == (0, "")
    assert len(out.splitlines()) == 251
    code, out, _ = run(capsys, "query", "--url", store, "-n", "3", sql)
    assert out.splitlines()[2:] == [
        "     0",
        "     1",
        "     2",
        "(3 rows; stopped at --limit 3: there are more)",
    ]
    code, out, err = run(capsys, "query", "--url", store, "-n", "250", "-f", "csv", sql)
    assert (len(out.splitlines()), err) == (251, "")  # exactly the limit: no note


def test_leading_comments_and_trailing_semicolons_are_fine(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys,
        "query",
        "--url",
        store,
        "-f",
        "csv",
        "--",  # SQL like "--x"
        "-- how many?\n/* all */ SELECT count() AS n FROM agentwatch.events;\n",
    )
    assert (code, out, err) == (0, "n\n3\n", "")


def test_show_and_describe_run_unwrapped(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "query", "--url", store, "-f", "csv", "SHOW TABLES FROM agentwatch")
    assert code == 0
    assert {"events", "alerts", "rollups_1m", "open_alerts"} <= set(out.splitlines()[1:])
    code, out, _ = run(
        capsys, "query", "--url", store, "-f", "json", "-n", "2", "DESCRIBE TABLE agentwatch.events"
    )
    assert [json.loads(line)["name"] for line in out.splitlines()] == ["event_id", "ts"]


def test_the_store_keeps_its_fixed_time_events_whatever_the_date(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """No TTL on the store: its events (at T0) stay however long after T0 the tests run."""
    sql = (
        "SELECT engine_full FROM system.tables WHERE database = 'agentwatch' AND name = {t:String}"
    )
    for table in ("events", "dead_letters"):
        code, out, _ = run(capsys, "query", "--url", store, "-f", "json", "-p", f"t={table}", sql)
        assert code == 0
        assert "TTL" not in json.loads(out)["engine_full"], table


@pytest.fixture(scope="module")
def scores_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated chDB store with an llm call and its evaluation score (the scores views)."""
    path = tmp_path_factory.mktemp("query-scores") / "chdb"
    base = {"agent_id": "agent-a", "session_id": "s1", "tenant_id": "acme"}
    with ChdbBackend(path) as backend:
        migrate(backend, SchemaConfig(ttl_days=None))
        sink = ClickHouseSink(backend)
        sink.add_events([
            Event(event_id=str(uuid.uuid4()), ts=T0, kind=EventKind.LLM_CALL, cost_usd=0.5,
                  **base),
            Event(event_id=str(uuid.uuid4()), ts=T0 + timedelta(seconds=1),
                  kind=EventKind.SCORE, name="helpfulness",
                  attributes={"gen_ai.evaluation.score.value": 0.75}, **base),
        ])
        sink.flush()
    return str(path)


@pytest.mark.parametrize("name", list(SAVED_QUERIES))
def test_every_saved_query_runs_and_has_its_documented_columns(
    name: str, store: str, scores_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if SAVED_QUERIES[name].view.startswith("scores"):
        store = scores_store
    code, out, err = run(capsys, "query", "--url", store, "--saved", name, "-f", "json")
    assert (code, err) == (0, "")
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows, f"{name} returned no rows"
    assert list(rows[0]) == [column for column, _ in SAVED_QUERIES[name].columns]
    code, out, _ = run(capsys, "query", "--url", store, "--saved", name)
    assert code == 0
    assert out.splitlines()[0].split() == [column for column, _ in SAVED_QUERIES[name].columns]


def test_saved_queries_read_the_inserted_data(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(capsys, "query", "--url", store, "--saved", "cost-by-agent", "-f", "json")
    by_agent = {r["agent_id"]: r for r in map(json.loads, out.splitlines())}
    assert by_agent["agent-a"]["hour"] == "2026-11-20T09:00:00Z"  # a DateTime, not a number
    assert (by_agent["agent-a"]["events"], by_agent["agent-a"]["cost_usd"]) == (2, 0.5)
    _, out, _ = run(capsys, "query", "--url", store, "--saved", "loop-incidents", "-f", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["alert_id"], r["status"], r["resolved_at"]) for r in rows] == [
        (LOOP_ID, "resolved", "2026-11-20T09:00:10.250001Z"),
    ]
    _, out, _ = run(
        capsys, "query", "--url", store, "--saved", "top-sessions", "-n", "1", "-f", "csv"
    )
    assert next(csv.DictReader(io.StringIO(out)))["session_id"] == "s1"


def test_an_unknown_saved_query_names_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "query", "--saved", "nope")
    assert code == 2
    line = error_line(err)
    assert "no saved query 'nope'" in line
    assert all(name in line for name in SAVED_QUERIES)


def test_list_shows_names_views_and_descriptions(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "query", "--list", "--database", "prod")
    assert code == 0
    for q in SAVED_QUERIES.values():
        line = next(line for line in out.splitlines() if line.startswith(q.name + " "))
        assert f"prod.{q.view}" in line
        assert line.endswith(q.description)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["SELECT 1", "--saved", "top-sessions"], "give SQL or --saved NAME, not both"),
        ([], "give the SQL to run, or --saved NAME"),
        (["--list", "--saved", "top-sessions"], "--list takes no SQL and no --saved"),
        (["--saved", "top-sessions", "-p", "limit=3"], "--limit, not --param limit"),
        (["SELECT 1 FORMAT JSON"], "drop the FORMAT clause"),
        ([" ; "], "the SQL is empty"),
    ],
)
def test_argument_mistakes_are_one_line_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "query", *args)
    assert (code, out) == (2, "")
    assert message in error_line(err)


def test_writes_are_refused(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "query", "--url", store, "DROP TABLE agentwatch.events")
    assert code == 2
    assert "read-only statements" in error_line(err)
    code, out, _ = run(
        capsys, "query", "--url", store, "-f", "csv", "SELECT count() FROM agentwatch.events"
    )
    assert (code, out.splitlines()[1]) == (0, "3")


def test_sql_errors_are_one_short_line(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "query", "--url", store, "SELECT nope FROM agentwatch.events")
    assert code == 2
    line = error_line(err)
    assert line.startswith("agentwatch: error: query failed: Code: 47. DB::Exception: ")
    assert line.endswith("(UNKNOWN_IDENTIFIER)")
    # a syntax error: ClickHouse lists every token it expected; positions are the user's
    code, _, err = run(capsys, "query", "--url", store, "SELECT 1 +")
    assert code == 2
    line = error_line(err)
    assert "Syntax error: failed at position 11 (end of query)" in line
    assert line.endswith("(SYNTAX_ERROR)")
    assert len(line) < 360


def test_a_missing_store_is_an_error_and_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "query", "--url", str(tmp_path / "nope"), "SELECT 1")
    assert code == 2
    assert f"no chDB database at {tmp_path / 'nope'}" in error_line(err)
    assert not (tmp_path / "nope").exists()


def test_the_demo_directory_points_to_its_chdb_subdirectory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "migrate", "--url", str(tmp_path / "clickhouse")]) == 0
    code, _, err = run(capsys, "query", "--url", str(tmp_path), "SELECT 1")
    assert code == 2
    assert error_line(err).endswith(f"use --url {tmp_path / 'clickhouse'}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clickhouse"]  # nothing written


def test_the_store_comes_from_clickhouse_url(
    store: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLICKHOUSE_URL", f"chdb://{store}")
    code, out, _ = run(capsys, "query", "-f", "csv", "SELECT count() FROM agentwatch.events")
    assert (code, out.splitlines()[1]) == (0, "3")


def test_as_a_user_runs_it_no_traceback(store: str) -> None:
    command = Path(sys.executable).with_name("agentwatch")  # the installed entry point
    proc = subprocess.run(
        [str(command), "query", "--url", store, "SELECT FROM WHERE"],
        capture_output=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert "Traceback" not in err
    assert err.startswith("agentwatch: error: query failed: Code: 62.")
    assert err.count("\n") == 1


def test_table_and_json_renderers_directly() -> None:
    lines, cut = table_lines(
        ["a", "b", "c"],
        [
            (1.5, None, datetime(2026, 1, 1, tzinfo=UTC)),
            (2**100, "x", datetime(2026, 1, 1, 0, 0, 0, 1000, tzinfo=UTC)),
        ],
    )
    assert not cut
    assert lines == [
        "                              a  b     c",
        "-------------------------------  ----  -----------------------",
        "                            1.5  NULL  2026-01-01 00:00:00.000",
        "1267650600228229401496703205376  x     2026-01-01 00:00:00.001",
    ]
    out = io.StringIO()
    row = {"big": 2**100, "d": Decimal("1.50"), "l": [2**70], "nan": float("nan")}
    write_json_lines(out, [row])
    assert json.loads(out.getvalue(), parse_float=Decimal) == {
        "big": 2**100,
        "d": Decimal("1.50"),
        "l": [2**70],
        "nan": None,
    }
