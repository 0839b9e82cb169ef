"""The score rule: evaluation scores of one name per agent over a sliding window.

A ``score`` event (see the README, "Evaluation scores") carries its evaluation's name in
``name`` and its numeric result in ``attributes["gen_ai.evaluation.score.value"]``;
events without a numeric value (a label only) are not counted. Two modes:

* mean (no ``floor``): channel a is the sum of the scores in micro-units (exact integer
  sums), b the count; fires when the mean is below ``threshold``;
* share (``floor`` set): a counts the scores below ``floor``, b all of them; fires when
  the share is at least ``threshold``.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Final

from agentwatch.processors.core._alerting import AlertTracker, ScopeKey
from agentwatch.processors.core._detectors import Schedule, _WindowDetector
from agentwatch.processors.core._rules import (
    RESOLVE_BELOW_FACTOR,
    SCORE_VALUE_KEY,
    RulesConfig,
    ScoreRule,
)
from agentwatch.schemas import Alert, Event, EventKind

__all__ = ["ScoreDetector"]

_MICRO: Final = 1_000_000
_SCORE_KINDS: Final = frozenset({EventKind.SCORE})


def score_value(event: Event) -> float | None:
    """The event's numeric score (None: none, or not a number)."""
    attributes = event.attributes
    if attributes is None:
        return None
    value = attributes.get(SCORE_VALUE_KEY)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class ScoreDetector(_WindowDetector):
    def __init__(self, name: str, index: int, rule: ScoreRule, config: RulesConfig,
                 schedule: Schedule) -> None:
        super().__init__(name, index, rule.scope, rule.window_s, rule.resolve_after_s, config,
                         schedule)
        self.rule = rule
        self.kinds = _SCORE_KINDS
        self._evaluation = rule.evaluation
        self._floor = rule.floor
        self._min = rule.min_samples
        self._share = rule.floor is not None
        if self._share:
            at = (Fraction(str(rule.threshold)) * Fraction(str(RESOLVE_BELOW_FACTOR))
                  if rule.resolve_at is None else Fraction(str(rule.resolve_at)))
            ratio = Fraction(str(rule.threshold))
            self.below_why = f"the share under {rule.floor:g} fell under {float(at):.0%}"
            self.after_why = (f"it stayed under {rule.threshold:.0%} for "
                              f"{rule.resolve_after_s} s")
        else:
            # a mean in micro-units: sum_a < threshold x 1e6 x count
            ratio = Fraction(str(rule.threshold)) * _MICRO
            at = ratio if rule.resolve_at is None else Fraction(str(rule.resolve_at)) * _MICRO
            self.below_why = f"the mean is back at or above {float(at) / _MICRO:g}"
            self.after_why = (f"it stayed at or above {rule.threshold:g} for "
                              f"{rule.resolve_after_s} s")
        self._num, self._den = ratio.numerator, ratio.denominator
        self._at_num, self._at_den = at.numerator, at.denominator

    def observe(self, event: Event, ts_us: int, skey: ScopeKey, out: list[Alert]) -> None:
        if event.kind is not EventKind.SCORE or event.name != self._evaluation:
            return
        value = score_value(event)
        if value is None:
            return
        if self._share:
            a = int(value < self._floor) if self._floor is not None else 0
        else:
            a = round(value * _MICRO)
        self._update(event, ts_us, skey, a, 1, out)

    def fires(self, a: int, b: int) -> bool:
        return b >= self._min and self.holds(a, b)

    def holds(self, a: int, b: int) -> bool:
        if b == 0:
            return False
        if self._share:
            return a * self._den >= self._num * b
        return a * self._den < self._num * b

    def clears(self, a: int, b: int) -> bool:
        if b == 0:
            return True
        if self._share:
            return a * self._at_den < self._at_num * b
        return a * self._at_den >= self._at_num * b

    def _value(self, a: int, b: int) -> float:
        if b == 0:
            return 0.0
        return a / b if self._share else a / b / _MICRO

    def _what(self, a: int, b: int) -> str:
        rule = self.rule
        if self._share:
            return (f"{a} of {b} `{rule.evaluation}` scores ({self._value(a, b):.0%}) were "
                    f"under {rule.floor:g}")
        return f"the mean `{rule.evaluation}` score of {b} was {self._value(a, b):.3g}"

    def fire(self, tracker: AlertTracker, ts_us: int, a: int, b: int) -> Alert:
        rule = self.rule
        limit = f"{rule.threshold:.0%}" if self._share else f"{rule.threshold:g}"
        return tracker.fire(
            self.name, rule, ts_us, self._value(a, b), rule.threshold,
            f"agent {tracker.key[1]}: {self._what(a, b)} over {rule.window_s} s "
            f"(threshold {limit}, at least {rule.min_samples} scores)",
        )

    def resolve(self, tracker: AlertTracker, ts_us: int, a: int, b: int, why: str) -> Alert:
        rule = self.rule
        return tracker.resolve(
            self.name, rule, ts_us, self._value(a, b), rule.threshold,
            f"agent {tracker.key[1]}: {self._what(a, b)} over {rule.window_s} s: {why}",
        )
