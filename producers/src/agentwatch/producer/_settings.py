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
``retry_backoff_ms``      ``AGENTWATCH_RETRY_BACKOFF_MS``  100, doubled per retry (max 5 s)
``default_session_id``    ``AGENTWATCH_SESSION_ID``        a UUID per client
``compression``           ``AGENTWATCH_COMPRESSION``       ``auto``: zstd, else lz4, else none
``acks``                  ``AGENTWATCH_ACKS``              ``all`` (or ``1``, ``0``)
``enable_idempotence``    ``AGENTWATCH_IDEMPOTENCE``       ``true``
``spool_dir``             ``AGENTWATCH_SPOOL_DIR``         (none: buffer in memory)
``spool_max_bytes``       ``AGENTWATCH_SPOOL_MAX_BYTES``   1073741824 (1 GiB)
``control``               ``AGENTWATCH_CONTROL``           ``false``: do not follow halts
``control_topic``         ``AGENTWATCH_CONTROL_TOPIC``     ``agentwatch.control``
``control_fail_closed``   ``AGENTWATCH_CONTROL_FAIL_CLOSED`` ``false``: run when unreachable
========================  ===============================  ======================

Undelivered events are retried for as long as it takes; what bounds them is
``queue_size`` (events waiting in the queue, plus as many again in packed records
waiting for delivery) or, with ``spool_dir``, ``spool_max_bytes`` on disk.
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
    "retry_backoff_ms": "AGENTWATCH_RETRY_BACKOFF_MS",
    "default_session_id": "AGENTWATCH_SESSION_ID",
    "compression": "AGENTWATCH_COMPRESSION",
    "acks": "AGENTWATCH_ACKS",
    "enable_idempotence": "AGENTWATCH_IDEMPOTENCE",
    "spool_dir": "AGENTWATCH_SPOOL_DIR",
    "spool_max_bytes": "AGENTWATCH_SPOOL_MAX_BYTES",
    "control": "AGENTWATCH_CONTROL",
    "control_topic": "AGENTWATCH_CONTROL_TOPIC",
    "control_fail_closed": "AGENTWATCH_CONTROL_FAIL_CLOSED",
}

#: Accepted values of ``compression`` (``auto`` picks the best codec installed).
COMPRESSIONS: Final = ("auto", "zstd", "lz4", "gzip", "none")
_ACKS: Final = ("all", "1", "0")
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})

DEFAULT_TOPIC: Final = "agentwatch.events"
DEFAULT_CONTROL_TOPIC: Final = "agentwatch.control"

# (default, minimum, maximum) of the integer settings.
_INT_BOUNDS: Final[Mapping[str, tuple[int, int, int]]] = {
    "queue_size": (10_000, 1, 10_000_000),
    "linger_ms": (50, 0, 60_000),
    "max_batch_events": (500, 1, 100_000),
    # at most 8 MiB: with one event of up to ~3.5 MB past it, a record stays under the
    # decoders' 16 MiB limit (agentwatch.schemas.MAX_RECORD_BYTES)
    "max_batch_bytes": (512 * 1024, 1024, 8 * 1024 * 1024),
    "retry_backoff_ms": (100, 0, 60_000),
    "spool_max_bytes": (1 << 30, 1 << 20, 1 << 40),
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
    retry_backoff_ms: int = 100
    default_session_id: str | None = None
    send_raw_tool_args: bool = False
    compression: str = "auto"
    acks: str = "all"
    enable_idempotence: bool = True
    spool_dir: str | None = None
    spool_max_bytes: int = 1 << 30
    control: bool = False
    control_topic: str = DEFAULT_CONTROL_TOPIC
    control_fail_closed: bool = False

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
        retry_backoff_ms: int | None = None,
        default_session_id: str | None = None,
        send_raw_tool_args: bool = False,
        compression: str | None = None,
        acks: str | int | None = None,
        enable_idempotence: bool | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
        spool_max_bytes: int | None = None,
        control: bool | None = None,
        control_topic: str | None = None,
        control_fail_closed: bool | None = None,
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
            retry_backoff_ms=_int("retry_backoff_ms", retry_backoff_ms, env),
            default_session_id=_session(
                _optional_text("default_session_id", default_session_id, env)
            ),
            send_raw_tool_args=send_raw_tool_args,
            compression=_choice("compression", compression, env, COMPRESSIONS, "auto"),
            acks=_choice("acks", None if acks is None else str(acks), env, _ACKS, "all"),
            enable_idempotence=_flag("enable_idempotence", enable_idempotence, env, True),
            spool_dir=_optional_text(
                "spool_dir", None if spool_dir is None else os.fspath(spool_dir), env
            ),
            spool_max_bytes=_int("spool_max_bytes", spool_max_bytes, env),
            control=_flag("control", control, env, False),
            control_topic=_topic(_text("control_topic", control_topic, env,
                                       DEFAULT_CONTROL_TOPIC), "control_topic"),
            control_fail_closed=_flag("control_fail_closed", control_fail_closed, env, False),
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


def _topic(value: str, name: str = "topic") -> str:
    if not _TOPIC_RE.match(value) or value in {".", ".."}:
        raise ConfigError(
            f"{name} must be 1-249 characters of letters, digits, '.', '_' or '-', got {value!r}"
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


def _choice(
    name: str, value: str | None, env: Mapping[str, str], allowed: tuple[str, ...], default: str
) -> str:
    from_env = value is None
    got = _optional_text(name, value, env)
    if got is None:
        return default
    if got.lower() not in allowed:
        raise ConfigError(
            f"{_where(name, from_env)} must be one of {', '.join(allowed)}, got {got!r}"
        )
    return got.lower()


def _flag(name: str, value: bool | None, env: Mapping[str, str], default: bool) -> bool:
    if value is not None:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be True or False, got {value!r}")
        return value
    raw = env.get(ENV[name], "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{_where(name, True)} must be true or false, got {raw!r}")
