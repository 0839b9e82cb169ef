"""`agentwatch control`: user mistakes are one clear line, never a traceback."""

from __future__ import annotations

import pytest
from cli_helpers import error_line, run

from agentwatch.cli._control import ControlSettings, operator_record
from agentwatch.schemas import AlertScope, ConfigError, ControlAction


def test_agent_and_session_together_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "control", "halt", "--tenant", "acme", "--agent", "a",
                       "--session", "s", "--reason", "r")
    assert code == 2
    assert "--agent and --session: give one of them" in error_line(err)


def test_a_halt_needs_a_reason(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "control", "halt", "--tenant", "acme", "--reason", "  ")
    assert code == 2
    assert "--reason: say why" in error_line(err)


def test_an_empty_tenant_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "control", "resume", "--tenant", "")
    assert code == 2
    assert "--tenant: must not be empty" in error_line(err)


def test_an_unreachable_broker_is_one_line_naming_the_variable(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "control", "list", "--bootstrap-servers", "127.0.0.1:1")
    assert code == 2
    assert "cannot reach Kafka at 127.0.0.1:1 (KAFKA_BOOTSTRAP_SERVERS)" in err
    assert "Traceback" not in err


def test_a_bad_list_format_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "control", "list", "--format", "xml")
    assert code == 2
    assert "--format: 'xml' is not one of table, json" in error_line(err)


def test_the_operator_record_scope_follows_the_options() -> None:
    session = operator_record(ControlAction.HALT, tenant="acme", agent=None, session="s",
                              reason="stuck", by="alice")
    assert (session.scope, session.key, session.by) == (
        AlertScope.SESSION, "session:acme/s", "alice")
    resume = operator_record(ControlAction.RESUME, tenant="acme", agent=None, session=None,
                             reason=None, by=None)
    assert (resume.scope, resume.reason) == (AlertScope.TENANT, "resumed by an operator")
    assert resume.by


def test_a_bad_replication_factor_variable_is_named() -> None:
    with pytest.raises(ConfigError, match="AGENTWATCH_REPLICATION_FACTOR"):
        ControlSettings.from_env({"AGENTWATCH_REPLICATION_FACTOR": "two"})
