"""The latency rule: a quantile of duration_ms per agent over a window, decided exactly by
counting samples over the threshold; the value reported comes from the log-bucket sketch."""

from __future__ import annotations

import random
from typing import Any

import pytest
from conftest import US, EventFactory

from agentwatch.processors.core import Engine, EventTimeDriver, rules_from_mapping
from agentwatch.processors.core._latency import RELATIVE_ACCURACY, LogSketch
from agentwatch.schemas import AlertScope, AlertState, AlertType, to_us

OFF = {name: {"enabled": False} for name in ("session_cost", "agent_error_rate", "loop_repeat",
                                              "loop_steps")}


def _engine(**latency: Any) -> Engine:
    settings = {"type": "latency", "threshold_ms": 1000, "min_samples": 20, **latency}
    return Engine(rules_from_mapping({"rules": {**OFF, "latency": settings}}))


def test_p95_over_the_threshold_fires_with_the_estimated_value(ev: EventFactory) -> None:
    engine = _engine()
    # 40 calls: 38 fast, 2 slow: p95 (the 38th smallest) is fast
    fast = [ev(i, duration_ms=100.0) for i in range(38)]
    assert engine.process_many(fast) == []
    assert engine.process(ev(38, duration_ms=3000.0)) == []
    assert engine.process(ev(39, duration_ms=3000.0)) == []
    # a third slow call: 3 of 41 over 1 s, more than 41 - ceil(0.95 x 41) = 2
    alerts = engine.process(ev(40, duration_ms=3000.0))
    assert [(a.state, a.type, a.scope, a.key) for a in alerts] == [
        (AlertState.FIRING, AlertType.LATENCY, AlertScope.AGENT, "agent-1")]
    alert = alerts[0]
    assert alert.value == pytest.approx(3000.0, rel=RELATIVE_ACCURACY)
    assert (alert.threshold, alert.window_s) == (1000.0, 300)
    assert "p95 latency is about 3" in alert.reason
    assert to_us(alert.ts) == 40 * US


def test_fewer_than_min_samples_do_not_fire(ev: EventFactory) -> None:
    engine = _engine()
    assert engine.process_many([ev(i, duration_ms=5000.0) for i in range(19)]) == []


def test_events_without_duration_or_of_other_kinds_do_not_count(ev: EventFactory) -> None:
    engine = _engine(min_samples=2)
    events = [ev(0), ev(1), ev(2, kind="tool_call", duration_ms=9000.0),
              ev(3, kind="tool_call", duration_ms=9000.0)]
    assert engine.process_many(events) == []


def test_a_model_filter_counts_only_that_model(ev: EventFactory) -> None:
    engine = _engine(min_samples=2, model="gpt-4o")
    assert engine.process_many([ev(i, duration_ms=9000.0, model="other") for i in range(5)]) == []
    alerts = engine.process_many([ev(10 + i, duration_ms=9000.0, model="gpt-4o")
                                  for i in range(2)])
    assert len(alerts) == 1
    assert "on gpt-4o" in alerts[0].reason


def test_resolves_with_hysteresis_once_the_tail_is_small(ev: EventFactory) -> None:
    engine = _engine(min_samples=20, quantile=0.9, window_s=60)
    slow = [ev(i, duration_ms=2000.0 if i % 5 == 0 else 100.0) for i in range(20)]
    fired = engine.process_many(slow)
    assert [a.state for a in fired] == [AlertState.FIRING]
    # the window (60 s) fills with fast calls; 4 slow of the first 20 stay in it until
    # t = 60..75: the share over 1 s must fall below 0.8 x 10 % before it resolves
    resolved = engine.process_many([ev(20 + i, duration_ms=100.0) for i in range(60)])
    assert [a.state for a in resolved] == [AlertState.RESOLVED]
    assert "fewer than 80% of the 10% tail" in resolved[0].reason


def test_a_quiet_agent_resolves_on_the_timer(ev: EventFactory) -> None:
    engine = _engine(min_samples=2)
    engine.process_many([ev(0, duration_ms=5000.0), ev(1, duration_ms=5000.0)])
    assert [a.state for a in engine.advance(400 * US)] == [AlertState.RESOLVED]
    assert engine.stats.active_keys == 0


def test_state_round_trip_changes_no_alert(ev: EventFactory) -> None:
    rng = random.Random(7)
    events = [ev(i * 2, duration_ms=rng.choice([100.0, 200.0, 4000.0] if i < 150 else [100.0]),
                 agent_id=rng.choice(["a", "b"])) for i in range(400)]
    straight = EventTimeDriver(_engine())
    expected = [a for e in events for a in straight.feed(e)]
    assert any(a.state is AlertState.RESOLVED for a in expected)
    first = EventTimeDriver(_engine())
    got = [a for e in events[:120] for a in first.feed(e)]
    second = EventTimeDriver(_engine())
    for agent in ("a", "b"):
        dumped = first.engine.dump_key(("default", agent))
        assert dumped is not None
        second.engine.load_key(("default", agent), dumped)
    second.engine.restore_watermark(first.engine.watermark_us)
    second.next_advance_us = first.next_advance_us
    got += [a for e in events[120:] for a in second.feed(e)]
    assert got == expected


def test_the_sketch_is_within_its_relative_accuracy_and_merges() -> None:
    rng = random.Random(3)
    values = [rng.lognormvariate(6, 1.5) for _ in range(5000)]
    left, right = LogSketch(), LogSketch()
    for i, v in enumerate(values):
        (left if i % 2 else right).add(v)
    left.merge(right)
    restored = LogSketch.from_dump(left.dump())
    ordered = sorted(values)
    for q in (0.5, 0.9, 0.95, 0.99):
        true = ordered[max(0, -(-int(q * 10_000) * len(values) // 10_000) - 1)]
        assert restored.quantile(q) == pytest.approx(true, rel=RELATIVE_ACCURACY)
    assert restored.n == len(values)
    assert LogSketch().quantile(0.95) == 0.0
