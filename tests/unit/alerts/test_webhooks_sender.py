from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import orjson
import pytest

from agentwatch.alerts import (
    AttemptOutcome,
    DeliveryResult,
    WebhookEndpoint,
    WebhookReceiver,
    deliver,
    delivery_id,
    post_once,
)
from agentwatch.alerts._sender import backoff_delay_s, parse_retry_after_s
from agentwatch.schemas import Alert, AlertState, encode_alert

SECRET = "whsec_test"
OLD_SECRET, NEW_SECRET = "old-secret", "new-secret"
WAIT_S = 10.0


def _endpoint(url: str, **overrides: object) -> WebhookEndpoint:
    # the receivers listen on 127.0.0.1: the endpoints opt in to reach them
    settings: dict[str, object] = {"timeout_s": 5.0, "max_attempts": 5, "allow_private": True}
    settings.update(overrides)
    return WebhookEndpoint("ops", url, SECRET, **settings)  # type: ignore[arg-type]


def _always(value: float) -> Callable[[], float]:
    return lambda: value


# --- success ----------------------------------------------------------------------------


def test_deliver_to_a_verifying_receiver_succeeds_in_one_attempt(
    alert: Alert, slept_s: list[float]
) -> None:
    with WebhookReceiver(secret=SECRET) as receiver:
        result = deliver(_endpoint(receiver.url), alert, sleep=slept_s.append)
        [got] = receiver.received
    assert result.delivered
    assert result.attempts == 1
    assert result.status_code == 200
    assert result.error is None
    assert got.verified is True
    assert slept_s == []


def test_delivered_body_is_the_alert_json(alert: Alert) -> None:
    with WebhookReceiver(secret=SECRET) as receiver:
        deliver(_endpoint(receiver.url), alert)
        [got] = receiver.received
    assert got.body == encode_alert(alert)
    assert got.json == orjson.loads(encode_alert(alert))
    assert got.alert() == alert


def test_delivery_carries_content_type_user_agent_and_delivery_id(alert: Alert) -> None:
    with WebhookReceiver() as receiver:
        result = deliver(_endpoint(receiver.url), alert)
        [got] = receiver.received
    assert got.header("Content-Type") == "application/json"
    assert (got.header("User-Agent") or "").startswith("agentwatch/")
    assert got.delivery_id == result.delivery_id == delivery_id(alert.alert_id, "firing", "ops")


def test_any_2xx_counts_as_delivered(alert: Alert) -> None:
    with WebhookReceiver(statuses=[202]) as receiver:
        result = deliver(_endpoint(receiver.url), alert)
    assert result.delivered
    assert result.status_code == 202


def test_sender_signing_with_two_secrets_passes_a_receiver_holding_the_new_one(
    alert: Alert,
) -> None:
    with WebhookReceiver(secret=NEW_SECRET) as receiver:
        endpoint = WebhookEndpoint(
            "ops", receiver.url, (OLD_SECRET, NEW_SECRET), allow_private=True
        )
        deliver(endpoint, alert)
        [got] = receiver.received
    assert got.verified is True


# --- retries ----------------------------------------------------------------------------


def test_two_500s_then_200_is_delivered_after_three_attempts(
    alert: Alert, slept_s: list[float]
) -> None:
    with WebhookReceiver(secret=SECRET, statuses=[500, 500, 200]) as receiver:
        result = deliver(_endpoint(receiver.url), alert, sleep=slept_s.append, rng=_always(0.999))
        statuses = [d.response_status for d in receiver.received]
    assert result.delivered
    assert result.attempts == 3
    assert statuses == [500, 500, 200]
    assert len(slept_s) == 2


def test_backoff_delays_grow_and_stay_within_the_cap(alert: Alert, slept_s: list[float]) -> None:
    endpoint_settings = {"max_attempts": 7, "backoff_initial_s": 0.5, "backoff_max_s": 3.0}
    with WebhookReceiver(default_status=503) as receiver:
        endpoint = _endpoint(receiver.url, **endpoint_settings)
        deliver(endpoint, alert, sleep=slept_s.append, rng=_always(0.999))
    delays = slept_s
    assert len(delays) == 6
    assert delays[0] < delays[1] < delays[2]
    assert all(0 < d <= 3.0 for d in delays)
    assert delays[-1] == pytest.approx(0.999 * 3.0)


def test_backoff_uses_full_jitter_below_the_exponential_ceiling(
    alert: Alert, slept_s: list[float]
) -> None:
    with WebhookReceiver(statuses=[500, 500, 200]) as receiver:
        endpoint = _endpoint(receiver.url, backoff_initial_s=0.5)
        deliver(endpoint, alert, sleep=slept_s.append, rng=_always(0.25))
    assert slept_s == pytest.approx([0.25 * 0.5, 0.25 * 1.0])


