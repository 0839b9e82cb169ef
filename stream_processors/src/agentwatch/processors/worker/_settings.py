"""Worker settings: broker and topics from the environment, overridable by the CLI
(:func:`agentwatch.schemas.settings.load`).

Checks in ``__post_init__`` name the setting (``store: 'redis' is not one of ...``), a value
that is not a number names the variable or the setting it came from."""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentwatch.schemas import ConfigError
from agentwatch.schemas.kafka_security import KafkaSecurity
from agentwatch.schemas.settings import (
    ALERTS_TOPIC,
    CONTROL_TOPIC,
    DEFAULT_BOOTSTRAP_SERVERS,
    EVENTS_TOPIC,
    dlq_topic_for,
    load,
)

__all__ = ["CHECKPOINT_STRETCH_MAX", "ENV_VARS", "STAGES", "WorkerSettings"]

#: the values of ``WorkerSettings.stages``
STAGES = ("all", "split", "session", "rekeyed")
#: how far ``checkpoint_max_share`` may stretch the checkpoint interval (a multiple of
#: ``checkpoint_interval_s``): records re-read after a crash stay bounded whatever the load
CHECKPOINT_STRETCH_MAX = 5


def _default_store() -> str:
    return "rocksdb" if importlib.util.find_spec("rocksdict") is not None else "memory"


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    bootstrap_servers: str = DEFAULT_BOOTSTRAP_SERVERS
    events_topic: str = EVENTS_TOPIC
    alerts_topic: str = ALERTS_TOPIC
    dlq_topic: str = ""  # default: <events_topic>.dlq
    control_topic: str = CONTROL_TOPIC
    """Halt and resume records of halt rules (compacted, one partition; created if missing)."""
    group_id: str = "agentwatch-worker"
    """Consumer group and faust app id: workers with the same id share the partitions."""
    data_dir: Path = Path("agentwatch-worker-data")
    store: str = ""  # "rocksdb" when rocksdict is installed, else "memory"
    spill_packed_sessions: bool = True
    """Keep quiet sessions' packed state (``pack_idle_sessions_s``) in a file per
    partition under ``data_dir/spill`` (unlinked at once: the page cache holds it, not
    the worker's memory) instead of in memory. Off: in memory, ~0.8 KB a quiet session."""
    partitions: int = 8
    """Partitions of the events topic when the worker has to create it."""
    replication_factor: int = 1
    """Of the topics the worker creates (events, alerts, dead letters, internal ones)."""
    rules_file: Path | None = None
    batch_max_records: int = 5000
    batch_within_s: float = 0.05
    stages: str = "all"
    """Which stages this process runs: ``all`` (one process), ``split`` (this process runs
    the session stage and starts a second one for the agent/tenant stage: two cores for
    one worker), or ``session`` / ``rekeyed`` alone (what ``split`` runs; start them
    yourself to place them apart)."""
    checkpoint_interval_s: float = 1.0
    """How often the worker writes the state of a partition's keys changed since its last
    checkpoint to the changelog topics, waits for the broker's acks, then commits the
    partition's input offsets (DESIGN.md, "Worker state"). The partitions take turns, one
    checkpoint at a time: with N of them, one every interval / N. Longer: fewer changelog
    bytes, more records re-read after a crash (never an alert lost or a different one
    fired)."""
    checkpoint_max_share: float = 0.1
    """The share of the worker's time checkpoints may take: after a checkpoint that took
    ``d`` seconds the next one starts no sooner than ``d / checkpoint_max_share`` after it
    began (and at most ``CHECKPOINT_STRETCH_MAX`` times ``checkpoint_interval_s``), Flink's
    minimum pause between checkpoints sized by the last one. Under load, when a checkpoint
    writes nearly one session state per event (sparse sessions, one event per record),
    checkpoints come less often and each session's state is written once for more of
    its events; a worker that keeps up checkpoints every ``checkpoint_interval_s``. 1:
    never stretch."""
    stats_interval_s: float = 30.0
    """How often the worker logs its counters (``agentwatch worker stats {json}``, INFO)."""
    metrics_port: int = 0
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on this port (all interfaces); 0:
    off. With ``stages=split`` the rekeyed-stage process serves on the next port."""
    idle_after_s: float = 1.0
    """An input partition with nothing new for this long (and nothing left to read, as a
    fetch answered after that quiet period confirms) is idle: it no longer holds back
    agent- and tenant-scoped windows beyond the event time its idle mark gives (see
    ``_Worker.announce_idle``). This assumes event time
    runs with the wall clock: a stream replayed faster than real time (a recorded scenario
    at 100x) needs a longer idle time, or a partition quiet for a second of wall time
    comes back a hundred seconds of event time behind the others (late)."""
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    """TLS/SASL of every Kafka client of the worker (``KAFKA_SECURITY_PROTOCOL`` ..., see
    :mod:`agentwatch.schemas.kafka_security`)."""

    def __post_init__(self) -> None:
        if not self.dlq_topic:
            object.__setattr__(self, "dlq_topic", dlq_topic_for(self.events_topic))
        if not self.store:
            object.__setattr__(self, "store", _default_store())
        if self.store not in {"memory", "rocksdb"}:
            raise ConfigError(f"store: {self.store!r} is not one of memory, rocksdb")
        if self.stages not in STAGES:
            raise ConfigError(f"stages: {self.stages!r} is not one of {', '.join(STAGES)}")
        if not self.checkpoint_interval_s > 0:
            raise ConfigError(
                f"checkpoint_interval_s: {self.checkpoint_interval_s} is not a positive number")
        if not 0 < self.checkpoint_max_share <= 1:
            raise ConfigError(f"checkpoint_max_share: {self.checkpoint_max_share} is not in "
                              "(0, 1] (1: checkpoints every checkpoint_interval_s whatever "
                              "they cost)")
        if not self.stats_interval_s > 0:
            raise ConfigError(
                f"stats_interval_s: {self.stats_interval_s} is not a positive number")
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port: {self.metrics_port} is not a port (0..65535; "
                              "0: off)")
        if self.partitions < 1:
            raise ConfigError(f"partitions: {self.partitions} is not a positive number")

    def checkpoint_gap_s(self, took_s: float, parts: int = 1) -> float:
        """Seconds from the start of a checkpoint that took ``took_s`` to the next one, when
        checkpoints save ``parts`` partitions in turn (each partition every
        ``checkpoint_interval_s``, stretched alike: the share of the time is per checkpoint)."""
        stretched = min(took_s / self.checkpoint_max_share,
                        CHECKPOINT_STRETCH_MAX * self.checkpoint_interval_s / parts)
        return max(self.checkpoint_interval_s / parts, stretched)

    @property
    def runs_session_stage(self) -> bool:
        return self.stages in {"all", "split", "session"}

    @property
    def runs_rekeyed_stage(self) -> bool:
        return self.stages in {"all", "rekeyed"}

    @property
    def app_id(self) -> str:
        """faust's app id: the consumer group of the process, and the prefix of its tables'
        changelog topics. A process running the rekeyed stage alone has its own."""
        return f"{self.group_id}-rekeyed-stage" if self.stages == "rekeyed" else self.group_id

    @property
    def rekeyed_topic(self) -> str:
        """The internal topic keyed by agent (or tenant); one per worker group."""
        return f"{self.group_id}-rekeyed"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> WorkerSettings:
        """Settings from ``AGENTWATCH_*`` / ``KAFKA_BOOTSTRAP_SERVERS``; ``overrides`` that are
        not None win (the CLI's options, named by their setting in errors)."""
        settings = load(cls, ENV_VARS, env, overrides, given_as=str)
        return dataclasses.replace(settings, kafka_security=KafkaSecurity.from_env(env))


#: setting -> environment variable
ENV_VARS: dict[str, str] = {
    "bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
    "events_topic": "AGENTWATCH_EVENTS_TOPIC",
    "alerts_topic": "AGENTWATCH_ALERTS_TOPIC",
    "dlq_topic": "AGENTWATCH_DLQ_TOPIC",
    "control_topic": "AGENTWATCH_CONTROL_TOPIC",
    "group_id": "AGENTWATCH_WORKER_GROUP",
    "data_dir": "AGENTWATCH_DATA_DIR",
    "store": "AGENTWATCH_STORE",
    "spill_packed_sessions": "AGENTWATCH_SPILL_PACKED_SESSIONS",
    "partitions": "AGENTWATCH_PARTITIONS",
    "replication_factor": "AGENTWATCH_REPLICATION_FACTOR",
    "rules_file": "AGENTWATCH_RULES",
    "batch_max_records": "AGENTWATCH_BATCH_MAX_RECORDS",
    "batch_within_s": "AGENTWATCH_BATCH_WITHIN_S",
    "idle_after_s": "AGENTWATCH_IDLE_AFTER_S",
    "stages": "AGENTWATCH_WORKER_STAGES",
    "checkpoint_interval_s": "AGENTWATCH_CHECKPOINT_INTERVAL_S",
    "checkpoint_max_share": "AGENTWATCH_CHECKPOINT_MAX_SHARE",
    "stats_interval_s": "AGENTWATCH_STATS_INTERVAL_S",
    "metrics_port": "AGENTWATCH_WORKER_METRICS_PORT",
}
