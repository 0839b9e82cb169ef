"""Hysteresis of the cost and error-rate rules: ``resolve_below_*`` and ``resolve_after_s``.

A firing alert resolves at the first event time at which the value is below
``resolve_below_*`` (default 0.8 x the threshold), or has stayed below the threshold for
``resolve_after_s`` (off by default). A value hovering at the threshold fires once.
"""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
from conftest import US, EventFactory

from agentwatch.processors.core import Engine, EventTimeDriver, rules_from_mapping
from agentwatch.schemas import Alert, AlertState, Event, to_us

#: the error-rate tests of an oscillating share count from this many calls on: from then, the
#: closest share to the target is within 0.17 % of it (a window of fewer calls is coarser)
MIN_EVENTS = 300
OTHERS = ("session_cost", "agent_error_rate", "loop_repeat", "loop_steps")


def _only(rule: str, **settings: object) -> Engine:
    rules: dict[str, dict[str, object]] = {name: {"enabled": False} for name in OTHERS}
    rules[rule] = dict(settings)
    return Engine(rules_from_mapping({"rules": rules}))


def _states(alerts: list[Alert]) -> list[AlertState]:
    return [a.state for a in alerts]


def _feed(engine: Engine, events: list[Event]) -> list[Alert]:
    """Through the driver, as every runtime feeds the engine (timers on the watermark)."""
    driver = EventTimeDriver(engine)
    return [a for e in events for a in driver.feed(e)]


# -- a rate oscillating around the threshold -------------------------------------------------
def _oscillating_errors(ev: EventFactory, *, minutes: int = 10) -> tuple[list[Event],
                                                                        list[float]]:
    """Two tool calls per second for ``minutes``; each call's status is chosen so that the
    error share of the 300 s window follows 25 % +- 0.8 % (a 40 s sine). Returns the events
    and the share of the window at each event (computed here, by brute force)."""
    events: list[Event] = []
    shares: list[float] = []
    calls: list[tuple[int, bool]] = []  # (bucket, error)
    for i in range(minutes * 60 * 2):
        t_s = i / 2
        bucket = int(t_s)
        in_window = [err for b, err in calls if bucket - 300 < b <= bucket]
        errors, n = sum(in_window), len(in_window) + 1
        target = 0.25 + 0.008 * math.sin(2 * math.pi * t_s / 40)
        error = abs((errors + 1) / n - target) < abs(errors / n - target)
        calls.append((bucket, error))
        shares.append((errors + error) / n)
        events.append(ev(t_s, "tool_call", status="error" if error else "ok"))
    return events, shares


def test_the_oscillating_stream_hovers_around_the_threshold(ev: EventFactory) -> None:
    """The scenario is what the next tests say it is: from MIN_EVENTS calls on (nothing can
    fire before), every window's share is within 24-26 % and it crosses 25 % again and
    again."""
    _, shares = _oscillating_errors(ev)
    settled = shares[MIN_EVENTS - 1:]
    assert 0.24 <= min(settled) < 0.25 <= max(settled) <= 0.26
    crossings = sum(1 for x, y in pairwise(settled)
                    if (x < 0.25) != (y < 0.25))
    assert crossings > 20


def test_an_error_rate_oscillating_around_the_threshold_fires_once(ev: EventFactory) -> None:
    events, _ = _oscillating_errors(ev)
    engine = _only("agent_error_rate", min_events=MIN_EVENTS)
    alerts = _feed(engine, events)
    assert _states(alerts) == [AlertState.FIRING]
    # after the ten minutes, the quiet agent's window empties: one resolution, same episode
    (resolved,) = engine.advance(to_us(events[-1].ts) + 400 * US)
    assert resolved.state is AlertState.RESOLVED
    assert resolved.alert_id == alerts[0].alert_id


def test_without_hysteresis_the_same_stream_flaps(ev: EventFactory) -> None:
    """``resolve_after_s: 0`` is the behaviour without hysteresis: many episodes."""
    events, _ = _oscillating_errors(ev)
    alerts = _feed(_only("agent_error_rate", min_events=MIN_EVENTS, resolve_after_s=0), events)
    assert _states(alerts).count(AlertState.FIRING) > 10


def test_a_resolve_after_longer_than_the_dips_still_fires_once(ev: EventFactory) -> None:
    """Dips under 25 % last about 20 s of the 40 s period: 30 s below is never reached."""
    events, _ = _oscillating_errors(ev)
    alerts = _feed(_only("agent_error_rate", min_events=MIN_EVENTS, resolve_after_s=30), events)
    assert _states(alerts) == [AlertState.FIRING]


def test_a_resolve_after_shorter_than_the_dips_resolves_in_each_dip(ev: EventFactory) -> None:
    events, _ = _oscillating_errors(ev)
    alerts = _feed(_only("agent_error_rate", min_events=MIN_EVENTS, resolve_after_s=5), events)
    assert _states(alerts).count(AlertState.RESOLVED) > 5
    assert all("for 5 s" in a.reason for a in alerts if a.state is AlertState.RESOLVED)


