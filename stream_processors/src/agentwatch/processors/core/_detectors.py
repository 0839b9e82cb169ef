"""The detectors: one per rule, each keeping per-key state and an AlertTracker.

Detectors are pure: they see events (with their event time in integer µs) and
timer calls from the engine, and append alert state changes to ``out``. The
engine tells them when event time has passed a deadline they asked for
(``schedule``), which is how alerts resolve while a key is quiet.
"""

from __future__ import annotations

import base64
import binascii
from bisect import bisect_right
from collections.abc import Callable, Iterable
from fractions import Fraction
from operator import attrgetter
from typing import Any, Final, Generic, Protocol, TypeVar

from agentwatch.processors.core._alerting import (
    DUMP_IDS,
    LOAD_IDS,
    AlertTracker,
    ScopeKey,
    SessionCodec,
)
from agentwatch.processors.core._rules import (
    RESOLVE_BELOW_FACTOR,
    BudgetRule,
    CostRule,
    ErrorRateRule,
    LatencyRule,
    LoopRepeatRule,
    LoopStepsRule,
    Rule,
    RulesConfig,
    ScoreRule,
)
from agentwatch.processors.core._windows import ADDED, LATE, SlidingWindow
from agentwatch.schemas import Alert, AlertScope, Event, EventKind, EventStatus

__all__ = [
    "CostDetector",
    "Detector",
    "ErrorRateDetector",
    "LoopRepeatDetector",
    "LoopStepsDetector",
    "Schedule",
    "build_detectors",
]

#: schedule(due_us, detector_index, key): call my on_due(key, now_us) once event time >= due_us
Schedule = Callable[[int, int, ScopeKey], None]

NANO_USD: Final = 1_000_000_000
_US: Final = 1_000_000

class _KeyState(Protocol):
    tracker: AlertTracker


S = TypeVar("S", bound=_KeyState)


#: agent ids shared by the trackers that name them (each event's decoder makes new strings:
#: a session's trackers held a copy each); at most _SHARED_MAX, then no more are added
_AGENT_IDS: Final[dict[str, str]] = {}
_SHARED_MAX: Final = 65_536


def shared(strings: dict[str, str], value: str) -> str:
    """The one copy of ``value`` in ``strings`` (added while there is room)."""
    found = strings.get(value)
    if found is not None:
        return found
    if len(strings) < _SHARED_MAX:
        strings[value] = value
    return value


def tracker_for(scope: AlertScope, key: ScopeKey, event: Event) -> AlertTracker:
    """A new tracker for ``key``; a session's shares the key's session id and one copy of
    each agent id."""
    if scope is AlertScope.SESSION:
        return AlertTracker(key, shared(_AGENT_IDS, event.agent_id), key[1])
    if scope is AlertScope.AGENT:
        return AlertTracker(key, event.agent_id, None)
    return AlertTracker(key, None, None)


class Detector(Generic[S]):
    """Base: per-key state in ``states``; subclasses implement observe and on_due."""

    def __init__(self, name: str, index: int, scope: AlertScope, schedule: Schedule) -> None:
        self.name = name
        self.index = index
        self.scope = scope
        self._schedule = schedule
        self.states: dict[ScopeKey, S] = {}
        self.late = 0
        self._by_session = scope is AlertScope.SESSION
        #: event -> key for agent and tenant scopes (C-level attrgetter: this is the hot path)
        self._key_of: Callable[[Event], ScopeKey] = (
            attrgetter("tenant_id", "agent_id") if scope is AlertScope.AGENT
            else attrgetter("tenant_id", "tenant_id")
        )
        #: the event kinds this detector looks at (None: all); the engine routes by it
        self.kinds: frozenset[EventKind] | None = None

    def observe(self, event: Event, ts_us: int, skey: ScopeKey, out: list[Alert]) -> None:
        """``skey`` is the event's session key, (tenant_id, session_id)."""
        raise NotImplementedError

    def on_due(self, key: ScopeKey, now_us: int, out: list[Alert]) -> None:
        """Event time reached a deadline this detector scheduled for ``key``."""

    def close_key(self, key: ScopeKey, ts_us: int, reason: str, out: list[Alert]) -> None:
        """The key is gone (session ended or expired): drop its state, resolve if firing."""
        raise NotImplementedError

    def tracker(self, key: ScopeKey) -> AlertTracker | None:
        state = self.states.get(key)
        return None if state is None else state.tracker

    def dump(self, key: ScopeKey) -> Any:
        """The state of ``key`` as plain JSON-able data (None: no state)."""
        raise NotImplementedError

    def load(self, key: ScopeKey, data: Any) -> None:
        """Install ``key``'s state from :meth:`dump` data (the engine re-arms its timers)."""
        raise NotImplementedError

    def dump_session(self, key: ScopeKey, codec: SessionCodec) -> Any:
        """The state of session ``key`` in format 2 (``Engine.dump_key``), sharing what
        ``codec`` holds. By default :meth:`dump`, its samples referring to the ids already
        in the session's table by position."""
        DUMP_IDS.update(codec.index)
        try:
            return self.dump(key)
        finally:
            DUMP_IDS.clear()

    def load_session(self, key: ScopeKey, data: Any, codec: SessionCodec) -> None:
        """Install :meth:`dump_session` data."""
        LOAD_IDS.extend(codec.ids)
        try:
            self.load(key, data)
        finally:
            LOAD_IDS.clear()


