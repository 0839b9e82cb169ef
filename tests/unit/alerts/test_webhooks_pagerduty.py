"""The PagerDuty Events v2 format: trigger on firing, resolve on resolution, dedup_key =
alert id, mapped severity, payload limits; the routing key comes from the endpoint; an
acknowledgement in agentwatch sends ``acknowledge`` once (to a local server answering
like PD: 202 and JSON)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest

from agentwatch.alerts import (
    PAGERDUTY_SEVERITY,
    Ack,
    Dispatcher,
    EndpointConfig,
    Escalator,
    WebhookReceiver,
    endpoints_from_mapping,
    pagerduty_acknowledge_body,
    pagerduty_body,
)
from agentwatch.schemas import Alert, AlertState, ConfigError, Severity, format_ts

ROUTING_KEY = "R0UT1NGKEY0123456789abcdef012345"
AlertFactory = Callable[..., Alert]


def test_firing_is_a_trigger_with_the_events_v2_payload(alert: Alert) -> None:
    event = orjson.loads(pagerduty_body(alert, ROUTING_KEY))
    assert event["routing_key"] == ROUTING_KEY
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == alert.alert_id
    payload = event["payload"]
    assert set(payload) >= {"summary", "source", "severity", "timestamp", "custom_details"}
    assert alert.reason in payload["summary"]
    assert payload["source"] == "agentwatch/acme/agent-a"
    assert payload["severity"] == "warning"
    assert payload["timestamp"] == format_ts(alert.ts)
    assert payload["custom_details"]["alert_id"] == alert.alert_id
    assert payload["custom_details"]["session_id"] == "session-1"
    assert "links" not in event


def test_resolution_is_a_resolve_with_the_same_dedup_key(make_alert: AlertFactory) -> None:
    alert = make_alert(state=AlertState.RESOLVED)
    event = orjson.loads(pagerduty_body(alert, ROUTING_KEY))
    assert event == {
        "routing_key": ROUTING_KEY,
        "event_action": "resolve",
        "dedup_key": alert.alert_id,
    }


@pytest.mark.parametrize("severity", list(Severity))
def test_every_severity_maps_to_an_events_v2_severity(
    make_alert: AlertFactory, severity: Severity
) -> None:
    event = orjson.loads(pagerduty_body(make_alert(severity=severity), ROUTING_KEY))
    assert event["payload"]["severity"] == PAGERDUTY_SEVERITY[severity]
    assert event["payload"]["severity"] in {"critical", "error", "warning", "info"}


def test_summary_is_cut_to_1024_characters(make_alert: AlertFactory) -> None:
    event = orjson.loads(pagerduty_body(make_alert(reason="x" * 5000), ROUTING_KEY))
    summary = event["payload"]["summary"]
    assert len(summary) == 1024
    assert summary.endswith("…")


def test_ack_link_goes_in_links(alert: Alert) -> None:
    event = orjson.loads(pagerduty_body(alert, ROUTING_KEY, ack_url="https://aw.example/ack?a=1"))
    assert event["links"] == [
        {"href": "https://aw.example/ack?a=1", "text": "Acknowledge in agentwatch"}
    ]


def _pd(**extra: Any) -> dict[str, Any]:
    return {
        "name": "pd",
        "url": "https://events.pagerduty.com/v2/enqueue",
        "secret": "s",
        "format": "pagerduty",
    } | extra


def test_pagerduty_endpoint_needs_a_routing_key() -> None:
    with pytest.raises(ConfigError, match=r"`endpoints\[0\]\.routing_key`: missing"):
        endpoints_from_mapping({"endpoints": [_pd()]}, source="e.yaml")


def test_routing_key_only_with_pagerduty() -> None:
    entry = _pd(format="json", routing_key=ROUTING_KEY)
    with pytest.raises(ConfigError, match=r"`endpoints\[0\]\.routing_key`: only used with"):
        endpoints_from_mapping({"endpoints": [entry]}, source="e.yaml")


def test_routing_key_env_is_read_and_kept_out_of_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PD_KEY_FOR_TEST", ROUTING_KEY)
    (config,) = endpoints_from_mapping({"endpoints": [_pd(routing_key_env="PD_KEY_FOR_TEST")]})
    assert config.routing_key == ROUTING_KEY
    assert ROUTING_KEY not in repr(config)


def test_routing_key_env_unset_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PD_KEY_UNSET", raising=False)
    with pytest.raises(ConfigError, match=r"routing_key_env`?: environment variable PD_KEY_UNSET"):
        endpoints_from_mapping({"endpoints": [_pd(routing_key_env="PD_KEY_UNSET")]})


def test_dispatcher_posts_trigger_then_resolve_to_a_real_server(
    make_alert: AlertFactory,
) -> None:
    firing = make_alert(severity=Severity.CRITICAL)
    resolved = firing.model_copy(update={"state": AlertState.RESOLVED})
    with WebhookReceiver(secret="s") as receiver:  # noqa: S106 - a test secret
        config = EndpointConfig.model_validate(
            _pd(url=receiver.url, routing_key=ROUTING_KEY, allow_private=True)
        )
        dispatcher = Dispatcher([config], on_dead_letter=lambda f: None)
        try:
            dispatcher.submit(firing)
            dispatcher.submit(resolved)
            assert dispatcher.wait_idle(10)
        finally:
            dispatcher.close()
        got = [d.json for d in receiver.received]
    assert [e["event_action"] for e in got] == ["trigger", "resolve"]
    assert {e["dedup_key"] for e in got} == {firing.alert_id}
    assert got[0]["payload"]["severity"] == "critical"
    assert all(d.verified for d in receiver.received)


# -- acknowledge ----------------------------------------------------------------------------


def test_acknowledge_carries_only_the_keys_and_the_alert_id(alert: Alert) -> None:
    event = orjson.loads(pagerduty_acknowledge_body(alert.alert_id, ROUTING_KEY))
    assert event == {
        "routing_key": ROUTING_KEY,
        "event_action": "acknowledge",
        "dedup_key": alert.alert_id,
    }


def test_acknowledge_needs_a_routing_key(alert: Alert) -> None:
    with pytest.raises(ValueError, match="routing_key"):
        pagerduty_acknowledge_body(alert.alert_id, "")


class PagerDutyLike(WebhookReceiver):
    """A local server answering like PD's Events v2 endpoint: 202 and a JSON status."""

    def __init__(self) -> None:
        super().__init__(
            default_status=202,
            response_body='{"status":"success","message":"Event processed","dedup_key":"x"}',
        )


