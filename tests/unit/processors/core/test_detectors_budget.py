"""The budget rule: spend over a calendar period, fractions once per period, forecast,
resolution at the period's end (by an event or a timer), state round trips."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from conftest import US, EventFactory

from agentwatch.processors.core import Engine, EventTimeDriver, rules_from_mapping
from agentwatch.processors.core._budget import period_bounds
from agentwatch.processors.core._rules import zone_info
from agentwatch.schemas import AlertScope, AlertState, AlertType, to_us

DAY = 86_400
OFF = {name: {"enabled": False} for name in ("session_cost", "agent_error_rate", "loop_repeat",
                                              "loop_steps")}


def _engine(**budget: Any) -> Engine:
    settings = {"type": "budget", "amount_usd": 10, "period": "day", **budget}
    return Engine(rules_from_mapping({"rules": {**OFF, "budget": settings}}))


def test_each_fraction_fires_once_per_period(ev: EventFactory) -> None:
    engine = _engine(forecast_window_s=None)
    alerts = engine.process_many([ev(i * 60, cost_usd=1.0) for i in range(12)])
    assert [(a.state, a.value, a.threshold) for a in alerts] == [
        (AlertState.FIRING, 5.0, 5.0), (AlertState.FIRING, 8.0, 8.0),
        (AlertState.FIRING, 10.0, 10.0)]
    assert {a.type for a in alerts} == {AlertType.BUDGET}
    assert (alerts[0].scope, alerts[0].key, alerts[0].window_s) == (
        AlertScope.TENANT, "default", None)
    assert "50% of it is used up" in alerts[0].reason
    assert len({a.alert_id for a in alerts}) == 3


def test_a_big_spend_fires_only_the_highest_level_it_crosses(ev: EventFactory) -> None:
    engine = _engine(forecast_window_s=None)
    alerts = engine.process_many([ev(0, cost_usd=4.0), ev(1, cost_usd=5.0)])
    assert [a.threshold for a in alerts] == [8.0]


def test_spend_under_the_first_fraction_does_not_fire(ev: EventFactory) -> None:
    engine = _engine(forecast_window_s=None)
    assert engine.process_many([ev(i, cost_usd=0.49) for i in range(10)]) == []


def test_forecast_fires_when_the_burn_rate_runs_out_before_the_period_ends(
        ev: EventFactory) -> None:
    engine = _engine(fractions=[1.0], forecast_window_s=3600)
    # $1 an hour from 00:00; after 30 minutes ($0.50 in the last hour: $0.50/h), the
    # $9.50 left last 19 h: they run out at 19:30, before midnight
    alerts = engine.process_many([ev(i * 360, cost_usd=0.1) for i in range(12)])
    assert [a.state for a in alerts] == [AlertState.FIRING]
    forecast = alerts[0]
    assert forecast.window_s == 3600
    assert forecast.threshold == 10.0
    assert to_us(forecast.ts) == 4 * 360 * US
    assert "at $0.50/h (the last 3600 s) it runs out at 1970-01-01T19:24:00Z" in forecast.reason
    assert "before the day ends at 1970-01-02T00:00:00Z" in forecast.reason


def test_no_forecast_when_the_burn_rate_lasts_the_period(ev: EventFactory) -> None:
    engine = _engine(fractions=[1.0], forecast_window_s=3600)
    # $0.10 an hour: $10 would last 100 hours, the day has 24
    assert engine.process_many([ev(i * 3600, cost_usd=0.1) for i in range(20)]) == []


def test_the_forecast_fires_once_per_period(ev: EventFactory) -> None:
    engine = _engine(fractions=[2.0], forecast_window_s=3600)
    alerts = engine.process_many([ev(i * 60, cost_usd=0.1) for i in range(50)])
    assert len(alerts) == 1


def test_alerts_resolve_at_the_period_end_on_the_next_periods_event(ev: EventFactory) -> None:
    engine = _engine(forecast_window_s=None)
    fired = engine.process_many([ev(0, cost_usd=6.0)])
    resolved = engine.process(ev(DAY + 5, cost_usd=1.0))
    assert [(a.state, a.alert_id) for a in resolved] == [
        (AlertState.RESOLVED, fired[0].alert_id)]
    assert to_us(resolved[0].ts) == DAY * US
    assert "the period ended" in resolved[0].reason
    # a new period: the fraction may fire again
    again = engine.process(ev(DAY + 6, cost_usd=5.0))
    assert [a.state for a in again] == [AlertState.FIRING]
    assert again[0].alert_id != fired[0].alert_id


def test_a_timer_resolves_a_quiet_key_the_same_way(ev: EventFactory) -> None:
    first, later = ev(0, cost_usd=6.0), ev(DAY + 5, cost_usd=1.0)
    by_event = _engine(forecast_window_s=None)
    by_event.process(first)
    expected = by_event.process(later)
    by_timer = _engine(forecast_window_s=None)
    by_timer.process(first)
    assert by_timer.advance(DAY * US - 1) == []
    assert by_timer.advance(DAY * US + 1) == expected


def test_an_event_of_a_period_that_rolled_over_is_late(ev: EventFactory) -> None:
    engine = _engine(forecast_window_s=None)
    engine.process(ev(DAY + 1, cost_usd=1.0))
    assert engine.process(ev(DAY - 1, cost_usd=9.0)) == []
    assert engine.stats.late == 1


def test_agent_scope_keeps_one_budget_per_agent(ev: EventFactory) -> None:
    engine = _engine(scope="agent", forecast_window_s=None)
    alerts = engine.process_many([ev(0, cost_usd=5.0, agent_id="a"),
                                  ev(1, cost_usd=4.0, agent_id="b")])
    assert [(a.key, a.agent_id) for a in alerts] == [("a", "a")]


@pytest.mark.parametrize(("period", "zone", "ts", "bounds"), [
    ("day", "UTC", "2026-12-04T10:00:00Z", ("2026-12-04T00:00:00Z", "2026-12-05T00:00:00Z")),
    ("week", "UTC", "2026-12-04T10:00:00Z", ("2026-11-30T00:00:00Z", "2026-12-07T00:00:00Z")),
    ("month", "UTC", "2026-12-04T10:00:00Z", ("2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z")),
    ("day", "Europe/Paris", "2026-12-04T23:30:00Z",
     ("2026-12-04T23:00:00Z", "2026-12-05T23:00:00Z")),
    # the day of the change to summer time has 23 hours
    ("day", "Europe/Paris", "2026-03-29T12:00:00Z",
     ("2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z")),
    ("month", "America/New_York", "2026-02-01T03:00:00Z",
     ("2026-01-01T05:00:00Z", "2026-02-01T05:00:00Z")),
])
def test_period_bounds_are_local_calendar_periods(period: str, zone: str, ts: str,
                                                  bounds: tuple[str, str]) -> None:
    start, end = period_bounds(_us(ts), period, zone_info(zone))
    assert (start, end) == (_us(bounds[0]), _us(bounds[1]))


def _us(iso: str) -> int:
    return to_us(datetime.fromisoformat(iso))


def test_state_dumps_and_loads_without_changing_an_alert(ev: EventFactory) -> None:
    events = [ev(i * 600, cost_usd=0.5) for i in range(30)] + [ev(DAY + 1, cost_usd=0.1)]
    straight = EventTimeDriver(_engine())
    expected = [a for e in events for a in straight.feed(e)]
    assert len(expected) >= 4
    first = EventTimeDriver(_engine())
    got = [a for e in events[:15] for a in first.feed(e)]
    key = ("default", "default")
    dumped = first.engine.dump_key(key)
    assert dumped is not None
    second = EventTimeDriver(_engine())
    second.engine.load_key(key, dumped)
    second.engine.restore_watermark(first.engine.watermark_us)
    second.next_advance_us = first.next_advance_us
    got += [a for e in events[15:] for a in second.feed(e)]
    assert got == expected


def test_the_burn_rate_carries_over_into_the_next_period(ev: EventFactory) -> None:
    engine = _engine(amount_usd=100, fractions=[1.0], forecast_window_s=3600)
    # $10 in the last 10 minutes of the day: $10 in the hour, $90 left, 1 minute to midnight
    assert engine.process_many([ev(DAY - 600 + i * 60, cost_usd=1.0) for i in range(10)]) == []
    # the new day's first cent: at the hour's $10/h the new $100 last ~10 h, not the day
    alerts = engine.process(ev(DAY + 1, cost_usd=0.01))
    assert [a.state for a in alerts] == [AlertState.FIRING]
    assert alerts[0].window_s == 3600
    assert "at $10.01/h (the last 3600 s) it runs out at 1970-01-02T09:59:" in alerts[0].reason


def test_a_quiet_key_is_forgotten_once_its_burn_rate_is_gone(ev: EventFactory) -> None:
    engine = _engine(forecast_window_s=3600)
    engine.process(ev(0, cost_usd=1.0))
    engine.advance(DAY * US + 1)
    assert engine.stats.active_keys == 1  # the next day: the last hour's spend is kept
    engine.advance((DAY + 3600 + 10) * US)
    assert engine.stats.active_keys == 0
