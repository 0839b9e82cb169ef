"""`agentwatch sink`: its help, and settings checked before Kafka is touched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import AGENTWATCH, waits_for_kafka_then_stops_on_sigterm
from cli_helpers import run_installed as run


def test_help_names_the_options_and_their_env_vars() -> None:
    proc = run("sink", "--help")
    assert proc.returncode == 0, proc.stderr
    for text in (
        "--bootstrap-servers",
        "KAFKA_BOOTSTRAP_SERVERS",
        "--group-id",
        "AGENTWATCH_SINK_GROUP",
        "--url",
        "CLICKHOUSE_URL",
        "AGENTWATCH_SINK_",
    ):
        assert text in proc.stdout
    assert "sink" in run("--help").stdout


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            [],
            {"AGENTWATCH_SINK_BATCH_MAX_MS": "soon"},
            "AGENTWATCH_SINK_BATCH_MAX_MS: 'soon' is not a valid int",
        ),
        (
            [],
            {"AGENTWATCH_SINK_BATCH_MAX_EVENTS": "0"},
            "AGENTWATCH_SINK_BATCH_MAX_EVENTS: 0 is not >= 1",
        ),
        ([], {"CLICKHOUSE_DATABASE": "my-db"}, "database 'my-db' is not a plain identifier"),
        (
            ["--group-id", "g"],
            {"AGENTWATCH_TTL_DAYS": "-1"},
            "AGENTWATCH_TTL_DAYS: -1 is not a whole number of days >= 1",
        ),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_2(
    args: list[str], env: dict[str, str], message: str, tmp_path: Path
) -> None:
    # CLICKHOUSE_URL points at a path that must stay untouched: settings fail first
    proc = run("sink", *args, **{"CLICKHOUSE_URL": str(tmp_path / "chdb"), **env})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"agentwatch: error: {message}")
    assert proc.stderr.count("\n") == 1
    assert not (tmp_path / "chdb").exists()


def test_a_store_url_naming_no_directory_is_refused_before_anything(tmp_path: Path) -> None:
    """`chdb://` (no path) once opened the working directory as the database."""
    proc = subprocess.run(
        [str(AGENTWATCH), "sink", "--url", "chdb://"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"},
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        "agentwatch: error: --url: 'chdb://' names no chDB directory (give a path or chdb://PATH)\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_settings_are_parsed_before_the_kafka_module_is_imported() -> None:
    code = (
        "import sys\n"
        "from agentwatch.cli.__main__ import main\n"
        "rc = main(['sink'])\n"
        "print(rc, 'agentwatch.sinks.kafka' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "AGENTWATCH_SINK_BATCH_MAX_MS": "soon"},
    )
    assert proc.stdout == "2 False\n", proc.stderr


def test_an_unknown_log_level_is_one_line_and_exit_2() -> None:
    proc = run("sink", "--loglevel", "loud")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "agentwatch: error: --loglevel: 'loud' is not one of debug, info, warning, error"
    )
    assert "Traceback" not in proc.stderr


def test_python_dash_m_runs_without_a_warning() -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-m", "agentwatch.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr


def test_an_unreachable_broker_is_retried_and_sigterm_stops_cleanly(tmp_path: Path) -> None:
    text = waits_for_kafka_then_stops_on_sigterm(
        ["sink", "--url", str(tmp_path / "ch")], tmp_path / "sink.log")
    assert "sink: stopped" in text
