"""Halt rules in the worker: which rules halt, and the control records of their alerts."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from agentwatch.processors.core import RulesConfig, rules_from_mapping
from agentwatch.processors.worker._control import control_records, halt_rules
from agentwatch.processors.worker._session_stage import config_fingerprint
from agentwatch.schemas import (
    Alert,
    AlertScope,
    AlertState,
    AlertType,
    ConfigError,
    Severity,
    decode_control,
)

TS = datetime(2026, 11, 20, 9, 0, 1, tzinfo=UTC)


def _alert(rule: str, state: AlertState, scope: AlertScope = AlertScope.SESSION) -> Alert:
    return Alert(alert_id=f"id-{rule}", rule=rule, type=AlertType.RUNAWAY_LOOP, state=state,
                 severity=Severity.CRITICAL, scope=scope, key="k", tenant_id="acme",
                 agent_id="bot", session_id="s1" if scope is AlertScope.SESSION else None,
                 value=5, threshold=5, window_s=120, ts=TS, reason="looping")


def test_by_default_only_the_same_arguments_loop_halts() -> None:
    assert halt_rules(RulesConfig.default()) == frozenset({"loop_repeat"})


def test_any_rule_may_halt_and_a_disabled_one_does_not() -> None:
    config = rules_from_mapping({"rules": {
        "session_cost": {"action": "halt"}, "loop_repeat": {"enabled": False}}})
    assert halt_rules(config) == frozenset({"session_cost"})


def test_loop_repeat_can_be_told_to_notify_only() -> None:
    config = rules_from_mapping({"rules": {"loop_repeat": {"action": "notify"}}})
    assert halt_rules(config) == frozenset()


def test_a_bad_action_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"rules\.session_cost\.action"):
        rules_from_mapping({"rules": {"session_cost": {"action": "stop"}}})


def test_a_firing_halt_alert_writes_a_halt_and_its_resolution_a_resume_and_a_tombstone(
) -> None:
    rules = frozenset({"loop_repeat"})
    fired = control_records(rules, [_alert("loop_repeat", AlertState.FIRING),
                                    _alert("session_cost", AlertState.FIRING)])
    assert [(k, decode_control(v).action.value if v else None) for k, v in fired] == [
        (b"session:acme/s1", "halt")]
    resolved = control_records(rules, [_alert("loop_repeat", AlertState.RESOLVED)])
    assert [(k, None if v is None else orjson.loads(v)["action"]) for k, v in resolved] == [
        (b"session:acme/s1", "resume"), (b"session:acme/s1", None)]


def test_an_agent_scoped_halt_is_keyed_by_the_agent() -> None:
    [(key, value)] = control_records(frozenset({"r"}), [
        _alert("r", AlertState.FIRING, AlertScope.AGENT)])
    assert key == b"agent:acme/bot"
    assert value is not None
    assert decode_control(value).by == "r"


def test_the_action_does_not_change_the_state_fingerprint() -> None:
    halting = rules_from_mapping({"rules": {"session_cost": {"action": "halt"}}})
    assert config_fingerprint(halting) == config_fingerprint(RulesConfig.default())
    other = rules_from_mapping({"rules": {"session_cost": {"threshold_usd": 3}}})
    assert config_fingerprint(other) != config_fingerprint(RulesConfig.default())
