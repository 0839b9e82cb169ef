"""Producer settings: constructor argument, else environment variable, else default.

Every value is validated once, at construction; a bad one raises
:class:`~agentwatch.schemas.ConfigError` naming the setting (and the variable it
came from). This is the only place the producer raises on purpose.

========================  ===============================  ======================
setting                   environment variable             default
========================  ===============================  ======================
``tenant_id``             ``AGENTWATCH_TENANT_ID``         ``default``
``agent_id``              ``AGENTWATCH_AGENT_ID``          ``default``
``topic``                 ``AGENTWATCH_TOPIC``             ``agentwatch.events``
``bootstrap_servers``     ``AGENTWATCH_BOOTSTRAP_SERVERS`` (none)
``queue_size``            ``AGENTWATCH_QUEUE_SIZE``        10000 events
``linger_ms``             ``AGENTWATCH_LINGER_MS``         50
``max_batch_events``      ``AGENTWATCH_MAX_BATCH_EVENTS``  500 events per record
``max_batch_bytes``       ``AGENTWATCH_MAX_BATCH_BYTES``   524288 (512 KiB) per record
``send_retries``          ``AGENTWATCH_SEND_RETRIES``      3 retries after a failed send
``retry_backoff_ms``      ``AGENTWATCH_RETRY_BACKOFF_MS``  100, doubled per retry (max 5 s)
``default_session_id``    ``AGENTWATCH_SESSION_ID``        a UUID per client
========================  ===============================  ======================
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from agentwatch.schemas import ConfigError

__all__ = ["ENV", "ProducerSettings"]

#: Setting name -> environment variable it falls back to.
ENV: Final[Mapping[str, str]] = {
    "tenant_id": "AGENTWATCH_TENANT_ID",
    "agent_id": "AGENTWATCH_AGENT_ID",
    "topic": "AGENTWATCH_TOPIC",
    "bootstrap_servers": "AGENTWATCH_BOOTSTRAP_SERVERS",
    "queue_size": "AGENTWATCH_QUEUE_SIZE",
    "linger_ms": "AGENTWATCH_LINGER_MS",
    "max_batch_events": "AGENTWATCH_MAX_BATCH_EVENTS",
    "max_batch_bytes": "AGENTWATCH_MAX_BATCH_BYTES",
    "send_retries": "AGENTWATCH_SEND_RETRIES",
    "retry_backoff_ms": "AGENTWATCH_RETRY_BACKOFF_MS",
    "default_session_id": "AGENTWATCH_SESSION_ID",
}

DEFAULT_TOPIC: Final = "agentwatch.events"

# (default, minimum, maximum) of the integer settings.
_INT_BOUNDS: Final[Mapping[str, tuple[int, int, int]]] = {
    "queue_size": (10_000, 1, 10_000_000),
    "linger_ms": (50, 0, 60_000),
    "max_batch_events": (500, 1, 100_000),
    "max_batch_bytes": (512 * 1024, 1024, 64 * 1024 * 1024),
    "send_retries": (3, 0, 100),
    "retry_backoff_ms": (100, 0, 60_000),
}

_TOPIC_RE: Final = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


@dataclass(frozen=True, slots=True)
class ProducerSettings:
    """The resolved, validated settings of one :class:`~agentwatch.producer.Agentwatch`."""

    tenant_id: str = "default"
    agent_id: str = "default"
    topic: str = DEFAULT_TOPIC
    bootstrap_servers: str | None = None
    queue_size: int = 10_000
    linger_ms: int = 50
    max_batch_events: int = 500
    max_batch_bytes: int = 512 * 1024
    send_retries: int = 3
    retry_backoff_ms: int = 100
    default_session_id: str | None = None
    send_raw_tool_args: bool = False

    @classmethod
    def resolve(
        cls,
        *,
        tenant_id: str | None = None,
        agent_id: str | None = None,
        topic: str | None = None,
        bootstrap_servers: str | None = None,
        queue_size: int | None = None,
        linger_ms: int | None = None,
        max_batch_events: int | None = None,
        max_batch_bytes: int | None = None,
        send_retries: int | None = None,
        retry_backoff_ms: int | None = None,
        default_session_id: str | None = None,
        send_raw_tool_args: bool = False,
        environ: Mapping[str, str] | None = None,
    ) -> ProducerSettings:
        """Arguments first, then ``environ`` (``os.environ`` by default), then defaults."""
        env = os.environ if environ is None else environ
        if not isinstance(send_raw_tool_args, bool):
            raise ConfigError(
                f"send_raw_tool_args must be True or False, got {send_raw_tool_args!r}"
            )
        return cls(
            tenant_id=_tenant(_text("tenant_id", tenant_id, env, "default")),
            agent_id=_bounded(_text("agent_id", agent_id, env, "default"), "agent_id", 256),
            topic=_topic(_text("topic", topic, env, DEFAULT_TOPIC)),
            bootstrap_servers=_optional_text("bootstrap_servers", bootstrap_servers, env),
            queue_size=_int("queue_size", queue_size, env),
            linger_ms=_int("linger_ms", linger_ms, env),
            max_batch_events=_int("max_batch_events", max_batch_events, env),
            max_batch_bytes=_int("max_batch_bytes", max_batch_bytes, env),
            send_retries=_int("send_retries", send_retries, env),
            retry_backoff_ms=_int("retry_backoff_ms", retry_backoff_ms, env),
            default_session_id=_session(
                _optional_text("default_session_id", default_session_id, env)
            ),
            send_raw_tool_args=send_raw_tool_args,
        )


def _where(name: str, from_env: bool) -> str:
    return f"{ENV[name]} (setting {name})" if from_env else name


def _text(name: str, value: str | None, env: Mapping[str, str], default: str) -> str:
    got = _optional_text(name, value, env)
    return default if got is None else got


def _optional_text(name: str, value: str | None, env: Mapping[str, str]) -> str | None:
    if value is not None:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
        return value.strip()
    raw = env.get(ENV[name], "").strip()
    return raw or None


def _tenant(value: str) -> str:
    _bounded(value, "tenant_id", 128)
    if "/" in value:
        raise ConfigError(
            f"tenant_id must not contain '/' (the record key is <tenant_id>/<session_id>), "
            f"got {value!r}"
        )
    return value


def _bounded(value: str, name: str, limit: int) -> str:
    if len(value) > limit:
        raise ConfigError(f"{name} must be at most {limit} characters, got {len(value)}")
    return value


def _session(value: str | None) -> str | None:
    return None if value is None else _bounded(value, "default_session_id", 256)


def _topic(value: str) -> str:
    if not _TOPIC_RE.match(value) or value in {".", ".."}:
        raise ConfigError(
            f"topic must be 1-249 characters of letters, digits, '.', '_' or '-', got {value!r}"
        )
    return value


def _int(name: str, value: int | None, env: Mapping[str, str]) -> int:
    default, low, high = _INT_BOUNDS[name]
    from_env = False
    if value is None:
        raw = env.get(ENV[name], "").strip()
        if not raw:
            return default
        from_env = True
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{_where(name, from_env)} must be an integer, got {raw!r}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{_where(name, from_env)} must be between {low} and {high}, got {value}")
    return value
