"""Destinations: loopback, private, link-local and metadata addresses are refused at
connect time unless the endpoint sets ``allow_private``. Real HTTP servers on 127.0.0.1
stand behind every URL; names are resolved by the system or by an injected resolver."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

import pytest

from agentwatch.alerts import (
    DeliveryFailure,
    DeliveryResult,
    Dispatcher,
    EndpointConfig,
    WebhookEndpoint,
    WebhookReceiver,
    deliver,
    endpoints_from_mapping,
    post_once,
    refusal_kind,
)
from agentwatch.alerts._destinations import DestinationRefusedError, Destinations
from agentwatch.schemas import Alert

SECRET = "destinations-test-secret"
WAIT_S = 10.0


class FakeDns:
    """A resolver that answers ``host`` with fixed addresses and records each lookup."""

    def __init__(self, answers: dict[str, Sequence[str]]) -> None:
        self.answers = answers
        self.lookups: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> Sequence[str]:
        self.lookups.append((host, port))
        return self.answers[host]


def _endpoint(url: str, **settings: object) -> WebhookEndpoint:
    return WebhookEndpoint("ops", url, SECRET, max_attempts=5, **settings)  # type: ignore[arg-type]


def _on(receiver: WebhookReceiver, host: str) -> str:
    """The receiver's URL with ``host`` in place of 127.0.0.1."""
    return f"http://{host}:{urlsplit(receiver.url).port}/hook"