# -- sliding-window sums: cost and error rate ----------------------------------------------
#: ``_WindowState.below_us`` when the value is not below the threshold (no deadline from it)
_NO_RUN: Final = 1 << 62
#: ``until_us`` of a walk that goes on until the window is empty
_FOREVER: Final = 1 << 62

#: a walk's result: (t, sum_a, sum_b, below_us, why); ``why`` is "" when it did not resolve
Walked = tuple[int, int, int, int, str]


class _WindowState:
    __slots__ = ("below_us", "tracker", "window")

    def __init__(self, window: SlidingWindow, tracker: AlertTracker) -> None:
        self.window = window
        self.tracker = tracker
        #: while firing, with ``resolve_after_s``: the event time since which the value has
        #: been below the threshold without a break, as of the window's high-water mark
        #: (_NO_RUN: it is not below). Only events move it, never timers: a timer's walk
        #: computes from it, so results do not depend on when timers run.
        self.below_us = _NO_RUN


class _WindowDetector(Detector[_WindowState]):
    """A detector over one sliding window per key with two integer channels (a, b).

    Hysteresis: ``fires`` starts an alert; it resolves at the first event time at which
    ``clears`` (below ``resolve_below``; an empty window always clears), or at which the value
    has been ``not holds`` (below the threshold) for ``resolve_after_s`` without a break.
    """

    def __init__(
        self,
        name: str,
        index: int,
        scope: AlertScope,
        window_s: int,
        resolve_after_s: int | None,
        config: RulesConfig,
        schedule: Schedule,
    ) -> None:
        super().__init__(name, index, scope, schedule)
        self._window_us = window_s * _US
        self._step_us = config.step_us
        self._disorder_us = config.disorder_us
        #: -1: resolve_after_s is off
        self._after_us = -1 if resolve_after_s is None else resolve_after_s * _US
        self.below_why = ""  # the reasons of the two ways to resolve (set by subclasses)
        self.after_why = ""

    # what a subclass defines (and an observe() that calls _update with its values) -------
    def fires(self, a: int, b: int) -> bool:
        raise NotImplementedError

    def holds(self, a: int, b: int) -> bool:
        """At or over the threshold (min_events aside)."""
        raise NotImplementedError

    def clears(self, a: int, b: int) -> bool:
        """Below ``resolve_below`` or empty; implies ``not holds``."""
        raise NotImplementedError

    def fire(self, tracker: AlertTracker, ts_us: int, a: int, b: int) -> Alert:
        raise NotImplementedError

    def resolve(self, tracker: AlertTracker, ts_us: int, a: int, b: int, why: str) -> Alert:
        raise NotImplementedError

    # the state machine -----------------------------------------------------------------
    def _walk(self, steps: Iterable[tuple[int, int, int]], a: int, b: int, below_us: int,
              until_us: int) -> Walked:
        """Hysteresis along ``steps``, the ``(t, sum_a, sum_b)`` the window takes from now on
        (ascending), from a window holding ``(a, b)`` now and below the threshold since
        ``below_us``. The first resolution at or before ``until_us``, or ``why == ""`` and
        ``below_us`` as of ``until_us``. A deadline that falls on a step counts before it."""
        after_us = self._after_us
        timed = after_us >= 0
        for t, next_a, next_b in steps:
            if t > until_us:
                break
            if timed and below_us != _NO_RUN and below_us + after_us <= t:
                return below_us + after_us, a, b, below_us, self.after_why
            a, b = next_a, next_b
            if self.clears(a, b):
                return t, a, b, below_us, self.below_why
            if self.holds(a, b):
                below_us = _NO_RUN
            elif timed and below_us == _NO_RUN:
                below_us = t
                if after_us == 0:
                    return t, a, b, below_us, self.after_why
        if timed and below_us != _NO_RUN and below_us + after_us <= until_us:
            return below_us + after_us, a, b, below_us, self.after_why
        return until_us, a, b, below_us, ""

    def _walk_ahead(self, state: _WindowState, until_us: int) -> Walked:
        """The walk from the high-water mark on, assuming no new events."""
        window = state.window
        return self._walk(window.changes_ahead(), window.sum_a, window.sum_b, state.below_us,
                          until_us)

    def _move_run(self, key: ScopeKey, state: _WindowState, below_us: int) -> None:
        """A walk without resolution ended below the threshold since ``below_us``."""
        if below_us != state.below_us:
            state.below_us = below_us
            if below_us != _NO_RUN:  # a new run: its deadline may come before any timer
                self._schedule(below_us + self._after_us, self.index, key)

    def _resolve(self, state: _WindowState, walked: Walked, out: list[Alert]) -> None:
        state.below_us = _NO_RUN
        out.append(self.resolve(state.tracker, walked[0], walked[1], walked[2], walked[4]))

    def _update(self, event: Event, ts_us: int, skey: ScopeKey, a: int, b: int,
                out: list[Alert]) -> None:
        key = skey if self._by_session else self._key_of(event)
        state = self.states.get(key)
        if state is None:
            window = SlidingWindow(self._window_us, self._step_us, self._disorder_us)
            state = self.states[key] = _WindowState(window, tracker_for(self.scope, key, event))
            if not self._by_session:  # session state goes with the session
                self._schedule(ts_us + self._window_us + self._disorder_us, self.index, key)
        window = state.window
        tracker = state.tracker
        if tracker.firing is not None and ts_us > window.max_ts_us:
            # event time moved on: did the alert resolve before this event?
            walked = self._walk_ahead(state, ts_us)
            if walked[4]:
                self._resolve(state, walked, out)
            else:
                self._move_run(key, state, walked[3])
        added = window.add(ts_us, a, b)
        if added == LATE:
            self.late += 1
            return
        tracker.sample.append(event.event_id)
        if tracker.firing is None:
            if added == ADDED:
                if self.fires(window.sum_a, window.sum_b) and ts_us >= tracker.cooldown_until_us:
                    out.append(self.fire(tracker, ts_us, window.sum_a, window.sum_b))
                    state.below_us = _NO_RUN
                    self._schedule_resolve(key, state)
                return
            for end_us, sa, sb in window.windows_from(ts_us):
                if self.fires(sa, sb) and end_us >= tracker.cooldown_until_us:
                    out.append(self.fire(tracker, end_us, sa, sb))
                    state.below_us = _NO_RUN
                    # it fired in a window that has passed: did it resolve on the way here?
                    walked = self._walk(window.changes_after(end_us, sa, sb), sa, sb, _NO_RUN,
                                        window.max_ts_us)
                    if walked[4]:
                        self._resolve(state, walked, out)
                    else:
                        state.below_us = walked[3]
                        self._schedule_resolve(key, state)
                    break
            return
        # firing: the value at the high-water mark changed
        now_us = window.max_ts_us
        walked = self._walk(((now_us, window.sum_a, window.sum_b),), window.sum_a,
                            window.sum_b, state.below_us, now_us)
        if walked[4]:
            self._resolve(state, walked, out)
        else:
            self._move_run(key, state, walked[3])

    def _schedule_resolve(self, key: ScopeKey, state: _WindowState) -> None:
        walked = self._walk_ahead(state, _FOREVER)
        if walked[4]:
            self._schedule(walked[0], self.index, key)

    def on_due(self, key: ScopeKey, now_us: int, out: list[Alert]) -> None:
        state = self.states.get(key)
        if state is None:
            return
        window, tracker = state.window, state.tracker
        if tracker.firing is not None:
            walked = self._walk_ahead(state, _FOREVER)
            if not walked[4]:  # cannot happen: an empty window always clears; be safe
                return
            if walked[0] > now_us:
                self._schedule(walked[0], self.index, key)
                return
            self._resolve(state, walked, out)
        if self.scope is AlertScope.SESSION:
            return
        # keep the state (and its cooldown) until the window is empty and the cooldown over
        gone_us = max(window.empty_at_us() + self._disorder_us, tracker.cooldown_until_us)
        if gone_us <= now_us:
            del self.states[key]
        else:
            self._schedule(gone_us, self.index, key)

    def close_key(self, key: ScopeKey, ts_us: int, reason: str, out: list[Alert]) -> None:
        state = self.states.pop(key, None)
        if state is not None and state.tracker.firing is not None:
            w = state.window
            # if it resolved before the key closed, say so at that time: the result must
            # not depend on whether a timer (the watermark) got there first
            walked = self._walk_ahead(state, ts_us)
            if walked[4]:
                self._resolve(state, walked, out)
            else:
                out.append(self.resolve(state.tracker, ts_us, w.sum_a, w.sum_b, reason))

    # -- state as plain data (changelog tables) ---------------------------------------------
    def dump(self, key: ScopeKey) -> Any:
        state = self.states.get(key)
        if state is None:
            return None
        if state.below_us == _NO_RUN:
            return [state.window.dump(), state.tracker.dump()]
        return [state.window.dump(), state.tracker.dump(), state.below_us]

    def dump_session(self, key: ScopeKey, codec: SessionCodec) -> Any:
        """``[window, tracker]`` (``+ [below_us]`` while below the threshold), the window's
        high-water mark as ``base_us`` minus it."""
        state = self.states.get(key)
        if state is None:
            return None
        window = state.window.dump()
        window[0] = codec.base_us - window[0]
        if state.below_us == _NO_RUN:
            return [window, state.tracker.dump_compact(codec)]
        return [window, state.tracker.dump_compact(codec), state.below_us]

    def load_session(self, key: ScopeKey, data: Any, codec: SessionCodec) -> None:
        window = SlidingWindow(self._window_us, self._step_us, self._disorder_us)
        dumped = list(data[0])
        dumped[0] = codec.base_us - dumped[0]
        window.load(dumped)
        state = _WindowState(window, AlertTracker.from_compact(key, data[1], codec))
        if len(data) > 2:
            state.below_us = data[2]
        self.states[key] = state

    def load(self, key: ScopeKey, data: Any) -> None:
        """Also the dumps of versions without hysteresis: ``[window, tracker]``."""
        window = SlidingWindow(self._window_us, self._step_us, self._disorder_us)
        window.load(data[0])
        state = self.states[key] = _WindowState(window, AlertTracker.from_dump(key, data[1]))
        if len(data) > 2:
            state.below_us = data[2]


