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


# -- delivery settings: compression, acks, idempotence, spool, kafka_options -----------------


def test_delivery_settings_default_to_safe_values() -> None:
    s = ProducerSettings.resolve(environ={})
    assert (s.compression, s.acks, s.enable_idempotence) == ("auto", "all", True)
    assert (s.spool_dir, s.spool_max_bytes) == (None, 1 << 30)


def test_delivery_settings_come_from_the_environment() -> None:
    env = {
        "AGENTWATCH_COMPRESSION": "LZ4",
        "AGENTWATCH_ACKS": "1",
        "AGENTWATCH_IDEMPOTENCE": "off",
        "AGENTWATCH_SPOOL_DIR": "/var/spool/aw",
        "AGENTWATCH_SPOOL_MAX_BYTES": "2097152",
    }
    s = ProducerSettings.resolve(environ=env)
    assert (s.compression, s.acks, s.enable_idempotence) == ("lz4", "1", False)
    assert (s.spool_dir, s.spool_max_bytes) == ("/var/spool/aw", 2 * 1024 * 1024)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"AGENTWATCH_COMPRESSION": "brotli"}, "AGENTWATCH_COMPRESSION"),
        ({"AGENTWATCH_ACKS": "2"}, "AGENTWATCH_ACKS"),
        ({"AGENTWATCH_IDEMPOTENCE": "maybe"}, "AGENTWATCH_IDEMPOTENCE"),
        ({"AGENTWATCH_SPOOL_MAX_BYTES": "10"}, "AGENTWATCH_SPOOL_MAX_BYTES"),
    ],
)
def test_bad_delivery_setting_names_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        ProducerSettings.resolve(environ=env)


def _kafka_config(**kwargs: object) -> dict[str, object]:
    from agentwatch.producer._kafka import aiokafka_config  # noqa: PLC0415

    options = kwargs.pop("kafka_options", {})
    settings = ProducerSettings.resolve(environ={}, bootstrap_servers="b:9092", **kwargs)  # type: ignore[arg-type]
    return aiokafka_config(settings, options)  # type: ignore[arg-type]


def test_kafka_config_maps_the_settings() -> None:
    config = _kafka_config(max_batch_bytes=2 * 1024 * 1024)
    assert config["acks"] == "all"
    assert config["enable_idempotence"] is True
    assert config["compression_type"] == "zstd"  # cramjam is a dependency: auto picks zstd
    # a packed record of max_batch_bytes fits in one aiokafka batch and one request
    assert config["max_batch_size"] > 2 * 1024 * 1024
    assert config["max_request_size"] > 2 * 1024 * 1024
    assert _kafka_config(compression="none")["compression_type"] is None
    assert _kafka_config(acks=1, enable_idempotence=False)["acks"] == 1


def test_kafka_options_pass_through_and_bad_ones_name_the_key() -> None:
    config = _kafka_config(kafka_options={"security_protocol": "SSL", "client_id": "bot-7"})
    assert (config["security_protocol"], config["client_id"]) == ("SSL", "bot-7")
    with pytest.raises(ConfigError, match=r"kafka_options\.sasl_mechanizm: not an"):
        _kafka_config(kafka_options={"sasl_mechanizm": "PLAIN"})
    with pytest.raises(ConfigError, match=r"kafka_options\.compression_type: .*compression"):
        _kafka_config(kafka_options={"compression_type": "gzip"})


def test_idempotence_without_acks_all_is_refused_at_construction() -> None:
    with pytest.raises(ConfigError, match="acks: idempotence needs acks='all'"):
        Agentwatch(bootstrap_servers="127.0.0.1:1", acks=1)


def test_kafka_options_without_kafka_are_refused() -> None:
    with pytest.raises(ConfigError, match="kafka_options"):
        Agentwatch(transport=_transport(), kafka_options={"client_id": "x"})


# -- brokers: the producer's variable, else the services' -----------------------------


def test_kafka_bootstrap_servers_is_read_when_the_producer_variable_is_unset() -> None:
    s = ProducerSettings.resolve(environ={"KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092"})
    assert s.bootstrap_servers == "k1:9092,k2:9092"


def test_the_producer_variable_wins_over_kafka_bootstrap_servers() -> None:
    env = {"AGENTWATCH_BOOTSTRAP_SERVERS": "mine:9092", "KAFKA_BOOTSTRAP_SERVERS": "k:9092"}
    assert ProducerSettings.resolve(environ=env).bootstrap_servers == "mine:9092"
    blank = {"AGENTWATCH_BOOTSTRAP_SERVERS": " ", "KAFKA_BOOTSTRAP_SERVERS": "k:9092"}
    assert ProducerSettings.resolve(environ=blank).bootstrap_servers == "k:9092"
    assert ProducerSettings.resolve(bootstrap_servers="arg:9092", environ=env
                                    ).bootstrap_servers == "arg:9092"


def test_kafka_bootstrap_servers_alone_builds_the_kafka_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agentwatch.producer._kafka import KafkaTransport  # noqa: PLC0415

    monkeypatch.delenv("AGENTWATCH_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    client = Agentwatch()
    try:
        assert isinstance(client.transport, KafkaTransport)
    finally:
        client.close(timeout_s=2)


def test_a_given_transport_ignores_the_broker_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("AGENTWATCH_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    transport = _transport()
    client = Agentwatch(transport=transport)
    try:
        assert client.transport is transport
    finally:
        client.close()


@pytest.mark.parametrize(("env", "message"), [
    ({"AGENTWATCH_LINGER_MS": "abc"}, "AGENTWATCH_LINGER_MS: 'abc' is not a valid int"),
    ({"AGENTWATCH_LINGER_MS": "-1"}, "AGENTWATCH_LINGER_MS: -1 is not between 0 and 60000"),
    ({"AGENTWATCH_CONTROL": "maybe"}, "AGENTWATCH_CONTROL: 'maybe' is not true or false"),
    ({"AGENTWATCH_TOPIC": "a b"}, "AGENTWATCH_TOPIC: 'a b' is not 1-249 characters"),
])
def test_an_environment_error_starts_with_the_variable(env: dict[str, str],
                                                        message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ProducerSettings.resolve(environ=env)
    assert str(caught.value).startswith(message)
