"""The budget rule: spend per tenant or agent over a calendar period, with a forecast.

State per key is O(1): the period's bounds, its spend (integer nano-USD), how many of the
rule's fractions it has crossed, whether the forecast fired, the alerts firing, and the
spend of the last ``forecast_window_s`` in a :class:`SlidingWindow` of 50 slices (the
burn rate). Periods are calendar days, weeks (from Monday) or months in the rule's time
zone; their bounds are computed only when an event or a timer leaves the current one.

Alerts: one episode per crossed fraction and one for the forecast, each at most once per
period (their ids differ by the level: ``alert_id_for("<rule>@<level>", ...)``). Every
alert of a period resolves at the period's end, in event time: on the first event of a
later period, or on the timer the engine runs when the watermark passes the end,
whichever comes first (the same alerts either way). The spend and the fractions start
from zero with each period; the burn rate does not (it is the spend of the last
``forecast_window_s``, whatever the period). An event older than the key's period (it
arrived after the period rolled over) is refused and counted late.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Final

from agentwatch.processors.core._alerting import AlertTracker, Firing, ScopeKey, alert_id_for
from agentwatch.processors.core._detectors import (
    NANO_USD,
    Detector,
    Schedule,
    tracker_for,
)
from agentwatch.processors.core._rules import BudgetRule, RulesConfig, zone_info
from agentwatch.processors.core._windows import LATE, SlidingWindow
from agentwatch.schemas import Alert, AlertScope, AlertState, Event, from_us

__all__ = ["FORECAST_SLICES", "BudgetDetector", "period_bounds"]

#: the forecast window slides in this many steps
FORECAST_SLICES: Final = 50
#: the level of the forecast alert (fractions are levels 0, 1, ...)
FORECAST: Final = -1
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ADJECTIVE: Final = {"day": "daily", "week": "weekly", "month": "monthly"}
_ONE_US: Final = timedelta(microseconds=1)


def period_bounds(ts_us: int, period: str, zone: tzinfo) -> tuple[int, int]:
    """``[start_us, end_us)`` of the calendar day, week (Monday 00:00) or month that
    holds ``ts_us``, in ``zone`` (local midnight; DST-aware)."""
    local = (_EPOCH + timedelta(microseconds=ts_us)).astimezone(zone)
    day = datetime(local.year, local.month, local.day)
    if period == "day":
        start, end = day, day + timedelta(days=1)
    elif period == "week":
        start = day - timedelta(days=local.weekday())
        end = start + timedelta(days=7)
    else:
        start = day.replace(day=1)
        end = (start.replace(year=start.year + 1, month=1) if start.month == 12
               else start.replace(month=start.month + 1))
    return _to_us(start.replace(tzinfo=zone)), _to_us(end.replace(tzinfo=zone))


def _to_us(value: datetime) -> int:
    return (value - _EPOCH) // _ONE_US


class _BudgetState:
    __slots__ = ("end_us", "firing", "forecast_done", "levels_done", "spent", "start_us",
                 "tracker", "window")

    def __init__(self, tracker: AlertTracker, window: SlidingWindow, start_us: int,
                 end_us: int) -> None:
        self.tracker = tracker
        self.window = window
        self.start_us = start_us
        self.end_us = end_us
        self.spent = 0  # nano-USD in the period
        self.levels_done = 0  # fractions crossed in the period
        self.forecast_done = False
        #: alerts firing in the period: [level, alert_id, fired_ts_us]
        self.firing: list[list[Any]] = []


class BudgetDetector(Detector[_BudgetState]):
    def __init__(self, name: str, index: int, rule: BudgetRule, config: RulesConfig,
                 schedule: Schedule) -> None:
        super().__init__(name, index, rule.scope, schedule)
        self.rule = rule
        self._zone = zone_info(rule.timezone)
        self._amount = round(rule.amount_usd * NANO_USD)
        self._levels = [round(f * rule.amount_usd * NANO_USD) for f in rule.fractions]
        self._disorder_us = config.disorder_us
        window_s = rule.forecast_window_s
        self._forecast_us = 0 if window_s is None else window_s * 1_000_000
        self._slice_us = self._forecast_us // FORECAST_SLICES
        # the window refuses nothing the detector accepts: disorder fits in it
        self._window_disorder_us = min(self._disorder_us,
                                       self._forecast_us - 2 * self._slice_us)

    def _new_window(self) -> SlidingWindow:
        if not self._forecast_us:
            return SlidingWindow(1, 1, 0)
        return SlidingWindow(self._forecast_us, self._slice_us, self._window_disorder_us)

    def observe(self, event: Event, ts_us: int, skey: ScopeKey, out: list[Alert]) -> None:
        cost = event.cost_usd
        if not cost:
            return
        key = self._key_of(event)
        state = self.states.get(key)
        if state is None:
            state = self._new_state(key, event, ts_us)
        elif ts_us >= state.end_us:
            self._roll_over(state, out)
            start_us, end_us = period_bounds(ts_us, self.rule.period, self._zone)
            state.start_us, state.end_us = start_us, end_us
            self._schedule(end_us, self.index, key)
        elif ts_us < state.start_us:
            self.late += 1
            return
        nano = round(cost * NANO_USD)
        if self._forecast_us and state.window.add(ts_us, nano, 0) == LATE:
            self.late += 1
            return
        state.spent += nano
        state.tracker.sample.append(event.event_id)
        levels = self._levels
        crossed = state.levels_done
        while crossed < len(levels) and state.spent >= levels[crossed]:
            crossed += 1
        if crossed > state.levels_done:  # one alert for the highest level crossed
            state.levels_done = crossed
            out.append(self._fire(state, crossed - 1, ts_us, None))
        if self._forecast_us and not state.forecast_done and state.spent < self._amount:
            burned = state.window.sum_a
            if burned > 0:
                runs_out_us = ts_us + (self._amount - state.spent) * self._forecast_us // burned
                if runs_out_us < state.end_us:
                    state.forecast_done = True
                    out.append(self._fire(state, FORECAST, ts_us, runs_out_us))

    def _new_state(self, key: ScopeKey, event: Event, ts_us: int) -> _BudgetState:
        start_us, end_us = period_bounds(ts_us, self.rule.period, self._zone)
        state = self.states[key] = _BudgetState(
            tracker_for(self.scope, key, event), self._new_window(), start_us, end_us)
        self._schedule(end_us, self.index, key)
        return state

    # -- alerts ------------------------------------------------------------------------------
    def _fire(self, state: _BudgetState, level: int, ts_us: int, runs_out_us: int | None
              ) -> Alert:
        tracker, rule = state.tracker, self.rule
        alert_id = alert_id_for(f"{self.name}@{level}", rule.scope, tracker.key, ts_us)
        state.firing.append([level, alert_id, ts_us])
        spent = state.spent / NANO_USD
        where = f"{self._who(tracker)} spent ${spent:.2f} of its {self._budget_name()}"
        if runs_out_us is None:
            threshold = self._levels[level] / NANO_USD
            reason = (f"{where} (${rule.amount_usd:.2f}): "
                      f"{rule.fractions[level]:.0%} of it is used up")
        else:
            threshold = rule.amount_usd
            per_hour = state.window.sum_a / NANO_USD * 3_600_000_000 / self._forecast_us
            reason = (f"{where} (${rule.amount_usd:.2f}); at ${per_hour:.2f}/h (the last "
                      f"{rule.forecast_window_s} s) it runs out at {_iso(runs_out_us)}, "
                      f"before the {rule.period} ends at {_iso(state.end_us)}")
        if tracker.firing is None:  # what the engine's stats count: the key has alerts
            tracker.firing = Firing(alert_id, ts_us)
        return self._alert(state, AlertState.FIRING, alert_id, ts_us, spent, threshold,
                           reason, runs_out_us is not None)

    def _roll_over(self, state: _BudgetState, out: list[Alert]) -> None:
        """The period ended: resolve its alerts (at its end) and start from nothing."""
        end_us, spent = state.end_us, state.spent / NANO_USD
        rule = self.rule
        for level, alert_id, fired_us in state.firing:
            threshold = rule.amount_usd if level == FORECAST else self._levels[level] / NANO_USD
            out.append(self._alert(
                state, AlertState.RESOLVED, alert_id, max(end_us, fired_us), spent, threshold,
                f"{self._who(state.tracker)} spent ${spent:.2f} of its {self._budget_name()} "
                f"(${rule.amount_usd:.2f}): the period ended at {_iso(end_us)}",
                level == FORECAST,
            ))
        state.firing = []
        state.tracker.firing = None
        state.spent = state.levels_done = 0
        state.forecast_done = False  # the burn rate (the window) goes on across periods

    def _alert(self, state: _BudgetState, alert_state: AlertState, alert_id: str, ts_us: int,
               value: float, threshold: float, reason: str, forecast: bool) -> Alert:
        rule, tracker = self.rule, state.tracker
        return Alert(
            alert_id=alert_id, rule=self.name, type=rule.alert_type, state=alert_state,
            severity=rule.severity, scope=rule.scope, key=tracker.key[1],
            tenant_id=tracker.key[0], agent_id=tracker.agent_id, session_id=None,
            value=value, threshold=threshold,
            window_s=rule.forecast_window_s if forecast else None,
            ts=from_us(ts_us), reason=reason, event_ids=list(tracker.sample),
        )

    def _who(self, tracker: AlertTracker) -> str:
        if self.scope is AlertScope.AGENT:
            return f"agent {tracker.key[1]}"
        return f"tenant {tracker.key[0]}"

    def _budget_name(self) -> str:
        zone = "" if self.rule.timezone.upper() == "UTC" else f" ({self.rule.timezone})"
        return f"{_ADJECTIVE[self.rule.period]} budget{zone}"

    # -- timers and state ----------------------------------------------------------------------
    def on_due(self, key: ScopeKey, now_us: int, out: list[Alert]) -> None:
        state = self.states.get(key)
        if state is None:
            return
        if now_us >= state.end_us:
            self._roll_over(state, out)
            state.start_us, state.end_us = period_bounds(now_us, self.rule.period, self._zone)
        if state.spent or state.firing:
            self._schedule(state.end_us, self.index, key)
            return
        # nothing spent in this period: the state only keeps the burn rate, until it is gone
        # (a new state from a later event is then the same as this one)
        gone_us = max(state.window.empty_at_us() + self._disorder_us,
                      state.start_us + self._disorder_us)
        if gone_us <= now_us:
            del self.states[key]
        else:
            self._schedule(min(gone_us, state.end_us), self.index, key)

    def close_key(self, key: ScopeKey, ts_us: int, reason: str, out: list[Alert]) -> None:
        self.states.pop(key, None)  # agent and tenant keys are never closed by sessions

    def dump(self, key: ScopeKey) -> Any:
        state = self.states.get(key)
        if state is None:
            return None
        return [state.tracker.dump(), state.start_us, state.end_us, state.spent,
                state.levels_done, int(state.forecast_done), state.firing,
                state.window.dump()]

    def load(self, key: ScopeKey, data: Any) -> None:
        state = _BudgetState(AlertTracker.from_dump(key, data[0]), self._new_window(),
                             data[1], data[2])
        state.spent, state.levels_done = data[3], data[4]
        state.forecast_done = bool(data[5])
        state.firing = [list(f) for f in data[6]]
        state.window.load(data[7])
        self.states[key] = state


def _iso(ts_us: int) -> str:
    """``2026-12-04T17:30:00Z``: UTC, to the second."""
    return (_EPOCH + timedelta(microseconds=ts_us)).strftime("%Y-%m-%dT%H:%M:%SZ")
