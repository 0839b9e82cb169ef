"""The engine: sessions, expiry, dedup, pricing, late events, stable ids, custom rules."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agentwatch.processors.core import Engine, alert_id_for, rules_from_mapping
from agentwatch.schemas import (
    Alert,
    AlertScope,
    AlertState,
    Event,
    ModelPrice,
    PriceTable,
    to_us,
)

US = 1_000_000
EventFactory = Callable[..., Event]


def _summary(alerts: list[Alert]) -> list[tuple[str, str, AlertState, int]]:
    return [(a.rule, a.alert_id, a.state, to_us(a.ts)) for a in alerts]


# -- sessions ---------------------------------------------------------------------------------
def test_session_end_resolves_firing_session_alert(ev: EventFactory) -> None:
    engine = Engine()
    (fired,) = engine.process_many([ev(0, cost_usd=0.6), ev(10, cost_usd=0.6)])
    (resolved,) = engine.process(ev(20, "session_end"))
    assert (resolved.rule, resolved.state, resolved.alert_id) == (
        "session_cost", AlertState.RESOLVED, fired.alert_id)
    assert to_us(resolved.ts) == 20 * US
    assert "session ended" in resolved.reason
    assert engine.stats.active_sessions == 0


def test_session_end_drops_session_state(ev: EventFactory) -> None:
    engine = Engine()
    engine.process_many([ev(0, cost_usd=0.6), ev(1, "session_end")])
    # a new session with the same id starts from nothing
    assert engine.process(ev(2, cost_usd=0.6)) == []


def test_idle_session_expires_and_resolves_firing_alerts(ev: EventFactory) -> None:
    engine = Engine(rules_from_mapping({"session_idle_timeout_s": 600}))
    (fired,) = engine.process_many([ev(t, "llm_call") for t in range(201)])
    assert fired.rule == "loop_steps"
    assert engine.advance(800 * US - 1) == []
    (resolved,) = engine.advance(900 * US)
    assert (resolved.state, resolved.alert_id) == (AlertState.RESOLVED, fired.alert_id)
    assert to_us(resolved.ts) == 800 * US  # last event at 200 s + 600 s idle
    assert "expired" in resolved.reason
    assert engine.stats.active_sessions == 0


def test_session_with_recent_events_does_not_expire(ev: EventFactory) -> None:
    engine = Engine(rules_from_mapping({"session_idle_timeout_s": 600}))
    engine.process(ev(0, "llm_call"))
    engine.process(ev(500, "llm_call"))
    engine.advance(1_000 * US)
    assert engine.stats.active_sessions == 1
    engine.advance(1_100 * US)
    assert engine.stats.active_sessions == 0


def test_advance_to_an_older_watermark_does_nothing(ev: EventFactory) -> None:
    engine = Engine()
    engine.process_many([ev(0, cost_usd=0.6), ev(10, cost_usd=0.6)])
    engine.advance(30 * US)
    assert engine.advance(20 * US) == []
    assert engine.watermark_us == 30 * US


# -- input hygiene ----------------------------------------------------------------------------
def test_duplicate_event_is_dropped_and_counted(ev: EventFactory) -> None:
    engine = Engine()
    event = ev(0, cost_usd=0.6)
    assert engine.process(event) == []
    assert engine.process(event) == []  # 0.6 twice would be 1.2: over the threshold
    stats = engine.stats
    assert (stats.events, stats.duplicates) == (1, 1)


def test_dedup_can_be_switched_off(ev: EventFactory) -> None:
    engine = Engine(rules_from_mapping({"dedup_ids_per_session": 0}))
    event = ev(0, cost_usd=0.6)
    alerts = engine.process_many([event, event])
    assert [a.rule for a in alerts] == ["session_cost"]
    assert engine.stats.duplicates == 0


def test_dedup_remembers_between_one_and_two_generations_of_ids(ev: EventFactory) -> None:
    engine = Engine(rules_from_mapping({"dedup_ids_per_session": 2}))
    first, second, third = ev(0, "custom"), ev(1, "custom"), ev(2, "custom")
    engine.process_many([first, second, third])  # `first` and `second` are the older generation
    engine.process(first)
    assert engine.stats.duplicates == 1  # still remembered
    engine.process_many([ev(3, "custom"), ev(4, "custom")])  # two new generations later...
    engine.process(first)
    assert engine.stats.duplicates == 1  # ...it is forgotten: memory per session is bounded
    assert engine.stats.events == 6


def test_late_event_is_counted(ev: EventFactory) -> None:
    engine = Engine()
    # custom events carry cost but no call: only the cost detector sees them
    engine.process(ev(100, "custom", cost_usd=0.1))
    assert engine.process(ev(90, "custom", cost_usd=5.0)) == []  # 10 s behind, disorder 5 s
    assert engine.stats.late == 1


def test_missing_cost_is_filled_from_price_table(ev: EventFactory) -> None:
    engine = Engine()
    event = ev(0, model="gpt-4o", input_tokens=1_000_000)
    engine.process(event)
    assert event.cost_usd == pytest.approx(2.5)
    assert engine.stats.unpriced == 0


def test_unknown_model_is_counted_unpriced(ev: EventFactory) -> None:
    engine = Engine()
    event = ev(0, model="no-such-model", input_tokens=1_000)
    engine.process(event)
    assert event.cost_usd is None
    assert engine.stats.unpriced == 1


def test_event_without_tokens_is_not_unpriced(ev: EventFactory) -> None:
    engine = Engine()
    engine.process(ev(0, "agent_step"))
    assert engine.stats.unpriced == 0


def test_engine_uses_the_price_table_it_is_given(ev: EventFactory) -> None:
    prices = PriceTable({"house-model": ModelPrice(input_per_mtok=1_000, output_per_mtok=0)})
    engine = Engine(prices=prices)
    alerts = engine.process(ev(0, model="house-model", input_tokens=2_000))  # 2.00 USD
    assert [a.rule for a in alerts] == ["session_cost"]


# -- alert ids and counters -------------------------------------------------------------------
def test_same_events_give_same_alert_ids_in_two_engines(ev: EventFactory) -> None:
    events = [ev(0, cost_usd=0.6), ev(10, cost_usd=0.6), *(ev(20 + t, "llm_call")
                                                            for t in range(201))]
    first, second = Engine(), Engine()
    a = [*first.process_many(events), *first.advance(10_000 * US)]
    b = [*second.process_many(events), *second.advance(10_000 * US)]
    assert _summary(a) == _summary(b)
    assert {x.rule for x in a} == {"session_cost", "loop_steps"}


def test_alert_id_is_derived_from_rule_key_and_firing_time(ev: EventFactory) -> None:
    engine = Engine()
    (fired,) = engine.process_many([ev(0, cost_usd=0.6), ev(10, cost_usd=0.6)])
    expected = alert_id_for("session_cost", AlertScope.SESSION, ("default", "sess-1"), 10 * US)
    assert fired.alert_id == expected


def test_stats_count_fired_resolved_and_firing(ev: EventFactory) -> None:
    engine = Engine()
    engine.process_many([ev(0, cost_usd=0.6), ev(10, cost_usd=0.6)])
    assert (engine.stats.alerts_fired, engine.stats.firing) == (1, 1)
    engine.advance(100 * US)
    stats = engine.stats
    assert (stats.alerts_fired, stats.alerts_resolved, stats.firing) == (1, 1, 0)


# -- custom rules -----------------------------------------------------------------------------
def test_tenant_scoped_cost_rule_sums_across_sessions(ev: EventFactory) -> None:
    config = rules_from_mapping({"rules": {"tenant_cost": {
        "type": "cost", "scope": "tenant", "window_s": 3600, "threshold_usd": 2.0}}})
    engine = Engine(config)
    events = [ev(t * 10, cost_usd=0.5, tenant_id="acme", session_id=f"s{t}") for t in range(5)]
    events.append(ev(100, cost_usd=0.5, tenant_id="other", session_id="s0"))
    (alert,) = engine.process_many(events)
    assert (alert.rule, alert.scope, alert.key, alert.tenant_id) == (
        "tenant_cost", AlertScope.TENANT, "acme", "acme")
    assert (alert.agent_id, alert.session_id, alert.window_s) == (None, None, 3600)
    assert to_us(alert.ts) == 40 * US  # the fifth 0.50 makes 2.50 > 2.00


def test_changed_default_threshold_applies(ev: EventFactory) -> None:
    engine = Engine(rules_from_mapping({"rules": {"session_cost": {"threshold_usd": 2.5}}}))
    assert engine.process_many([ev(t, cost_usd=0.6) for t in range(4)]) == []
    assert len(engine.process(ev(4, cost_usd=0.6))) == 1



def test_open_sessions_counts_what_stats_counts(ev: EventFactory) -> None:
    engine = Engine()
    assert engine.open_sessions == engine.stats.active_sessions == 0
    for t, session in enumerate(("s1", "s2", "s2")):
        engine.process(ev(t, session_id=session))
    assert engine.open_sessions == engine.stats.active_sessions == 2
    engine.process(ev(3, "session_end", session_id="s1"))
    assert engine.open_sessions == engine.stats.active_sessions == 1
