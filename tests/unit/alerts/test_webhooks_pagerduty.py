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
    EscalationState,
    Escalator,
    WebhookReceiver,
    endpoints_from_mapping,
    pagerduty_acknowledge_body,
    pagerduty_body,
)
from agentwatch.schemas import (
    Alert,
    AlertState,
    ConfigError,
    DeliveryFailure,
    Severity,
    format_ts,
)

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
def escalator_over(
    *configs: EndpointConfig, journal: Callable[[str, bytes | None], None] | None = None
) -> Iterator[Escalator]:
    dispatcher = Dispatcher(list(configs), on_dead_letter=lambda f: None)
    escalator = Escalator(dispatcher, journal=journal)
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


class Journal:
    """What an Escalator hands its journal: (alert id, decoded state or None)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, EscalationState | None]] = []

    def __call__(self, alert_id: str, record: bytes | None) -> None:
        self.records.append((alert_id, None if record is None else EscalationState.decode(record)))

    def owed(self) -> list[frozenset[str] | None]:
        """Per record, the endpoints owed an acknowledge (None: closed)."""
        return [None if s is None else s.acknowledge for _, s in self.records]


def _pd_config(pd: WebhookReceiver) -> EndpointConfig:
    return EndpointConfig.model_validate(
        _pd(url=pd.url, routing_key=ROUTING_KEY, allow_private=True)
    )


def test_acknowledge_stays_in_the_journal_until_it_is_finished(make_alert: AlertFactory) -> None:
    """A crash before the acknowledge is finished leaves the alert in the journal, with
    the endpoint it is owed to; once finished the alert is closed there."""
    firing = make_alert(severity=Severity.CRITICAL)
    journal = Journal()
    with PagerDutyLike() as pd, escalator_over(_pd_config(pd), journal=journal) as escalator:
        escalator.submit(firing)
        assert escalator.dispatcher.wait_idle(10)
        escalator.ack(Ack.now(firing.alert_id, "maria"))
        assert escalator.dispatcher.wait_idle(10)
    assert journal.owed() == [frozenset(), frozenset({"pd"}), None]


def test_restore_sends_the_acknowledge_of_an_alert_acknowledged_while_down(
    make_alert: AlertFactory,
) -> None:
    """The trigger reached PagerDuty before the crash; the ack came while the dispatcher
    was down (read from the acks topic before the journal)."""
    firing = make_alert(severity=Severity.CRITICAL)
    journal = Journal()
    with PagerDutyLike() as pd, escalator_over(_pd_config(pd), journal=journal) as escalator:
        escalator.ack(Ack.now(firing.alert_id, "maria", via="cli"))
        assert escalator.restore([EscalationState(firing, {"pd": 1.0})]) == 0
        assert escalator.dispatcher.wait_idle(10)
        assert escalator.open_alerts == 0
    assert _actions(pd) == [("acknowledge", firing.alert_id)]
    assert journal.owed() == [frozenset({"pd"}), None]


def test_restore_sends_an_acknowledge_that_was_under_way_again(make_alert: AlertFactory) -> None:
    firing = make_alert(severity=Severity.CRITICAL)
    saved = EscalationState(firing, {"pd": 1.0}, acknowledge=frozenset({"pd"}))
    with PagerDutyLike() as pd, escalator_over(_pd_config(pd)) as escalator:
        escalator.restore([saved])
        assert escalator.dispatcher.wait_idle(10)
    assert _actions(pd) == [("acknowledge", firing.alert_id)]


def test_firing_read_again_after_a_restored_acknowledge_is_acknowledged_after_it(
    make_alert: AlertFactory,
) -> None:
    """The trigger had not reached PagerDuty at the crash: it is sent again, and the
    incident it opens is acknowledged."""
    firing = make_alert(severity=Severity.CRITICAL)
    with PagerDutyLike() as pd, escalator_over(_pd_config(pd)) as escalator:
        escalator.ack(Ack.now(firing.alert_id, "maria"))
        escalator.restore([EscalationState(firing, {"pd": 1.0})])
        escalator.submit(firing)
        assert escalator.dispatcher.wait_idle(10)
    assert [a for a, _ in _actions(pd)][-2:] == ["trigger", "acknowledge"]


def test_resolution_closes_an_owed_acknowledge_in_the_journal(make_alert: AlertFactory) -> None:
    firing = make_alert(severity=Severity.CRITICAL)
    journal = Journal()
    with PagerDutyLike() as pd, escalator_over(_pd_config(pd), journal=journal) as escalator:
        escalator.submit(firing)
        assert escalator.dispatcher.wait_idle(10)
        escalator.ack(Ack.now(firing.alert_id, "maria"))
        escalator.submit(firing.model_copy(update={"state": AlertState.RESOLVED}))
        assert escalator.dispatcher.wait_idle(10)
    assert journal.owed()[-1] is None
    assert [a for a, _ in _actions(pd)] == ["trigger", "acknowledge", "resolve"]


def test_escalation_state_keeps_the_owed_acknowledge(make_alert: AlertFactory) -> None:
    state = EscalationState(make_alert(), {"pd": 1.0}, acknowledge=frozenset({"pd"}))
    assert EscalationState.decode(state.encode()) == state
    bad = orjson.loads(state.encode()) | {"acknowledge": "pd"}
    with pytest.raises(ValueError, match="acknowledge"):
        EscalationState.decode(orjson.dumps(bad))


def test_failed_acknowledge_is_dead_lettered_as_an_acknowledge(make_alert: AlertFactory) -> None:
    firing = make_alert(severity=Severity.CRITICAL)
    failures: list[DeliveryFailure] = []
    with WebhookReceiver(statuses=[202, 400]) as pd:  # 400: final, no retry
        dispatcher = Dispatcher([_pd_config(pd)], on_dead_letter=failures.append)
        escalator = Escalator(dispatcher)
        try:
            escalator.submit(firing)
            assert dispatcher.wait_idle(10)
            escalator.ack(Ack.now(firing.alert_id, "maria"))
            assert dispatcher.wait_idle(10)
        finally:
            escalator.close()
            dispatcher.close()
    assert [(f.delivery, f.status_code) for f in failures] == [("acknowledge", 400)]
    assert f"of the acknowledge of alert {firing.alert_id} failed" in failures[0].reason