# -- error rate: a clean drop under resolve_below ----------------------------------------------
def _fire_with_twenty_errors(engine: Engine, ev: EventFactory) -> Alert:
    alerts = [a for i in range(20) for a in engine.process(ev(i, "tool_call", status="error"))]
    (fired,) = alerts
    return fired


def test_error_rate_resolves_only_under_resolve_below(ev: EventFactory) -> None:
    engine = _only("agent_error_rate")  # 25 %, resolve_below_ratio default 20 %
    fired = _fire_with_twenty_errors(engine, ev)
    # 20 errors of 100 calls = 20 %: not under 20 %, still firing
    assert [a for i in range(80) for a in engine.process(ev(20 + i, "tool_call"))] == []
    (resolved,) = engine.process(ev(100, "tool_call"))  # 20 of 101
    assert (resolved.state, resolved.alert_id) == (AlertState.RESOLVED, fired.alert_id)
    assert to_us(resolved.ts) == 100 * US
    assert resolved.value == pytest.approx(20 / 101)
    assert resolved.threshold == 0.25
    assert "under 20%" in resolved.reason


def test_error_rate_resolve_below_is_configurable(ev: EventFactory) -> None:
    engine = _only("agent_error_rate", resolve_below_ratio=0.24)
    _fire_with_twenty_errors(engine, ev)
    alerts = [a for i in range(64) for a in engine.process(ev(20 + i, "tool_call"))]
    # 20 of 84 = 23.8 % is the first share under 24 %
    assert [(a.state, to_us(a.ts)) for a in alerts] == [(AlertState.RESOLVED, 83 * US)]


# -- error rate: resolve_after_s ------------------------------------------------------------------
def _fire_at_25_percent(engine: Engine, ev: EventFactory) -> Alert:
    calls = [ev(i, "tool_call", status="error" if i >= 15 else "ok") for i in range(20)]
    (fired,) = [a for e in calls for a in engine.process(e)]
    return fired


def test_resolve_after_s_resolves_a_share_that_stays_between_the_levels(
    ev: EventFactory
) -> None:
    engine = _only("agent_error_rate", resolve_after_s=30)
    _fire_at_25_percent(engine, ev)
    assert engine.process(ev(20, "tool_call")) == []  # 5 of 21 = 23.8 %: below since 20 s
    alerts: list[Alert] = []
    for t in range(21, 60):  # an error each 4th call keeps the share in 21-25 %
        alerts += engine.process(ev(t, "tool_call", status="error" if t % 4 == 0 else "ok"))
    (resolved,) = alerts
    assert to_us(resolved.ts) == 50 * US  # 20 s + 30 s
    assert 0.2 <= resolved.value < 0.25
    assert "stayed under 25% for 30 s" in resolved.reason


def test_resolve_after_s_resolves_a_quiet_key_at_the_same_time(ev: EventFactory) -> None:
    """No event after the dip: the timer gives the time an event would have given."""
    engine = _only("agent_error_rate", resolve_after_s=30)
    _fire_at_25_percent(engine, ev)
    engine.process(ev(20, "tool_call"))
    assert engine.advance(49 * US) == []
    (resolved,) = engine.advance(60 * US)
    assert to_us(resolved.ts) == 50 * US
    assert resolved.value == pytest.approx(5 / 21)


def test_a_return_to_the_threshold_restarts_the_resolve_after_clock(ev: EventFactory) -> None:
    engine = _only("agent_error_rate", resolve_after_s=30)
    _fire_at_25_percent(engine, ev)
    engine.process(ev(20, "tool_call"))  # 5 of 21: below since 20 s
    assert engine.process(ev(30, "tool_call", status="error")) == []  # 6 of 22: over again
    assert engine.process(ev(31, "tool_call")) == []  # 6 of 23 = 26 %: still over
    assert engine.process(ev(32, "tool_call")) == []  # 6 of 24 = 25 %: still over
    assert engine.process(ev(33, "tool_call")) == []  # 6 of 25 = 24 %: below since 33 s
    assert engine.advance(62 * US) == []
    (resolved,) = engine.advance(70 * US)
    assert to_us(resolved.ts) == 63 * US


def test_resolve_after_zero_resolves_as_soon_as_below_the_threshold(ev: EventFactory) -> None:
    engine = _only("agent_error_rate", resolve_after_s=0)
    _fire_at_25_percent(engine, ev)
    (resolved,) = engine.process(ev(20, "tool_call"))
    assert (to_us(resolved.ts), resolved.value) == (20 * US, pytest.approx(5 / 21))


