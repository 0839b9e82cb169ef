from __future__ import annotations

import socket
import threading
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import pytest

from agentwatch.alerts import (
    SIGNATURE_HEADER,
    ReceivedDelivery,
    WebhookEndpoint,
    WebhookReceiver,
    deliver,
    sign,
)
from agentwatch.schemas import Alert

SECRET = "whsec_test"
WAIT_S = 10.0


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=WAIT_S) as response:
            response.read()
            status: int = response.status
    except urllib.error.HTTPError as exc:
        exc.read()
        exc.close()
        return exc.code
    return status


def test_url_is_a_free_port_on_loopback() -> None:
    with WebhookReceiver() as receiver:
        parts = urlsplit(receiver.url)
    assert parts.scheme == "http"
    assert parts.hostname == "127.0.0.1"
    assert parts.port
    assert parts.port > 0


def test_url_before_start_raises() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = WebhookReceiver().url


def test_start_twice_raises() -> None:
    with WebhookReceiver() as receiver, pytest.raises(RuntimeError, match="already started"):
        receiver.start()


def test_stop_is_idempotent_and_safe_before_start() -> None:
    receiver = WebhookReceiver()
    receiver.stop()
    receiver.start()
    receiver.stop()
    receiver.stop()


def test_stop_closes_the_listening_socket() -> None:
    with WebhookReceiver() as receiver:
        port = urlsplit(receiver.url).port
    assert port is not None
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_records_a_signed_post_as_verified() -> None:
    body = b'{"hello":"world"}'
    with WebhookReceiver(secret=SECRET) as receiver:
        status = _post(receiver.url + "hooks", body, {SIGNATURE_HEADER: sign(SECRET, body)})
        [got] = receiver.received
    assert status == 200
    assert got.path == "/hooks"
    assert got.body == body
    assert got.json == {"hello": "world"}
    assert got.verified is True
    assert got.verify_error is None


def test_marks_a_badly_signed_post_unverified_with_the_reason() -> None:
    body = b'{"hello":"world"}'
    with WebhookReceiver(secret=SECRET) as receiver:
        _post(receiver.url, body, {SIGNATURE_HEADER: sign("wrong-secret", body)})
        [got] = receiver.received
    assert got.verified is False
    assert got.verify_error
    assert "does not match" in got.verify_error


def test_without_a_secret_verified_is_none() -> None:
    with WebhookReceiver() as receiver:
        _post(receiver.url, b"{}", {})
        [got] = receiver.received
    assert got.verified is None


def test_non_json_body_is_kept_with_json_none() -> None:
    with WebhookReceiver() as receiver:
        _post(receiver.url, b"not json", {})
        [got] = receiver.received
    assert got.body == b"not json"
    assert got.json is None


def test_answers_the_status_sequence_then_the_default() -> None:
    with WebhookReceiver(statuses=[500, 429], default_status=201) as receiver:
        statuses = [_post(receiver.url, b"{}", {}) for _ in range(4)]
    assert statuses == [500, 429, 201, 201]


def test_adds_the_configured_response_headers() -> None:
    with WebhookReceiver(statuses=[429], response_headers={"Retry-After": "2"}) as receiver:
        request = urllib.request.Request(receiver.url, data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=WAIT_S)
        caught.value.close()
    assert caught.value.headers["Retry-After"] == "2"


def _answer(url: str) -> tuple[int, str | None, bytes, list[str]]:
    """Status, Content-Type, body and every Content-Type header of one POST's answer."""
    request = urllib.request.Request(url, data=b"{}", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=WAIT_S) as response:
            return (
                response.status,
                response.headers["Content-Type"],
                response.read(),
                response.headers.get_all("Content-Type") or [],
            )
    except urllib.error.HTTPError as exc:
        with exc:
            return (
                exc.code,
                exc.headers["Content-Type"],
                exc.read(),
                exc.headers.get_all("Content-Type") or [],
            )


def test_default_answer_body_says_ok_or_not() -> None:
    with WebhookReceiver(statuses=[200, 500]) as receiver:
        ok, failed = _answer(receiver.url), _answer(receiver.url)
    assert ok[:3] == (200, "application/json", b'{"ok":true}')
    assert failed[:3] == (500, "application/json", b'{"ok":false}')


def test_answers_every_post_with_the_configured_body() -> None:
    with WebhookReceiver(statuses=[200, 503], response_body=b'{"ticket":"OPS-1"}') as receiver:
        answers = [_answer(receiver.url) for _ in range(2)]
    assert [a[2] for a in answers] == [b'{"ticket":"OPS-1"}'] * 2
    assert [a[0] for a in answers] == [200, 503]


def test_a_str_response_body_is_sent_as_utf8() -> None:
    with WebhookReceiver(response_body="déjà reçu") as receiver:
        _, _, body, _ = _answer(receiver.url)
    assert body == "déjà reçu".encode()


def test_a_content_type_in_response_headers_replaces_the_default() -> None:
    with WebhookReceiver(
        response_body="accepted", response_headers={"content-type": "text/plain"}
    ) as receiver:
        _, content_type, body, all_types = _answer(receiver.url)
    assert content_type == "text/plain"
    assert all_types == ["text/plain"]
    assert body == b"accepted"


def test_wait_for_returns_false_when_nothing_arrives() -> None:
    with WebhookReceiver() as receiver:
        assert receiver.wait_for(1, timeout_s=0.05) is False


def test_wait_for_returns_true_once_enough_arrived_from_other_threads() -> None:
    with WebhookReceiver() as receiver:
        senders = [threading.Thread(target=_post, args=(receiver.url, b"{}", {})) for _ in range(3)]
        for t in senders:
            t.start()
        assert receiver.wait_for(3, timeout_s=WAIT_S)
        for t in senders:
            t.join(WAIT_S)
        assert len(receiver.received) == 3


def test_on_receive_is_called_with_each_delivery(alert: Alert) -> None:
    seen: list[ReceivedDelivery] = []
    with WebhookReceiver(secret=SECRET, on_receive=seen.append) as receiver:
        deliver(WebhookEndpoint("ops", receiver.url, SECRET, allow_private=True), alert)
    [got] = seen
    assert got.alert() == alert
    assert got.verified is True


def test_a_failing_on_receive_callback_does_not_break_the_answer(alert: Alert) -> None:
    def explode(_: ReceivedDelivery) -> None:
        raise RuntimeError("callback bug")

    with WebhookReceiver(on_receive=explode) as receiver:
        result = deliver(WebhookEndpoint("ops", receiver.url, SECRET, allow_private=True), alert)
    assert result.delivered


def test_stop_releases_a_hanging_handler() -> None:
    receiver = WebhookReceiver(hang_s=60.0).start()
    client = threading.Thread(target=_post, args=(receiver.url, b"{}", {}), daemon=True)
    client.start()
    assert receiver.wait_for(1, timeout_s=WAIT_S)
    stopper = threading.Thread(target=receiver.stop)
    stopper.start()
    stopper.join(WAIT_S)
    client.join(WAIT_S)
    assert not stopper.is_alive()
    assert not client.is_alive()


def test_get_is_not_recorded() -> None:
    with WebhookReceiver() as receiver:
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(receiver.url, timeout=WAIT_S)
        caught.value.close()
        assert receiver.received == []
    assert caught.value.code == 501


@pytest.mark.parametrize("hang_s", [-1.0])
def test_rejects_negative_hang(hang_s: float) -> None:
    with pytest.raises(ValueError, match="hang_s"):
        WebhookReceiver(hang_s=hang_s)
