"""The PagerDuty Events v2 format: trigger on firing, resolve on resolution, dedup_key =
alert id, mapped severity, payload limits; the routing key comes from the endpoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from agentwatch.alerts import (
    PAGERDUTY_SEVERITY,
    Dispatcher,
    EndpointConfig,
    WebhookReceiver,
    endpoints_from_mapping,
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