# --- classification ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.1.2.3", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("169.254.169.254", "metadata"),
        ("169.254.170.2", "metadata"),
        ("100.100.100.200", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - an address under test, not a bind
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "private"),  # Python counts 240/4 as private (and reserved)
        ("100.64.0.1", "not global"),  # shared address space (carrier-grade NAT)
        ("::ffff:127.0.0.1", "loopback, inside ::ffff:7f00:1"),
        ("::ffff:169.254.169.254", "metadata, inside ::ffff:a9fe:a9fe"),
        ("64:ff9b::a00:1", "private, inside 64:ff9b::a00:1"),  # NAT64 of 10.0.0.1
        ("2002:7f00:1::", "loopback, inside 2002:7f00:1::"),  # 6to4 of 127.0.0.1
    ],
)
def test_non_public_addresses_are_refused_with_their_kind(address: str, kind: str) -> None:
    assert refusal_kind(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses_are_permitted(address: str) -> None:
    assert refusal_kind(ipaddress.ip_address(address)) is None


def test_a_name_with_public_and_private_addresses_connects_only_to_the_public_ones() -> None:
    dns = FakeDns({"mixed.example": ["127.0.0.1", "93.184.216.34", "10.0.0.7"]})
    destinations = Destinations("ops", allow_private=False, resolver=dns)
    assert destinations.addresses("mixed.example", 443) == [ipaddress.ip_address("93.184.216.34")]


def test_every_address_of_a_refused_name_is_named_in_the_error() -> None:
    dns = FakeDns({"inside.example": ["10.0.0.7", "169.254.169.254"]})
    destinations = Destinations("ops", allow_private=False, resolver=dns)
    with pytest.raises(DestinationRefusedError) as info:
        destinations.addresses("inside.example", 443)
    assert str(info.value) == (
        "destination refused: inside.example resolves only to refused addresses: "
        "10.0.0.7 (private), 169.254.169.254 (metadata); endpoint 'ops' does not set "
        "`allow_private: true`"
    )


# --- delivery ---------------------------------------------------------------------------


def test_a_loopback_ip_endpoint_without_allow_private_is_refused_once(
    alert: Alert, slept_s: list[float]
) -> None:
    with WebhookReceiver(secret=SECRET) as receiver:
        result = deliver(_endpoint(receiver.url), alert, sleep=slept_s.append)
        received = receiver.received
    assert received == []
    assert (result.delivered, result.attempts, result.status_code) == (False, 1, None)
    assert slept_s == []  # final: not retried
    assert result.error == (
        "destination refused: 127.0.0.1 is a loopback address; endpoint 'ops' does not set "
        "`allow_private: true`"
    )


def test_post_once_says_a_refused_destination_is_final() -> None:
    with WebhookReceiver(secret=SECRET) as receiver:
        outcome = post_once(_endpoint(receiver.url), b"{}", delivery_id="d-1")
    assert (outcome.ok, outcome.retryable, outcome.refused) == (False, False, True)


def test_a_name_resolving_to_loopback_is_refused(alert: Alert) -> None:
    with WebhookReceiver(secret=SECRET) as receiver:
        result = deliver(_endpoint(_on(receiver, "localhost")), alert)
        received = receiver.received
    assert received == []
    assert (result.delivered, result.attempts) == (False, 1)
    assert result.error is not None
    assert result.error.startswith(
        "destination refused: localhost resolves only to refused addresses: "
    )
    assert "(loopback)" in result.error
    assert "endpoint 'ops' does not set `allow_private: true`" in result.error


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_with_allow_private_a_local_endpoint_is_delivered(alert: Alert, host: str) -> None:
    with WebhookReceiver(secret=SECRET) as receiver:
        result = deliver(_endpoint(_on(receiver, host), allow_private=True), alert)
        received = receiver.received
    assert (result.delivered, result.attempts, result.status_code) == (True, 1, 200)
    assert [d.verified for d in received] == [True]


def test_a_public_looking_name_that_resolves_to_loopback_at_connect_time_is_refused(
    alert: Alert,
) -> None:
    dns = FakeDns({"hooks.example.com": ["127.0.0.1"]})
    with WebhookReceiver(secret=SECRET) as receiver:
        url = _on(receiver, "hooks.example.com")
        result = deliver(_endpoint(url, resolver=dns), alert)
        received = receiver.received
    assert received == []
    assert dns.lookups == [("hooks.example.com", urlsplit(url).port)]
    assert (result.delivered, result.attempts) == (False, 1)
    assert result.error == (
        "destination refused: hooks.example.com resolves only to refused addresses: "
        "127.0.0.1 (loopback); endpoint 'ops' does not set `allow_private: true`"
    )


def test_the_injected_resolver_is_the_one_the_connection_uses(alert: Alert) -> None:
    """Same name and resolver, allowed: the request reaches the server behind it."""
    dns = FakeDns({"hooks.example.com": ["127.0.0.1"]})
    with WebhookReceiver(secret=SECRET) as receiver:
        url = _on(receiver, "hooks.example.com")
        result = deliver(_endpoint(url, resolver=dns, allow_private=True), alert)
        received = receiver.received
    assert result.delivered
    (delivery,) = received
    assert delivery.header("Host") == f"hooks.example.com:{urlsplit(url).port}"
    assert delivery.path == "/hook"


def test_every_connection_resolves_again() -> None:
    """No answer is cached between attempts: a name that rebinds to 127.0.0.1 is checked
    on the address it has when the connection is made."""
    answers = iter([["127.0.0.1"], ["169.254.169.254"]])
    lookups: list[str] = []

    def rebinding(host: str, _port: int) -> Sequence[str]:
        lookups.append(host)
        return next(answers)

    with WebhookReceiver(secret=SECRET) as receiver:
        url = _on(receiver, "rebind.example")
        first = post_once(_endpoint(url, resolver=rebinding), b"{}", delivery_id="d-1")
        second = post_once(_endpoint(url, resolver=rebinding), b"{}", delivery_id="d-2")
        received = receiver.received
    assert lookups == ["rebind.example", "rebind.example"]
    assert received == []
    assert first.error is not None
    assert "127.0.0.1 (loopback)" in first.error
    assert second.error is not None
    assert "169.254.169.254 (metadata)" in second.error


@pytest.mark.parametrize("host", ["[::ffff:127.0.0.1]", "169.254.169.254", "[::1]"])
def test_literal_ip_urls_are_checked_without_a_lookup(host: str) -> None:
    dns = FakeDns({})
    outcome = post_once(_endpoint(f"http://{host}:9/hook", resolver=dns), b"{}", delivery_id="d-1")
    assert outcome.refused
    assert dns.lookups == []


# --- through a proxy ----------------------------------------------------------------------


def test_behind_a_proxy_a_destination_resolving_to_private_is_refused_before_sending(
    alert: Alert, monkeypatch: pytest.MonkeyPatch
) -> None:
    dns = FakeDns({"hooks.example.com": ["10.0.0.7"]})
    with WebhookReceiver(secret=SECRET) as proxy:
        monkeypatch.setenv("http_proxy", proxy.url)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        result = deliver(_endpoint("http://hooks.example.com/hook", resolver=dns), alert)
        received = proxy.received
    assert received == []
    assert (result.delivered, result.attempts) == (False, 1)
    assert result.error == (
        "destination refused: hooks.example.com resolves to 10.0.0.7 (private) (checked "
        "before the proxy); endpoint 'ops' does not set `allow_private: true`"
    )


def test_behind_a_proxy_a_public_destination_goes_through_a_local_proxy(
    alert: Alert, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proxy (here a local server) is the operator's choice: its own address is not
    checked; the destination is."""
    dns = FakeDns({"hooks.example.com": ["93.184.216.34"]})
    with WebhookReceiver(secret=SECRET) as proxy:
        monkeypatch.setenv("http_proxy", proxy.url)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        result = deliver(_endpoint("http://hooks.example.com/hook", resolver=dns), alert)
        received = proxy.received
    assert result.delivered
    (delivery,) = received
    assert delivery.path == "http://hooks.example.com/hook"  # a proxy request
    assert dns.lookups == [("hooks.example.com", 80)]


# --- dispatcher and endpoints file -----------------------------------------------------------


def test_the_dispatcher_dead_letters_a_refused_delivery_after_one_attempt(
    make_alert: Callable[..., Alert],
) -> None:
    failures: list[DeliveryFailure] = []
    results: list[DeliveryResult] = []
    done = threading.Event()
    alert = make_alert()
    with (
        WebhookReceiver(secret=SECRET) as refused,
        WebhookReceiver(secret=SECRET) as allowed,
    ):
        endpoints = endpoints_from_mapping(
            {
                "endpoints": [
                    {"name": "strict", "url": refused.url, "secret": SECRET},
                    {"name": "local", "url": allowed.url, "secret": SECRET, "allow_private": True},
                ]
            }
        )
        dispatcher = Dispatcher(
            endpoints,
            on_dead_letter=failures.append,
            on_result=lambda _ref, result: results.append(result),
            on_done=lambda _ref: done.set(),
        )
        try:
            assert dispatcher.submit(alert) == 2
            assert done.wait(WAIT_S)
        finally:
            dispatcher.close(join_timeout_s=5)
        assert refused.received == []
        assert [d.verified for d in allowed.received] == [True]
    (failure,) = failures
    assert (failure.endpoint, failure.attempts, failure.status_code) == ("strict", 1, None)
    assert failure.delivery_status == "failed:strict"
    assert "endpoint 'strict' does not set `allow_private: true`" in failure.reason
    assert sorted((r.endpoint, r.delivered) for r in results) == [
        ("local", True),
        ("strict", False),
    ]


def test_allow_private_defaults_to_false_and_reaches_the_sender() -> None:
    base = {"name": "e", "url": "https://h.example/x", "secret": "s"}
    off, on = endpoints_from_mapping(
        {"endpoints": [base, base | {"name": "f", "allow_private": True}]}
    )
    assert (off.allow_private, off.webhook_endpoint().allow_private) == (False, False)
    assert (on.allow_private, on.webhook_endpoint().allow_private) == (True, True)


def test_the_demo_endpoint_config_can_opt_in_from_python() -> None:
    config = EndpointConfig(
        name="demo", url="http://127.0.0.1:1/", secret=SECRET, allow_private=True
    )
    assert config.webhook_endpoint().allow_private


def test_https_urls_are_checked_at_connect_time_too() -> None:
    dns = FakeDns({"hooks.example.com": ["169.254.169.254"]})
    outcome = post_once(
        _endpoint("https://hooks.example.com/hook", resolver=dns), b"{}", delivery_id="d-1"
    )
    assert (outcome.refused, outcome.retryable) == (True, False)
    assert dns.lookups == [("hooks.example.com", 443)]
    assert outcome.error is not None
    assert "169.254.169.254 (metadata)" in outcome.error
