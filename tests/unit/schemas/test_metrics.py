"""agentwatch.schemas.metrics: the one HTTP server of /metrics, /healthz and /readyz, run
for real on 127.0.0.1, and the bounded reason labels of dead letters."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families

from agentwatch.schemas import ConfigError, decode_record
from agentwatch.schemas.metrics import (
    CollectorRegistry,
    MetricsServer,
    dead_letter_reason,
    start_metrics_server,
)

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Flag:
    """A readiness that an assignment turns on."""

    def __init__(self) -> None:
        self.reason: str | None = "not ready: joining"

    def __call__(self) -> str | None:
        return self.reason


def get(server: MetricsServer, path: str) -> tuple[int, str]:
    try:
        with _NO_PROXY.open(f"http://127.0.0.1:{server.port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def flag() -> Flag:
    return Flag()


@pytest.fixture
def server(registry: CollectorRegistry, flag: Flag) -> Iterator[MetricsServer]:
    server = start_metrics_server(registry, 0, ready=flag, host="127.0.0.1")
    yield server
    server.close()


def test_metrics_serves_the_registry_in_the_text_format(
    server: MetricsServer, registry: CollectorRegistry
) -> None:
    things = Counter("agentwatch_test_things", "Things.", ["kind"], registry=registry)
    things.labels("a").inc(3)
    status, text = get(server, "/metrics")
    assert status == 200
    samples = {(s.name, tuple(s.labels.items())): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("agentwatch_test_things_total", (("kind", "a"),))] == 3


def test_healthz_is_ok_and_readyz_follows_the_readiness(server: MetricsServer,
                                                        flag: Flag) -> None:
    assert get(server, "/healthz") == (200, "ok\n")
    assert get(server, "/readyz") == (503, "not ready: joining\n")
    flag.reason = None
    assert get(server, "/readyz") == (200, "ready\n")
    assert get(server, "/readyz?verbose") == (200, "ready\n")


def test_a_readiness_that_raises_is_not_ready(registry: CollectorRegistry) -> None:
    def broken() -> str | None:
        raise RuntimeError("consumer gone")

    server = start_metrics_server(registry, 0, ready=broken, host="127.0.0.1")
    try:
        status, body = get(server, "/readyz")
        assert status == 503
        assert "consumer gone" in body
        assert get(server, "/healthz")[0] == 200
    finally:
        server.close()


def test_other_paths_are_not_found(server: MetricsServer) -> None:
    status, body = get(server, "/")
    assert status == 404
    assert "/metrics" in body


def test_a_port_in_use_is_a_config_error_naming_the_setting(registry: CollectorRegistry) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"^AGENTWATCH_SINK_METRICS_PORT: cannot listen "
                                              rf"on 127.0.0.1:{port}"):
            start_metrics_server(registry, port, ready=lambda: None, host="127.0.0.1",
                                 setting="AGENTWATCH_SINK_METRICS_PORT")


@pytest.mark.parametrize(("record", "label"), [
    (b"{not json", "malformed_json"),
    (b"[]", "empty_array"),
    (b"[1]", "not_an_object"),
    (b'{"event_id": "x"}', "invalid_event"),
])
def test_the_reasons_of_decoded_records_get_their_label(record: bytes, label: str) -> None:
    (rejected,) = decode_record(record).rejected
    assert dead_letter_reason(rejected.reason) == label


def test_reasons_outside_the_known_ones_are_other() -> None:
    assert dead_letter_reason("wrong partition: session a/b belongs on 1") == "wrong_partition"
    assert dead_letter_reason("empty record (no value)") == "empty_record"
    assert dead_letter_reason("something new") == "other"
