"""`agentwatch webhooks` (the dispatcher): user mistakes are one line before Kafka is
touched; an unreachable broker is retried, and SIGTERM meanwhile stops it cleanly.
Deliveries through a real broker: tests/integration/test_webhooks_kafka.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cli_helpers import run_installed, waits_for_kafka_then_stops_on_sigterm


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_installed(*args, drop=("AGENTWATCH_WEBHOOKS",), **env)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("agentwatch: error: ")
    return lines[0]


def test_help_names_the_options_the_env_vars_and_the_test_command() -> None:
    proc = run("webhooks", "--help")
    assert proc.returncode == 0
    for text in ("--endpoints", "AGENTWATCH_WEBHOOKS_FILE", "KAFKA_BOOTSTRAP_SERVERS",
                 "AGENTWATCH_WEBHOOKS_GROUP", "agentwatch.alerts.dlq", "test"):
        assert text in proc.stdout, text


def test_without_an_endpoints_file_it_says_how_to_give_one() -> None:
    line = one_error_line(run("webhooks"))
    assert "AGENTWATCH_WEBHOOKS_FILE" in line
    assert "--endpoints FILE" in line


def test_a_missing_or_bad_endpoints_file_is_named_with_the_bad_key(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    assert "nope.yaml" in one_error_line(run("webhooks", "--endpoints", missing))
    bad = tmp_path / "endpoints.yaml"
    bad.write_text("endpoints:\n  - name: a\n    url: http://127.0.0.1:9/\n    secret: s\n"
                   "    max_attempts: 0\n")
    line = one_error_line(run("webhooks", "--endpoints", str(bad)))
    assert "`endpoints[0].max_attempts`" in line
    line = one_error_line(run("webhooks", AGENTWATCH_WEBHOOKS_FILE=str(bad),
                              AGENTWATCH_WEBHOOKS_MAX_IN_FLIGHT="lots"))
    assert "AGENTWATCH_WEBHOOKS_MAX_IN_FLIGHT" in line


def test_an_unreachable_broker_is_retried_and_sigterm_stops_cleanly(tmp_path: Path) -> None:
    endpoints = tmp_path / "endpoints.yaml"
    endpoints.write_text("endpoints:\n  - name: a\n    url: http://127.0.0.1:9/\n"
                         "    secret: s\n")
    waits_for_kafka_then_stops_on_sigterm(["webhooks", "--endpoints", str(endpoints)],
                                          tmp_path / "webhooks.log")
