"""The latency rule: a quantile of ``duration_ms`` per agent over a sliding window.

Whether the quantile is over the threshold is decided exactly, without estimating it:
with ``n`` samples, the nearest-rank ``q``-quantile is above ``T`` exactly when more than
``n - ceil(q n)`` samples are above ``T``. So the rule is a :class:`_WindowDetector` over
two integer channels (samples over the threshold, samples) and shares its event-time
window, disorder handling and hysteresis with the cost and error-rate rules.

What the alert *reports* (the quantile's value, "p95 = 12.4 s") comes from a mergeable
log-bucket quantile sketch (:class:`LogSketch`, the DDSketch scheme: relative accuracy
1 %): one small sketch per tenth of the window, merged only when an alert fires or
resolves. The sketch slices cover the window to within one slice.
"""

from __future__ import annotations

from collections import deque
from fractions import Fraction
from math import ceil, log
from typing import Any, Final

from agentwatch.processors.core._alerting import AlertTracker, ScopeKey
from agentwatch.processors.core._detectors import Schedule, _WindowDetector
from agentwatch.processors.core._rules import LatencyRule, RulesConfig
from agentwatch.schemas import Alert, Event

__all__ = ["RELATIVE_ACCURACY", "SKETCH_SLICES", "LatencyDetector", "LogSketch"]

#: a sketch's estimate of any quantile is within this fraction of a true sample value
RELATIVE_ACCURACY: Final = 0.01
_GAMMA: Final = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA: Final = log(_GAMMA)
#: the bucket of zero (and of durations under 1 µs)
_ZERO: Final = -(1 << 30)
_MIN_MS: Final = 1e-3
#: sketches per window
SKETCH_SLICES: Final = 10


class LogSketch:
    """Counts of values in logarithmic buckets: bucket ``i`` holds ``(g^(i-1), g^i]`` with
    ``g = (1 + a) / (1 - a)``; every value in it is within ``a`` of the bucket's estimate.
    Mergeable (add the counts), serialisable (a flat list), bounded (about 1,400 buckets
    span 1 µs to a day at a = 1 %)."""

    __slots__ = ("counts", "n")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0

    def add(self, value: float) -> None:
        i = ceil(log(value) / _LOG_GAMMA) if value >= _MIN_MS else _ZERO
        counts = self.counts
        counts[i] = counts.get(i, 0) + 1
        self.n += 1

    def merge(self, other: LogSketch) -> None:
        counts = self.counts
        for i, c in other.counts.items():
            counts[i] = counts.get(i, 0) + c
        self.n += other.n

    def quantile(self, q: float) -> float:
        """The nearest-rank ``q``-quantile, to within the relative accuracy (0.0 if empty)."""
        if not self.n:
            return 0.0
        rank = max(1, ceil(q * self.n))
        seen = 0
        for i in sorted(self.counts):
            seen += self.counts[i]
            if seen >= rank:
                return 0.0 if i == _ZERO else 2 * _GAMMA ** i / (_GAMMA + 1)
        return 0.0  # unreachable: the counts add up to n

    def dump(self) -> list[int]:
        return [v for item in self.counts.items() for v in item]

    @staticmethod
    def from_dump(data: list[int]) -> LogSketch:
        sketch = LogSketch()
        sketch.counts = {data[j]: data[j + 1] for j in range(0, len(data), 2)}
        sketch.n = sum(sketch.counts.values())
        return sketch


