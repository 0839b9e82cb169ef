"""Producer settings: constructor argument, else environment variable, else default.

Every value is validated once, at construction, by the one settings loader
(:func:`agentwatch.schemas.settings.load`); a bad one raises
:class:`~agentwatch.schemas.ConfigError` naming the argument or the variable it came
from (``AGENTWATCH_LINGER_MS: 'abc' is not a valid int``). This is the only place the
producer raises on purpose.

========================  ===============================  ======================
setting                   environment variable             default
========================  ===============================  ======================
``tenant_id``             ``AGENTWATCH_TENANT_ID``         ``default``
``agent_id``              ``AGENTWATCH_AGENT_ID``          ``default``
``topic``                 ``AGENTWATCH_TOPIC``             ``agentwatch.events``
``bootstrap_servers``     ``AGENTWATCH_BOOTSTRAP_SERVERS`` (none)
                          else ``KAFKA_BOOTSTRAP_SERVERS``
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

``bootstrap_servers`` falls back to ``KAFKA_BOOTSTRAP_SERVERS``, the variable of the
services (and of ``KAFKA_SECURITY_PROTOCOL`` and the other security settings every
client reads), so one environment serves an agent and a service alike; the producer's
own variable wins when both are set. A client given ``transport=`` ignores both.

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

from agentwatch.schemas.settings import CONTROL_TOPIC, EVENTS_TOPIC, SettingError, load

__all__ = ["ENV", "ENV_FALLBACKS", "ProducerSettings"]

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

#: Setting name -> more variables read, in order, when its own is unset.
ENV_FALLBACKS: Final[Mapping[str, tuple[str, ...]]] = {
    "bootstrap_servers": ("KAFKA_BOOTSTRAP_SERVERS",),
}

#: Accepted values of ``compression`` (``auto`` picks the best codec installed).
COMPRESSIONS: Final = ("auto", "zstd", "lz4", "gzip", "none")
_ACKS: Final = ("all", "1", "0")

# the producer's defaults, under the names its modules import
DEFAULT_TOPIC: Final = EVENTS_TOPIC
DEFAULT_CONTROL_TOPIC: Final = CONTROL_TOPIC

# (minimum, maximum) of the integer settings.
_INT_BOUNDS: Final[Mapping[str, tuple[int, int]]] = {
    "queue_size": (1, 10_000_000),
    "linger_ms": (0, 60_000),
    "max_batch_events": (1, 100_000),
    # at most 8 MiB: with one event of up to ~3.5 MB past it, a record stays under the
    # decoders' 16 MiB limit (agentwatch.schemas.MAX_RECORD_BYTES)
    "max_batch_bytes": (1024, 8 * 1024 * 1024),
    "retry_backoff_ms": (0, 60_000),
    "spool_max_bytes": (1 << 20, 1 << 40),
}
# text settings -> longest value (None: no limit); all must be non-empty when given
_TEXTS: Final[Mapping[str, int | None]] = {
    "tenant_id": 128, "agent_id": 256, "topic": None, "bootstrap_servers": None,
    "default_session_id": 256, "compression": None, "acks": None, "spool_dir": None,
    "control_topic": None,
}
_FLAGS: Final = ("send_raw_tool_args", "enable_idempotence", "control", "control_fail_closed")

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

    def __post_init__(self) -> None:
        for name, limit in _TEXTS.items():
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, str):
                raise SettingError(name, f"{value!r} is not a string")
            if not value.strip():
                raise SettingError(name, "must not be empty")
            value = value.strip()
            if limit is not None and len(value) > limit:
                raise SettingError(name, f"must be at most {limit} characters, got {len(value)}")
            object.__setattr__(self, name, value)
        for name in _FLAGS:
            if not isinstance(getattr(self, name), bool):
                raise SettingError(name, f"{getattr(self, name)!r} is not True or False")
        for name, (low, high) in _INT_BOUNDS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise SettingError(name, f"{value!r} is not a valid int")
            if not low <= value <= high:
                raise SettingError(name, f"{value} is not between {low} and {high}")
        if "/" in self.tenant_id:
            raise SettingError(
                "tenant_id", f"{self.tenant_id!r} contains '/' (the record key is "
                "<tenant_id>/<session_id>)")
        for name in ("topic", "control_topic"):
            value = getattr(self, name)
            if not _TOPIC_RE.match(value) or value in {".", ".."}:
                raise SettingError(name, f"{value!r} is not 1-249 characters of letters, "
                                   "digits, '.', '_' or '-'")
        for name, allowed in (("compression", COMPRESSIONS), ("acks", _ACKS)):
            value = getattr(self, name).lower()
            if value not in allowed:
                raise SettingError(
                    name, f"{getattr(self, name)!r} is not one of {', '.join(allowed)}")
            object.__setattr__(self, name, value)

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
        given = {
            "tenant_id": tenant_id, "agent_id": agent_id, "topic": topic,
            "bootstrap_servers": bootstrap_servers, "queue_size": queue_size,
            "linger_ms": linger_ms, "max_batch_events": max_batch_events,
            "max_batch_bytes": max_batch_bytes, "retry_backoff_ms": retry_backoff_ms,
            "default_session_id": default_session_id,
            "send_raw_tool_args": send_raw_tool_args, "compression": compression,
            "acks": acks if acks is None or isinstance(acks, str) else str(acks),
            "enable_idempotence": enable_idempotence, "spool_dir": spool_dir,
            "spool_max_bytes": spool_max_bytes, "control": control,
            "control_topic": control_topic, "control_fail_closed": control_fail_closed,
        }
        return load(cls, ENV, environ, given, fallbacks=ENV_FALLBACKS, given_as=str,
                    parse_given=False)
