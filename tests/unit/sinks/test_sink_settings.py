"""StoreSettings and SinkSettings: where the store is, opening it, and errors that name
the variable or option a bad value came from."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agentwatch.schemas.errors import ConfigError
from agentwatch.sinks import ChdbBackend, SinkSettings, StoreSettings
from agentwatch.sinks._settings import SINK_ENV_VARS

# -- chdb_path ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("data/clickhouse", Path("data/clickhouse")),
        ("  data/clickhouse ", Path("data/clickhouse")),
        ("chdb://data/clickhouse", Path("data/clickhouse")),
        ("chdb:///srv/agentwatch", Path("/srv/agentwatch")),
        ("CHDB:///srv/agentwatch", Path("/srv/agentwatch")),
        ("http://localhost:8123", None),
        ("clickhouses://user:secret@ch.example.com:9440/db", None),
    ],
)
def test_chdb_path_is_the_embedded_directory_or_none_for_a_server(
    url: str, path: Path | None
) -> None:
    assert StoreSettings(url=url).chdb_path == path


def test_the_default_store_is_the_embedded_default_path() -> None:
    assert StoreSettings().chdb_path == Path("agentwatch-data/clickhouse")
    assert StoreSettings.from_env({}).chdb_path == Path("agentwatch-data/clickhouse")


def test_describe_names_the_directory_whatever_the_scheme_case() -> None:
    assert StoreSettings(url="CHDB:///srv/aw").describe() == "chDB at /srv/aw"
    assert StoreSettings(url="/srv/aw").describe() == "chDB at /srv/aw"
    server = StoreSettings(url="clickhouse://u:secret@ch:9000/db").describe()
    assert server == "ClickHouse at ch:9000/db"  # never the password


# -- a location that names no directory ----------------------------------------------


@pytest.mark.parametrize("url", ["chdb://", " chdb:// ", "CHDB://", ""])
def test_a_location_without_a_directory_is_refused(url: str) -> None:
    """It would open the working directory as the database (Path("") is ".")."""
    with pytest.raises(ConfigError, match=r"^url: .* names no chDB directory"):
        StoreSettings(url=url)


def test_a_location_without_a_directory_names_its_source() -> None:
    with pytest.raises(ConfigError, match=r"^CLICKHOUSE_URL: 'chdb://' names no chDB directory"):
        StoreSettings.from_env({"CLICKHOUSE_URL": "chdb://"})
    with pytest.raises(ConfigError, match=r"^--url: 'chdb://' names no chDB directory"):
        StoreSettings.from_env({"CLICKHOUSE_URL": "/srv/aw"}, url="chdb://")


# -- open(create=...) ----------------------------------------------------------------


def test_open_creates_the_directory_by_default(tmp_path: Path) -> None:
    path = tmp_path / "new" / "chdb"
    with StoreSettings(url=f"chdb://{path}").open() as backend:
        assert isinstance(backend, ChdbBackend)
        assert backend.query("SELECT 1").rows == [(1,)]
    assert path.is_dir()


def test_open_without_create_refuses_a_missing_directory_and_creates_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "missing"
    with pytest.raises(ConfigError, match=f"^no chDB database at {re.escape(str(path))}"):
        StoreSettings(url=str(path)).open(create=False)
    assert not path.exists()


def test_open_without_create_reads_an_existing_directory(tmp_path: Path) -> None:
    path = tmp_path / "chdb"
    with StoreSettings(url=str(path)).open() as backend:
        backend.command("CREATE DATABASE IF NOT EXISTS kept")
    with StoreSettings(url=str(path)).open(create=False) as backend:
        assert backend.query("EXISTS DATABASE kept").rows == [(1,)]


def test_open_without_create_refuses_a_file(tmp_path: Path) -> None:
    path = tmp_path / "a-file"
    path.write_text("not a database\n")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))} is not a directory"):
        StoreSettings(url=str(path)).open(create=False)


@pytest.mark.parametrize("create", [True, False])
def test_a_directory_that_cannot_be_created_is_a_config_error_naming_it(
    tmp_path: Path, create: bool
) -> None:
    """Not an OSError (a traceback in `agentwatch sink`)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    path = blocker / "chdb"  # under a regular file: mkdir fails
    message = (
        f"cannot create the chDB directory {path}: " if create else f"no chDB database at {path}"
    )
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        StoreSettings(url=str(path)).open(create=create)


