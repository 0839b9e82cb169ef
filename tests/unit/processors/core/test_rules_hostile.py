"""The rules loader on hostile content: any parsed value gives rules or a ConfigError that
names the bad key; accepted rules build an engine that takes events without raising."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentwatch.processors.core import Engine, load_rules, rules_from_mapping
from agentwatch.schemas import ConfigError, Event, decode_event, to_us

sys.path.insert(0, str(Path(__file__).parents[2] / "schemas"))
from hostile_inputs import HOSTILE

KEYS = ["rules", "disorder_s", "step_ms", "session_idle_timeout_s", "dedup_ids_per_session",
        "session_cost", "agent_error_rate", "loop_repeat", "loop_steps", "tenant_cost", "type",
        "cost", "error_rate", "scope", "window_s", "threshold_usd", "threshold_ratio",
        "min_events", "min_repeats", "max_steps", "kinds", "enabled", "severity",
        "cooldown_s", "unknown"]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.sampled_from([*KEYS, "session", "agent", "tenant", "llm_call",
                                                 "critical"]),
    st.integers(min_value=-(2**70), max_value=2**70), st.floats(), st.text(max_size=5))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
    max_leaves=15)
RULE = st.fixed_dictionaries({}, optional=dict.fromkeys(KEYS[5:], VALUES))
CONFIGS = st.one_of(
    VALUES,
    st.fixed_dictionaries({}, optional={
        "rules": st.dictionaries(st.sampled_from(KEYS[5:10]), RULE, max_size=3),
        "disorder_s": SCALARS, "step_ms": SCALARS, "session_idle_timeout_s": SCALARS}),
)


def _event(i: int) -> Event:
    return decode_event({"event_id": str(uuid.UUID(int=i + 1)), "agent_id": "a",
                         "ts": f"2026-11-20T09:00:{i % 60:02d}Z", "session_id": "s",
                         "kind": "tool_call", "name": "t", "tool_args_hash": "h",
                         "cost_usd": 0.5})


@HOSTILE
@given(CONFIGS)
def test_any_content_gives_rules_or_a_config_error_naming_a_key(data: Any) -> None:
    try:
        config = rules_from_mapping(data)
    except ConfigError as exc:
        message = str(exc)
    else:
        message = ""
    if message:
        assert message.startswith("rules: ")
        assert len(message) > len("rules: ")
        return
    engine = Engine(config)
    for i in range(3):
        event = _event(i)
        engine.process(event, to_us(event.ts))
    engine.advance(to_us(_event(2).ts) + 10**9)


def test_a_self_referencing_yaml_alias_is_a_config_error(tmp_path: Path) -> None:
    file = tmp_path / "rules.yaml"
    file.write_text("rules: &r\n  session_cost: *r\n")
    with pytest.raises(ConfigError, match=r"rules\.session_cost"):
        load_rules(file)
