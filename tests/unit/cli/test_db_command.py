"""`agentwatch db migrate | ddl | status` on a real chDB store."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from cli_helpers import error_line, run

from agentwatch.cli.__main__ import main
from agentwatch.sinks import MIGRATIONS, VIEWS, ChdbBackend, SchemaConfig, schema_statements


def test_migrate_applies_every_migration_then_is_up_to_date(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = str(tmp_path / "chdb")
    code, out, err = run(capsys, "db", "migrate", "--url", url)
    assert (code, err) == (0, "")
    versions = [m.version for m in MIGRATIONS]
    last = versions[-1]
    assert out == (
        f"applied migrations {', '.join(map(str, versions))} to chDB at {url}, "
        f"database agentwatch (schema version {last})\n"
    )
    code, out, err = run(capsys, "db", "migrate", "--url", url)
    assert (code, err) == (0, "")
    assert out == f"schema is up to date (version {last}) in chDB at {url}, database agentwatch\n"
    with ChdbBackend(url) as backend:
        ledger = backend.query("SELECT version FROM agentwatch.schema_migrations ORDER BY version")
    assert [row[0] for row in ledger.rows] == versions  # recorded once each


def test_migrate_then_status_shows_versions_and_row_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = str(tmp_path / "chdb")
    assert main(["db", "migrate", "--url", url, "--database", "obs"]) == 0
    capsys.readouterr()
    code, out, err = run(capsys, "db", "status", "--url", url, "--database", "obs")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    n = len(MIGRATIONS)
    assert lines[0] == f"chDB at {url}, database obs: schema version {n}, up to date"
    assert lines[1].split() == ["version", "migration", "applied", "at"]
    for migration, line in zip(MIGRATIONS, lines[3:3 + n], strict=True):
        assert line.split()[0] == str(migration.version)
        assert migration.name in line
        assert line.split()[-2].startswith("20")  # the date it was applied
    assert lines[3 + n] == "rows: events 0, rollups_1m 0, alerts 0, dead_letters 0"
    assert len(lines) == 4 + n


def test_status_shows_pending_migrations_and_migrate_applies_only_those(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = str(tmp_path / "chdb")
    assert main(["db", "migrate", "--url", url]) == 0
    last = MIGRATIONS[-1].version
    with ChdbBackend(url) as backend:  # forget the last one, as if this were an older schema
        backend.command(f"DELETE FROM agentwatch.schema_migrations WHERE version = {last}")
        backend.command(
            "INSERT INTO agentwatch.events (event_id, ts, agent_id, session_id, kind)"
            " SELECT 'e1', now64(6), 'a', 's', 'llm_call'"
        )
    capsys.readouterr()
    code, out, _ = run(capsys, "db", "status", "--url", url)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].endswith(
        f"schema version {last - 1}, 1 migration pending: run `agentwatch db migrate`")
    assert lines[2 + last].split()[0] == str(last)
    assert lines[2 + last].endswith("pending")
    assert lines[3 + last].startswith("rows: events 1, rollups_1m 1, ")
    code, out, _ = run(capsys, "db", "migrate", "--url", url)
    assert (code, out.split(" to ")[0]) == (0, f"applied migration {last}")


def test_status_of_an_empty_directory_says_the_database_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "db", "status", "--url", str(tmp_path))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == (
        f"chDB at {tmp_path}, database agentwatch: database agentwatch does not exist: "
        "run `agentwatch db migrate`"
    )
    assert [line.split()[-1] for line in lines[3:]] == ["pending"] * len(MIGRATIONS)


def test_status_of_a_missing_path_is_an_error_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "db", "status", "--url", f"chdb://{tmp_path / 'none'}")
    assert code == 2
    assert error_line(err).startswith(f"agentwatch: error: no chDB database at {tmp_path}/none")
    assert not (tmp_path / "none").exists()


def test_ttl_days_is_set_when_the_tables_are_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLICKHOUSE_URL", str(tmp_path / "chdb"))  # no --url: the env var
    assert main(["db", "migrate", "--ttl-days", "7"]) == 0
    capsys.readouterr()
    code, out, _ = run(
        capsys,
        "query",
        "-f",
        "csv",
        "SELECT engine_full FROM system.tables WHERE database = 'agentwatch' AND name = 'events'",
    )
    assert code == 0
    engine = next(csv.reader(io.StringIO(out.splitlines()[1])))[0]
    assert "TTL toDateTime(ts) + toIntervalDay(7)" in engine
    code, _, err = run(capsys, "db", "migrate", "--ttl-days", "9")
    assert code == 0
    assert err.startswith("agentwatch: note: --ttl-days applies only to tables created now")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ttl-days", "soon"], "--ttl-days: 'soon' is not a valid int"),
        (["--ttl-days", "0"], "--ttl-days: 0 is not a whole number of days >= 1"),
        (["--database", "my-db"], "database 'my-db' is not a plain identifier"),
        (["--cluster", "c"], "--cluster c: chDB is a single embedded engine"),
    ],
)
def test_migrate_mistakes_are_one_line_errors(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "db", "migrate", "--url", str(tmp_path / "chdb"), *args)
    assert (code, out) == (2, "")
    assert message in error_line(err)
    assert not (tmp_path / "chdb" / "metadata").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["db", "migrate", "--url", "chdb://"],
        ["db", "status", "--url", "chdb://"],
        ["query", "--url", "chdb://", "SELECT 1"],
    ],
)
def test_a_url_naming_no_directory_is_refused_not_the_working_directory(
    args: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *args)
    assert (code, out) == (2, "")
    assert error_line(err).startswith("agentwatch: error: --url: 'chdb://' names no chDB directory")
    assert list(tmp_path.iterdir()) == []  # no database in the working directory


def test_a_bad_env_var_is_named(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTWATCH_TTL_DAYS", "a week")
    code, _, err = run(capsys, "db", "ddl")
    assert code == 2
    assert error_line(err) == (
        "agentwatch: error: AGENTWATCH_TTL_DAYS: 'a week' is not a valid int"
    )


def test_ddl_prints_every_statement_terminated(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "db", "ddl")
    assert code == 0
    statements = schema_statements(SchemaConfig())
    assert out == "".join(f"{s};\n\n" for s in statements)
    assert "CREATE VIEW IF NOT EXISTS `agentwatch`.open_alerts" in out
    assert "INTERVAL 30 DAY" in out


@pytest.mark.parametrize("args", [[], ["--cluster", "c"], ["--ttl-days", "none"]])
def test_ddl_comments_show_no_template_syntax(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The .sql files are string.Template text; the printed DDL has every field filled
    in, and its comments name the fields without $-syntax that looks unfilled."""
    code, out, _ = run(capsys, "db", "ddl", *args)
    assert code == 0
    assert "$" not in out
    comments = [line for line in out.splitlines() if line.lstrip().startswith("--")]
    assert any("Template fields" in line for line in comments)