# -- ttl_days: the message names where the value came from ----------------------------


@pytest.mark.parametrize("value", ["0", "-1"])
def test_a_bad_ttl_from_the_environment_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        StoreSettings.from_env({"AGENTWATCH_TTL_DAYS": value})
    assert str(info.value) == (
        f"AGENTWATCH_TTL_DAYS: {value} is not a whole number of days >= 1 (or none: keep forever)"
    )


def test_a_bad_ttl_option_names_the_option_and_wins_over_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^--ttl-days: 0 is not a whole number of days >= 1"):
        StoreSettings.from_env({"AGENTWATCH_TTL_DAYS": "7"}, ttl_days="0")


def test_a_bad_ttl_given_directly_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"^ttl_days: 0 is not a whole number of days >= 1"):
        StoreSettings(ttl_days=0)
    with pytest.raises(ConfigError, match=r"^ttl_days: True is not a whole number"):
        StoreSettings(ttl_days=True)


def test_ttl_none_keeps_data_and_a_number_is_kept() -> None:
    assert StoreSettings.from_env({"AGENTWATCH_TTL_DAYS": "none"}).ttl_days is None
    assert StoreSettings.from_env({}, ttl_days="14").schema().ttl_days == 14


def test_a_bad_sink_setting_names_the_variable_too() -> None:
    with pytest.raises(ConfigError, match=r"^AGENTWATCH_SINK_BATCH_MAX_EVENTS: 0 is not >= 1$"):
        SinkSettings.from_env({"AGENTWATCH_SINK_BATCH_MAX_EVENTS": "0"})
    with pytest.raises(ConfigError, match=r"^--batch-max-ms: -5 is not >= 1$"):
        SinkSettings.from_env({}, batch_max_ms="-5")
    with pytest.raises(ConfigError, match=r"^max_backoff_s: 0.0 is not > 0$"):
        SinkSettings(max_backoff_s=0.0)


# -- the failed-deliveries topic -------------------------------------------------------


def test_the_sink_also_consumes_the_failed_deliveries_topic_by_default() -> None:
    settings = SinkSettings.from_env({})
    assert settings.alerts_dlq_topic == "agentwatch.alerts.dlq"
    assert settings.topics == ("agentwatch.events", "agentwatch.alerts", "agentwatch.alerts.dlq",
                               "agentwatch.control", "agentwatch.acks")


def test_the_failed_deliveries_topic_comes_from_its_variable() -> None:
    settings = SinkSettings.from_env({"AGENTWATCH_ALERTS_DLQ_TOPIC": "t.alerts.dlq"})
    assert settings.topics[2] == "t.alerts.dlq"
    assert SINK_ENV_VARS["alerts_dlq_topic"] == "AGENTWATCH_ALERTS_DLQ_TOPIC"


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_failed_deliveries_variable_disables_that_topic(value: str) -> None:
    settings = SinkSettings.from_env({"AGENTWATCH_ALERTS_DLQ_TOPIC": value})
    assert settings.alerts_dlq_topic == ""
    assert settings.topics == ("agentwatch.events", "agentwatch.alerts", "agentwatch.control",
                               "agentwatch.acks")
    assert SinkSettings(alerts_dlq_topic="").topics == (
        "agentwatch.events", "agentwatch.alerts", "agentwatch.control", "agentwatch.acks")


def test_an_option_wins_over_an_empty_failed_deliveries_variable() -> None:
    settings = SinkSettings.from_env({"AGENTWATCH_ALERTS_DLQ_TOPIC": ""}, alerts_dlq_topic="x")
    assert settings.alerts_dlq_topic == "x"


def test_only_the_failed_deliveries_topic_is_enough_to_run() -> None:
    settings = SinkSettings(events_topic="", alerts_topic="", control_topic="", acks_topic="")
    assert settings.topics == ("agentwatch.alerts.dlq",)
    with pytest.raises(ConfigError, match="all empty: nothing to sink"):
        SinkSettings(events_topic="", alerts_topic="", alerts_dlq_topic="", control_topic="",
                     acks_topic="")