class CostDetector(_WindowDetector):
    """Cost in the window > threshold. Channel a: cost in nano-USD (exact integer sums)."""

    def __init__(self, name: str, index: int, rule: CostRule, config: RulesConfig,
                 schedule: Schedule) -> None:
        super().__init__(name, index, rule.scope, rule.window_s, rule.resolve_after_s, config,
                         schedule)
        self.rule = rule
        self._threshold_nano = round(rule.threshold_usd * NANO_USD)
        self._below_nano = round(rule.resolve_below * NANO_USD)
        self.below_why = f"the window fell back under ${rule.resolve_below:.2f}"
        self.after_why = (f"it stayed at or under ${rule.threshold_usd:.2f} for "
                          f"{rule.resolve_after_s} s")

    def observe(self, event: Event, ts_us: int, skey: ScopeKey, out: list[Alert]) -> None:
        cost = event.cost_usd
        if cost:  # None or 0 cannot move a sum up: nothing to do
            self._update(event, ts_us, skey, round(cost * NANO_USD), 0, out)

    def fires(self, a: int, b: int) -> bool:
        return a > self._threshold_nano

    def holds(self, a: int, b: int) -> bool:  # a plain method, not `holds = fires`: mypyc
        return a > self._threshold_nano

    def clears(self, a: int, b: int) -> bool:
        return a < self._below_nano or a == 0

    def fire(self, tracker: AlertTracker, ts_us: int, a: int, b: int) -> Alert:
        rule = self.rule
        return tracker.fire(
            self.name, rule, ts_us, a / NANO_USD, rule.threshold_usd,
            f"{_who(tracker, rule.scope)} spent ${a / NANO_USD:.2f} in {rule.window_s} s "
            f"(threshold ${rule.threshold_usd:.2f})",
        )

    def resolve(self, tracker: AlertTracker, ts_us: int, a: int, b: int, why: str) -> Alert:
        rule = self.rule
        return tracker.resolve(
            self.name, rule, ts_us, a / NANO_USD, rule.threshold_usd,
            f"{_who(tracker, rule.scope)} cost is ${a / NANO_USD:.2f} per {rule.window_s} s: "
            f"{why}",
        )


