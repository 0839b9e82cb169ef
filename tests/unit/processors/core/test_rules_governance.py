"""Config of the tool_policy, guardrail and loop_cycle rules: errors name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentwatch.processors.core import (
    GuardrailRule,
    ToolPolicyRule,
    load_rules,
    rules_from_mapping,
)
from agentwatch.schemas import AlertScope, ConfigError


def _error(rules: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        rules_from_mapping({"rules": rules})
    return str(caught.value)


def test_policy_without_allow_or_deny_is_named() -> None:
    message = _error({"p": {"type": "tool_policy", "policies": [{"agents": ["a*"]}]}})
    assert "rules.p.policies.0: a policy needs `allow` or `deny`" in message


def test_misspelled_policy_key_is_named() -> None:
    message = _error({"p": {"type": "tool_policy", "policies": [{"alow": ["x"]}]}})
    assert "`rules.p.policies.0.alow`: unknown key" in message


def test_policy_globs_must_be_a_list_of_strings() -> None:
    message = _error({"p": {"type": "tool_policy", "policies": [{"deny": "drop_table"}]}})
    assert "`rules.p.policies.0.deny`" in message


def test_tool_policy_is_session_scoped_only() -> None:
    message = _error({"p": {"type": "tool_policy", "scope": "agent",
                            "policies": [{"deny": ["x"]}]}})
    assert "`rules.p.scope`" in message


def test_misspelled_tool_policy_key_suggests_the_right_one() -> None:
    message = _error({"p": {"type": "tool_policy", "polices": []}})
    assert "`rules.p.polices`: unknown key (did you mean policies?)" in message


def test_guardrail_with_both_thresholds_off_is_named() -> None:
    message = _error({"g": {"type": "guardrail", "min_trips": None}})
    assert "rules.g.min_trips: set min_trips or threshold_ratio" in message


def test_guardrail_resolve_below_must_be_below_min_trips() -> None:
    message = _error({"g": {"type": "guardrail", "min_trips": 3, "resolve_below_trips": 3}})
    assert "rules.g.resolve_below_trips: must be below min_trips (3), got 3" in message


def test_guardrail_ratio_out_of_range_is_named() -> None:
    message = _error({"g": {"type": "guardrail", "threshold_ratio": 1.5}})
    assert "`rules.g.threshold_ratio`" in message
    assert "1.5" in message


def test_guardrail_window_must_be_a_multiple_of_the_step() -> None:
    with pytest.raises(ConfigError, match=r"rules\.g\.window_s"):
        rules_from_mapping({"step_ms": 2000,
                            "rules": {"g": {"type": "guardrail", "window_s": 301}}})


def test_loop_cycle_period_below_two_is_named() -> None:
    message = _error({"loop_cycle": {"max_period": 1}})
    assert "`rules.loop_cycle.max_period`: Input should be greater than or equal to 2" in message


def test_loop_cycle_can_be_disabled() -> None:
    config = rules_from_mapping({"rules": {"loop_cycle": {"enabled": False}}})
    assert "loop_cycle" not in config.enabled_rules


def test_new_rule_types_are_listed_when_the_type_is_missing() -> None:
    message = _error({"x": {"window_s": 60}})
    assert "loop_cycle" in message
    assert "guardrail" in message
    assert "tool_policy" in message


def test_readme_example_rules_file_loads(tmp_path: Path) -> None:
    """The README's example (section "Governance rules") as a file."""
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n"
        "  tool_policy:\n"
        "    type: tool_policy\n"
        "    policies:\n"
        "      - agents: [retail-*]\n"
        "        allow: [purchase_history, draft_*, send_email]\n"
        "      - agents: ['*']\n"
        "        deny: [drop_*, shell_*]\n"
        "  agent_guardrail:\n"
        "    type: guardrail\n"
        "    scope: agent\n"
        "    window_s: 300\n"
        "    min_trips: 5\n"
        "    threshold_ratio: 0.2\n"
        "    min_events: 20\n"
        "  loop_cycle:\n"
        "    min_repeats: 6\n"
    )
    config = load_rules(path)
    policy, guardrail = config.rules["tool_policy"], config.rules["agent_guardrail"]
    assert isinstance(policy, ToolPolicyRule)
    assert policy.policies[0].allow == ("purchase_history", "draft_*", "send_email")
    assert isinstance(guardrail, GuardrailRule)
    assert (guardrail.scope, guardrail.threshold_ratio, guardrail.resolve_below) == (
        AlertScope.AGENT, 0.2, 4)
