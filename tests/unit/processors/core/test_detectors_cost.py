"""The session cost rule: > 1.00 USD in 60 s, exact sums, fire once, resolve, cooldown."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agentwatch.processors.core import Engine, rules_from_mapping
from agentwatch.schemas import AlertScope, AlertState, AlertType, Event, to_us

US = 1_000_000
EventFactory = Callable[..., Event]


def _cost_only(**top: object) -> Engine:
    """Only session_cost enabled (plus any rule settings passed in ``top``)."""
    rules = {name: {"enabled": False} for name in ("agent_error_rate", "loop_repeat", "loop_steps")}
    extra = top.pop("rules", {})
    assert isinstance(extra, dict)
    return Engine(rules_from_mapping({**top, "rules": {**rules, **extra}}))


@pytest.fixture
def engine() -> Engine:
    return _cost_only()


def test_cost_over_threshold_in_window_fires(engine: Engine, ev: EventFactory) -> None:
    assert engine.process(ev(0, cost_usd=0.6)) == []
    alerts = engine.process(ev(10, cost_usd=0.6))
    assert len(alerts) == 1
    alert = alerts[0]
    assert (alert.rule, alert.type, alert.state) == ("session_cost", AlertType.COST,
                                                     AlertState.FIRING)
    assert (alert.scope, alert.key, alert.session_id, alert.agent_id, alert.tenant_id) == (
        AlertScope.SESSION, "sess-1", "sess-1", "agent-1", "default")
    assert alert.value == pytest.approx(1.2)
    assert (alert.threshold, alert.window_s) == (1.0, 60)
    assert to_us(alert.ts) == 10 * US


def test_cost_exactly_at_threshold_does_not_fire(engine: Engine, ev: EventFactory) -> None:
    # 0.1 + 0.2 + 0.7 is 1.0000000000000002 in floats; summed in nano-USD it is exactly 1.00
    alerts = engine.process_many([ev(0, cost_usd=0.1), ev(1, cost_usd=0.2), ev(2, cost_usd=0.7)])
    assert alerts == []


def test_cost_one_nano_usd_over_threshold_fires(engine: Engine, ev: EventFactory) -> None:
    engine.process_many([ev(0, cost_usd=0.1), ev(1, cost_usd=0.2), ev(2, cost_usd=0.7)])
    alerts = engine.process(ev(3, cost_usd=1e-9))
    assert [a.state for a in alerts] == [AlertState.FIRING]


def test_cost_does_not_fire_again_while_firing(engine: Engine, ev: EventFactory) -> None:
    fired = engine.process_many([ev(0, cost_usd=0.6), ev(10, cost_usd=0.6)])
    assert len(fired) == 1
    assert engine.process_many([ev(20 + i, cost_usd=0.5) for i in range(10)]) == []
    assert engine.stats.firing == 1


def test_cost_outside_the_window_does_not_add_up(engine: Engine, ev: EventFactory) -> None:
    # the first event's bucket leaves at exactly 60 s
    assert engine.process_many([ev(0, cost_usd=0.6), ev(60, cost_usd=0.6)]) == []


def test_cost_resolves_via_advance_when_oldest_bucket_leaves(
    engine: Engine, ev: EventFactory
) -> None:
    (fired,) = engine.process_many([ev(0, cost_usd=0.6), ev(10, cost_usd=0.6)])
    assert engine.advance(60 * US - 1) == []
    (resolved,) = engine.advance(60 * US)
    assert resolved.state is AlertState.RESOLVED
    assert resolved.alert_id == fired.alert_id
    assert to_us(resolved.ts) == 60 * US
    assert resolved.value == pytest.approx(0.6)


def test_cost_resolution_ts_is_when_window_fell_back_not_the_watermark(
    engine: Engine, ev: EventFactory
) -> None:
    engine.process_many([ev(0.5, cost_usd=0.6), ev(10, cost_usd=0.6)])
    (resolved,) = engine.advance(500 * US)
    assert to_us(resolved.ts) == 60 * US  # bucket [0 s, 1 s) leaves at 60 s


def test_cost_resolution_waits_for_every_bucket_needed_over_threshold(
    engine: Engine, ev: EventFactory
) -> None:
    engine.process_many([ev(0, cost_usd=0.6), ev(10, cost_usd=0.6), ev(20, cost_usd=0.6)])
    assert engine.advance(65 * US) == []  # 1.2 left after the first bucket goes
    (resolved,) = engine.advance(100 * US)
    assert to_us(resolved.ts) == 70 * US


def test_cost_resolves_on_later_event_of_same_session(engine: Engine, ev: EventFactory) -> None:
    (fired,) = engine.process_many([ev(0, cost_usd=0.6), ev(10, cost_usd=0.6)])
    (resolved,) = engine.process(ev(90, cost_usd=0.01))
    assert resolved.state is AlertState.RESOLVED
    assert resolved.alert_id == fired.alert_id
    assert to_us(resolved.ts) == 60 * US


def test_cost_refires_after_resolve_with_new_alert_id(engine: Engine, ev: EventFactory) -> None:
    (first,) = engine.process_many([ev(0, cost_usd=0.6), ev(10, cost_usd=0.6)])
    engine.advance(100 * US)
    (again,) = engine.process_many([ev(100, cost_usd=0.6), ev(110, cost_usd=0.6)])
    assert again.state is AlertState.FIRING
    assert again.alert_id != first.alert_id
    assert to_us(again.ts) == 110 * US


def test_event_that_resolves_can_fire_a_new_alert_at_once(
    engine: Engine, ev: EventFactory
) -> None:
    (first,) = engine.process_many([ev(0, cost_usd=0.6), ev(10, cost_usd=0.6)])
    resolved, fired = engine.process(ev(70, cost_usd=1.5))
    assert (resolved.state, resolved.alert_id) == (AlertState.RESOLVED, first.alert_id)
    assert (fired.state, to_us(fired.ts)) == (AlertState.FIRING, 70 * US)
    assert fired.alert_id != first.alert_id


def test_cooldown_suppresses_refire_until_it_has_passed(ev: EventFactory) -> None:
    engine = _cost_only(rules={"session_cost": {"cooldown_s": 120}})
    engine.process_many([ev(0, cost_usd=0.6), ev(10, cost_usd=0.6)])
    (resolved,) = engine.advance(100 * US)
    assert to_us(resolved.ts) == 60 * US  # cooldown until 180 s
    assert engine.process_many([ev(100, cost_usd=0.6), ev(110, cost_usd=0.6)]) == []
    (fired,) = engine.process_many([ev(180, cost_usd=0.6), ev(181, cost_usd=0.6)])
    assert fired.state is AlertState.FIRING


def test_sessions_have_separate_cost_windows(engine: Engine, ev: EventFactory) -> None:
    alerts = engine.process_many([ev(0, cost_usd=0.6, session_id="s1"),
                                  ev(1, cost_usd=0.6, session_id="s2")])
    assert alerts == []


def test_same_session_id_in_two_tenants_is_isolated(engine: Engine, ev: EventFactory) -> None:
    alerts = engine.process_many([ev(0, cost_usd=0.6, tenant_id="t1"),
                                  ev(1, cost_usd=0.6, tenant_id="t2")])
    assert alerts == []


def test_cost_from_price_table_counts(engine: Engine, ev: EventFactory) -> None:
    # gpt-4o output: 10 USD per million tokens -> 60_000 tokens cost 0.60 USD
    events = [ev(t, model="gpt-4o", output_tokens=60_000) for t in (0, 5)]
    (fired,) = engine.process_many(events)
    assert fired.value == pytest.approx(1.2)


def test_reordered_event_fires_at_the_window_it_completed(
    engine: Engine, ev: EventFactory
) -> None:
    alerts = engine.process_many([ev(0, cost_usd=0.6), ev(3, cost_usd=0.01),
                                  ev(2, cost_usd=0.6)])
    (fired,) = alerts
    assert to_us(fired.ts) == 2 * US
    assert fired.value == pytest.approx(1.2)


def test_alert_carries_a_sample_of_contributing_event_ids(
    engine: Engine, ev: EventFactory
) -> None:
    first, second = ev(0, cost_usd=0.6), ev(10, cost_usd=0.6)
    (fired,) = engine.process_many([first, second])
    assert fired.event_ids == [first.event_id, second.event_id]


def test_reordered_firing_in_a_past_window_resolves_when_that_window_fell_back(
    engine: Engine, ev: EventFactory
) -> None:
    # in event order: fires at 59 s (0.6 + 0.6), resolves at 60 s when bucket 0 leaves
    alerts = engine.process_many([ev(0, cost_usd=0.6), ev(62, cost_usd=0.01),
                                  ev(59, cost_usd=0.6)])
    alerts += engine.advance(500 * US)
    assert [(a.state, to_us(a.ts)) for a in alerts] == [
        (AlertState.FIRING, 59 * US), (AlertState.RESOLVED, 60 * US)]