class ErrorRateDetector(_WindowDetector):
    """Share of errors among ``kinds``. Channel a: errors, b: events."""

    def __init__(self, name: str, index: int, rule: ErrorRateRule, config: RulesConfig,
                 schedule: Schedule) -> None:
        super().__init__(name, index, rule.scope, rule.window_s, rule.resolve_after_s, config,
                         schedule)
        self.rule = rule
        self.kinds = self._kinds = rule.kinds
        self._min = rule.min_events
        self._ratio = rule.threshold_ratio
        # resolve_below as an exact fraction of the decimals written (0.8 x 0.3 is 0.24, not
        # 0.24000000000000002): "6 of 25 calls" is not under 24 %
        below = (Fraction(str(rule.threshold_ratio)) * Fraction(str(RESOLVE_BELOW_FACTOR))
                 if rule.resolve_below_ratio is None else Fraction(str(rule.resolve_below_ratio)))
        self._below_num = below.numerator
        self._below_den = below.denominator
        self.below_why = f"the window fell back under {_percent(rule.resolve_below)}"
        self.after_why = (f"it stayed under {_percent(rule.threshold_ratio)} for "
                          f"{rule.resolve_after_s} s")

    def observe(self, event: Event, ts_us: int, skey: ScopeKey, out: list[Alert]) -> None:
        if event.kind in self._kinds:
            self._update(event, ts_us, skey, event.status is EventStatus.ERROR, 1, out)

    def fires(self, a: int, b: int) -> bool:
        return b >= self._min and a >= self._ratio * b

    def holds(self, a: int, b: int) -> bool:
        return b > 0 and a >= self._ratio * b

    def clears(self, a: int, b: int) -> bool:
        return b == 0 or a * self._below_den < self._below_num * b

    def fire(self, tracker: AlertTracker, ts_us: int, a: int, b: int) -> Alert:
        rule = self.rule
        return tracker.fire(
            self.name, rule, ts_us, a / b, rule.threshold_ratio,
            f"{_who(tracker, rule.scope)} failed {a} of {b} calls ({a / b:.0%}) in "
            f"{rule.window_s} s (threshold {rule.threshold_ratio:.0%}, "
            f"at least {rule.min_events} calls)",
        )

    def resolve(self, tracker: AlertTracker, ts_us: int, a: int, b: int, why: str) -> Alert:
        rule = self.rule
        share = a / b if b else 0.0
        return tracker.resolve(
            self.name, rule, ts_us, share, rule.threshold_ratio,
            f"{_who(tracker, rule.scope)} error share is {share:.0%} ({a} of {b}) per "
            f"{rule.window_s} s: {why}",
        )


# -- runaway loop: the same tool with the same arguments, again and again -------------------
_SWEEP_AT: Final = 16  # a key's first sweep of cold patterns (then 2 x patterns + 16)

#: hex digits of an args hash a session's state keeps for a pattern called once (64 bits)
_SHORT_HEX: Final = 16


class _RepeatState:
    __slots__ = ("hot", "max_ts_us", "patterns", "short", "sweep_at", "tracker")

    def __init__(self, tracker: AlertTracker) -> None:
        self.tracker = tracker
        # per (tool, args hash): its most recent call times, ascending, at most 2 * min_repeats
        # (a pattern called once holds the bare int: most tool calls have fresh arguments)
        self.patterns: dict[tuple[str, str], list[int] | int] = {}
        self.hot: dict[tuple[str, str], None] = {}  # patterns at the threshold
        self.max_ts_us = -(1 << 62)
        self.sweep_at = _SWEEP_AT
        #: after a restore: the patterns called once whose args hash (a hex digest) the state
        #: kept only the first 64 bits of, (tool, _SHORT_HEX digits) -> call time. A call with
        #: a full hash of that prefix is their second call. None: there are none.
        self.short: dict[tuple[str, str], int] | None = None


