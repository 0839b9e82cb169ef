"""The agent error-rate rule: >= 20 calls and >= 25 % errors in 300 s, per agent.

Hysteresis (resolve_below_ratio, resolve_after_s): test_detectors_hysteresis.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agentwatch.processors.core import Engine, rules_from_mapping
from agentwatch.schemas import AlertScope, AlertState, AlertType, Event, to_us

US = 1_000_000
EventFactory = Callable[..., Event]


def _errors_only(**settings: object) -> Engine:
    rules: dict[str, dict[str, object]] = {
        name: {"enabled": False}
        for name in ("session_cost", "loop_repeat", "loop_steps", "loop_cycle")}
    rules["agent_error_rate"] = dict(settings)
    return Engine(rules_from_mapping({"rules": rules}))


@pytest.fixture
def engine() -> Engine:
    return _errors_only()


def _calls(ev: EventFactory, start_s: float, count: int, status: str,
           **fields: object) -> list[Event]:
    return [ev(start_s + i, "tool_call", status=status, **fields) for i in range(count)]


def test_nineteen_failed_calls_do_not_fire(engine: Engine, ev: EventFactory) -> None:
    assert engine.process_many(_calls(ev, 0, 19, "error")) == []


def test_twentieth_failed_call_fires(engine: Engine, ev: EventFactory) -> None:
    engine.process_many(_calls(ev, 0, 19, "error"))
    (alert,) = engine.process(ev(19, "tool_call", status="error"))
    assert (alert.rule, alert.type, alert.state) == ("agent_error_rate", AlertType.ERROR_RATE,
                                                     AlertState.FIRING)
    assert (alert.scope, alert.key, alert.agent_id, alert.session_id) == (
        AlertScope.AGENT, "agent-1", "agent-1", None)
    assert (alert.value, alert.threshold, alert.window_s) == (1.0, 0.25, 300)
    assert to_us(alert.ts) == 19 * US


def test_error_share_of_exactly_25_percent_fires(engine: Engine, ev: EventFactory) -> None:
    alerts = engine.process_many([*_calls(ev, 0, 15, "ok"), *_calls(ev, 15, 5, "error")])
    assert [a.value for a in alerts] == [0.25]


def test_error_share_below_25_percent_does_not_fire(engine: Engine, ev: EventFactory) -> None:
    # 6 of 25 = 24 %
    alerts = engine.process_many([*_calls(ev, 0, 19, "ok"), *_calls(ev, 19, 6, "error")])
    assert alerts == []


def test_llm_calls_count_and_other_kinds_do_not(engine: Engine, ev: EventFactory) -> None:
    others = [ev(i, kind, status="error")
              for i, kind in enumerate(["agent_step", "guardrail", "custom", "handoff"] * 10)]
    assert engine.process_many(others) == []
    llm = [ev(100 + i, "llm_call", status="error") for i in range(20)]
    assert len(engine.process_many(llm)) == 1


def test_just_below_the_threshold_keeps_firing(engine: Engine, ev: EventFactory) -> None:
    """Hysteresis: 5 of 21 (23.8 %) is under 25 % but not under resolve_below (20 %)."""
    engine.process_many([*_calls(ev, 0, 15, "ok"), *_calls(ev, 15, 5, "error")])
    assert engine.process(ev(20, "tool_call", status="ok")) == []
    assert engine.stats.firing == 1


def test_without_hysteresis_resolves_when_error_share_falls_below_threshold(
    ev: EventFactory
) -> None:
    engine = _errors_only(resolve_after_s=0)
    (fired,) = engine.process_many([*_calls(ev, 0, 15, "ok"), *_calls(ev, 15, 5, "error")])
    (resolved,) = engine.process(ev(20, "tool_call", status="ok"))  # 5 of 21
    assert resolved.state is AlertState.RESOLVED
    assert resolved.alert_id == fired.alert_id
    assert to_us(resolved.ts) == 20 * US
    assert resolved.value == pytest.approx(5 / 21)


def test_resolves_when_window_empties(engine: Engine, ev: EventFactory) -> None:
    (fired,) = engine.process_many(_calls(ev, 0, 20, "error"))
    assert engine.advance(318 * US) == []
    (resolved,) = engine.advance(400 * US)
    assert resolved.alert_id == fired.alert_id
    assert to_us(resolved.ts) == 319 * US  # the last bucket (19 s) leaves at 319 s


def test_agent_scope_aggregates_across_sessions(engine: Engine, ev: EventFactory) -> None:
    events = [ev(i, "tool_call", status="error", session_id=f"s{i}") for i in range(20)]
    (alert,) = engine.process_many(events)
    assert (alert.scope, alert.key, alert.session_id) == (AlertScope.AGENT, "agent-1", None)


def test_agents_are_counted_separately(engine: Engine, ev: EventFactory) -> None:
    events = [*_calls(ev, 0, 10, "error", agent_id="a1"),
              *_calls(ev, 10, 10, "error", agent_id="a2")]
    assert engine.process_many(events) == []


def test_same_agent_id_in_two_tenants_is_isolated(engine: Engine, ev: EventFactory) -> None:
    events = [*_calls(ev, 0, 10, "error", tenant_id="t1"),
              *_calls(ev, 10, 10, "error", tenant_id="t2")]
    assert engine.process_many(events) == []


def test_min_events_is_configurable(ev: EventFactory) -> None:
    engine = _errors_only(min_events=3)
    alerts = engine.process_many(_calls(ev, 0, 3, "error"))
    assert [to_us(a.ts) for a in alerts] == [2 * US]


def test_quiet_agent_state_is_dropped_after_window(engine: Engine, ev: EventFactory) -> None:
    engine.process_many(_calls(ev, 0, 3, "ok"))
    assert engine.stats.active_keys == 1
    engine.advance(1_000 * US)
    assert engine.stats.active_keys == 0


def test_cooldown_holds_after_quiet_agent_state_is_dropped(ev: EventFactory) -> None:
    engine = _errors_only(cooldown_s=3600)
    engine.process_many(_calls(ev, 0, 20, "error"))
    (resolved,) = engine.advance(1_000 * US)
    assert to_us(resolved.ts) == 319 * US  # cooldown until 3919 s
    assert engine.process_many(_calls(ev, 1_000, 20, "error")) == []
