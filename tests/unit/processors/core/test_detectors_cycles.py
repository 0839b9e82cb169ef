"""loop_cycle: a cycle of tool names (arguments ignored) repeated in one session."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from agentwatch.processors.core import Engine, LoopCycleDetector, rules_from_mapping
from agentwatch.schemas import AlertScope, AlertState, AlertType, Event, Severity, to_us

US = 1_000_000
EventFactory = Callable[..., Event]
_OTHERS = ("session_cost", "agent_error_rate", "loop_repeat", "loop_steps")


def _cycles(**settings: object) -> Engine:
    rules: dict[str, dict[str, object]] = {n: {"enabled": False} for n in _OTHERS}
    rules["loop_cycle"] = dict(settings)
    return Engine(rules_from_mapping({"rules": rules}))


@pytest.fixture
def engine() -> Engine:
    return _cycles()


def _calls(ev: EventFactory, tools: list[str], start_s: float = 0.0, every_s: float = 1.0,
           **fields: object) -> list[Event]:
    """Tool calls of ``tools`` in order, each with fresh arguments."""
    return [ev(start_s + i * every_s, "tool_call", name=tool, tool_args_hash=f"h{i}", **fields)
            for i, tool in enumerate(tools)]


def test_cycle_of_two_tools_repeated_five_times_fires(engine: Engine, ev: EventFactory) -> None:
    alerts = engine.process_many(_calls(ev, ["search", "open"] * 5))
    (alert,) = alerts
    assert (alert.rule, alert.type, alert.state, alert.severity, alert.scope) == (
        "loop_cycle", AlertType.RUNAWAY_LOOP, AlertState.FIRING, Severity.WARNING,
        AlertScope.SESSION)
    assert (alert.key, alert.value, alert.threshold, alert.window_s) == ("sess-1", 5.0, 5.0, 120)
    assert to_us(alert.ts) == 9 * US
    assert "`search` -> `open`" in alert.reason
    assert "5 times in a row" in alert.reason


def test_four_repeats_do_not_fire(engine: Engine, ev: EventFactory) -> None:
    assert engine.process_many(_calls(ev, ["search", "open"] * 4 + ["search"])) == []


def test_cycle_of_three_tools_fires(engine: Engine, ev: EventFactory) -> None:
    (alert,) = engine.process_many(_calls(ev, ["plan", "search", "open"] * 5))
    assert to_us(alert.ts) == 14 * US
    assert "`plan` -> `search` -> `open`" in alert.reason


def test_one_tool_again_and_again_is_not_a_cycle(engine: Engine, ev: EventFactory) -> None:
    assert engine.process_many(_calls(ev, ["search"] * 40)) == []


def test_period_longer_than_max_period_does_not_fire(ev: EventFactory) -> None:
    engine = _cycles(max_period=2)
    assert engine.process_many(_calls(ev, ["a", "b", "c"] * 8)) == []


def test_other_event_kinds_between_calls_do_not_break_the_cycle(
        engine: Engine, ev: EventFactory) -> None:
    events: list[Event] = []
    for i, call in enumerate(_calls(ev, ["search", "open"] * 5, every_s=2)):
        events += [ev(i * 2 - 1, "llm_call", model="gpt-4o-mini"), call]
    (alert,) = engine.process_many(events)
    assert alert.state is AlertState.FIRING


def test_repeats_spread_over_more_than_the_window_do_not_fire(
        engine: Engine, ev: EventFactory) -> None:
    # 10 calls 14 s apart: the first and the last are 126 s apart (window 120 s)
    assert engine.process_many(_calls(ev, ["search", "open"] * 5, every_s=14)) == []


def test_sessions_are_separate(engine: Engine, ev: EventFactory) -> None:
    one = _calls(ev, ["search", "open"] * 5, session_id="s1")
    other = _calls(ev, ["search", "open"] * 5, start_s=0.5, session_id="s2")
    mixed = [e for pair in zip(one, other, strict=True) for e in pair]
    alerts = engine.process_many(mixed)
    assert sorted(a.key for a in alerts) == ["s1", "s2"]


def test_fires_once_while_the_cycle_goes_on(engine: Engine, ev: EventFactory) -> None:
    alerts = engine.process_many(_calls(ev, ["search", "open"] * 30))
    assert [a.state for a in alerts] == [AlertState.FIRING]


def test_a_call_breaking_the_cycle_resolves(engine: Engine, ev: EventFactory) -> None:
    engine.process_many(_calls(ev, ["search", "open"] * 6))
    (resolved,) = engine.process(ev(12, "tool_call", name="answer"))
    assert resolved.state is AlertState.RESOLVED
    assert to_us(resolved.ts) == 12 * US
    assert "`answer` broke the cycle" in resolved.reason
    assert resolved.value == 6.0


def test_quiet_cycle_resolves_when_its_repeats_leave_the_window(
        engine: Engine, ev: EventFactory) -> None:
    (fired,) = engine.process_many(_calls(ev, ["search", "open"] * 5))
    (resolved,) = engine.advance(200 * US)
    assert resolved.alert_id == fired.alert_id
    assert to_us(resolved.ts) == 120 * US  # the first call of the 5 repeats + 120 s


def test_session_end_resolves(engine: Engine, ev: EventFactory) -> None:
    engine.process_many(_calls(ev, ["search", "open"] * 5))
    (resolved,) = engine.process(ev(10, "session_end"))
    assert resolved.state is AlertState.RESOLVED
    assert "the session ended" in resolved.reason
    assert engine.stats.active_keys == 0


def test_resolution_does_not_depend_on_when_timers_run(ev: EventFactory) -> None:
    calls = _calls(ev, ["search", "open"] * 5)
    end = ev(300, "session_end")
    with_timer, without = _cycles(), _cycles()
    alerts_a = with_timer.process_many(calls)
    alerts_a += with_timer.advance(150 * US)
    alerts_a += with_timer.process(end)
    alerts_b = without.process_many(calls) + without.process(end)
    assert [(a.state, a.ts, a.reason) for a in alerts_a] == [
        (a.state, a.ts, a.reason) for a in alerts_b]
    assert to_us(alerts_b[-1].ts) == 120 * US


def test_fires_again_after_a_break_and_new_repeats(engine: Engine, ev: EventFactory) -> None:
    tools = ["search", "open"] * 5 + ["answer"] + ["search", "open"] * 5
    alerts = engine.process_many(_calls(ev, tools))
    assert [a.state for a in alerts] == [AlertState.FIRING, AlertState.RESOLVED,
                                         AlertState.FIRING]


def test_state_stays_bounded_however_long_the_session(engine: Engine, ev: EventFactory) -> None:
    engine.process_many(_calls(ev, [f"tool{i % 7}" for i in range(5_000)], every_s=0.01))
    (detector,) = engine.detectors
    assert isinstance(detector, LoopCycleDetector)
    (data,) = (detector.dump(k) for k in detector.states)
    assert len(data[1]) == 4 * 5  # max_period x min_repeats names
    assert max(data[3]) <= 4 * 5


@pytest.mark.parametrize("split_at", [3, 9, 11, 14])
def test_dump_and_load_give_the_same_alerts(ev: EventFactory, split_at: int) -> None:
    tools = ["search", "open"] * 6 + ["answer"] + ["a", "b", "c"] * 5
    events = [*_calls(ev, tools), ev(40, "session_end")]
    straight = _cycles()
    expected = straight.process_many(events)
    first = _cycles()
    alerts = first.process_many(events[:split_at])
    key = ("default", "sess-1")
    data = orjson.loads(orjson.dumps(first.dump_key(key)))
    second = _cycles()
    second.load_key(key, data)
    alerts += second.process_many(events[split_at:])
    assert alerts == expected
    assert [a.state for a in expected] == [AlertState.FIRING, AlertState.RESOLVED,
                                           AlertState.FIRING, AlertState.RESOLVED]

