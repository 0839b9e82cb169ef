"""Signed, expiring acknowledgement links: in the bodies, verified by the link server
(a real aiohttp server on 127.0.0.1), refused when expired or tampered with."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from agentwatch.alerts import (
    ACK_URL_KEY,
    Ack,
    AckLinks,
    AckServer,
    Dispatcher,
    EndpointConfig,
    Escalator,
    SignatureError,
    WebhookReceiver,
    ack_signature,
    json_body,
    slack_body,
    verify_ack,
)
from agentwatch.schemas import Alert, AlertState, Severity

SECRET = "ack-link-secret"
NOW = 1_800_000_000
AlertFactory = Callable[..., Alert]


def endpoint(
    name: str = "team", url: str = "https://hooks.example/x", **extra: Any
) -> EndpointConfig:
    fields = {"name": name, "url": url, "secret": SECRET, "allow_private": True}
    return EndpointConfig.model_validate(fields | extra)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def query(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


# -- signatures -------------------------------------------------------------------------


def test_ack_signature_verifies_until_it_expires() -> None:
    sig = ack_signature(SECRET, "alert-1", "team", NOW + 60)
    verify_ack(SECRET, "alert-1", "team", NOW + 60, sig, now_s=NOW + 60)
    with pytest.raises(SignatureError, match="expired 1 s ago"):
        verify_ack(SECRET, "alert-1", "team", NOW + 60, sig, now_s=NOW + 61)


@pytest.mark.parametrize(
    ("alert_id", "name", "expires"),
    [("alert-2", "team", NOW + 60), ("alert-1", "other", NOW + 60), ("alert-1", "team", NOW + 99)],
)
def test_ack_signature_covers_alert_endpoint_and_expiry(
    alert_id: str, name: str, expires: int
) -> None:
    sig = ack_signature(SECRET, "alert-1", "team", NOW + 60)
    with pytest.raises(SignatureError, match="does not match"):
        verify_ack(SECRET, alert_id, name, expires, sig, now_s=NOW)


def test_ack_signature_accepts_any_rotation_secret() -> None:
    sig = ack_signature("old", "alert-1", "team", NOW + 60)
    verify_ack(["new", "old"], "alert-1", "team", NOW + 60, sig, now_s=NOW)
    with pytest.raises(SignatureError, match="does not match"):
        verify_ack(["new"], "alert-1", "team", NOW + 60, sig, now_s=NOW)


def test_malformed_ack_signature_is_refused() -> None:
    with pytest.raises(SignatureError, match="64 hex digits"):
        verify_ack(SECRET, "alert-1", "team", NOW + 60, "zz", now_s=NOW)


def test_links_check_round_trip_and_expiry() -> None:
    clock = Clock(NOW)
    links = AckLinks("https://aw.example/base/", ttl_s=600, clock=clock)
    config = endpoint()
    url = links.url("alert-1", config)
    assert url.startswith("https://aw.example/base/ack?")
    assert links.check(query(url), {"team": config}) == ("alert-1", "team")
    clock.now = NOW + 601
    with pytest.raises(SignatureError, match="expired"):
        links.check(query(url), {"team": config})


def test_links_refuse_an_unknown_endpoint() -> None:
    links = AckLinks("https://aw.example", ttl_s=600)
    url = links.url("alert-1", endpoint())
    with pytest.raises(SignatureError, match="no endpoint"):
        links.check(query(url), {"else": endpoint("else")})


@pytest.mark.parametrize(("base", "ttl"), [("ftp://x", 60), ("https://aw.example", 0)])
def test_links_settings_are_checked(base: str, ttl: int) -> None:
    with pytest.raises(ValueError, match=r"ack_base_url|ack_ttl_s"):
        AckLinks(base, ttl_s=ttl)


# -- bodies -----------------------------------------------------------------------------


def test_json_body_with_an_ack_link_is_the_alert_plus_ack_url(alert: Alert) -> None:
    body = orjson.loads(json_body(alert, ack_url="https://aw.example/ack?a=1"))
    assert body.pop(ACK_URL_KEY) == "https://aw.example/ack?a=1"
    assert Alert.model_validate_json(orjson.dumps(body)) == alert


def test_slack_body_with_an_ack_link_has_an_acknowledge_button(alert: Alert) -> None:
    message = orjson.loads(slack_body(alert, ack_url="https://aw.example/ack?a=1"))
    (actions,) = [b for b in message["blocks"] if b["type"] == "actions"]
    assert actions["elements"][-1]["url"] == "https://aw.example/ack?a=1"
    assert actions["elements"][-1]["text"]["text"] == "Acknowledge"


def test_dispatcher_puts_a_link_in_firings_only(make_alert: AlertFactory) -> None:
    firing = make_alert()
    links = AckLinks("http://127.0.0.1:9", ttl_s=600)
    with WebhookReceiver(secret=SECRET) as receiver:
        dispatcher = Dispatcher(
            [endpoint(url=receiver.url)], on_dead_letter=lambda f: None, ack_links=links
        )
        try:
            dispatcher.submit(firing)
            dispatcher.submit(firing.model_copy(update={"state": AlertState.RESOLVED}))
            assert dispatcher.wait_idle(10)
        finally:
            dispatcher.close()
        fired, resolved = receiver.received
    assert fired.ack_url is not None
    assert fired.alert() == firing
    assert query(fired.ack_url)["a"] == firing.alert_id
    assert resolved.ack_url is None


# -- the link server --------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[tuple[AckServer, list[Ack]]]:
    acks: list[Ack] = []
    links = AckLinks("http://127.0.0.1:1", ttl_s=600)  # base replaced per test below
    srv = AckServer(links, [endpoint()], acks.append).start()
    srv.links = AckLinks(f"http://127.0.0.1:{srv.bound_port}", ttl_s=600)
    try:
        yield srv, acks
    finally:
        srv.stop()


def request(url: str, *, by: str | None = None) -> tuple[int, str]:
    data = None if by is None else urllib.parse.urlencode({"by": by}).encode()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, data=data), timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_get_shows_a_form_and_acknowledges_nothing(server: tuple[AckServer, list[Ack]]) -> None:
    srv, acks = server
    status, page = request(srv.links.url("alert-1", endpoint()))
    assert status == 200
    assert '<form method="post"' in page
    assert acks == []


def test_post_acknowledges_with_the_name_given(server: tuple[AckServer, list[Ack]]) -> None:
    srv, acks = server
    status, page = request(srv.links.url("alert-1", endpoint()), by="maria")
    assert status == 200
    assert "acknowledged by maria" in page
    (ack,) = acks
    assert (ack.alert_id, ack.by, ack.via) == ("alert-1", "maria", "link:team")


def test_tampered_link_is_refused(server: tuple[AckServer, list[Ack]]) -> None:
    srv, acks = server
    url = srv.links.url("alert-1", endpoint()).replace("a=alert-1", "a=alert-2")
    status, page = request(url, by="mallory")
    assert status == 403
    assert "does not match" in page
    assert acks == []


def test_expired_link_is_refused(server: tuple[AckServer, list[Ack]]) -> None:
    srv, acks = server
    clock = Clock(1_700_000_000)  # a link made in 2023
    old = AckLinks(srv.links.base_url, ttl_s=60, clock=clock).url("alert-1", endpoint())
    status, page = request(old, by="maria")
    assert status == 403
    assert "expired" in page
    assert acks == []


def test_post_without_a_name_is_a_400(server: tuple[AckServer, list[Ack]]) -> None:
    srv, acks = server
    status, _page = request(srv.links.url("alert-1", endpoint()), by="  ")
    assert status == 400
    assert acks == []


def test_link_ack_stops_the_escalation(make_alert: AlertFactory) -> None:
    alert = make_alert(severity=Severity.CRITICAL)
    with WebhookReceiver(secret=SECRET) as first, WebhookReceiver(secret=SECRET) as second:
        configs = [
            endpoint("first", first.url, escalate_after_s=0.5, escalate_to="second"),
            endpoint("second", second.url),
        ]
        dispatcher = Dispatcher(configs, on_dead_letter=lambda f: None)
        escalator = Escalator(dispatcher)
        srv = AckServer(AckLinks("http://127.0.0.1:1", 600), configs, escalator.ack).start()
        dispatcher.ack_links = srv.links = AckLinks(f"http://127.0.0.1:{srv.bound_port}", 600)
        try:
            escalator.submit(alert, skip={"second"})
            assert first.wait_for(1, 10)
            link = first.received[0].ack_url
            assert link is not None
            assert request(link, by="maria")[0] == 200
            assert escalator.wait_timers(10)
            assert dispatcher.wait_idle(10)
        finally:
            srv.stop()
            escalator.close()
            dispatcher.close()
        assert second.received == []
    acked = escalator.acked(alert.alert_id)
    assert acked is not None
    assert acked.by == "maria"
