"""Runaway loops: the same tool call repeated (loop_repeat) and step explosions (loop_steps)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agentwatch.processors.core import Engine, rules_from_mapping
from agentwatch.schemas import AlertScope, AlertState, AlertType, Event, Severity, to_us

US = 1_000_000
EventFactory = Callable[..., Event]


def _only(rule: str, **settings: object) -> Engine:
    names = ("session_cost", "agent_error_rate", "loop_repeat", "loop_steps")
    rules: dict[str, dict[str, object]] = {n: {"enabled": False} for n in names if n != rule}
    rules[rule] = dict(settings)
    return Engine(rules_from_mapping({"rules": rules}))


@pytest.fixture
def repeat() -> Engine:
    return _only("loop_repeat")


@pytest.fixture
def steps() -> Engine:
    return _only("loop_steps")


def _call(ev: EventFactory, t_s: float, tool: str = "search", args: str = "h1",
          **fields: object) -> Event:
    return ev(t_s, "tool_call", name=tool, tool_args_hash=args, **fields)


# -- loop_repeat ------------------------------------------------------------------------------
def test_four_identical_calls_do_not_fire(repeat: Engine, ev: EventFactory) -> None:
    assert repeat.process_many([_call(ev, t) for t in range(4)]) == []


def test_fifth_identical_call_fires(repeat: Engine, ev: EventFactory) -> None:
    repeat.process_many([_call(ev, t) for t in range(4)])
    (alert,) = repeat.process(_call(ev, 4))
    assert (alert.rule, alert.type, alert.state, alert.severity) == (
        "loop_repeat", AlertType.RUNAWAY_LOOP, AlertState.FIRING, Severity.CRITICAL)
    assert (alert.scope, alert.key, alert.value, alert.threshold, alert.window_s) == (
        AlertScope.SESSION, "sess-1", 5.0, 5.0, 120)
    assert to_us(alert.ts) == 4 * US
    assert "search" in alert.reason


def test_repeat_fires_only_once_while_firing(repeat: Engine, ev: EventFactory) -> None:
    alerts = repeat.process_many([_call(ev, t) for t in range(20)])
    assert len(alerts) == 1


def test_same_tool_with_different_args_does_not_count(repeat: Engine, ev: EventFactory) -> None:
    calls = [_call(ev, t, args=f"h{t}") for t in range(10)]
    assert repeat.process_many(calls) == []


def test_same_args_with_different_tools_do_not_count(repeat: Engine, ev: EventFactory) -> None:
    calls = [_call(ev, t, tool=f"tool{t}") for t in range(10)]
    assert repeat.process_many(calls) == []


def test_tool_call_without_args_hash_is_ignored(repeat: Engine, ev: EventFactory) -> None:
    calls = [ev(t, "tool_call", name="search") for t in range(10)]
    assert repeat.process_many(calls) == []


def test_alternating_a_b_cycle_with_fixed_args_fires(repeat: Engine, ev: EventFactory) -> None:
    calls = [_call(ev, t, tool="a" if t % 2 == 0 else "b") for t in range(9)]
    alerts = repeat.process_many(calls)
    assert [(a.state, to_us(a.ts)) for a in alerts] == [(AlertState.FIRING, 8 * US)]


def test_repeats_spanning_the_full_window_do_not_fire(repeat: Engine, ev: EventFactory) -> None:
    # the first call is exactly 120 s before the fifth: outside the window (t - 120 s, t]
    assert repeat.process_many([_call(ev, t) for t in (0, 30, 60, 90, 120)]) == []


def test_repeats_just_inside_the_window_fire(repeat: Engine, ev: EventFactory) -> None:
    alerts = repeat.process_many([_call(ev, t) for t in (0, 30, 60, 90, 119.999999)])
    assert len(alerts) == 1


def test_repeat_resolves_after_quiet_window_via_advance(
    repeat: Engine, ev: EventFactory
) -> None:
    (fired,) = repeat.process_many([_call(ev, t) for t in range(5)])
    assert repeat.advance(120 * US - 1) == []
    (resolved,) = repeat.advance(120 * US)
    assert (resolved.state, resolved.alert_id) == (AlertState.RESOLVED, fired.alert_id)
    assert to_us(resolved.ts) == 120 * US  # the first of the five calls left the window


def test_repeat_resolves_on_later_call_after_quiet_window(
    repeat: Engine, ev: EventFactory
) -> None:
    (fired,) = repeat.process_many([_call(ev, t) for t in range(5)])
    (resolved,) = repeat.process(_call(ev, 300, tool="other"))
    assert (resolved.state, resolved.alert_id) == (AlertState.RESOLVED, fired.alert_id)
    assert to_us(resolved.ts) == 120 * US


def test_repeat_refires_with_new_alert_id_after_resolve(repeat: Engine, ev: EventFactory) -> None:
    (first,) = repeat.process_many([_call(ev, t) for t in range(5)])
    repeat.advance(200 * US)
    (again,) = repeat.process_many([_call(ev, 200 + t) for t in range(5)])
    assert again.state is AlertState.FIRING
    assert again.alert_id != first.alert_id


def test_repeats_in_two_sessions_are_counted_separately(
    repeat: Engine, ev: EventFactory
) -> None:
    calls = [_call(ev, t, session_id=f"s{t % 2}") for t in range(8)]
    assert repeat.process_many(calls) == []


def test_reordered_call_completing_a_run_fires(repeat: Engine, ev: EventFactory) -> None:
    calls = [_call(ev, t) for t in (0, 1, 2, 4)]
    calls.append(_call(ev, 3))  # arrives after the call at 4 s, within disorder_s (5 s)
    alerts = repeat.process_many(calls)
    assert [(a.state, to_us(a.ts)) for a in alerts] == [(AlertState.FIRING, 4 * US)]


def test_late_call_beyond_disorder_is_counted_and_ignored(
    repeat: Engine, ev: EventFactory
) -> None:
    calls = [_call(ev, t) for t in (10, 11, 12, 13)]
    calls.append(_call(ev, 1))  # 12 s behind the newest call: beyond disorder_s (5 s)
    assert repeat.process_many(calls) == []
    assert repeat.stats.late == 1


# -- loop_steps -------------------------------------------------------------------------------
def test_two_hundred_steps_do_not_fire(steps: Engine, ev: EventFactory) -> None:
    events = [ev(t, "llm_call" if t % 2 else "tool_call") for t in range(200)]
    assert steps.process_many(events) == []


def test_step_two_hundred_one_fires(steps: Engine, ev: EventFactory) -> None:
    steps.process_many([ev(t, "llm_call") for t in range(200)])
    (alert,) = steps.process(ev(200, "tool_call"))
    assert (alert.rule, alert.type, alert.state) == ("loop_steps", AlertType.RUNAWAY_LOOP,
                                                     AlertState.FIRING)
    assert (alert.value, alert.threshold, alert.window_s) == (201.0, 200.0, None)
    assert to_us(alert.ts) == 200 * US


def test_steps_fire_only_once(steps: Engine, ev: EventFactory) -> None:
    assert len(steps.process_many([ev(t, "llm_call") for t in range(500)])) == 1


def test_other_kinds_are_not_steps(steps: Engine, ev: EventFactory) -> None:
    kinds = ["agent_step", "guardrail", "custom", "handoff", "session_start"]
    assert steps.process_many([ev(t, kinds[t % len(kinds)]) for t in range(500)]) == []


def test_steps_count_over_the_whole_session_not_a_window(
    steps: Engine, ev: EventFactory
) -> None:
    alerts = steps.process_many([ev(t * 60, "llm_call") for t in range(201)])
    assert len(alerts) == 1


def test_steps_resolve_on_session_end(steps: Engine, ev: EventFactory) -> None:
    (fired,) = steps.process_many([ev(t, "llm_call") for t in range(201)])
    (resolved,) = steps.process(ev(300, "session_end"))
    assert (resolved.state, resolved.alert_id) == (AlertState.RESOLVED, fired.alert_id)
    assert to_us(resolved.ts) == 300 * US
    assert "session ended" in resolved.reason


def test_steps_start_again_after_session_end(steps: Engine, ev: EventFactory) -> None:
    steps.process_many([ev(t, "llm_call") for t in range(150)])
    steps.process(ev(150, "session_end"))
    assert steps.process_many([ev(200 + t, "llm_call") for t in range(150)]) == []


def test_repeat_cooldown_holds_after_quiet_agent_state_is_dropped(ev: EventFactory) -> None:
    engine = _only("loop_repeat", scope="agent", cooldown_s=3600)
    engine.process_many([_call(ev, t) for t in range(5)])
    (resolved,) = engine.advance(1_000 * US)
    assert to_us(resolved.ts) == 120 * US  # cooldown until 3720 s
    assert engine.process_many([_call(ev, 1_000 + t) for t in range(5)]) == []
