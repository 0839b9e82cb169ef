"""Where ClickHouse is (``StoreSettings``) and how the Kafka sink runs (``SinkSettings``).

All come from environment variables, overridable by CLI options (an option that is
not ``None`` wins), through the one loader :func:`agentwatch.schemas.settings.load`.
Errors name the variable or option a bad value came from (the field, when the dataclass
is built directly)::

    CLICKHOUSE_URL       a path or chdb://PATH (embedded, the default), http(s)://host:port
                         or clickhouse(s)://user:password@host:port/database
    CLICKHOUSE_USER, CLICKHOUSE_PASSWORD, CLICKHOUSE_DATABASE, CLICKHOUSE_SECURE
    AGENTWATCH_TTL_DAYS  retention of events and dead letters, set when tables are created
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from agentwatch.schemas.errors import ConfigError
from agentwatch.schemas.kafka_security import KafkaSecurity
from agentwatch.schemas.settings import (
    ACKS_TOPIC,
    ALERTS_DLQ_TOPIC,
    ALERTS_TOPIC,
    CONTROL_TOPIC,
    DEFAULT_BOOTSTRAP_SERVERS,
    EVENTS_TOPIC,
    SettingError,
    load,
)
from agentwatch.sinks._ddl import DEFAULT_DATABASE, DEFAULT_TTL_DAYS, SchemaConfig
from agentwatch.sinks.backends._open import open_backend
from agentwatch.sinks.backends.base import Backend

__all__ = [
    "DEFAULT_CHDB_PATH",
    "SINK_ENV_VARS",
    "STORE_ENV_VARS",
    "SinkSettings",
    "StoreSettings",
]

#: The embedded store when CLICKHOUSE_URL is not set (relative to the working dir).
DEFAULT_CHDB_PATH: Final = "agentwatch-data/clickhouse"

_CHDB_SCHEME: Final = "chdb://"


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """Which ClickHouse to use: chDB on disk (default) or a server."""

    url: str = DEFAULT_CHDB_PATH
    user: str | None = None
    password: str | None = None
    database: str = DEFAULT_DATABASE
    secure: bool | None = None
    ttl_days: int | None = DEFAULT_TTL_DAYS

    def __post_init__(self) -> None:
        ttl = self.ttl_days
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1):
            raise SettingError(
                "ttl_days", f"{ttl!r} is not a whole number of days >= 1 (or none: keep forever)"
            )
        if self.is_embedded and not self._chdb_location():
            # Path("") is the working directory: never open that by accident.
            raise SettingError(
                "url", f"{self.url!r} names no chDB directory (give a path or chdb://PATH)"
            )
        self.schema()  # checks database

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> StoreSettings:
        return load(cls, STORE_ENV_VARS, env, overrides)

    @property
    def is_embedded(self) -> bool:
        lowered = self.url.strip().lower()
        return lowered.startswith(_CHDB_SCHEME) or "://" not in lowered

    def _chdb_location(self) -> str:
        text = self.url.strip()
        return text[len(_CHDB_SCHEME) :] if text.lower().startswith(_CHDB_SCHEME) else text

    @property
    def chdb_path(self) -> Path | None:
        """The directory of the embedded store (chDB); ``None`` for a server."""
        return Path(self._chdb_location()) if self.is_embedded else None

    def describe(self) -> str:
        """Where, for messages (never the password)."""
        if self.is_embedded:
            return f"chDB at {self._chdb_location()}"
        return f"ClickHouse at {self.url.split('@')[-1]}"

    def schema(self, cluster: str | None = None) -> SchemaConfig:
        return SchemaConfig(database=self.database, ttl_days=self.ttl_days, cluster=cluster)

    def open(self, *, create: bool = True) -> Backend:
        """Open the backend.

        For chDB, ``create`` makes the directory when it is missing; without it (to
        read), a missing directory is an error rather than a new empty database.
        Either way a path that cannot be used is a :class:`ConfigError` naming it.
        """
        path = self.chdb_path
        if path is not None:
            if create:
                try:
                    path.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise ConfigError(
                        f"cannot create the chDB directory {path}: {exc.strerror or exc}"
                    ) from None
            elif not path.exists():
                raise ConfigError(f"no chDB database at {path}: the directory does not exist")
            elif not path.is_dir():
                raise ConfigError(f"{path} is not a directory (a chDB database is one)")
            return open_backend(path)
        return open_backend(
            self.url,
            user=self.user,
            password=self.password,
            database=self.database,
            secure=self.secure,
        )


#: setting -> environment variable
STORE_ENV_VARS: Final[dict[str, str]] = {
    "url": "CLICKHOUSE_URL",
    "user": "CLICKHOUSE_USER",
    "password": "CLICKHOUSE_PASSWORD",
    "database": "CLICKHOUSE_DATABASE",
    "secure": "CLICKHOUSE_SECURE",
    "ttl_days": "AGENTWATCH_TTL_DAYS",
}


@dataclass(frozen=True, slots=True)
class SinkSettings:
    """The Kafka side of ``agentwatch sink``.

    A batch is inserted when it holds ``batch_max_events`` events (and alerts), or
    ``batch_max_ms`` after its first record, whichever comes first. One batch covers
    one input partition (see :mod:`agentwatch.sinks.kafka`, why).

    ``alerts_dlq_topic`` is where the webhook dispatcher puts the deliveries that finally
    failed: each record becomes an ``alerts`` row with ``delivery_status =
    'failed:<endpoint>'`` and a ``dead_letters`` row. An empty topic name skips that
    topic. ``AGENTWATCH_ALERTS_DLQ_TOPIC`` set to an empty string disables the failures
    topic (for the other variables, empty means unset: the default applies).
    ``acks_topic`` holds the acknowledgements (``alert_acks`` rows);
    ``AGENTWATCH_ACKS_TOPIC`` set to an empty string disables it.
    """

    bootstrap_servers: str = DEFAULT_BOOTSTRAP_SERVERS
    events_topic: str = EVENTS_TOPIC
    alerts_topic: str = ALERTS_TOPIC
    alerts_dlq_topic: str = ALERTS_DLQ_TOPIC
    control_topic: str = CONTROL_TOPIC
    """Halts and resumes (``control_log`` rows); empty: not stored."""
    acks_topic: str = ACKS_TOPIC
    """Acknowledgements of alerts (``alert_acks`` rows); empty: not stored."""
    group_id: str = "agentwatch-sink"
    batch_max_events: int = 100_000
    batch_max_ms: int = 1000
    max_backoff_s: float = 30.0
    """Longest wait between two attempts while ClickHouse is down or overloaded."""
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    """TLS/SASL of the sink's Kafka clients (``KAFKA_SECURITY_PROTOCOL`` ..., see
    :mod:`agentwatch.schemas.kafka_security`)."""
    metrics_port: int = 0
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on this port; 0: off."""

    def __post_init__(self) -> None:
        if self.batch_max_events < 1:
            raise SettingError("batch_max_events", f"{self.batch_max_events} is not >= 1")
        if self.batch_max_ms < 1:
            raise SettingError("batch_max_ms", f"{self.batch_max_ms} is not >= 1")
        if not self.max_backoff_s > 0:
            raise SettingError("max_backoff_s", f"{self.max_backoff_s} is not > 0")
        if not 0 <= self.metrics_port <= 65535:
            raise SettingError("metrics_port", f"{self.metrics_port} is not a port "
                                "(0..65535; 0: off)")
        topics = self.topics
        if not topics:
            raise ConfigError(
                "events_topic, alerts_topic, alerts_dlq_topic, control_topic and acks_topic "
                "are all empty: "
                "nothing to sink"
            )
        if len(set(topics)) < len(topics):
            raise ConfigError(
                f"events_topic, alerts_topic, alerts_dlq_topic, control_topic and acks_topic "
                f"must differ: "
                f"{topics!r}"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> SinkSettings:
        settings = load(cls, SINK_ENV_VARS, env, overrides,
                        blank_disables=("alerts_dlq_topic", "control_topic", "acks_topic"))
        return dataclasses.replace(settings, kafka_security=KafkaSecurity.from_env(env))

    @property
    def topics(self) -> tuple[str, ...]:
        """The topics to consume: events, alerts, failed deliveries, halts and resumes, acks
        (empty names left out)."""
        return tuple(t for t in (self.events_topic, self.alerts_topic, self.alerts_dlq_topic,
                                 self.control_topic, self.acks_topic) if t)


SINK_ENV_VARS: Final[dict[str, str]] = {
    "bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
    "events_topic": "AGENTWATCH_EVENTS_TOPIC",
    "alerts_topic": "AGENTWATCH_ALERTS_TOPIC",
    "alerts_dlq_topic": "AGENTWATCH_ALERTS_DLQ_TOPIC",
    "control_topic": "AGENTWATCH_CONTROL_TOPIC",
    "acks_topic": "AGENTWATCH_ACKS_TOPIC",
    "group_id": "AGENTWATCH_SINK_GROUP",
    "batch_max_events": "AGENTWATCH_SINK_BATCH_MAX_EVENTS",
    "batch_max_ms": "AGENTWATCH_SINK_BATCH_MAX_MS",
    "max_backoff_s": "AGENTWATCH_SINK_MAX_BACKOFF_S",
    "metrics_port": "AGENTWATCH_SINK_METRICS_PORT",
}
