"""Governance detectors: tool policies (which tools an agent may call) and guardrail trips.

Both are pure like every detector (see ``_detectors.py``). The rules of issue 17 are built
here by :func:`build_governance_detector`, which ``build_detectors`` calls for them.
"""

from __future__ import annotations

import re
from fnmatch import translate
from fractions import Fraction
from typing import Any, Final

from agentwatch.processors.core._alerting import AlertTracker, ScopeKey
from agentwatch.processors.core._cycles import LoopCycleDetector
from agentwatch.processors.core._detectors import (
    Detector,
    Schedule,
    _percent,
    _who,
    _WindowDetector,
    tracker_for,
)
from agentwatch.processors.core._rules import (
    RESOLVE_BELOW_FACTOR,
    GuardrailRule,
    LoopCycleRule,
    Rule,
    RulesConfig,
    ToolPolicyRule,
)
from agentwatch.schemas import Alert, AlertScope, Event, EventKind, EventStatus

__all__ = ["GuardrailDetector", "ToolPolicyDetector", "build_governance_detector"]

#: (agent, tool) verdicts a tool-policy detector remembers before it starts over
_VERDICT_CACHE: Final = 65_536
#: distinct tools outside the policy remembered per session (the audit view's names)
_TOOLS_PER_SESSION: Final = 64