class LoopRepeatDetector(Detector[_RepeatState]):
    """``min_repeats`` calls of one (tool, args hash) within ``window_s`` (exact event times).

    A pattern is "hot" at time t when its k-th most recent call (k = min_repeats) is inside
    the window ending at t; it goes cold at ``calls[-k] + window``. Only the last 2k call
    times of a pattern are kept: if a pattern is not hot, any k consecutive calls span more
    than the window, so a late event (within disorder < window) can only form a run with
    calls among those kept. Memory per key is O(patterns seen in the window), each O(k).
    """

    def __init__(self, name: str, index: int, rule: LoopRepeatRule, config: RulesConfig,
                 schedule: Schedule) -> None:
        super().__init__(name, index, rule.scope, schedule)
        self.rule = rule
        self._window_us = rule.window_s * _US
        self._disorder_us = config.disorder_us
        self._k = rule.min_repeats
        self.kinds = frozenset({EventKind.TOOL_CALL})
        self._tools: dict[str, str] = {}  # one copy of each tool name (see ``shared``)

    def observe(self, event: Event, ts_us: int, skey: ScopeKey, out: list[Alert]) -> None:
        if event.kind is not EventKind.TOOL_CALL or event.tool_args_hash is None:
            return
        key = skey if self._by_session else self._key_of(event)
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = _RepeatState(tracker_for(self.scope, key, event))
            if not self._by_session:
                self._schedule(ts_us + self._window_us + self._disorder_us, self.index, key)
        if ts_us < state.max_ts_us - self._disorder_us:
            self.late += 1
            return
        tracker = state.tracker
        if tracker.firing is not None and ts_us > state.max_ts_us:
            self._resolve_if_cold(state, ts_us, out)
        state.max_ts_us = max(state.max_ts_us, ts_us)
        pattern = (event.name or "", event.tool_args_hash)
        patterns = state.patterns
        found = patterns.get(pattern)
        short = state.short
        if found is None and short is not None and len(pattern[1]) == _HEX_DIGEST:
            found = short.pop((pattern[0], pattern[1][:_SHORT_HEX]), None)
        if found is None:  # the common case: fresh arguments; a first call is no repeat
            if len(patterns) + (0 if short is None else len(short)) >= state.sweep_at:
                self._sweep(state, ts_us)
            patterns[(shared(self._tools, pattern[0]), pattern[1])] = ts_us
            return
        if isinstance(found, int):
            calls = patterns[pattern] = [found]
        else:
            calls = found
        k, window_us = self._k, self._window_us
        if ts_us < calls[-1]:
            at = bisect_right(calls, ts_us)
            calls.insert(at, ts_us)
        else:
            at = len(calls)
            calls.append(ts_us)
        n_calls = len(calls)
        if n_calls > 2 * k:
            del calls[0]
            at -= 1
        tracker.sample.append(event.event_id)
        if n_calls >= k and calls[-1] - calls[-k] < window_us:
            state.hot[pattern] = None
        if tracker.firing is None:
            self._check_fire(key, state, pattern, calls, at, out)

    def _check_fire(self, key: ScopeKey, state: _RepeatState, pattern: tuple[str, str],
                    calls: list[int], at: int, out: list[Alert]) -> None:
        """Fire at the earliest window this call changed (they end at calls[at:])."""
        k, window_us, tracker = self._k, self._window_us, state.tracker
        for j in range(max(at, k - 1), len(calls)):
            end_us = calls[j]
            if end_us - calls[j - k + 1] < window_us and end_us >= tracker.cooldown_until_us:
                count = j + 1 - bisect_right(calls, end_us - window_us)
                out.append(self._fire(tracker, pattern, end_us, count))
                if pattern in state.hot:
                    self._schedule_resolve(key, state)
                else:  # it held only in a window that has already passed
                    out.append(self._resolve(tracker, calls[j - k + 1] + window_us, k - 1))
                return

    def _fire(self, tracker: AlertTracker, pattern: tuple[str, str], ts_us: int,
              count: int) -> Alert:
        rule = self.rule
        return tracker.fire(
            self.name, rule, ts_us, float(count), float(rule.min_repeats),
            f"{_who(tracker, rule.scope)} called tool `{pattern[0]}` {count} times with the "
            f"same arguments within {rule.window_s} s (threshold {rule.min_repeats})",
        )

    def _resolve(self, tracker: AlertTracker, ts_us: int, count: int,
                 why: str = "the repeated call stopped") -> Alert:
        rule = self.rule
        return tracker.resolve(
            self.name, rule, ts_us, float(count), float(rule.min_repeats),
            f"{_who(tracker, rule.scope)} no longer repeats a tool call {rule.min_repeats} "
            f"times within {rule.window_s} s: {why}",
        )

    def _cold_at_us(self, state: _RepeatState, pattern: tuple[str, str]) -> int:
        calls = state.patterns[pattern]
        assert isinstance(calls, list)  # noqa: S101 -- a hot pattern has >= min_repeats calls
        return calls[-self._k] + self._window_us

    def _resolve_if_cold(self, state: _RepeatState, now_us: int, out: list[Alert]) -> None:
        """Forget hot patterns that went cold by ``now_us``; resolve when none is left."""
        last_us: int | None = None
        for pattern in list(state.hot):
            cold_us = self._cold_at_us(state, pattern)
            if cold_us > now_us:
                continue
            del state.hot[pattern]
            if last_us is None or cold_us > last_us:
                last_us = cold_us
        if not state.hot and state.tracker.firing is not None:
            out.append(self._resolve(state.tracker, now_us if last_us is None else last_us,
                                     self._k - 1))

    def _schedule_resolve(self, key: ScopeKey, state: _RepeatState) -> None:
        due = max((self._cold_at_us(state, p) for p in state.hot), default=None)
        if due is not None:
            self._schedule(due, self.index, key)

    def _sweep(self, state: _RepeatState, now_us: int) -> None:
        """Forget patterns with no call in the window any more (bounded memory per key)."""
        horizon = now_us - self._window_us - self._disorder_us
        gone = [p for p, calls in state.patterns.items()
                if p not in state.hot and _last_call(calls) <= horizon]
        for pattern in gone:
            del state.patterns[pattern]
        n_short = 0
        short = state.short
        if short is not None:
            for pattern in [p for p, t in short.items() if t <= horizon]:
                del short[pattern]
            n_short = len(short)
            if not n_short:
                state.short = None
        state.sweep_at = 2 * (len(state.patterns) + n_short) + 16

    def on_due(self, key: ScopeKey, now_us: int, out: list[Alert]) -> None:
        state = self.states.get(key)
        if state is None:
            return
        if state.tracker.firing is not None:
            self._resolve_if_cold(state, now_us, out)
            if state.tracker.is_firing:
                self._schedule_resolve(key, state)
                return
        if self.scope is AlertScope.SESSION:
            return
        self._sweep(state, now_us)
        cooldown_us = state.tracker.cooldown_until_us
        if not state.patterns and cooldown_us <= now_us:
            del self.states[key]
        else:
            newest = max((_last_call(c) for c in state.patterns.values()), default=now_us)
            due_us = max(newest + self._window_us + self._disorder_us, cooldown_us, now_us + 1)
            self._schedule(due_us, self.index, key)

    def close_key(self, key: ScopeKey, ts_us: int, reason: str, out: list[Alert]) -> None:
        state = self.states.pop(key, None)
        if state is not None and state.tracker.firing is not None:
            self._resolve_if_cold(state, ts_us, out)  # went cold first? (timer-independent)
            if state.tracker.is_firing:
                out.append(self._resolve(state.tracker, ts_us, self._k, reason))

    def dump(self, key: ScopeKey) -> Any:
        """``t`` tracker, ``m`` max_ts_us, ``w`` sweep_at (when not 16), ``p`` the patterns
        flat (tool, args hash, call times as ``m`` minus each: small numbers), ``h`` the hot
        ones by position in ``p``."""
        state = self.states.get(key)
        if state is None:
            return None
        max_ts_us = state.max_ts_us
        flat: list[Any] = []
        position: dict[tuple[str, str], int] = {}
        for pattern, calls in state.patterns.items():
            position[pattern] = len(position)
            flat += (pattern[0], pattern[1], max_ts_us - calls if isinstance(calls, int)
                     else [max_ts_us - t for t in calls])
        out: dict[str, Any] = {"t": state.tracker.dump(), "m": max_ts_us}
        if state.sweep_at != _SWEEP_AT:
            out["w"] = state.sweep_at
        if flat:
            out["p"] = flat
        if state.hot:
            out["h"] = [position[p] for p in state.hot]
        return out

    def dump_session(self, key: ScopeKey, codec: SessionCodec) -> Any:
        """``[tracker, base - max_ts_us, sweep_at, tools, args hashes, calls, hot,
        tools once, hash prefixes, times once]``, calls as ``base - t``.

        Patterns called more than once (or whose args hash is not a 32-digit hex digest):
        one per position of ``tools``, ``args hashes`` (packed when hex digests:
        :func:`pack_hex`) and ``calls`` (an int for a single call, else a list); ``hot``
        the hot ones' positions. Patterns called once with a hex digest, most tool calls
        (fresh arguments): ``tools once``, the first 64 bits of their hashes (packed as
        well) and their call times; a restored engine takes a later call whose hash starts
        with those bits for their second call (two different arguments of one tool in
        one session's window collide with odds of 2^-64). Tools and times are written as
        loop_cycle writes its names and times: zstd stores the second copy as a reference."""
        state = self.states.get(key)
        if state is None:
            return None
        base = codec.base_us
        tools: list[str] = []
        hashes: list[str] = []
        calls_out: list[Any] = []
        once_tools: list[str] = []
        once_hashes: list[str] = []
        once_calls: list[int] = []
        position: dict[tuple[str, str], int] = {}
        hot = state.hot
        for pattern, calls in state.patterns.items():
            args_hash = pattern[1]
            if isinstance(calls, int) and len(args_hash) == _HEX_DIGEST and pattern not in hot:
                once_tools.append(pattern[0])
                once_hashes.append(args_hash)
                once_calls.append(base - calls)
                continue
            if hot:
                position[pattern] = len(tools)
            tools.append(pattern[0])
            hashes.append(args_hash)
            calls_out.append(base - calls if isinstance(calls, int)
                             else [base - t for t in calls])
        if once_hashes and not _all_hex(once_hashes, _HEX_DIGEST):  # keep them whole
            tools += once_tools
            hashes += once_hashes
            calls_out += once_calls
            once_tools, once_hashes, once_calls = [], [], []
        prefixes = [h[:_SHORT_HEX] for h in once_hashes]
        short = state.short
        if short is not None:  # restored ones still called once
            prefixes = [p[1] for p in short] + prefixes
            once_tools = [p[0] for p in short] + once_tools
            once_calls = [base - t for t in short.values()] + once_calls
        packed_once: str | list[str]
        if short is None:  # hex digits checked above: pack them as they are
            packed_once = (binascii.b2a_base64(bytes.fromhex("".join(prefixes)),
                                               newline=False).decode("ascii")
                           if prefixes else "")  # base64.b64encode's own call (see pack_ids)
        else:
            packed_once = pack_hex(prefixes, _SHORT_HEX)
        return [state.tracker.dump_compact(codec), base - state.max_ts_us, state.sweep_at,
                tools, pack_hex(hashes), calls_out, [position[p] for p in hot],
                once_tools, packed_once, once_calls]

    def load_session(self, key: ScopeKey, data: Any, codec: SessionCodec) -> None:
        base = codec.base_us
        state = _RepeatState(AlertTracker.from_compact(key, data[0], codec))
        state.max_ts_us = base - data[1]
        state.sweep_at = data[2]
        tools, hashes, calls_in = data[3], unpack_hex(data[4]), data[5]
        if not len(tools) == len(hashes) == len(calls_in):
            raise ValueError(f"loop_repeat state: {len(tools)} tools, {len(hashes)} hashes, "
                             f"{len(calls_in)} call lists")
        patterns: list[tuple[str, str]] = []
        for tool, args_hash, calls in zip(tools, hashes, calls_in, strict=True):
            pattern = (tool, args_hash)
            patterns.append(pattern)
            state.patterns[pattern] = (base - calls if isinstance(calls, int)
                                       else [base - t for t in calls])
        for i in data[6]:
            state.hot[patterns[i]] = None
        once_tools, once_calls = data[7], data[9]
        prefixes = unpack_hex(data[8], _SHORT_HEX) if data[8] else []
        if not len(once_tools) == len(prefixes) == len(once_calls):
            raise ValueError(f"loop_repeat state: {len(once_tools)} tools called once, "
                             f"{len(prefixes)} hash prefixes, {len(once_calls)} times")
        if once_tools:
            state.short = {(tool, prefix): base - t
                           for tool, prefix, t in zip(once_tools, prefixes, once_calls,
                                                      strict=True)}
        self.states[key] = state

    def load(self, key: ScopeKey, data: Any) -> None:
        """:meth:`dump` data, or the first format's list ``[tracker, max_ts_us, sweep_at,
        [[tool, args hash, calls]...], [[tool, args hash]...]]`` (absolute times)."""
        if isinstance(data, list):
            state = _RepeatState(AlertTracker.from_dump(key, data[0]))
            state.max_ts_us = data[1]
            state.sweep_at = data[2]
            for name, args_hash, calls in data[3]:
                state.patterns[(name, args_hash)] = calls
            for name, args_hash in data[4]:
                state.hot[(name, args_hash)] = None
            self.states[key] = state
            return
        state = _RepeatState(AlertTracker.from_dump(key, data["t"]))
        state.max_ts_us = max_ts_us = data["m"]
        state.sweep_at = data.get("w", _SWEEP_AT)
        flat = data.get("p", [])
        patterns: list[tuple[str, str]] = []
        for i in range(0, len(flat) - 2, 3):
            pattern = (flat[i], flat[i + 1])
            rel = flat[i + 2]
            patterns.append(pattern)
            state.patterns[pattern] = (max_ts_us - rel if isinstance(rel, int)
                                       else [max_ts_us - t for t in rel])
        for i in data.get("h", []):
            state.hot[patterns[i]] = None
        self.states[key] = state


