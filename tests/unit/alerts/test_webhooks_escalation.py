"""Escalation on real HTTP servers on 127.0.0.1: a firing nobody acknowledges goes to
the next endpoint of the chain, once per level; an acknowledgement or the resolution
stops the chain; chains are validated."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from agentwatch.alerts import (
    Ack,
    Dispatcher,
    EndpointConfig,
    Escalator,
    WebhookReceiver,
    endpoints_from_mapping,
)
from agentwatch.schemas import Alert, AlertState, ConfigError, Severity

SECRET = "escalation-test-secret"
AFTER_S = 0.2
WAIT_S = 15.0
AlertFactory = Callable[..., Alert]


def endpoint(name: str, url: str, **extra: Any) -> EndpointConfig:
    fields: dict[str, Any] = {
        "name": name,
        "url": url,
        "secret": SECRET,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
        "allow_private": True,  # the receivers listen on 127.0.0.1
    }
    return EndpointConfig.model_validate(fields | extra)


@contextmanager
def chain(n: int, **first: Any) -> Iterator[tuple[Escalator, list[WebhookReceiver]]]:
    """Endpoints e0 -> e1 -> ... -> e(n-1), each escalating after AFTER_S; only e0's
    filters match (critical alerts), the others get alerts by escalation alone."""
    receivers = [WebhookReceiver(secret=SECRET).start() for _ in range(n)]
    try:
        configs = []
        for i, receiver in enumerate(receivers):
            extra: dict[str, Any] = {
                "filters": {"severities": ["critical"] if i == 0 else ["info"]}
            }
            if i + 1 < n:
                extra |= {"escalate_after_s": AFTER_S, "escalate_to": f"e{i + 1}"}
            if i == 0:
                extra |= first
            configs.append(endpoint(f"e{i}", receiver.url, **extra))
        dispatcher = Dispatcher(configs, on_dead_letter=lambda f: None)
        escalator = Escalator(dispatcher)
        try:
            yield escalator, receivers
        finally:
            escalator.close()
            dispatcher.close()
    finally:
        for receiver in receivers:
            receiver.stop()


def settle(escalator: Escalator) -> None:
    assert escalator.wait_timers(WAIT_S)
    assert escalator.dispatcher.wait_idle(WAIT_S)


def critical(make_alert: AlertFactory) -> Alert:
    return make_alert(severity=Severity.CRITICAL)


def resolution(alert: Alert) -> Alert:
    return alert.model_copy(update={"state": AlertState.RESOLVED})


def test_unacknowledged_firing_reaches_the_second_endpoint(make_alert: AlertFactory) -> None:
    alert = critical(make_alert)
    with chain(2) as (escalator, (first, second)):
        escalator.submit(alert)
        assert second.wait_for(1, WAIT_S)
        settle(escalator)
        assert len(first.received) == 1
        (escalated,) = second.received
        assert escalated.alert() == alert
        assert escalated.verified
        assert escalator.stats.escalated == 1


def test_chain_goes_one_level_per_timer_and_once_per_level(make_alert: AlertFactory) -> None:
    alert = critical(make_alert)
    with chain(3) as (escalator, receivers):
        escalator.submit(alert)
        escalator.submit(alert)  # read twice (a redelivery): one timer chain all the same
        assert receivers[2].wait_for(1, WAIT_S)
        settle(escalator)
        assert [len(r.received) for r in receivers] == [2, 1, 1]
        assert escalator.stats.escalated == 2


def test_acknowledged_before_the_timer_is_not_escalated(make_alert: AlertFactory) -> None:
    alert = critical(make_alert)
    with chain(2) as (escalator, (first, second)):
        escalator.submit(alert)
        assert escalator.ack(Ack.now(alert.alert_id, "maria"))
        settle(escalator)
        assert len(first.received) == 1
        assert second.received == []
        assert escalator.stats.stopped_by_ack == 1
        assert escalator.acked(alert.alert_id) is not None


def test_ack_known_before_the_firing_prevents_escalation(make_alert: AlertFactory) -> None:
    """As after a restart: the acks topic is read before the alerts are read again."""
    alert = critical(make_alert)
    with chain(2) as (escalator, (first, second)):
        escalator.ack(Ack.now(alert.alert_id, "maria", via="cli"))
        escalator.submit(alert)
        settle(escalator)
        assert len(first.received) == 1
        assert second.received == []


def test_second_ack_of_one_alert_is_not_new(make_alert: AlertFactory) -> None:
    alert = critical(make_alert)
    with chain(2) as (escalator, _):
        assert escalator.ack(Ack.now(alert.alert_id, "maria"))
        assert not escalator.ack(Ack.now(alert.alert_id, "li"))
        acked = escalator.acked(alert.alert_id)
        assert acked is not None
        assert acked.by == "maria"


def test_resolution_stops_the_chain(make_alert: AlertFactory) -> None:
    alert = critical(make_alert)
    with chain(2) as (escalator, (first, second)):
        escalator.submit(alert)
        escalator.submit(resolution(alert))
        settle(escalator)
        assert [d.alert().state for d in first.received] == ["firing", "resolved"]
        assert second.received == []
        assert escalator.stats.stopped_by_resolution == 1


def test_resolution_reaches_the_endpoints_it_was_escalated_to(make_alert: AlertFactory) -> None:
    alert = critical(make_alert)
    with chain(3) as (escalator, receivers):
        escalator.submit(alert)
        assert receivers[2].wait_for(1, WAIT_S)
        settle(escalator)
        escalator.submit(resolution(alert))
        settle(escalator)
        for receiver in receivers:
            assert [d.alert().state for d in receiver.received] == ["firing", "resolved"]


def test_alert_the_first_endpoint_does_not_take_is_not_escalated(
    make_alert: AlertFactory,
) -> None:
    with chain(2) as (escalator, (first, second)):
        escalator.submit(make_alert(severity=Severity.WARNING))
        settle(escalator)
        assert first.received == []
        assert second.received == []
        assert escalator.open_alerts == 0


# -- configuration ------------------------------------------------------------------------


def _entry(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "url": f"https://{name}.example/hook", "secret": "s"} | extra


def test_escalate_to_an_unknown_endpoint_names_the_key() -> None:
    data = {"endpoints": [_entry("a", escalate_after_s=60, escalate_to="nobody")]}
    with pytest.raises(ConfigError, match=r"e\.yaml: `endpoints\[0\]\.escalate_to`: no endpoint"):
        endpoints_from_mapping(data, source="e.yaml")


def test_escalation_cycle_is_refused_with_the_chain() -> None:
    data = {
        "endpoints": [
            _entry("a", escalate_after_s=60, escalate_to="b"),
            _entry("b", escalate_after_s=60, escalate_to="c"),
            _entry("c", escalate_after_s=60, escalate_to="a"),
        ]
    }
    with pytest.raises(
        ConfigError, match=r"`endpoints\[0\]\.escalate_to`: the chain a -> b -> c -> a"
    ):
        endpoints_from_mapping(data, source="e.yaml")


def test_escalation_to_itself_is_refused() -> None:
    data = {"endpoints": [_entry("a", escalate_after_s=60, escalate_to="a")]}
    with pytest.raises(
        ConfigError, match=r"`endpoints\[0\]\.escalate_to`: 'a' escalates to itself"
    ):
        endpoints_from_mapping(data, source="e.yaml")


@pytest.mark.parametrize(
    ("extra", "missing"),
    [({"escalate_after_s": 60}, "escalate_to"), ({"escalate_to": "b"}, "escalate_after_s")],
)
def test_escalation_keys_go_together(extra: dict[str, Any], missing: str) -> None:
    data = {"endpoints": [_entry("a", **extra), _entry("b")]}
    with pytest.raises(ConfigError, match=rf"`endpoints\[0\]\.{missing}`: missing"):
        endpoints_from_mapping(data, source="e.yaml")


@pytest.mark.parametrize("after", [0, -1, 10**9])
def test_escalate_after_s_out_of_range_names_the_key(after: int) -> None:
    data = {"endpoints": [_entry("a", escalate_after_s=after, escalate_to="b"), _entry("b")]}
    with pytest.raises(ConfigError, match=r"`endpoints\[0\]\.escalate_after_s`"):
        endpoints_from_mapping(data, source="e.yaml")


def test_dispatcher_refuses_a_cycle_given_in_python() -> None:
    configs = [
        EndpointConfig.model_validate(_entry("a", escalate_after_s=1, escalate_to="b")),
        EndpointConfig.model_validate(_entry("b", escalate_after_s=1, escalate_to="a")),
    ]
    with pytest.raises(ValueError, match="cycle"):
        Dispatcher(configs, on_dead_letter=lambda f: None)
