"""Worker settings: the environment, then the CLI's options, then derived defaults."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from agentwatch.processors.worker import WorkerSettings
from agentwatch.processors.worker._settings import CHECKPOINT_STRETCH_MAX, ENV_VARS
from agentwatch.processors.worker._split import child_env
from agentwatch.schemas import ConfigError

ENV = {
    "KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
    "AGENTWATCH_EVENTS_TOPIC": "t.events",
    "AGENTWATCH_ALERTS_TOPIC": "t.alerts",
    "AGENTWATCH_DLQ_TOPIC": "t.dead",
    "AGENTWATCH_WORKER_GROUP": "g1",
    "AGENTWATCH_DATA_DIR": "/var/lib/aw",
    "AGENTWATCH_STORE": "memory",
    "AGENTWATCH_SPILL_PACKED_SESSIONS": "false",
    "AGENTWATCH_PARTITIONS": "12",
    "AGENTWATCH_REPLICATION_FACTOR": "3",
    "AGENTWATCH_RULES": "rules.yaml",
    "AGENTWATCH_BATCH_MAX_RECORDS": "5000",
    "AGENTWATCH_BATCH_WITHIN_S": "0.2",
    "AGENTWATCH_IDLE_AFTER_S": "3",
    "AGENTWATCH_CHECKPOINT_INTERVAL_S": "2.5",
    "AGENTWATCH_CHECKPOINT_MAX_SHARE": "0.2",
    "AGENTWATCH_STATS_INTERVAL_S": "10",
    "AGENTWATCH_WORKER_STAGES": "all",
    "AGENTWATCH_WORKER_METRICS_PORT": "9464",
    "AGENTWATCH_CONTROL_TOPIC": "t.control",
}


def test_every_setting_with_a_variable_is_read_from_the_environment() -> None:
    assert set(ENV) == set(ENV_VARS.values())
    settings = WorkerSettings.from_env(ENV)
    assert settings == WorkerSettings(
        bootstrap_servers="k1:9092,k2:9092", events_topic="t.events", alerts_topic="t.alerts",
        dlq_topic="t.dead", group_id="g1", data_dir=Path("/var/lib/aw"), store="memory",
        spill_packed_sessions=False, partitions=12, replication_factor=3,
        rules_file=Path("rules.yaml"),
        batch_max_records=5000, batch_within_s=0.2, idle_after_s=3.0,
        checkpoint_interval_s=2.5, checkpoint_max_share=0.2, stats_interval_s=10.0,
        metrics_port=9464,
        control_topic="t.control",
    )


@pytest.mark.parametrize("variable", ["AGENTWATCH_CHECKPOINT_INTERVAL_S",
                                      "AGENTWATCH_STATS_INTERVAL_S"])
def test_a_non_positive_interval_is_refused_by_name(variable: str) -> None:
    name = next(k for k, v in ENV_VARS.items() if v == variable)
    with pytest.raises(ConfigError, match=name):
        WorkerSettings.from_env({variable: "0"})


@pytest.mark.parametrize("share", ["0", "-0.1", "1.5"])
def test_a_checkpoint_share_outside_0_1_is_refused_by_name(share: str) -> None:
    with pytest.raises(ConfigError, match="checkpoint_max_share"):
        WorkerSettings.from_env({"AGENTWATCH_CHECKPOINT_MAX_SHARE": share})


@pytest.mark.parametrize(("took_s", "gap_s"), [
    (0.0, 1.0),    # cheap checkpoints: every checkpoint_interval_s
    (0.1, 1.0),    # 10 % of 1 s: still every second
    (0.25, 2.5),   # 0.25 s at most 10 % of the time: 2.5 s apart
    (3.0, 5.0),    # stretched at most CHECKPOINT_STRETCH_MAX (5) x the interval
])
def test_a_costly_checkpoint_spaces_the_next_one(took_s: float, gap_s: float) -> None:
    settings = WorkerSettings(checkpoint_interval_s=1.0, checkpoint_max_share=0.1)
    assert CHECKPOINT_STRETCH_MAX == 5
    assert settings.checkpoint_gap_s(took_s) == pytest.approx(gap_s)


@pytest.mark.parametrize(("took_s", "gap_s"), [
    (0.0, 0.25),   # 4 partitions in turn: each every checkpoint_interval_s
    (0.05, 0.5),   # 0.05 s at most 10 % of the time
    (3.0, 1.25),   # each partition at most CHECKPOINT_STRETCH_MAX intervals apart
])
def test_partitions_in_turn_share_the_interval_and_its_stretch(took_s: float,
                                                              gap_s: float) -> None:
    settings = WorkerSettings(checkpoint_interval_s=1.0, checkpoint_max_share=0.1)
    assert settings.checkpoint_gap_s(took_s, parts=4) == pytest.approx(gap_s)


def test_a_share_of_1_never_stretches_the_interval() -> None:
    settings = WorkerSettings(checkpoint_interval_s=2.0, checkpoint_max_share=1.0)
    assert settings.checkpoint_gap_s(1.9) == 2.0
    assert settings.checkpoint_gap_s(3.0) == 3.0  # a checkpoint longer than the interval


def test_without_variables_the_defaults_apply() -> None:
    settings = WorkerSettings.from_env({})
    assert settings.bootstrap_servers == "localhost:9092"
    assert settings.events_topic == "agentwatch.events"
    assert settings.dlq_topic == "agentwatch.events.dlq"
    assert settings.partitions == 8
    assert settings.rules_file is None
    assert settings.store in {"memory", "rocksdb"}


def test_blank_variables_count_as_unset() -> None:
    env = {"AGENTWATCH_PARTITIONS": "  ", "KAFKA_BOOTSTRAP_SERVERS": ""}
    settings = WorkerSettings.from_env(env)
    assert settings.partitions == 8
    assert settings.bootstrap_servers == "localhost:9092"


def test_cli_overrides_win_and_none_means_not_given() -> None:
    settings = WorkerSettings.from_env(ENV, group_id="cli-group", partitions=4, events_topic=None,
                                       data_dir="/srv/aw")
    assert settings.group_id == "cli-group"
    assert settings.partitions == 4
    assert settings.events_topic == "t.events"
    assert settings.data_dir == Path("/srv/aw")


def test_the_dead_letter_topic_follows_the_events_topic() -> None:
    env = {"AGENTWATCH_EVENTS_TOPIC": "prod.events"}
    assert WorkerSettings.from_env(env).dlq_topic == "prod.events.dlq"
    assert WorkerSettings.from_env(env, events_topic="cli.events").dlq_topic == "cli.events.dlq"
    assert WorkerSettings.from_env(env, dlq_topic="mine").dlq_topic == "mine"


def test_the_rekeyed_topic_is_derived_from_the_group() -> None:
    assert WorkerSettings.from_env({"AGENTWATCH_WORKER_GROUP": "g7"}).rekeyed_topic == "g7-rekeyed"
    assert WorkerSettings().rekeyed_topic == "agentwatch-worker-rekeyed"


@pytest.mark.parametrize(("var", "value"), [
    ("AGENTWATCH_PARTITIONS", "eight"),
    ("AGENTWATCH_PARTITIONS", "2.5"),
    ("AGENTWATCH_REPLICATION_FACTOR", "x"),
])
def test_a_bad_number_names_its_variable(var: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{var}: '{value}' is not a valid int"):
        WorkerSettings.from_env({var: value})


def test_a_bad_number_from_the_cli_names_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"^partitions: 'many' is not a valid int"):
        WorkerSettings.from_env({}, partitions="many")


def test_numbers_are_converted() -> None:
    settings = WorkerSettings.from_env({}, batch_max_records="50", idle_after_s="0.5")
    assert settings.batch_max_records == 50
    assert settings.idle_after_s == 0.5


@pytest.mark.parametrize("store", ["redis", "Memory", "rocksdb://"])
def test_an_unknown_store_is_rejected(store: str) -> None:
    with pytest.raises(ConfigError, match=r"^store: .* is not one of memory, rocksdb$"):
        WorkerSettings.from_env({"AGENTWATCH_STORE": store})


@pytest.mark.parametrize("partitions", ["0", "-2"])
def test_partitions_must_be_positive(partitions: str) -> None:
    with pytest.raises(ConfigError, match=rf"^partitions: {partitions} is not a positive number$"):
        WorkerSettings.from_env({"AGENTWATCH_PARTITIONS": partitions})


def test_the_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTWATCH_WORKER_GROUP", "from-os")
    assert WorkerSettings.from_env().group_id == "from-os"


def test_stages_are_checked_and_name_the_setting() -> None:
    with pytest.raises(ConfigError, match="stages: 'both' is not one of all, split"):
        WorkerSettings.from_env({"AGENTWATCH_WORKER_STAGES": "both"})


@pytest.mark.parametrize(("stages", "session", "rekeyed", "app_id"), [
    ("all", True, True, "g1"),
    ("split", True, False, "g1"),
    ("session", True, False, "g1"),
    ("rekeyed", False, True, "g1-rekeyed-stage"),
])
def test_what_each_stages_value_runs(stages: str, session: bool, rekeyed: bool,
                                     app_id: str) -> None:
    settings = WorkerSettings(group_id="g1", stages=stages)
    assert (settings.runs_session_stage, settings.runs_rekeyed_stage) == (session, rekeyed)
    assert settings.app_id == app_id
    assert settings.rekeyed_topic == "g1-rekeyed"  # the same topic in every layout


def test_the_split_child_gets_every_setting_and_its_own_data_dir() -> None:
    settings = WorkerSettings.from_env(ENV, stages="split")
    env = child_env(settings)
    child = WorkerSettings.from_env(env)
    assert child.stages == "rekeyed"
    assert child.data_dir == Path("/var/lib/aw/rekeyed-stage")
    assert child == dataclasses.replace(settings, stages="rekeyed",
                                        data_dir=Path("/var/lib/aw/rekeyed-stage"),
                                        metrics_port=9465)  # the next port


def test_the_metrics_port_is_off_by_default_and_read_from_its_variable() -> None:
    assert WorkerSettings.from_env({}).metrics_port == 0
    assert WorkerSettings.from_env({"AGENTWATCH_WORKER_METRICS_PORT": "9464"}).metrics_port == 9464


@pytest.mark.parametrize(("raw", "message"), [
    ("http", "AGENTWATCH_WORKER_METRICS_PORT: 'http' is not a valid int"),
    ("70000", "metrics_port: 70000 is not a port"),
])
def test_a_bad_metrics_port_is_refused_by_name(raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        WorkerSettings.from_env({"AGENTWATCH_WORKER_METRICS_PORT": raw})


def test_the_split_child_serves_its_metrics_on_the_next_port() -> None:
    settings = WorkerSettings.from_env(ENV, stages="split", metrics_port=9464)
    assert WorkerSettings.from_env(child_env(settings)).metrics_port == 9465
    off = WorkerSettings.from_env(ENV, stages="split", metrics_port=0)
    assert WorkerSettings.from_env(child_env(off)).metrics_port == 0