# -- runaway loop: too many steps in one session -------------------------------------------
class _StepsState:
    __slots__ = ("steps", "tracker")

    def __init__(self, tracker: AlertTracker) -> None:
        self.tracker = tracker
        self.steps = 0


class LoopStepsDetector(Detector[_StepsState]):
    def __init__(self, name: str, index: int, rule: LoopStepsRule, schedule: Schedule) -> None:
        super().__init__(name, index, rule.scope, schedule)
        self.rule = rule
        self.kinds = self._kinds = rule.kinds
        self._max = rule.max_steps

    def observe(self, event: Event, ts_us: int, skey: ScopeKey, out: list[Alert]) -> None:
        if event.kind not in self._kinds:
            return
        key = skey
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = _StepsState(tracker_for(AlertScope.SESSION, key, event))
        state.steps += 1
        tracker = state.tracker
        tracker.sample.append(event.event_id)
        if state.steps > self._max and tracker.can_fire(ts_us):
            rule = self.rule
            out.append(tracker.fire(
                self.name, rule, ts_us, float(state.steps), float(rule.max_steps),
                f"{_who(tracker, AlertScope.SESSION)} made {state.steps} steps "
                f"(llm and tool calls; threshold {rule.max_steps}) without ending",
            ))

    def close_key(self, key: ScopeKey, ts_us: int, reason: str, out: list[Alert]) -> None:
        state = self.states.pop(key, None)
        if state is not None and state.tracker.firing is not None:
            rule = self.rule
            out.append(state.tracker.resolve(
                self.name, rule, ts_us, float(state.steps), float(rule.max_steps),
                f"{_who(state.tracker, AlertScope.SESSION)} made {state.steps} steps in all: "
                f"{reason}",
            ))

    def dump(self, key: ScopeKey) -> Any:
        state = self.states.get(key)
        return None if state is None else [state.tracker.dump(), state.steps]

    def load(self, key: ScopeKey, data: Any) -> None:
        state = _StepsState(AlertTracker.from_dump(key, data[0]))
        state.steps = data[1]
        self.states[key] = state

    def dump_session(self, key: ScopeKey, codec: SessionCodec) -> Any:
        state = self.states.get(key)
        return None if state is None else [state.tracker.dump_compact(codec), state.steps]

    def load_session(self, key: ScopeKey, data: Any, codec: SessionCodec) -> None:
        state = _StepsState(AlertTracker.from_compact(key, data[0], codec))
        state.steps = data[1]
        self.states[key] = state