def test_429_with_retry_after_waits_exactly_that_long(alert: Alert, slept_s: list[float]) -> None:
    with WebhookReceiver(statuses=[429, 200], response_headers={"Retry-After": "2"}) as receiver:
        result = deliver(_endpoint(receiver.url), alert, sleep=slept_s.append)
    assert result.delivered
    assert result.attempts == 2
    assert slept_s == [2.0]


def test_retry_after_is_capped_at_backoff_max(alert: Alert, slept_s: list[float]) -> None:
    headers = {"Retry-After": "3600"}
    with WebhookReceiver(statuses=[429, 200], response_headers=headers) as receiver:
        deliver(_endpoint(receiver.url, backoff_max_s=5.0), alert, sleep=slept_s.append)
    assert slept_s == [5.0]


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 429])
def test_retryable_status_is_retried(alert: Alert, slept_s: list[float], status: int) -> None:
    with WebhookReceiver(statuses=[status, 200]) as receiver:
        result = deliver(_endpoint(receiver.url), alert, sleep=slept_s.append)
    assert result.delivered
    assert result.attempts == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_other_4xx_is_final_after_one_attempt(
    alert: Alert, slept_s: list[float], status: int
) -> None:
    with WebhookReceiver(statuses=[status, 200]) as receiver:
        result = deliver(_endpoint(receiver.url), alert, sleep=slept_s.append)
        received = len(receiver.received)
    assert not result.delivered
    assert result.attempts == 1
    assert result.status_code == status
    assert result.error is not None
    assert str(status) in result.error
    assert received == 1
    assert slept_s == []


def test_redirect_is_not_followed_and_is_final(alert: Alert, slept_s: list[float]) -> None:
    with (
        WebhookReceiver(default_status=500) as elsewhere,
        WebhookReceiver(statuses=[302], response_headers={"Location": elsewhere.url}) as receiver,
    ):
        result = deliver(_endpoint(receiver.url), alert, sleep=slept_s.append)
        followed = len(elsewhere.received)
    assert not result.delivered
    assert result.attempts == 1
    assert result.status_code == 302
    assert followed == 0


def test_always_500_gives_up_after_max_attempts(alert: Alert, slept_s: list[float]) -> None:
    with WebhookReceiver(default_status=500) as receiver:
        result = deliver(_endpoint(receiver.url, max_attempts=4), alert, sleep=slept_s.append)
        received = len(receiver.received)
    assert not result.delivered
    assert result.attempts == 4
    assert result.status_code == 500
    assert result.error is not None
    assert "500" in result.error
    assert received == 4
    assert len(slept_s) == 3  # no sleep after the last attempt


def test_timeout_is_a_retryable_failure(alert: Alert, slept_s: list[float]) -> None:
    with WebhookReceiver(hang_s=30.0) as receiver:
        endpoint = _endpoint(receiver.url, timeout_s=0.2, max_attempts=2)
        result = deliver(endpoint, alert, sleep=slept_s.append)
        assert receiver.wait_for(2, timeout_s=WAIT_S)
    assert not result.delivered
    assert result.attempts == 2
    assert result.status_code is None
    assert result.error is not None
    assert "timed out" in result.error.lower()
    assert len(slept_s) == 1


def test_delivery_id_is_identical_across_retries(alert: Alert, slept_s: list[float]) -> None:
    with WebhookReceiver(secret=SECRET, statuses=[500, 503, 200]) as receiver:
        result = deliver(_endpoint(receiver.url), alert, sleep=slept_s.append)
        received = receiver.received
    assert len(received) == 3
    assert {d.delivery_id for d in received} == {result.delivery_id}
    assert all(d.verified for d in received)


def test_firing_and_resolved_get_different_delivery_ids(make_alert: Callable[..., Alert]) -> None:
    firing = make_alert(alert_id="a1")
    resolved = make_alert(alert_id="a1", state=AlertState.RESOLVED)
    with WebhookReceiver() as receiver:
        ids = {deliver(_endpoint(receiver.url), a).delivery_id for a in (firing, resolved)}
    assert len(ids) == 2


def test_connection_refused_is_retried_then_not_delivered(
    alert: Alert, slept_s: list[float], closed_port: int
) -> None:
    endpoint = _endpoint(f"http://127.0.0.1:{closed_port}/hook", max_attempts=3)
    result = deliver(endpoint, alert, sleep=slept_s.append)
    assert not result.delivered
    assert result.attempts == 3
    assert result.status_code is None
    assert result.error
    assert len(slept_s) == 2


def test_result_names_the_endpoint_and_measures_elapsed(alert: Alert) -> None:
    with WebhookReceiver() as receiver:
        result = deliver(_endpoint(receiver.url), alert)
    assert isinstance(result, DeliveryResult)
    assert result.endpoint == "ops"
    assert result.elapsed_s >= 0