def test_the_sink_stores_the_control_topic_from_its_variable() -> None:
    settings = SinkSettings.from_env({"AGENTWATCH_CONTROL_TOPIC": "t.control"})
    assert "t.control" in settings.topics


def test_one_topic_for_two_kinds_of_record_is_refused() -> None:
    with pytest.raises(ConfigError, match="must differ"):
        SinkSettings(alerts_dlq_topic="agentwatch.alerts")
    with pytest.raises(ConfigError, match="must differ"):
        SinkSettings.from_env({"AGENTWATCH_ALERTS_DLQ_TOPIC": "agentwatch.events"})


# -- agentwatch webhooks ------------------------------------------------------------------


def test_webhooks_settings_defaults_and_environment() -> None:
    from agentwatch.alerts import WebhooksSettings  # noqa: PLC0415

    s = WebhooksSettings.from_env({"AGENTWATCH_WEBHOOKS_FILE": "endpoints.yaml"})
    assert (s.endpoints_file, s.alerts_topic, s.dlq_topic, s.group_id) == (
        "endpoints.yaml", "agentwatch.alerts", "agentwatch.alerts.dlq", "agentwatch-webhooks")
    assert (s.max_in_flight, s.drain_s) == (10_000, 10.0)
    s = WebhooksSettings.from_env(
        {"AGENTWATCH_WEBHOOKS_FILE": "a.yaml", "AGENTWATCH_WEBHOOKS_MAX_IN_FLIGHT": "5",
         "AGENTWATCH_ALERTS_DLQ_TOPIC": "dead", "KAFKA_BOOTSTRAP_SERVERS": "k:9092"},
        endpoints_file="b.toml",
    )
    assert (s.endpoints_file, s.max_in_flight, s.dlq_topic, s.bootstrap_servers) == (
        "b.toml", 5, "dead", "k:9092")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "no endpoints file"),
        ({"AGENTWATCH_WEBHOOKS_MAX_IN_FLIGHT": "0"}, "AGENTWATCH_WEBHOOKS_MAX_IN_FLIGHT"),
        ({"AGENTWATCH_WEBHOOKS_DRAIN_S": "soon"}, "AGENTWATCH_WEBHOOKS_DRAIN_S"),
        ({"AGENTWATCH_ALERTS_DLQ_TOPIC": "agentwatch.alerts"}, "the same"),
    ],
)
def test_webhooks_settings_errors_name_the_variable(env: dict[str, str], message: str) -> None:
    from agentwatch.alerts import WebhooksSettings  # noqa: PLC0415

    base = {"AGENTWATCH_WEBHOOKS_FILE": "e.yaml"} if env else {}
    with pytest.raises(ConfigError, match=message):
        WebhooksSettings.from_env(base | env)


# -- metrics ports ------------------------------------------------------------------


def test_the_sink_and_dispatcher_metrics_ports_are_off_by_default_and_read_by_name() -> None:
    from agentwatch.alerts import WebhooksSettings  # noqa: PLC0415

    assert SinkSettings.from_env({}).metrics_port == 0
    assert SinkSettings.from_env({"AGENTWATCH_SINK_METRICS_PORT": "9465"}).metrics_port == 9465
    hooks = WebhooksSettings.from_env({"AGENTWATCH_WEBHOOKS_FILE": "e.yaml",
                                       "AGENTWATCH_WEBHOOKS_METRICS_PORT": "9466"})
    assert hooks.metrics_port == 9466


@pytest.mark.parametrize(("raw", "message"), [
    ("-1", "AGENTWATCH_SINK_METRICS_PORT: -1 is not a port"),
    ("70000", "AGENTWATCH_SINK_METRICS_PORT: 70000 is not a port"),
    ("nine", "AGENTWATCH_SINK_METRICS_PORT: 'nine' is not a valid int"),
])
def test_a_bad_sink_metrics_port_names_its_variable(raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        SinkSettings.from_env({"AGENTWATCH_SINK_METRICS_PORT": raw})

def test_the_sink_consumes_the_acks_topic_unless_disabled() -> None:
    assert SinkSettings.from_env({}).acks_topic == "agentwatch.acks"
    settings = SinkSettings.from_env({"AGENTWATCH_ACKS_TOPIC": " "})
    assert settings.acks_topic == ""
    assert "agentwatch.acks" not in settings.topics