@contextmanager
def escalator_over(*configs: EndpointConfig) -> Iterator[Escalator]:
    dispatcher = Dispatcher(list(configs), on_dead_letter=lambda f: None)
    escalator = Escalator(dispatcher)
    try:
        yield escalator
    finally:
        escalator.close()
        dispatcher.close()


def _actions(receiver: WebhookReceiver) -> list[tuple[str, str]]:
    return [(d.json["event_action"], d.json["dedup_key"]) for d in receiver.received]


def test_ack_sends_pagerduty_acknowledge_once(make_alert: AlertFactory) -> None:
    firing = make_alert(severity=Severity.CRITICAL)
    with PagerDutyLike() as pd:
        config = EndpointConfig.model_validate(
            _pd(url=pd.url, routing_key=ROUTING_KEY, allow_private=True)
        )
        with escalator_over(config) as escalator:
            escalator.submit(firing)
            assert escalator.dispatcher.wait_idle(10)
            assert escalator.ack(Ack.now(firing.alert_id, "maria", via="cli"))
            assert not escalator.ack(Ack.now(firing.alert_id, "li"))  # not twice
            assert escalator.dispatcher.wait_idle(10)
            stats = escalator.dispatcher.stats()["pd"]
    assert _actions(pd) == [("trigger", firing.alert_id), ("acknowledge", firing.alert_id)]
    assert [d.response_status for d in pd.received] == [202, 202]
    assert stats.delivered == 2
    assert stats.dead_lettered == 0
    assert len({d.delivery_id for d in pd.received}) == 2


def test_ack_known_before_the_firing_acknowledges_right_after_the_trigger(
    make_alert: AlertFactory,
) -> None:
    firing = make_alert(severity=Severity.CRITICAL)
    with PagerDutyLike() as pd:
        config = EndpointConfig.model_validate(
            _pd(url=pd.url, routing_key=ROUTING_KEY, allow_private=True)
        )
        with escalator_over(config) as escalator:
            escalator.ack(Ack.now(firing.alert_id, "maria", via="cli"))
            escalator.submit(firing)
            assert escalator.dispatcher.wait_idle(10)
    assert _actions(pd) == [("trigger", firing.alert_id), ("acknowledge", firing.alert_id)]


def test_acknowledge_goes_to_pagerduty_endpoints_only(make_alert: AlertFactory) -> None:
    firing = make_alert(severity=Severity.CRITICAL)
    with PagerDutyLike() as pd, WebhookReceiver() as plain:
        configs = [
            EndpointConfig.model_validate(
                _pd(url=pd.url, routing_key=ROUTING_KEY, allow_private=True)
            ),
            EndpointConfig.model_validate(
                {"name": "team", "url": plain.url, "secret": "s", "allow_private": True}
            ),
        ]
        with escalator_over(*configs) as escalator:
            escalator.submit(firing)
            assert escalator.dispatcher.wait_idle(10)
            escalator.ack(Ack.now(firing.alert_id, "maria"))
            assert escalator.dispatcher.wait_idle(10)
    assert [a for a, _ in _actions(pd)] == ["trigger", "acknowledge"]
    assert [d.json["state"] for d in plain.received] == ["firing"]


def test_resolved_alert_is_not_acknowledged(make_alert: AlertFactory) -> None:
    firing = make_alert(severity=Severity.CRITICAL)
    with PagerDutyLike() as pd:
        config = EndpointConfig.model_validate(
            _pd(url=pd.url, routing_key=ROUTING_KEY, allow_private=True)
        )
        with escalator_over(config) as escalator:
            escalator.submit(firing)
            escalator.submit(firing.model_copy(update={"state": AlertState.RESOLVED}))
            assert escalator.dispatcher.wait_idle(10)
            escalator.ack(Ack.now(firing.alert_id, "maria"))
            assert escalator.dispatcher.wait_idle(10)
    assert [a for a, _ in _actions(pd)] == ["trigger", "resolve"]
