"""Rules configuration: defaults, YAML/TOML files, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentwatch.processors.core import (
    CostRule,
    Engine,
    ErrorRateRule,
    LoopCycleRule,
    LoopRepeatRule,
    LoopStepsRule,
    RulesConfig,
    load_rules,
    rules_from_mapping,
)
from agentwatch.schemas import AlertScope, ConfigError


# -- defaults (DESIGN.md, "Default rules") ----------------------------------------------------
def test_default_rules_match_the_design_table() -> None:
    rules = RulesConfig.default().rules
    assert set(rules) == {"session_cost", "agent_error_rate", "loop_repeat", "loop_steps",
                          "loop_cycle"}
    cost, errors = rules["session_cost"], rules["agent_error_rate"]
    repeat, steps = rules["loop_repeat"], rules["loop_steps"]
    assert isinstance(cost, CostRule)
    assert (cost.scope, cost.window_s, cost.threshold_usd) == (AlertScope.SESSION, 60, 1.0)
    assert isinstance(errors, ErrorRateRule)
    assert (errors.scope, errors.window_s, errors.min_events, errors.threshold_ratio) == (
        AlertScope.AGENT, 300, 20, 0.25)
    assert isinstance(repeat, LoopRepeatRule)
    assert (repeat.scope, repeat.window_s, repeat.min_repeats) == (AlertScope.SESSION, 120, 5)
    assert isinstance(steps, LoopStepsRule)
    assert (steps.scope, steps.max_steps) == (AlertScope.SESSION, 200)
    cycle = rules["loop_cycle"]
    assert isinstance(cycle, LoopCycleRule)
    assert (cycle.scope, cycle.window_s, cycle.max_period, cycle.min_repeats) == (
        AlertScope.SESSION, 120, 4, 5)


def test_load_rules_none_gives_defaults() -> None:
    assert load_rules(None) == RulesConfig.default()


# -- files ------------------------------------------------------------------------------------
def test_yaml_file_overrides_only_the_given_keys(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "disorder_s: 2\n"
        "rules:\n"
        "  session_cost:\n"
        "    threshold_usd: 2.5\n"
        "  agent_error_rate:\n"
        "    enabled: false\n",
        encoding="utf-8",
    )
    config = load_rules(path)
    cost = config.rules["session_cost"]
    assert isinstance(cost, CostRule)
    assert (cost.threshold_usd, cost.window_s) == (2.5, 60)
    assert config.disorder_us == 2_000_000
    assert "agent_error_rate" not in config.enabled_rules


def test_yml_suffix_loads_as_yaml(tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text("step_ms: 500\n", encoding="utf-8")
    assert load_rules(path).step_us == 500_000


def test_toml_file_loads_and_adds_a_new_rule(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        "session_idle_timeout_s = 600\n"
        "[rules.tenant_cost]\n"
        'type = "cost"\n'
        'scope = "tenant"\n'
        "window_s = 3600\n"
        "threshold_usd = 200\n",
        encoding="utf-8",
    )
    config = load_rules(path)
    tenant_cost = config.rules["tenant_cost"]
    assert isinstance(tenant_cost, CostRule)
    assert (tenant_cost.scope, tenant_cost.window_s, tenant_cost.threshold_usd) == (
        AlertScope.TENANT, 3600, 200.0)
    assert config.session_idle_timeout_s == 600
    assert "session_cost" in config.rules  # defaults stay


def test_empty_yaml_file_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("", encoding="utf-8")
    assert load_rules(path) == RulesConfig.default()


def test_missing_file_is_config_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="cannot read rules file") as info:
        load_rules(path)
    assert str(path) in str(info.value)


def test_directory_instead_of_file_is_config_error(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.mkdir()
    with pytest.raises(ConfigError, match="cannot read rules file"):
        load_rules(path)


def test_bad_yaml_syntax_is_config_error(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_rules(path)


def test_bad_toml_syntax_is_config_error(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("rules = = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_rules(path)


def test_unknown_file_suffix_is_config_error(tmp_path: Path) -> None:
    path = tmp_path / "rules.ini"
    path.write_text("[rules]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown rules file type"):
        load_rules(path)


def test_top_level_list_is_config_error(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_rules(path)


def test_error_from_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  session_cost:\n    treshold_usd: 2\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_rules(path)
    assert str(info.value).startswith(str(path))


# -- errors name the key ----------------------------------------------------------------------
def test_misspelled_rule_key_is_named_in_the_error() -> None:
    with pytest.raises(ConfigError, match=r"`rules\.session_cost\.treshold_usd`: unknown key"):
        rules_from_mapping({"rules": {"session_cost": {"treshold_usd": 2}}})


def test_bad_rule_value_names_the_key_and_the_value() -> None:
    with pytest.raises(ConfigError) as info:
        rules_from_mapping({"rules": {"session_cost": {"threshold_usd": -1}}})
    message = str(info.value)
    assert "`rules.session_cost.threshold_usd`" in message
    assert "greater than 0" in message
    assert "(got -1)" in message


def test_bad_top_level_value_names_the_key() -> None:
    with pytest.raises(ConfigError, match="`step_ms`"):
        rules_from_mapping({"step_ms": 0})


def test_unknown_top_level_key_is_named() -> None:
    with pytest.raises(ConfigError, match="`disorder_seconds`: unknown key"):
        rules_from_mapping({"disorder_seconds": 5})


def test_new_rule_without_type_is_config_error() -> None:
    with pytest.raises(ConfigError, match=r"`rules\.tenant_cost\.type`: a new rule needs a type"):
        rules_from_mapping({"rules": {"tenant_cost": {"threshold_usd": 5}}})


def test_new_rule_with_unknown_type_is_config_error() -> None:
    with pytest.raises(ConfigError, match=r"rules\.tenant_cost"):
        rules_from_mapping({"rules": {"tenant_cost": {"type": "throughput"}}})


def test_rule_settings_not_a_mapping_is_config_error() -> None:
    with pytest.raises(ConfigError, match=r"`rules\.session_cost`: expected a mapping"):
        rules_from_mapping({"rules": {"session_cost": 5}})


def test_rules_not_a_mapping_is_config_error() -> None:
    with pytest.raises(ConfigError, match="`rules`: expected a mapping"):
        rules_from_mapping({"rules": ["session_cost"]})


def test_window_not_a_multiple_of_step_is_config_error() -> None:
    with pytest.raises(ConfigError, match=r"rules\.session_cost\.window_s: .*multiple of step_ms"):
        rules_from_mapping({"step_ms": 7000})


def test_disorder_not_shorter_than_window_is_config_error() -> None:
    with pytest.raises(ConfigError, match=r"rules\.session_cost\.window_s: .*longer than"):
        rules_from_mapping({"disorder_s": 60})


def test_changing_a_default_rule_type_replaces_it() -> None:
    config = rules_from_mapping(
        {"rules": {"session_cost": {"type": "loop_steps", "max_steps": 10}}})
    rule = config.rules["session_cost"]
    assert isinstance(rule, LoopStepsRule)
    assert rule.max_steps == 10


# -- enabling ---------------------------------------------------------------------------------
def test_disabled_rule_has_no_detector() -> None:
    config = rules_from_mapping({"rules": {"loop_steps": {"enabled": False}}})
    engine = Engine(config)
    assert [d.name for d in engine.detectors] == [
        "session_cost", "agent_error_rate", "loop_repeat", "loop_cycle"]


def test_engine_scopes_select_detectors() -> None:
    engine = Engine(scopes=[AlertScope.AGENT])
    assert [d.name for d in engine.detectors] == ["agent_error_rate"]


# -- hysteresis settings ----------------------------------------------------------------------
def test_resolve_below_defaults_to_four_fifths_of_the_threshold() -> None:
    config = rules_from_mapping({"rules": {"session_cost": {"threshold_usd": 2.5}}})
    cost, errors = config.rules["session_cost"], config.rules["agent_error_rate"]
    assert isinstance(cost, CostRule)
    assert isinstance(errors, ErrorRateRule)
    assert (cost.resolve_below_usd, cost.resolve_below) == (None, pytest.approx(2.0))
    assert (errors.resolve_below_ratio, errors.resolve_below) == (None, pytest.approx(0.2))
    assert (cost.resolve_after_s, errors.resolve_after_s) == (None, None)


def test_resolve_settings_are_read() -> None:
    config = rules_from_mapping({"rules": {
        "session_cost": {"resolve_below_usd": 0.5, "resolve_after_s": 30},
        "agent_error_rate": {"resolve_below_ratio": 0.1, "resolve_after_s": 0},
    }})
    cost, errors = config.rules["session_cost"], config.rules["agent_error_rate"]
    assert isinstance(cost, CostRule)
    assert isinstance(errors, ErrorRateRule)
    assert (cost.resolve_below, cost.resolve_after_s) == (0.5, 30)
    assert (errors.resolve_below, errors.resolve_after_s) == (0.1, 0)


@pytest.mark.parametrize(("rule", "settings", "message"), [
    ("agent_error_rate", {"resolve_below_ratio": 0.25},
     r"rules\.agent_error_rate\.resolve_below_ratio: must be below threshold_ratio \(0\.25\), "
     r"got 0\.25"),
    ("agent_error_rate", {"threshold_ratio": 0.1, "resolve_below_ratio": 0.15},
     r"rules\.agent_error_rate\.resolve_below_ratio: must be below threshold_ratio \(0\.1\)"),
    ("agent_error_rate", {"resolve_below_ratio": -0.1},
     r"`rules\.agent_error_rate\.resolve_below_ratio`: .*greater than or equal to 0"),
    ("agent_error_rate", {"resolve_after_s": -1},
     r"`rules\.agent_error_rate\.resolve_after_s`: .*greater than or equal to 0 \(got -1\)"),
    ("session_cost", {"resolve_below_usd": 1.5},
     r"rules\.session_cost\.resolve_below_usd: must be below threshold_usd \(1\.0\), got 1\.5"),
    ("session_cost", {"resolve_below_usd": -1},
     r"`rules\.session_cost\.resolve_below_usd`: .*greater than or equal to 0"),
    ("session_cost", {"resolve_after_s": "soon"},
     r"`rules\.session_cost\.resolve_after_s`: .*valid integer"),
    ("session_cost", {"resolve_below": 0.5},
     r"`rules\.session_cost\.resolve_below`: unknown key \(did you mean resolve_below_usd\?\)"),
])
def test_bad_resolve_settings_name_the_key(rule: str, settings: dict[str, object],
                                           message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        rules_from_mapping({"rules": {rule: settings}})


def test_resolve_settings_are_not_accepted_by_loop_rules() -> None:
    with pytest.raises(ConfigError, match=r"`rules\.loop_repeat\.resolve_after_s`: unknown key"):
        rules_from_mapping({"rules": {"loop_repeat": {"resolve_after_s": 5}}})


def test_the_readme_rules_example_loads(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[4] / "README.md").read_text(encoding="utf-8")
    start = readme.index("```yaml\ndisorder_s:") + len("```yaml\n")
    path = tmp_path / "rules.yaml"
    path.write_text(readme[start:readme.index("```", start)], encoding="utf-8")
    tenant = load_rules(path).rules["tenant_cost"]
    assert isinstance(tenant, CostRule)
    assert (tenant.resolve_below, tenant.resolve_after_s) == (150, 600)
