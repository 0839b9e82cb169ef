"""The dispatcher against real HTTP servers on 127.0.0.1: signed deliveries, retries,
dead letters, per-alert order, and one endpoint never delaying another."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from agentwatch.alerts import (
    DeliveryFailure,
    DeliveryResult,
    Dispatcher,
    EndpointConfig,
    WebhookReceiver,
    delivery_id,
)
from agentwatch.schemas import Alert, AlertState, Severity, encode_alert

SECRET = "dispatcher-test-secret"
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


@dataclass
class Recorder:
    """What the dispatcher reported (dead letters with their wall-clock time)."""

    failures: list[tuple[float, DeliveryFailure]] = field(default_factory=list)
    results: list[tuple[object, DeliveryResult]] = field(default_factory=list)
    done: list[object] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def on_dead_letter(self, failure: DeliveryFailure) -> None:
        with self.cond:
            self.failures.append((time.time(), failure))  # as received_at_s
            self.cond.notify_all()

    def on_result(self, ref: object, result: DeliveryResult) -> None:
        with self.cond:
            self.results.append((ref, result))
            self.cond.notify_all()

    def on_done(self, ref: object) -> None:
        with self.cond:
            self.done.append(ref)
            self.cond.notify_all()

    def wait_done(self, n: int, timeout_s: float = 15.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.done) >= n, timeout_s)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make_dispatcher(recorder: Recorder) -> Iterator[Callable[..., Dispatcher]]:
    made: list[Dispatcher] = []

    def make(*endpoints: EndpointConfig) -> Dispatcher:
        dispatcher = Dispatcher(
            endpoints,
            on_dead_letter=recorder.on_dead_letter,
            on_result=recorder.on_result,
            on_done=recorder.on_done,
        )
        made.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in made:
        dispatcher.close(join_timeout_s=5)


def test_every_alert_arrives_signed_with_its_delivery_id_and_body(
    make_dispatcher: Callable[..., Dispatcher], recorder: Recorder, make_alert: AlertFactory
) -> None:
    alerts = [make_alert(key=f"session-{i}", session_id=f"session-{i}") for i in range(5)]
    with WebhookReceiver(secret=SECRET) as receiver:
        dispatcher = make_dispatcher(endpoint("ops", receiver.url))
        for i, alert in enumerate(alerts):
            assert dispatcher.submit(alert, ref=i) == 1
        assert recorder.wait_done(5)
        received = receiver.received

    assert sorted(recorder.done) == [0, 1, 2, 3, 4]
    assert dispatcher.in_flight == 0
    assert [d.verified for d in received] == [True] * 5, [d.verify_error for d in received]
    by_id = {d.delivery_id: d for d in received}
    for alert in alerts:
        delivery = by_id[delivery_id(alert.alert_id, alert.state, "ops")]
        assert delivery.body == encode_alert(alert)
    assert recorder.failures == []
    assert dispatcher.stats()["ops"].delivered == 5
    assert dispatcher.stats()["ops"].queued == 0


def test_a_failing_endpoint_is_retried_until_it_answers(
    make_dispatcher: Callable[..., Dispatcher], recorder: Recorder, alert: Alert
) -> None:
    with WebhookReceiver(secret=SECRET, statuses=[500, 503, 408, 200]) as receiver:
        dispatcher = make_dispatcher(endpoint("flaky", receiver.url, max_attempts=5))
        dispatcher.submit(alert, ref="a")
        assert recorder.wait_done(1)
        received = receiver.received

    assert [d.response_status for d in received] == [500, 503, 408, 200]
    assert {d.delivery_id for d in received} == {delivery_id(alert.alert_id, alert.state, "flaky")}
    assert all(d.verified for d in received)
    [(ref, result)] = recorder.results
    assert (ref, result.delivered, result.attempts, result.status_code) == ("a", True, 4, 200)
    stats = dispatcher.stats()["flaky"]
    assert (stats.delivered, stats.retries, stats.attempts) == (1, 3, 4)
    assert recorder.failures == []


def test_an_endpoint_that_always_fails_gets_max_attempts_then_the_alert_is_dead_lettered(
    make_dispatcher: Callable[..., Dispatcher], recorder: Recorder, alert: Alert
) -> None:
    with WebhookReceiver(secret=SECRET, default_status=500, response_body="db down") as receiver:
        dispatcher = make_dispatcher(endpoint("broken", receiver.url, max_attempts=3))
        dispatcher.submit(alert, ref="t")
        assert recorder.wait_done(1)
        assert len(receiver.received) == 3

    [(_, failure)] = recorder.failures
    assert failure.alert == alert
    assert failure.endpoint == "broken"
    assert failure.attempts == 3
    assert failure.status_code == 500
    assert failure.error == "HTTP 500: db down"
    assert failure.delivery_id == delivery_id(alert.alert_id, alert.state, "broken")
    assert failure.delivery_status == "failed:broken"
    assert DeliveryFailure.decode(failure.encode()) == failure
    [(_, result)] = recorder.results
    assert not result.delivered
    assert recorder.done == ["t"]
    assert dispatcher.stats()["broken"].dead_lettered == 1


@pytest.mark.parametrize("status", [400, 401, 404, 410, 302])
def test_other_4xx_and_3xx_are_final_after_one_attempt(
    make_dispatcher: Callable[..., Dispatcher], recorder: Recorder, alert: Alert, status: int
) -> None:
    with WebhookReceiver(secret=SECRET, default_status=status) as receiver:
        dispatcher = make_dispatcher(endpoint("strict", receiver.url, max_attempts=5))
        dispatcher.submit(alert)
        assert recorder.wait_done(1)
        assert len(receiver.received) == 1
    [(_, failure)] = recorder.failures
    assert (failure.attempts, failure.status_code) == (1, status)


def test_an_unreachable_endpoint_is_retried_then_dead_lettered(
    make_dispatcher: Callable[..., Dispatcher], recorder: Recorder, alert: Alert, closed_port: int
) -> None:
    dispatcher = make_dispatcher(
        endpoint("gone", f"http://127.0.0.1:{closed_port}/hook", max_attempts=2)
    )
    dispatcher.submit(alert)
    assert recorder.wait_done(1)
    [(_, failure)] = recorder.failures
    assert failure.attempts == 2
    assert failure.status_code is None
    assert "refused" in failure.error.lower()


def test_retry_after_is_honoured(
    make_dispatcher: Callable[..., Dispatcher], recorder: Recorder, alert: Alert
) -> None:
    with WebhookReceiver(
        secret=SECRET, statuses=[429, 200], response_headers={"Retry-After": "1"}
    ) as receiver:
        dispatcher = make_dispatcher(endpoint("limited", receiver.url, backoff_max_s=5))
        dispatcher.submit(alert)
        assert recorder.wait_done(1)
        first, second = receiver.received
    # backoff_initial_s is 0.01 s: only the header explains a wait of a second
    assert second.received_at_s - first.received_at_s >= 0.9
    assert recorder.results[0][1].delivered


def test_a_hanging_endpoint_does_not_delay_a_healthy_one(
    make_dispatcher: Callable[..., Dispatcher], recorder: Recorder, make_alert: AlertFactory
) -> None:
    alerts = [make_alert(key=f"s{i}", session_id=f"s{i}") for i in range(20)]
    with (
        WebhookReceiver(secret=SECRET, hang_s=30) as hanging,
        WebhookReceiver(secret=SECRET) as healthy,
    ):
        dispatcher = make_dispatcher(
            endpoint("hanging", hanging.url, timeout_s=2, max_attempts=1, concurrency=2),
            endpoint("healthy", healthy.url),
        )
        submitted_at = time.time()
        for i, alert in enumerate(alerts):
            dispatcher.submit(alert, ref=i)
        assert healthy.wait_for(20, timeout_s=15)
        healthy_last_s = max(d.received_at_s for d in healthy.received)
        with recorder.cond:
            assert recorder.cond.wait_for(lambda: recorder.failures, 15)
        first_timeout_s = recorder.failures[0][0]
        dispatcher.close(join_timeout_s=5)

    # every healthy delivery arrived before the hanging endpoint's first request timed out
    assert first_timeout_s - submitted_at >= 2.0
    assert healthy_last_s < first_timeout_s
    assert recorder.failures[0][1].endpoint == "hanging"
    assert "timed out" in recorder.failures[0][1].error
    # at most `concurrency` requests were ever open at the hanging endpoint
    assert 1 <= len(hanging.received) <= 4
    # an alert is done only once the hanging endpoint gave up on it too
    failed_ids = {f.alert.alert_id for _, f in recorder.failures}
    assert {alerts[ref].alert_id for ref in recorder.done} == failed_ids  # type: ignore[index]
    assert len(failed_ids) < 20


def test_a_resolution_is_never_sent_before_its_firing(
    make_dispatcher: Callable[..., Dispatcher], recorder: Recorder, alert: Alert
) -> None:
    resolved = alert.model_copy(update={"state": AlertState.RESOLVED})
    with WebhookReceiver(secret=SECRET, statuses=[500, 500, 200, 200]) as receiver:
        dispatcher = make_dispatcher(endpoint("ordered", receiver.url, concurrency=4))
        dispatcher.submit(alert, ref="firing")
        dispatcher.submit(resolved, ref="resolved")
        assert recorder.wait_done(2)
        states = [(d.alert().state, d.response_status) for d in receiver.received]
    assert states == [
        (AlertState.FIRING, 500),
        (AlertState.FIRING, 500),
        (AlertState.FIRING, 200),
        (AlertState.RESOLVED, 200),
    ]
    assert recorder.done == ["firing", "resolved"]


def test_filters_skip_and_formats_choose_what_each_endpoint_gets(
    make_dispatcher: Callable[..., Dispatcher], recorder: Recorder, make_alert: AlertFactory
) -> None:
    critical = make_alert(severity=Severity.CRITICAL)
    warning = make_alert(severity=Severity.WARNING)
    with (
        WebhookReceiver(secret=SECRET) as pager,
        WebhookReceiver(secret=SECRET) as chat,
    ):
        dispatcher = make_dispatcher(
            endpoint("pager", pager.url, filters={"severities": ["critical"]}),
            endpoint("chat", chat.url, format="slack", link_template="https://g/{alert_id}"),
        )
        assert dispatcher.submit(critical, ref="c") == 2
        assert dispatcher.submit(warning, ref="w") == 1
        assert dispatcher.submit(critical, ref="again", skip={"pager", "chat"}) == 0
        assert "again" in recorder.done  # nothing to deliver: done at once
        assert recorder.wait_done(3)
        pager_got, chat_got = pager.received, chat.received

    assert [d.alert().alert_id for d in pager_got] == [critical.alert_id]
    assert len(chat_got) == 2
    assert all("blocks" in d.json and "text" in d.json for d in chat_got)
    assert any(f"https://g/{critical.alert_id}" in d.body.decode() for d in chat_got)
    assert all(d.verified for d in pager_got + chat_got)


def test_close_leaves_unfinished_deliveries_unfinished(
    make_dispatcher: Callable[..., Dispatcher], recorder: Recorder, alert: Alert
) -> None:
    with WebhookReceiver(secret=SECRET, default_status=503) as receiver:
        dispatcher = make_dispatcher(
            endpoint("down", receiver.url, backoff_initial_s=60, backoff_max_s=60)
        )
        dispatcher.submit(alert, ref="x")
        assert receiver.wait_for(1, timeout_s=10)
        deadline = time.monotonic() + 10
        while dispatcher.stats()["down"].retries < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        dispatcher.close(join_timeout_s=5)
    assert dispatcher.stats()["down"].retries == 1  # waiting for its second attempt
    assert recorder.done == []
    assert recorder.failures == []
    assert dispatcher.in_flight == 1


def test_a_failing_dead_letter_store_leaves_the_delivery_unfinished(
    recorder: Recorder, alert: Alert
) -> None:
    def refuse(_failure: DeliveryFailure) -> None:
        raise RuntimeError("dead-letter topic unavailable")

    with WebhookReceiver(secret=SECRET, default_status=400) as receiver:
        dispatcher = Dispatcher(
            [endpoint("bad", receiver.url)], on_dead_letter=refuse, on_done=recorder.on_done
        )
        try:
            dispatcher.submit(alert, ref="kept")
            assert receiver.wait_for(1, timeout_s=10)
            # nothing can finish it any more: not under way (a stopping runtime's drain
            # does not wait for it), and never done
            assert dispatcher.wait_idle(10)
        finally:
            dispatcher.close(join_timeout_s=5)
    assert recorder.done == []
    assert (dispatcher.in_flight, dispatcher.abandoned) == (0, 1)


def test_an_alert_left_unfinished_at_one_endpoint_is_never_done(
    recorder: Recorder, alert: Alert
) -> None:
    """Its other endpoint delivers (a result), but the alert is not done: the runtime
    must not commit past it."""

    def refuse(_failure: DeliveryFailure) -> None:
        raise RuntimeError("stopping: the dead-letter write gave up")

    with (WebhookReceiver(secret=SECRET, default_status=400) as bad,
          WebhookReceiver(secret=SECRET, statuses=[503], default_status=200) as good):
        dispatcher = Dispatcher(
            [endpoint("bad", bad.url), endpoint("good", good.url, backoff_initial_s=0.01)],
            on_dead_letter=refuse, on_result=recorder.on_result, on_done=recorder.on_done,
        )
        try:
            dispatcher.submit(alert, ref="kept")
            assert good.wait_for(2, timeout_s=10)
            assert dispatcher.wait_idle(10)
            deadline = time.monotonic() + 10
            while dispatcher.stats()["good"].delivered < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            dispatcher.close(join_timeout_s=5)
    assert dispatcher.stats()["good"].delivered == 1
    assert recorder.done == []
    assert (dispatcher.in_flight, dispatcher.abandoned) == (0, 1)


def test_endpoint_names_must_be_unique(alert: Alert) -> None:
    ep = endpoint("same", "http://127.0.0.1:9/")
    with pytest.raises(ValueError, match="unique"):
        Dispatcher([ep, ep], on_dead_letter=lambda _f: None)


def test_an_endpoint_with_two_secrets_passes_receivers_holding_either_one(
    make_dispatcher: Callable[..., Dispatcher], recorder: Recorder, make_alert: AlertFactory
) -> None:
    """Rotation: `secrets: [new, old]` signs with both, so receivers not yet moved to the
    new secret and receivers already moved both accept every delivery."""
    alert = make_alert()
    new, old, unrelated = "new-secret", "old-secret", "unrelated-secret"
    with (
        WebhookReceiver(secret=old) as on_old,
        WebhookReceiver(secret=new) as on_new,
        WebhookReceiver(secret=unrelated) as on_other,
    ):
        dispatcher = make_dispatcher(
            *(
                EndpointConfig.model_validate(
                    {"name": name, "url": receiver.url, "secrets": [new, old],
                     "allow_private": True}
                )
                for name, receiver in (("old", on_old), ("new", on_new), ("other", on_other))
            )
        )
        assert dispatcher.submit(alert, ref=0) == 3
        assert recorder.wait_done(1)
        received = {"old": on_old.received, "new": on_new.received, "other": on_other.received}

    for name in ("old", "new"):
        (delivery,) = received[name]
        assert delivery.verified, delivery.verify_error
        assert delivery.signature is not None
        assert delivery.signature.count("v1=") == 2
    (other,) = received["other"]
    assert other.verified is False
