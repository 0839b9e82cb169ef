"""tool_policy (which tools an agent may call) and guardrail (trips over a window)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from agentwatch.processors.core import Engine, ToolPolicyDetector, rules_from_mapping
from agentwatch.schemas import AlertScope, AlertState, AlertType, Event, Severity, to_us

US = 1_000_000
EventFactory = Callable[..., Event]
_DEFAULTS = ("session_cost", "agent_error_rate", "loop_repeat", "loop_steps", "loop_cycle")

POLICIES: list[dict[str, Any]] = [
    {"agents": ["retail-*"], "allow": ["purchase_history", "draft_*"]},
    {"agents": ["*"], "deny": ["drop_table", "shell_*"]},
]


def _only(name: str, settings: dict[str, Any]) -> Engine:
    rules: dict[str, dict[str, Any]] = {n: {"enabled": False} for n in _DEFAULTS}
    rules[name] = settings
    return Engine(rules_from_mapping({"rules": rules}))


def _policy(**settings: Any) -> Engine:
    return _only("tool_policy", {"type": "tool_policy", "policies": POLICIES, **settings})


def _guardrail(**settings: Any) -> Engine:
    return _only("guardrail_trips", {"type": "guardrail", **settings})


def _tool(ev: EventFactory, t_s: float, name: str, agent: str = "retail-concierge",
          **fields: Any) -> Event:
    return ev(t_s, "tool_call", name=name, agent_id=agent, tool_args_hash=f"h{t_s}", **fields)


# -- tool_policy --------------------------------------------------------------------------------
def test_allowed_tools_do_not_fire(ev: EventFactory) -> None:
    engine = _policy()
    calls = [_tool(ev, 0, "purchase_history"), _tool(ev, 1, "draft_email"),
             _tool(ev, 2, "search", agent="campaign-optimizer")]
    assert engine.process_many(calls) == []
    assert engine.stats.active_keys == 0  # no violation, no state


def test_tool_outside_the_allow_list_fires(ev: EventFactory) -> None:
    engine = _policy()
    (alert,) = engine.process_many([_tool(ev, 0, "purchase_history"),
                                    _tool(ev, 1, "export_customers")])
    assert (alert.rule, alert.type, alert.state, alert.severity, alert.scope) == (
        "tool_policy", AlertType.TOOL_POLICY, AlertState.FIRING, Severity.CRITICAL,
        AlertScope.SESSION)
    assert (alert.key, alert.agent_id, alert.session_id) == (
        "sess-1", "retail-concierge", "sess-1")
    assert to_us(alert.ts) == 1 * US
    assert "`export_customers` is not on the allow-list of agent retail-concierge" in alert.reason
    assert "purchase_history, draft_*" in alert.reason
    assert alert.event_ids == ["00000000-0000-0000-0000-000000000002"]


def test_denied_tool_fires_for_any_agent_and_names_the_glob(ev: EventFactory) -> None:
    engine = _policy()
    (alert,) = engine.process(_tool(ev, 0, "shell_exec", agent="supply-chain-router"))
    assert "`shell_exec` is denied to agent supply-chain-router (deny: shell_*)" in alert.reason


def test_deny_wins_over_allow(ev: EventFactory) -> None:
    engine = _only("tool_policy", {"type": "tool_policy", "policies": [
        {"allow": ["*"], "deny": ["drop_table"]}]})
    assert len(engine.process(_tool(ev, 0, "drop_table"))) == 1


def test_globs_match_whole_names(ev: EventFactory) -> None:
    engine = _policy()
    (alert,) = engine.process(_tool(ev, 0, "xpurchase_history"))
    assert alert.state is AlertState.FIRING


def test_fires_once_per_session_and_counts_every_violation(ev: EventFactory) -> None:
    engine = _policy()
    calls = [_tool(ev, t, "export_customers") for t in range(3)]
    assert [a.state for a in engine.process_many(calls)] == [AlertState.FIRING]
    (resolved,) = engine.process(ev(5, "session_end", agent_id="retail-concierge"))
    assert resolved.state is AlertState.RESOLVED
    assert resolved.value == 3.0
    assert "made 3 tool calls outside its policy" in resolved.reason
    assert "the session ended" in resolved.reason
    assert resolved.event_ids == [calls[0].event_id]  # the first call of each tool


def test_event_ids_name_the_first_call_of_each_tool_outside_the_policy(
        ev: EventFactory) -> None:
    engine = _policy()
    calls = [_tool(ev, 0, "export"), _tool(ev, 1, "export"), _tool(ev, 2, "refund"),
             _tool(ev, 3, "purchase_history"), _tool(ev, 4, "refund")]
    engine.process_many(calls)
    (resolved,) = engine.process(ev(5, "session_end", agent_id="retail-concierge"))
    assert resolved.event_ids == [calls[0].event_id, calls[2].event_id]
    assert resolved.value == 4.0


def test_each_session_fires_on_its_own(ev: EventFactory) -> None:
    engine = _policy()
    alerts = engine.process_many([_tool(ev, 0, "export", session_id="a"),
                                  _tool(ev, 1, "export", session_id="b")])
    assert [a.key for a in alerts] == ["a", "b"]


def test_expired_session_resolves(ev: EventFactory) -> None:
    engine = _policy()
    engine.process(_tool(ev, 0, "export"))
    (resolved,) = engine.advance(4000 * US)
    assert resolved.state is AlertState.RESOLVED
    assert "expired" in resolved.reason


def test_no_policies_never_fire(ev: EventFactory) -> None:
    engine = _only("tool_policy", {"type": "tool_policy"})
    assert engine.process_many([_tool(ev, 0, "drop_table"), _tool(ev, 1, "x")]) == []


def test_tool_policy_is_off_by_default(ev: EventFactory) -> None:
    engine = Engine()
    assert "tool_policy" not in {d.name for d in engine.detectors}


def test_verdicts_are_cached_per_agent_and_tool() -> None:
    engine = _policy()
    (detector,) = engine.detectors
    assert isinstance(detector, ToolPolicyDetector)
    assert detector.verdict("retail-x", "draft_sms") == ""
    assert detector.verdict("retail-x", "refund") != ""
    assert detector.verdict("other", "refund") == ""


@pytest.mark.parametrize("split_at", [1, 2, 3])
def test_tool_policy_dump_and_load_give_the_same_alerts(ev: EventFactory, split_at: int) -> None:
    events = [_tool(ev, 0, "purchase_history"), _tool(ev, 1, "export"),
              _tool(ev, 2, "shell_rm"), ev(3, "session_end", agent_id="retail-concierge")]
    expected = _policy().process_many(events)
    first = _policy()
    alerts = first.process_many(events[:split_at])
    key = ("default", "sess-1")
    dumped = first.dump_key(key)
    second = _policy()
    if dumped is not None:
        second.load_key(key, orjson.loads(orjson.dumps(dumped)))
    alerts += second.process_many(events[split_at:])
    assert alerts == expected
    assert [a.state for a in expected] == [AlertState.FIRING, AlertState.RESOLVED]


# -- guardrail ----------------------------------------------------------------------------------
def _check(ev: EventFactory, t_s: float, tripped: bool, name: str = "pii_filter",
           **fields: Any) -> Event:
    return ev(t_s, "guardrail", name=name, status="error" if tripped else "ok", **fields)


def test_four_trips_do_not_fire(ev: EventFactory) -> None:
    engine = _guardrail()
    assert engine.process_many([_check(ev, t, True) for t in range(4)]) == []


def test_fifth_trip_in_the_window_fires_for_the_agent(ev: EventFactory) -> None:
    engine = _guardrail()
    checks = [_check(ev, t, True, session_id=f"s{t}") for t in range(5)]
    alerts = engine.process_many(checks)
    (alert,) = alerts
    assert (alert.type, alert.state, alert.scope, alert.key, alert.session_id) == (
        AlertType.GUARDRAIL, AlertState.FIRING, AlertScope.AGENT, "agent-1", None)
    assert (alert.value, alert.threshold, alert.window_s) == (5.0, 5.0, 300)
    assert "tripped guardrails 5 times in 5 checks within 300 s" in alert.reason
    assert "`pii_filter`" in alert.reason


def test_passed_checks_and_other_kinds_do_not_count(ev: EventFactory) -> None:
    engine = _guardrail()
    events = [_check(ev, t, False) for t in range(20)]
    events += [ev(20 + t, "tool_call", name="x", status="error") for t in range(10)]
    assert engine.process_many(events) == []


def test_trips_spread_over_more_than_the_window_do_not_fire(ev: EventFactory) -> None:
    engine = _guardrail()
    assert engine.process_many([_check(ev, t * 100, True) for t in range(5)]) == []


def test_names_select_the_guardrails_counted(ev: EventFactory) -> None:
    engine = _guardrail(names=["brand_*"])
    events = [_check(ev, t, True, name="pii_filter") for t in range(10)]
    assert engine.process_many(events) == []
    (alert,) = engine.process_many([_check(ev, 20 + t, True, name="brand_safety")
                                    for t in range(5)])
    assert "`brand_safety`" in alert.reason


def test_trip_share_fires_with_min_events(ev: EventFactory) -> None:
    engine = _guardrail(min_trips=None, threshold_ratio=0.5, min_events=10)
    events = [_check(ev, t, t % 2 == 0) for t in range(9)]  # 5 of 9: not enough checks
    assert engine.process_many(events) == []
    (alert,) = engine.process(_check(ev, 9, False))  # 5 of 10
    assert (alert.value, alert.threshold) == (0.5, 0.5)
    assert "50% of at least 10 checks" in alert.reason


def test_quiet_agent_resolves_when_the_window_empties(ev: EventFactory) -> None:
    engine = _guardrail()
    (fired,) = engine.process_many([_check(ev, t, True) for t in range(5)])
    (resolved,) = engine.advance(1000 * US)
    assert resolved.alert_id == fired.alert_id
    assert resolved.state is AlertState.RESOLVED
    assert to_us(resolved.ts) == 301 * US  # trips at 0 and 1 s left: 3 < 4 (0.8 x 5)
    assert engine.stats.active_keys == 0


def test_session_scope_resolves_when_the_session_ends(ev: EventFactory) -> None:
    engine = _guardrail(scope="session")
    (fired,) = engine.process_many([_check(ev, t, True) for t in range(5)])
    assert fired.session_id == "sess-1"
    (resolved,) = engine.process(ev(6, "session_end"))
    assert resolved.state is AlertState.RESOLVED
    assert "the session ended" in resolved.reason


@pytest.mark.parametrize("split_at", [2, 5, 7])
def test_guardrail_dump_and_load_give_the_same_alerts(ev: EventFactory, split_at: int) -> None:
    events = [_check(ev, t, True) for t in range(7)]
    events.append(_check(ev, 700, False))
    expected = _guardrail().process_many(events)
    first = _guardrail()
    alerts = first.process_many(events[:split_at])
    key = ("default", "agent-1")
    second = _guardrail()
    second.load_key(key, orjson.loads(orjson.dumps(first.dump_key(key))))
    alerts += second.process_many(events[split_at:])
    assert alerts == expected
    assert [a.state for a in expected] == [AlertState.FIRING, AlertState.RESOLVED]
