"""Runaway loops with varying arguments: a cycle of tool names repeated in one session.

``search -> open -> search -> open ...`` with new arguments every time escapes
``loop_repeat`` (same tool, same arguments). Here only tool names count, in the order the
session's tool calls arrive (one session's events stay in order end to end: one
partition, one producer). O(max_period) work per tool call and O(max_period x
min_repeats) state per session: a ring of the latest names and times, and per period p
the length of the current run of calls equal to the call p before them.
"""

from __future__ import annotations

from typing import Any, Final

from agentwatch.processors.core._alerting import AlertTracker, ScopeKey, SessionCodec
from agentwatch.processors.core._detectors import _US, Detector, Schedule, _who, tracker_for
from agentwatch.processors.core._rules import LoopCycleRule
from agentwatch.schemas import Alert, AlertScope, Event, EventKind

__all__ = ["LoopCycleDetector"]

#: a Final constant: mypyc reads it from a static, not from the module dict on every call
_TOOL_CALL: Final = EventKind.TOOL_CALL
#: at most this many distinct tool names are interned per detector (see ``_intern``)
_INTERN_MAX: Final = 4096


class _CycleState:
    __slots__ = ("cold_us", "names", "period", "repeats", "runs", "times", "tracker")

    def __init__(self, tracker: AlertTracker, max_period: int) -> None:
        self.tracker = tracker
        #: the latest tool names and event times, oldest first (at least the latest
        #: max_period x min_repeats, at most twice as many)
        self.names: list[str] = []
        self.times: list[int] = []
        #: runs[p]: how many of the latest calls equal the call p before each (capped)
        self.runs: list[int] = [0] * (max_period + 1)
        self.period = 0  # while firing: the cycle's period; 0: not firing
        self.cold_us = 0  # while firing: when its repeats no longer fit in the window
        self.repeats = 0  # while firing: how many times in a row the cycle ran (so far)