# --- the response body ------------------------------------------------------------------


def _post_once(url: str) -> AttemptOutcome:
    return post_once(_endpoint(url), b"{}", delivery_id="d-1")


def test_post_once_keeps_the_body_and_content_type_of_a_2xx_answer() -> None:
    body = b'{"received":true,"ticket":"OPS-1"}'
    with WebhookReceiver(response_body=body) as receiver:
        outcome = _post_once(receiver.url)
    assert outcome.ok
    assert outcome.body == body
    assert outcome.content_type == "application/json"
    assert outcome.error is None


def test_post_once_keeps_the_body_of_an_error_answer_raw() -> None:
    body = "upstream unavailable: ünïcode\nsecond line"
    with WebhookReceiver(
        default_status=503,
        response_body=body,
        response_headers={"Content-Type": "text/plain; charset=utf-8"},
    ) as receiver:
        outcome = _post_once(receiver.url)
    assert not outcome.ok
    assert outcome.retryable
    assert outcome.body == body.encode()
    assert outcome.content_type == "text/plain; charset=utf-8"
    assert outcome.error is not None
    assert outcome.error.startswith("HTTP 503: upstream unavailable")


def test_post_once_reads_at_most_64_kib_of_the_body() -> None:
    with WebhookReceiver(response_body=b"x" * 200_000) as receiver:
        outcome = _post_once(receiver.url)
    assert outcome.ok
    assert outcome.body == b"x" * 64 * 1024


def test_post_once_empty_body_is_empty_bytes() -> None:
    with WebhookReceiver(statuses=[204], response_body=b"") as receiver:
        outcome = _post_once(receiver.url)
    assert outcome.ok
    assert outcome.status_code == 204
    assert outcome.body == b""


def test_post_once_without_an_answer_has_no_body(closed_port: int) -> None:
    outcome = _post_once(f"http://127.0.0.1:{closed_port}/")
    assert outcome.status_code is None
    assert outcome.body is None
    assert outcome.content_type is None


def test_attempt_outcome_keeps_its_old_signature_and_hides_the_body_in_repr() -> None:
    outcome = AttemptOutcome(True, False, 200, None, None)
    assert (outcome.body, outcome.content_type) == (None, None)
    with_body = AttemptOutcome(ok=True, retryable=False, body=b"secret-token")
    assert "secret-token" not in repr(with_body)


# --- endpoint settings ------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "example.com/hook",
        "http://",
        "http://example.com:99999/hook",
        "http://example.com:port/hook",
        "http://example.com/a hook",
        "http://exämple.com/hook",
    ],
)
def test_endpoint_rejects_non_http_urls(url: str) -> None:
    with pytest.raises(ValueError, match=r"url|port"):
        WebhookEndpoint("ops", url, SECRET)


@pytest.mark.parametrize(
    "settings",
    [
        {"timeout_s": 0},
        {"max_attempts": 0},
        {"backoff_initial_s": -1.0},
        {"backoff_initial_s": 10.0, "backoff_max_s": 1.0},
    ],
)
def test_endpoint_rejects_bad_settings(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"_s|attempts"):
        WebhookEndpoint("ops", "https://example.com/hook", SECRET, **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "secret"), [("", SECRET), ("ops", "")])
def test_endpoint_rejects_empty_name_or_secret(name: str, secret: str) -> None:
    with pytest.raises(ValueError, match=r"name|secret"):
        WebhookEndpoint(name, "https://example.com/hook", secret)


def test_endpoint_repr_hides_the_secret() -> None:
    assert SECRET not in repr(WebhookEndpoint("ops", "https://example.com/hook", SECRET))


# --- pieces reused by the dispatcher ----------------------------------------------------


def test_backoff_delay_doubles_up_to_the_cap() -> None:
    endpoint = WebhookEndpoint(
        "ops", "https://example.com/", SECRET, backoff_initial_s=0.5, backoff_max_s=4.0
    )
    ceilings = [backoff_delay_s(endpoint, n, rng=_always(1.0)) for n in range(1, 7)]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


@pytest.mark.parametrize(
    ("value", "expected_s"),
    [(None, None), ("2", 2.0), (" 0 ", 0.0), ("soon", None), ("-1", None)],
)
def test_parse_retry_after_seconds(value: str | None, expected_s: float | None) -> None:
    assert parse_retry_after_s(value) == expected_s


def test_parse_retry_after_http_date() -> None:
    now = datetime(2026, 11, 20, 9, 0, 0, tzinfo=UTC)
    assert parse_retry_after_s("Fri, 20 Nov 2026 09:00:07 GMT", now=now) == 7.0
    assert parse_retry_after_s("Fri, 20 Nov 2026 08:00:00 GMT", now=now) == 0.0
