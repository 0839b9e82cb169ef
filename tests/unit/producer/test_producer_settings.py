from __future__ import annotations

import pytest

from agentwatch.producer import Agentwatch, InProcessLog, InProcessTransport, ProducerSettings
from agentwatch.schemas import ConfigError


def _transport() -> InProcessTransport:
    return InProcessTransport(InProcessLog())


def test_defaults_apply_when_nothing_is_set() -> None:
    s = ProducerSettings.resolve(environ={})
    assert (s.tenant_id, s.agent_id, s.topic) == ("default", "default", "agentwatch.events")
    assert (s.queue_size, s.linger_ms, s.max_batch_events, s.max_batch_bytes) == (
        10_000,
        50,
        500,
        512 * 1024,
    )
    assert s.bootstrap_servers is None
    assert s.send_raw_tool_args is False


def test_environment_variables_fill_unset_arguments() -> None:
    env = {
        "AGENTWATCH_TENANT_ID": "acme",
        "AGENTWATCH_AGENT_ID": "bot",
        "AGENTWATCH_TOPIC": "events.v1",
        "AGENTWATCH_QUEUE_SIZE": "42",
        "AGENTWATCH_LINGER_MS": "7",
        "AGENTWATCH_SESSION_ID": "sess-1",
    }
    s = ProducerSettings.resolve(environ=env)
    assert (s.tenant_id, s.agent_id, s.topic) == ("acme", "bot", "events.v1")
    assert (s.queue_size, s.linger_ms, s.default_session_id) == (42, 7, "sess-1")


def test_arguments_win_over_environment_variables() -> None:
    s = ProducerSettings.resolve(queue_size=5, environ={"AGENTWATCH_QUEUE_SIZE": "42"})
    assert s.queue_size == 5


def test_client_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTWATCH_AGENT_ID", "from-env")
    client = Agentwatch(transport=_transport())
    assert client.settings.agent_id == "from-env"
    client.close()


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"queue_size": 0}, "queue_size"),
        ({"linger_ms": -1}, "linger_ms"),
        ({"max_batch_events": 0}, "max_batch_events"),
        ({"max_batch_bytes": 10}, "max_batch_bytes"),
        ({"queue_size": True}, "queue_size"),
        ({"tenant_id": "a/b"}, "tenant_id"),
        ({"agent_id": ""}, "agent_id"),
        ({"topic": "bad topic"}, "topic"),
        ({"send_raw_tool_args": "yes"}, "send_raw_tool_args"),
    ],
)
def test_bad_argument_raises_config_error_naming_the_setting(
    kwargs: dict[str, object], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        ProducerSettings.resolve(environ={}, **kwargs)  # type: ignore[arg-type]


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="AGENTWATCH_LINGER_MS"):
        ProducerSettings.resolve(environ={"AGENTWATCH_LINGER_MS": "soon"})


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="queue_size"):
        Agentwatch(transport=_transport(), queue_size=-5)


def test_bootstrap_servers_builds_the_kafka_transport() -> None:
    from agentwatch.producer._kafka import KafkaTransport  # noqa: PLC0415

    # nothing listens on port 1: building the client must not connect (or block, or raise)
    client = Agentwatch(bootstrap_servers="127.0.0.1:1", topic="t.events")
    try:
        assert isinstance(client.transport, KafkaTransport)
        assert client.transport.topic == "t.events"
    finally:
        client.close(timeout_s=2)


def test_bootstrap_servers_from_environment_also_builds_the_kafka_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agentwatch.producer._kafka import KafkaTransport  # noqa: PLC0415

    monkeypatch.setenv("AGENTWATCH_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    client = Agentwatch()
    try:
        assert isinstance(client.transport, KafkaTransport)
    finally:
        client.close(timeout_s=2)


def test_missing_transport_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="no transport"):
        Agentwatch()


def test_transport_and_bootstrap_servers_together_are_refused() -> None:
    with pytest.raises(ConfigError, match="not both"):
        Agentwatch(transport=_transport(), bootstrap_servers="localhost:9092")


def test_object_without_the_transport_methods_is_refused() -> None:
    with pytest.raises(ConfigError, match="transport must have"):
        Agentwatch(transport=object())  # type: ignore[arg-type]


def test_non_callable_redact_hook_is_refused() -> None:
    with pytest.raises(ConfigError, match="redact"):
        Agentwatch(transport=_transport(), redact="mask")  # type: ignore[arg-type]


def test_non_price_table_prices_are_refused() -> None:
    with pytest.raises(ConfigError, match="prices"):
        Agentwatch(transport=_transport(), prices={"gpt-4o": 1})  # type: ignore[arg-type]