class LoopCycleDetector(Detector[_CycleState]):
    """A cycle of 2..max_period tool names repeated min_repeats times in a row, the whole
    run within window_s. A run of one tool name is no cycle (its period is 1)."""

    def __init__(self, name: str, index: int, rule: LoopCycleRule, schedule: Schedule) -> None:
        super().__init__(name, index, rule.scope, schedule)
        self.rule = rule
        self.kinds = frozenset({EventKind.TOOL_CALL})
        self._k = rule.max_period
        self._n = rule.min_repeats
        self._ring = rule.max_period * rule.min_repeats
        self._window_us = rule.window_s * _US
        #: _need[p]: the run of period p that means min_repeats repeats of its cycle
        self._need = [p * (rule.min_repeats - 1) for p in range(rule.max_period + 1)]
        #: tool name -> one shared str: every session's ring holds up to 2 x max_period x
        #: min_repeats names, each a fresh string from the decoder (~60 B apiece) without
        #: this; shared, the ring costs a pointer per name and compares by identity first
        self._intern: dict[str, str] = {}

    def observe(self, event: Event, ts_us: int, skey: ScopeKey, out: list[Alert]) -> None:
        if event.kind is not _TOOL_CALL:
            return
        tool = event.name or ""
        interned = self._intern.get(tool)
        if interned is not None:
            tool = interned
        elif len(self._intern) < _INTERN_MAX:
            self._intern[tool] = tool
        state = self.states.get(skey)
        if state is None:
            state = self.states[skey] = _CycleState(
                tracker_for(AlertScope.SESSION, skey, event), self._k)
        if state.period and state.cold_us <= ts_us:
            self._resolve(state, state.cold_us, "its repeats no longer fit in the window", out)
        names, times, runs, cap = state.names, state.times, state.runs, self._ring
        n_names = len(names)
        found = 0  # the shortest period 2..k that now repeats min_repeats times
        for p in range(1, min(self._k, n_names) + 1):
            if names[n_names - p] == tool:
                run = runs[p]
                if run < cap:
                    run = runs[p] = run + 1
                if not found and p > 1 and run >= self._need[p] and runs[1] < p - 1:
                    found = p
            else:
                runs[p] = 0
        names.append(tool)
        times.append(ts_us)
        if n_names >= 2 * cap:  # keep the latest `cap`; trimmed in batches (amortized O(1))
            del names[:cap]
            del times[:cap]
        tracker = state.tracker
        tracker.sample.append(event.event_id)
        period = state.period
        if period:
            if runs[period] < self._need[period]:
                self._resolve(state, ts_us, f"{_tool(tool)} broke the cycle", out)
            else:
                state.cold_us = times[len(times) - period * self._n] + self._window_us
                state.repeats = runs[period] // period + 1
            return
        period = found
        if period and ts_us >= tracker.cooldown_until_us:
            first_us = times[len(times) - period * self._n]
            if ts_us - first_us < self._window_us:
                state.period = period
                state.repeats = runs[period] // period + 1
                state.cold_us = first_us + self._window_us
                out.append(self._fire(state, ts_us, first_us))
                self._schedule(state.cold_us, self.index, skey)

    def _fire(self, state: _CycleState, ts_us: int, first_us: int) -> Alert:
        rule, period = self.rule, state.period
        start = len(state.names) - period * self._n
        cycle = " -> ".join(_tool(n) for n in state.names[start:start + period])
        repeats = state.repeats
        return state.tracker.fire(
            self.name, rule, ts_us, float(repeats), float(rule.min_repeats),
            f"{_who(state.tracker, AlertScope.SESSION)} repeated the tool cycle {cycle} "
            f"{repeats} times in a row within {(ts_us - first_us) / _US:.0f} s, with any "
            f"arguments (threshold {rule.min_repeats} times within {rule.window_s} s)",
        )

    def _resolve(self, state: _CycleState, ts_us: int, why: str, out: list[Alert]) -> None:
        rule = self.rule
        repeats = state.repeats
        state.period = 0
        state.cold_us = 0
        out.append(state.tracker.resolve(
            self.name, rule, ts_us, float(repeats), float(rule.min_repeats),
            f"{_who(state.tracker, AlertScope.SESSION)} no longer repeats a tool cycle "
            f"{rule.min_repeats} times within {rule.window_s} s: {why}",
        ))

    def on_due(self, key: ScopeKey, now_us: int, out: list[Alert]) -> None:
        state = self.states.get(key)
        if state is None or not state.period:
            return
        if state.cold_us <= now_us:
            self._resolve(state, state.cold_us, "its repeats no longer fit in the window", out)
        else:
            self._schedule(state.cold_us, self.index, key)

    def close_key(self, key: ScopeKey, ts_us: int, reason: str, out: list[Alert]) -> None:
        state = self.states.pop(key, None)
        if state is None or not state.period:
            return
        if state.cold_us <= ts_us:  # it went cold first (whether or not a timer saw it)
            self._resolve(state, state.cold_us, "its repeats no longer fit in the window", out)
        else:
            self._resolve(state, ts_us, reason, out)

    def dump(self, key: ScopeKey) -> Any:
        state = self.states.get(key)
        if state is None:
            return None
        cap = self._ring  # only the latest `cap` calls are ever read
        times = state.times[-cap:]
        deltas = [times[i] - times[i - 1] for i in range(1, len(times))]
        return [state.tracker.dump(), state.names[-cap:], times[:1] + deltas, state.runs,
                state.period, state.cold_us, state.repeats]

    def dump_session(self, key: ScopeKey, codec: SessionCodec) -> Any:
        """As :meth:`dump`, times as ``base_us - t`` (as loop_repeat writes its calls)."""
        state = self.states.get(key)
        if state is None:
            return None
        cap, base = self._ring, codec.base_us
        return [state.tracker.dump_compact(codec), state.names[-cap:],
                [base - t for t in state.times[-cap:]], state.runs, state.period,
                state.cold_us, state.repeats]

    def load_session(self, key: ScopeKey, data: Any, codec: SessionCodec) -> None:
        state = _CycleState(AlertTracker.from_compact(key, data[0], codec), self._k)
        self._fill(state, data)
        base = codec.base_us
        state.times = [base - t for t in data[2]]
        if len(state.times) != len(state.names):
            raise ValueError(f"loop_cycle state: {len(state.names)} names, "
                             f"{len(state.times)} times")
        self.states[key] = state

    def _fill(self, state: _CycleState, data: Any) -> None:
        names = self._intern
        state.names = [names.get(n, n) for n in data[1]]
        runs = list(data[3])
        state.runs[:len(runs)] = runs[:self._k + 1]
        state.period = data[4]
        state.cold_us = data[5]
        state.repeats = data[6]

    def load(self, key: ScopeKey, data: Any) -> None:
        state = _CycleState(AlertTracker.from_dump(key, data[0]), self._k)
        state.names = list(data[1])
        at = 0
        times: list[int] = []
        for delta in data[2]:
            at += delta
            times.append(at)
        state.times = times
        runs = list(data[3])
        state.runs[:len(runs)] = runs[:self._k + 1]
        state.period = data[4]
        state.cold_us = data[5]
        state.repeats = data[6]
        self.states[key] = state


def _tool(name: str) -> str:
    return f"`{name}`" if name else "(unnamed)"
