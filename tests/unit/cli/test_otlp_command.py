"""``agentwatch otlp``: the user mistakes it names in one line."""

from __future__ import annotations

import socket

import pytest
from cli_helpers import error_line, run


@pytest.fixture(autouse=True)
def _no_agentwatch_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTWATCH_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("AGENTWATCH_SPOOL_DIR", raising=False)


def test_without_a_broker_it_says_where_to_name_one(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "otlp")
    assert code == 2
    assert "--bootstrap-servers or AGENTWATCH_BOOTSTRAP_SERVERS" in error_line(err)


def test_a_bad_loglevel_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "otlp", "--bootstrap-servers", "127.0.0.1:1", "--loglevel", "x")
    assert code == 2
    assert "--loglevel: 'x'" in error_line(err)


def test_a_port_in_use_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run(capsys, "otlp", "--bootstrap-servers", "127.0.0.1:1",
                           "--port", str(port), "--loglevel", "error")
    assert code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in error_line(err)
