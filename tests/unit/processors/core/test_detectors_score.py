"""The score rule: the mean (or the share under a floor) of one evaluation's scores per
agent over a window, with min samples; resolution; state round trips."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import US, EventFactory

from agentwatch.processors.core import Engine, EventTimeDriver, rules_from_mapping
from agentwatch.schemas import AlertScope, AlertState, AlertType, Event, to_us

OFF = {name: {"enabled": False} for name in ("session_cost", "agent_error_rate", "loop_repeat",
                                              "loop_steps")}
VALUE = "gen_ai.evaluation.score.value"


def _engine(**score: Any) -> Engine:
    settings = {"type": "score", "evaluation": "helpfulness", "threshold": 0.6,
                "min_samples": 5, "window_s": 600, **score}
    return Engine(rules_from_mapping({"rules": {**OFF, "quality": settings}}))


def _score(ev: EventFactory, t: float, value: Any, name: str = "helpfulness",
           **fields: Any) -> Event:
    return ev(t, kind="score", name=name, attributes={VALUE: value, **fields})


def test_a_low_mean_fires_after_min_samples(ev: EventFactory) -> None:
    engine = _engine()
    assert engine.process_many([_score(ev, i, 0.5) for i in range(4)]) == []
    alerts = engine.process(_score(ev, 4, 0.5))
    assert [(a.state, a.type, a.scope, a.key) for a in alerts] == [
        (AlertState.FIRING, AlertType.SCORE, AlertScope.AGENT, "agent-1")]
    assert alerts[0].value == pytest.approx(0.5)
    assert alerts[0].threshold == 0.6
    assert "the mean `helpfulness` score of 5 was 0.5" in alerts[0].reason


def test_a_mean_at_the_threshold_does_not_fire(ev: EventFactory) -> None:
    engine = _engine()
    assert engine.process_many([_score(ev, i, v) for i, v in
                                enumerate([0.2, 1.0, 0.6, 0.6, 0.6])]) == []


def test_other_evaluations_labels_and_kinds_do_not_count(ev: EventFactory) -> None:
    engine = _engine(min_samples=1)
    events = [_score(ev, 0, 0.1, name="toxicity"), _score(ev, 1, "bad"),
              _score(ev, 2, True), ev(3, name="helpfulness", attributes={VALUE: 0.1}),
              ev(4, kind="score", name="helpfulness")]
    assert engine.process_many(events) == []


def test_the_share_under_a_floor_mode(ev: EventFactory) -> None:
    engine = _engine(floor=3, threshold=0.3, min_samples=4)
    assert engine.process_many([_score(ev, 0, 4), _score(ev, 1, 5), _score(ev, 2, 1)]) == []
    alerts = engine.process(_score(ev, 3, 2))
    assert [a.state for a in alerts] == [AlertState.FIRING]
    assert alerts[0].value == pytest.approx(0.5)
    assert "2 of 4 `helpfulness` scores (50%) were under 3" in alerts[0].reason


def test_resolves_when_the_mean_recovers(ev: EventFactory) -> None:
    engine = _engine(resolve_at=0.7)
    engine.process_many([_score(ev, i, 0.4) for i in range(5)])
    # mean (5 x 0.4 + n x 1.0) / (5 + n) >= 0.7 from n = 5 on
    alerts = engine.process_many([_score(ev, 10 + i, 1.0) for i in range(5)])
    assert [a.state for a in alerts] == [AlertState.RESOLVED]
    assert to_us(alerts[0].ts) == 14 * US
    assert "back at or above 0.7" in alerts[0].reason


def test_a_quiet_agent_resolves_when_the_window_empties(ev: EventFactory) -> None:
    engine = _engine()
    engine.process_many([_score(ev, i, 0.1) for i in range(5)])
    alerts = engine.advance(700 * US)
    assert [a.state for a in alerts] == [AlertState.RESOLVED]


def test_state_round_trip_changes_no_alert(ev: EventFactory) -> None:
    events = ([_score(ev, i * 10, 0.3) for i in range(10)]
              + [_score(ev, 100 + i * 10, 0.9) for i in range(20)])
    straight = EventTimeDriver(_engine())
    expected = [a for e in events for a in straight.feed(e)]
    assert [a.state for a in expected] == [AlertState.FIRING, AlertState.RESOLVED]
    first = EventTimeDriver(_engine())
    got = [a for e in events[:12] for a in first.feed(e)]
    dumped = first.engine.dump_key(("default", "agent-1"))
    assert dumped is not None
    second = EventTimeDriver(_engine())
    second.engine.load_key(("default", "agent-1"), dumped)
    second.engine.restore_watermark(first.engine.watermark_us)
    second.next_advance_us = first.next_advance_us
    got += [a for e in events[12:] for a in second.feed(e)]
    assert got == expected
