"""Runs of the ``agentwatch`` command for the CLI tests: in this process, or as the
installed entry point in a process of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentwatch.cli.__main__ import main

AGENTWATCH = Path(sys.executable).with_name("agentwatch")  # the installed entry point
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``agentwatch ARGS`` in this process: (exit code, stdout, stderr)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    """The one line a user mistake prints (and nothing else)."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("agentwatch: error: "), err
    return lines[0]


def run_installed(*args: str, drop: tuple[str, ...] = (), timeout_s: float = 120,
                  **env: str) -> subprocess.CompletedProcess[str]:
    """``agentwatch ARGS`` as its own process, with ``env`` added to this environment minus
    the variables whose names start with one of ``drop``; COLUMNS=250, because rich wraps
    help at 80 columns without a terminal."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(drop)} if drop else {
        **os.environ}
    return subprocess.run(
        [str(AGENTWATCH), *args], capture_output=True, text=True, timeout=timeout_s,
        check=False, env={**base, "COLUMNS": "250", **env},
    )


def waits_for_kafka_then_stops_on_sigterm(args: list[str], log: Path) -> str:
    """Start ``agentwatch ARGS`` against a closed port, wait until it logs that it cannot
    reach Kafka (still running), SIGTERM it, assert exit 0; returns its output."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(AGENTWATCH), *args], stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"},
        )
    deadline = time.monotonic() + 60
    while "cannot reach Kafka at 127.0.0.1:1" not in log.read_text():
        assert proc.poll() is None, log.read_text()  # still running: it waits for Kafka
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    text = log.read_text()
    assert "Traceback" not in text
    return text