class LatencyDetector(_WindowDetector):
    """Channel a: samples over ``threshold_ms``; b: samples (of ``kinds``, with a
    ``duration_ms``, of ``model`` when the rule names one)."""

    def __init__(self, name: str, index: int, rule: LatencyRule, config: RulesConfig,
                 schedule: Schedule) -> None:
        super().__init__(name, index, rule.scope, rule.window_s, rule.resolve_after_s, config,
                         schedule)
        self.rule = rule
        self.kinds = self._kinds = rule.kinds
        self._model = rule.model
        self._threshold = rule.threshold_ms
        self._min = rule.min_samples
        q = Fraction(str(rule.quantile))
        self._q_num, self._q_den = q.numerator, q.denominator
        tail = Fraction(str(rule.resolve_tail_factor)) * (1 - q)
        self._tail_num, self._tail_den = tail.numerator, tail.denominator
        self._slice_us = rule.window_s * 1_000_000 // SKETCH_SLICES
        #: per key: [slice index, sketch], ascending, the last SKETCH_SLICES + 1 slices
        self.sketches: dict[ScopeKey, deque[list[Any]]] = {}
        self._label = f"p{rule.quantile * 100:g}"
        self.below_why = (f"fewer than {rule.resolve_tail_factor:.0%} of the "
                          f"{1 - rule.quantile:.0%} tail are over {rule.threshold_ms:g} ms")
        self.after_why = (f"the {self._label} stayed at or under {rule.threshold_ms:g} ms for "
                          f"{rule.resolve_after_s} s")

    def observe(self, event: Event, ts_us: int, skey: ScopeKey, out: list[Alert]) -> None:
        duration = event.duration_ms
        if duration is None or event.kind not in self._kinds:
            return
        if self._model is not None and event.model != self._model:
            return
        key = self._key_of(event)
        slices = self.sketches.get(key)
        if slices is None:
            slices = self.sketches[key] = deque()
        state = self.states.get(key)
        if state is None or ts_us >= state.window.max_ts_us - self._disorder_us:  # not late
            _sketch_at(slices, ts_us // self._slice_us).add(duration)
        self._update(event, ts_us, skey, duration > self._threshold, 1, out)

    def fires(self, a: int, b: int) -> bool:
        return b >= self._min and a > b + (-self._q_num * b // self._q_den)

    def holds(self, a: int, b: int) -> bool:
        return b > 0 and a > b + (-self._q_num * b // self._q_den)

    def clears(self, a: int, b: int) -> bool:
        return b == 0 or a * self._tail_den < self._tail_num * b

    def _estimate(self, tracker: AlertTracker, ts_us: int) -> float:
        merged = LogSketch()
        first = ts_us // self._slice_us - SKETCH_SLICES
        for index, sketch in self.sketches.get(tracker.key, ()):
            if first < index <= ts_us // self._slice_us:
                merged.merge(sketch)
        return merged.quantile(self.rule.quantile)

    def fire(self, tracker: AlertTracker, ts_us: int, a: int, b: int) -> Alert:
        rule = self.rule
        value = self._estimate(tracker, ts_us)
        return tracker.fire(
            self.name, rule, ts_us, value, rule.threshold_ms,
            f"{self._who(tracker)}{self._label} latency is about {_ms(value)} over "
            f"{rule.window_s} s ({a} of {b} calls took longer than {_ms(rule.threshold_ms)}, "
            f"the threshold)",
        )

    def resolve(self, tracker: AlertTracker, ts_us: int, a: int, b: int, why: str) -> Alert:
        rule = self.rule
        value = self._estimate(tracker, ts_us)
        return tracker.resolve(
            self.name, rule, ts_us, value, rule.threshold_ms,
            f"{self._who(tracker)}{self._label} latency is about {_ms(value)} over "
            f"{rule.window_s} s ({a} of {b} calls over {_ms(rule.threshold_ms)}): {why}",
        )

    def _who(self, tracker: AlertTracker) -> str:
        model = "" if self._model is None else f" on {self._model}"
        return f"agent {tracker.key[1]}{model}: "

    def on_due(self, key: ScopeKey, now_us: int, out: list[Alert]) -> None:
        super().on_due(key, now_us, out)
        if key not in self.states:
            self.sketches.pop(key, None)

    def close_key(self, key: ScopeKey, ts_us: int, reason: str, out: list[Alert]) -> None:
        super().close_key(key, ts_us, reason, out)
        self.sketches.pop(key, None)

    def dump(self, key: ScopeKey) -> Any:
        data = super().dump(key)
        if data is None:
            return None
        slices = self.sketches.get(key, ())
        return [data, [[index, sketch.dump()] for index, sketch in slices]]

    def load(self, key: ScopeKey, data: Any) -> None:
        super().load(key, data[0])
        self.sketches[key] = deque([index, LogSketch.from_dump(d)] for index, d in data[1])


def _sketch_at(slices: deque[list[Any]], index: int) -> LogSketch:
    """The sketch of slice ``index`` (made if new; slices too old for the window go)."""
    if slices and slices[-1][0] == index:
        found: LogSketch = slices[-1][1]
        return found
    if not slices or slices[-1][0] < index:
        sketch = LogSketch()
        slices.append([index, sketch])
        while slices[0][0] <= index - SKETCH_SLICES - 1:
            slices.popleft()
        return sketch
    for item in slices:  # an event within the disorder bound, in an earlier slice
        if item[0] == index:
            earlier: LogSketch = item[1]
            return earlier
    sketch = LogSketch()
    slices.append([index, sketch])
    ordered = sorted(slices, key=lambda item: int(item[0]))
    slices.clear()
    slices.extend(ordered)
    return sketch


def _ms(value: float) -> str:
    return f"{value / 1000:.3g} s" if value >= 1000 else f"{value:.3g} ms"