_HEX_DIGEST: Final = 32  # characters of the producer's tool_args_hash (128 bits in hex)


def _all_hex(values: list[str], width: int) -> bool:
    """Every one of ``values`` is ``width`` lowercase hex digits."""
    joined = "".join(values)
    if width % 2 or not joined or len(joined) != width * len(values):
        return False
    try:
        raw = bytes.fromhex(joined)
    except ValueError:
        return False
    # all hex digits (fromhex skips whitespace), lowercase as hex() writes them, not all
    # decimal: what ``joined.islower()`` says of hex digits (a cased letter, no capital),
    # without its lookup of each character in the Unicode tables (see engine.uuid_bytes)
    return len(raw) * 2 == len(joined) and raw.hex() == joined and not joined.isdigit()


def pack_hex(values: list[str], width: int = _HEX_DIGEST) -> str | list[str]:
    """Strings for a state dump: when every one is ``width`` lowercase hex digits (the
    producer's ``tool_args_hash`` has 32), one base64 string of their bytes (22 characters
    a 32-digit hash instead of 35 in a JSON list); otherwise the list as it is.
    :func:`unpack_hex` gives them back."""
    if not values or not _all_hex(values, width):
        return values
    return binascii.b2a_base64(bytes.fromhex("".join(values)), newline=False).decode("ascii")