def test_ddl_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "db", "ddl", "--database", "prod", "--ttl-days", "none")
    assert code == 0
    assert out == "".join(
        f"{s};\n\n" for s in schema_statements(SchemaConfig(database="prod", ttl_days=None))
    )
    assert "`prod`.events" in out
    assert "TTL toDateTime" not in out


def test_ddl_for_a_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "db", "ddl", "--cluster", "c")
    assert code == 0
    assert out == "".join(f"{s};\n\n" for s in schema_statements(SchemaConfig(cluster="c")))
    assert "CREATE DATABASE IF NOT EXISTS `agentwatch` ON CLUSTER `c`" in out
    assert "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/agentwatch/events'" in out
    assert "ENGINE = Distributed('c', 'agentwatch', 'events', rand())" in out
    assert "ENGINE = MergeTree" not in out


def test_ddl_output_applies_on_a_fresh_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What users apply themselves creates the same schema; migrate then records it."""
    code, out, _ = run(capsys, "db", "ddl")
    assert code == 0
    url = str(tmp_path / "chdb")
    with ChdbBackend(url) as backend:
        for statement in out.split(";\n\n"):
            if statement.strip():
                backend.command(statement)
        views = backend.query(
            "SELECT count() FROM system.tables WHERE database = 'agentwatch' AND engine = 'View'"
        )
    assert views.rows == [(len(VIEWS),)]
    code, out, _ = run(capsys, "db", "migrate", "--url", url)
    versions = ", ".join(str(m.version) for m in MIGRATIONS)
    assert out.startswith(f"applied migrations {versions} to ")  # recorded, nothing changed