# -- cost --------------------------------------------------------------------------------------
def test_cost_resolves_only_under_resolve_below(ev: EventFactory) -> None:
    """$0.30 at 0, 5, ..., 25 s: $1.80 in the 60 s window; it is $0.90 (<= $1, not under
    $0.80) once the 0, 5 and 10 s buckets left (70 s) and $0.60 at 75 s."""
    engine = _only("session_cost")
    fired = [a for i in range(6) for a in engine.process(ev(i * 5, cost_usd=0.3))]
    assert _states(fired) == [AlertState.FIRING]
    assert engine.advance(74 * US) == []
    (resolved,) = engine.advance(80 * US)
    assert (to_us(resolved.ts), resolved.value) == (75 * US, pytest.approx(0.6))
    assert "under $0.80" in resolved.reason


def test_cost_resolve_after_s_resolves_a_cost_between_the_levels(ev: EventFactory) -> None:
    # at or under $1 since 70 s: with 10 s, the fall under $0.80 at 75 s comes first
    engine = _only("session_cost", resolve_after_s=10)
    [engine.process(ev(i * 5, cost_usd=0.3)) for i in range(6)]
    assert engine.advance(74 * US) == []
    (resolved,) = engine.advance(90 * US)
    assert (to_us(resolved.ts), resolved.value) == (75 * US, pytest.approx(0.6))
    assert "under $0.80" in resolved.reason
    # with 3 s, the clock is first (73 s)
    engine = _only("session_cost", resolve_after_s=3)
    [engine.process(ev(i * 5, cost_usd=0.3)) for i in range(6)]
    (resolved,) = engine.advance(90 * US)
    assert (to_us(resolved.ts), resolved.value) == (73 * US, pytest.approx(0.9))
    assert "stayed at or under $1.00 for 3 s" in resolved.reason


def _oscillating_cost(ev: EventFactory) -> tuple[list[Event], list[float]]:
    """One call per second for ten minutes: a minute of calls at 1/60 of the target each,
    then each priced so that the cost of the 60 s window follows $1.00 +- $0.05 (a 20 s
    sine). Returns the events and the window's cost at each."""
    events: list[Event] = []
    sums: list[float] = []
    costs: list[tuple[int, int]] = []  # (second, micro-USD)
    for t in range(600):
        before = sum(c for s, c in costs if t - 60 < s)
        target = round(1_000_000 * (1 + 0.05 * math.sin(2 * math.pi * t / 20)))
        cost = target // 60 if t < 60 else max(0, target - before)
        costs.append((t, cost))
        sums.append((before + cost) / 1e6)
        events.append(ev(t, cost_usd=cost / 1e6))
    return events, sums


def test_a_cost_oscillating_around_the_threshold_fires_once(ev: EventFactory) -> None:
    events, sums = _oscillating_cost(ev)
    settled = sums[60:]
    assert 0.94 <= min(settled) <= 1.0 < max(settled) <= 1.06
    assert sum(1 for x, y in pairwise(settled)
               if (x > 1) != (y > 1)) > 20
    assert _states(_feed(_only("session_cost"), events)) == [AlertState.FIRING]
    flapping = _feed(_only("session_cost", resolve_after_s=0), events)
    assert _states(flapping).count(AlertState.FIRING) > 10


# -- timers do not change the result ----------------------------------------------------------
@pytest.mark.parametrize("advance_every", [1, 7, 1000])
def test_resolutions_do_not_depend_on_when_timers_run(
    ev: EventFactory, advance_every: int
) -> None:
    events, _ = _oscillating_errors(ev, minutes=4)
    def run(every: int) -> list[tuple[str, int, float]]:
        engine = _only("agent_error_rate", min_events=MIN_EVENTS, resolve_after_s=5)
        alerts: list[Alert] = []
        for i, event in enumerate(events):
            alerts += engine.process(event)
            if i % every == 0:
                alerts += engine.advance(to_us(event.ts) - 5 * US)
        alerts += engine.advance(1 << 50)
        return sorted((a.state.value, to_us(a.ts), a.value) for a in alerts)
    expected = run(len(events) + 1)  # timers only at the very end
    assert len(expected) > 4
    assert run(advance_every) == expected





def test_the_default_resolve_below_is_exact(ev: EventFactory) -> None:
    """0.8 x 0.1 in floats is 0.08000000000000002: 20 of 250 (8 %) would count as under
    it. It is compared as the exact fraction 2/25."""
    engine = _only("agent_error_rate", threshold_ratio=0.1)
    fired = _fire_with_twenty_errors(engine, ev)
    alerts = [a for i in range(231) for a in engine.process(ev(20 + i, "tool_call"))]
    # the 250th call (249 s) makes it exactly 8 %; the 251st (250 s) 7.97 %
    assert [(a.alert_id, to_us(a.ts)) for a in alerts] == [(fired.alert_id, 250 * US)]