def unpack_hex(data: str | list[str], width: int = _HEX_DIGEST) -> list[str]:
    """The strings :func:`pack_hex` packed, ``width`` digits each (a list passes through)."""
    if not isinstance(data, str):
        return list(data)
    try:
        h = base64.b64decode(data, validate=True).hex()
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"bad packed hashes in a state dump: {exc}") from exc
    if len(h) % width:
        raise ValueError(f"packed hashes of {len(h)} digits are not {width} digits each")
    return [h[i:i + width] for i in range(0, len(h), width)]


def _last_call(calls: list[int] | int) -> int:
    return calls if isinstance(calls, int) else calls[-1]


def _percent(ratio: float) -> str:
    return f"{ratio * 100:.4g}%"


def _who(tracker: AlertTracker, scope: AlertScope) -> str:
    if scope is AlertScope.SESSION:
        return f"session {tracker.key[1]} of agent {tracker.agent_id}"
    if scope is AlertScope.AGENT:
        return f"agent {tracker.key[1]}"
    return f"tenant {tracker.key[0]}"


def build_detectors(config: RulesConfig, schedule: Schedule,
                    scopes: frozenset[AlertScope] | None = None) -> list[Detector[Any]]:
    """One detector per enabled rule (optionally only rules of the given scopes)."""
    detectors: list[Detector[Any]] = []
    for name, rule in config.enabled_rules.items():
        if scopes is not None and rule.scope not in scopes:
            continue
        i = len(detectors)
        if isinstance(rule, CostRule):
            detectors.append(CostDetector(name, i, rule, config, schedule))
        elif isinstance(rule, ErrorRateRule):
            detectors.append(ErrorRateDetector(name, i, rule, config, schedule))
        elif isinstance(rule, LoopRepeatRule):
            detectors.append(LoopRepeatDetector(name, i, rule, config, schedule))
        elif isinstance(rule, LoopStepsRule):
            detectors.append(LoopStepsDetector(name, i, rule, schedule))
        elif isinstance(rule, (BudgetRule, LatencyRule, ScoreRule)):
            # issue 17 part B: modules of their own (they import this one)
            detectors.append(_build_more(name, i, rule, config, schedule))
        else:  # tool_policy, guardrail, loop_cycle: in their own modules, which import this one
            from agentwatch.processors.core._governance import (  # noqa: PLC0415
                build_governance_detector,
            )
            detectors.append(build_governance_detector(name, i, rule, config, schedule))
    return detectors


def _build_more(name: str, index: int, rule: Rule, config: RulesConfig,
                schedule: Schedule) -> Detector[Any]:
    from agentwatch.processors.core._budget import BudgetDetector  # noqa: PLC0415 -- a cycle
    from agentwatch.processors.core._latency import LatencyDetector  # noqa: PLC0415
    from agentwatch.processors.core._scores import ScoreDetector  # noqa: PLC0415

    if isinstance(rule, BudgetRule):
        return BudgetDetector(name, index, rule, config, schedule)
    if isinstance(rule, LatencyRule):
        return LatencyDetector(name, index, rule, config, schedule)
    if isinstance(rule, ScoreRule):
        return ScoreDetector(name, index, rule, config, schedule)
    raise TypeError(f"no detector for rule {name} ({type(rule).__name__})")