def _globs(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One regular expression matching a whole name against any of the globs."""
    return re.compile("|".join(f"(?:{translate(p)})" for p in patterns) or "(?!)")


def _tool(name: str) -> str:
    return f"`{name}`" if name else "a tool with no name"


# -- tool_policy: the first call outside an agent's policy in a session ---------------------
class _PolicyState:
    __slots__ = ("first", "tools", "tracker", "violations")

    def __init__(self, tracker: AlertTracker) -> None:
        self.tracker = tracker
        self.violations = 0
        self.first = ""  # why the first violation was one
        #: the tools called outside the policy, in order (at most _TOOLS_PER_SESSION)
        self.tools: list[str] = []


class _CompiledPolicy:
    __slots__ = ("agents", "allow", "allow_text", "deny")

    def __init__(self, agents: tuple[str, ...], allow: tuple[str, ...] | None,
                 deny: tuple[str, ...]) -> None:
        self.agents = _globs(agents)
        self.allow = None if allow is None else _globs(allow)
        self.allow_text = "" if allow is None else ", ".join(allow)
        self.deny = [(glob, _globs((glob,))) for glob in deny]


class ToolPolicyDetector(Detector[_PolicyState]):
    """Per session: fires at its first ``tool_call`` outside the policies of its agent,
    counts the later ones, resolves when the session ends. The alert's ``event_ids`` are
    the first call of each tool outside the policy (the verdict depends on the agent and
    the tool only: the ClickHouse view ``tool_call_audit`` marks every call of those tools
    in the session). Sessions without a violation keep no state."""

    def __init__(self, name: str, index: int, rule: ToolPolicyRule, schedule: Schedule) -> None:
        super().__init__(name, index, rule.scope, schedule)
        self.rule = rule
        self.kinds = frozenset({EventKind.TOOL_CALL})
        self._policies = [_CompiledPolicy(p.agents, p.allow, p.deny) for p in rule.policies]
        #: (agent, tool) -> "" when allowed, else why not
        self._verdicts: dict[tuple[str, str], str] = {}

    def verdict(self, agent_id: str, tool: str) -> str:
        """``""`` when ``agent_id`` may call ``tool``; otherwise why not (one phrase)."""
        key = (agent_id, tool)
        found = self._verdicts.get(key)
        if found is None:
            found = self._judge(agent_id, tool)
            if len(self._verdicts) >= _VERDICT_CACHE:
                self._verdicts.clear()
            self._verdicts[key] = found
        return found

    def _judge(self, agent_id: str, tool: str) -> str:
        for policy in self._policies:
            if policy.agents.fullmatch(agent_id) is None:
                continue
            for glob, pattern in policy.deny:
                if pattern.fullmatch(tool) is not None:
                    return f"{_tool(tool)} is denied to agent {agent_id} (deny: {glob})"
            if policy.allow is not None and policy.allow.fullmatch(tool) is None:
                return (f"{_tool(tool)} is not on the allow-list of agent {agent_id} "
                        f"(allow: {policy.allow_text})")
        return ""

    def observe(self, event: Event, ts_us: int, skey: ScopeKey, out: list[Alert]) -> None:
        if event.kind is not EventKind.TOOL_CALL:
            return
        tool = event.name or ""
        why = self.verdict(event.agent_id, tool)
        if not why:
            return
        state = self.states.get(skey)
        if state is None:
            state = self.states[skey] = _PolicyState(tracker_for(AlertScope.SESSION, skey, event))
            state.first = why
        state.violations += 1
        tracker = state.tracker
        if tool not in state.tools and len(state.tools) < _TOOLS_PER_SESSION:
            state.tools.append(tool)
            tracker.sample.append(event.event_id)
        if tracker.can_fire(ts_us):
            out.append(tracker.fire(
                self.name, self.rule, ts_us, float(state.violations), 0.0,
                f"{_who(tracker, AlertScope.SESSION)} called a tool outside its policy: {why}",
            ))

    def close_key(self, key: ScopeKey, ts_us: int, reason: str, out: list[Alert]) -> None:
        state = self.states.pop(key, None)
        if state is not None and state.tracker.firing is not None:
            n = state.violations
            out.append(state.tracker.resolve(
                self.name, self.rule, ts_us, float(n), 0.0,
                f"{_who(state.tracker, AlertScope.SESSION)} made {n} tool "
                f"call{'s' if n != 1 else ''} outside its policy (the first: {state.first}): "
                f"{reason}",
            ))

    def dump(self, key: ScopeKey) -> Any:
        state = self.states.get(key)
        if state is None:
            return None
        return [state.tracker.dump(), state.violations, state.first, state.tools]

    def load(self, key: ScopeKey, data: Any) -> None:
        state = _PolicyState(AlertTracker.from_dump(key, data[0]))
        state.violations = data[1]
        state.first = data[2]
        state.tools = list(data[3])
        self.states[key] = state


# -- guardrail: trips over a sliding window -------------------------------------------------
class GuardrailDetector(_WindowDetector):
    """Guardrail trips in the window. Channel a: trips (status error), b: checks."""

    def __init__(self, name: str, index: int, rule: GuardrailRule, config: RulesConfig,
                 schedule: Schedule) -> None:
        super().__init__(name, index, rule.scope, rule.window_s, None, config, schedule)
        self.rule = rule
        self.kinds = frozenset({EventKind.GUARDRAIL})
        self._names = None if rule.names is None else _globs(rule.names)
        self._trips = 0 if rule.min_trips is None else rule.min_trips  # 0: off
        self._below_trips = rule.resolve_below
        ratio = Fraction(0) if rule.threshold_ratio is None else Fraction(str(rule.threshold_ratio))
        below = ratio * Fraction(str(RESOLVE_BELOW_FACTOR))
        self._ratio_num, self._ratio_den = ratio.numerator, ratio.denominator  # 0: off
        self._below_num, self._below_den = below.numerator, below.denominator
        self._min = rule.min_events
        self._last = ""  # the guardrail this event tripped (for the reason)
        parts = []
        if self._trips:
            parts.append(f"{self._trips} trips")
        if rule.threshold_ratio is not None:
            parts.append(f"{_percent(rule.threshold_ratio)} of at least {self._min} checks")
        self._threshold_text = " or ".join(parts)
        self.below_why = "the trips fell back under the threshold"

    def observe(self, event: Event, ts_us: int, skey: ScopeKey, out: list[Alert]) -> None:
        if event.kind is not EventKind.GUARDRAIL:
            return
        name = event.name or ""
        if self._names is not None and self._names.fullmatch(name) is None:
            return
        tripped = event.status is EventStatus.ERROR
        self._last = name if tripped else ""  # read by fire() within this call only
        self._update(event, ts_us, skey, 1 if tripped else 0, 1, out)

    def fires(self, a: int, b: int) -> bool:
        if self._trips and a >= self._trips:
            return True
        return (bool(self._ratio_num) and b >= self._min
                and a * self._ratio_den >= self._ratio_num * b)

    def holds(self, a: int, b: int) -> bool:
        if self._trips and a >= self._trips:
            return True
        return bool(self._ratio_num) and b > 0 and a * self._ratio_den >= self._ratio_num * b

    def clears(self, a: int, b: int) -> bool:
        if self._trips and a >= self._below_trips:
            return False
        return not self._ratio_num or b == 0 or a * self._below_den < self._below_num * b

    def _value(self, a: int, b: int) -> tuple[float, float]:
        rule = self.rule
        if self._trips or rule.threshold_ratio is None:
            return float(a), float(self._trips)
        return (a / b if b else 0.0), rule.threshold_ratio

    def fire(self, tracker: AlertTracker, ts_us: int, a: int, b: int) -> Alert:
        value, threshold = self._value(a, b)
        last = f"; this one: `{self._last}`" if self._last else ""
        return tracker.fire(
            self.name, self.rule, ts_us, value, threshold,
            f"{_who(tracker, self.rule.scope)} tripped guardrails {a} times in {b} checks "
            f"within {self.rule.window_s} s{last} (threshold {self._threshold_text})",
        )

    def resolve(self, tracker: AlertTracker, ts_us: int, a: int, b: int, why: str) -> Alert:
        value, threshold = self._value(a, b)
        return tracker.resolve(
            self.name, self.rule, ts_us, value, threshold,
            f"{_who(tracker, self.rule.scope)} tripped guardrails {a} times in {b} checks "
            f"per {self.rule.window_s} s: {why}",
        )


def build_governance_detector(name: str, index: int, rule: Rule, config: RulesConfig,
                              schedule: Schedule) -> Detector[Any]:
    """The detector of a rule of issue 17 (tool_policy, guardrail, loop_cycle)."""
    if isinstance(rule, ToolPolicyRule):
        return ToolPolicyDetector(name, index, rule, schedule)
    if isinstance(rule, GuardrailRule):
        return GuardrailDetector(name, index, rule, config, schedule)
    if isinstance(rule, LoopCycleRule):
        return LoopCycleDetector(name, index, rule, schedule)
    raise TypeError(f"no detector for rule {name} of type {rule.type}")
