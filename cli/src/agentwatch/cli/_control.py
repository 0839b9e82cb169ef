"""``agentwatch control halt | resume | list``: operators halt and resume agents on Kafka
(and where ``agentwatch alerts ack`` writes, :class:`AckSettings`).

A halt or resume is one record on the compacted control topic (``agentwatch.control``,
created compacted when missing, as the worker does), keyed by its scope; a resume is
followed by a tombstone so compaction forgets the key. ``list`` reads the topic from its
beginning to its current end and prints what is halted now. Producers with
``control=True`` follow the same topic; the sink stores every record in ``control_log``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import getpass
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from aiokafka.errors import KafkaError

from agentwatch.schemas import (
    ConfigError,
    ControlAction,
    ControlRecord,
    TransportError,
    decode_control,
    encode_control,
)
from agentwatch.schemas.kafka_security import KafkaSecurity
from agentwatch.schemas.settings import (
    ACKS_TOPIC,
    CONTROL_TOPIC,
    DEFAULT_BOOTSTRAP_SERVERS,
    SettingError,
    load,
)

__all__ = [
    "ACK_ENV_VARS",
    "CONTROL_ENV_VARS",
    "AckSettings",
    "ControlSettings",
    "read_halts",
    "write_control",
]

_TIMEOUT_S: Final = 15.0
#: what connecting to an unreachable or wrong broker raises
_UNREACHABLE: Final = (KafkaError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class ControlSettings:
    bootstrap_servers: str = DEFAULT_BOOTSTRAP_SERVERS
    topic: str = CONTROL_TOPIC
    replication_factor: int = 1
    """Of the control topic when ``agentwatch control`` creates it (as the worker would)."""
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)

    def __post_init__(self) -> None:
        if self.replication_factor < 1:
            raise SettingError("replication_factor", f"{self.replication_factor} is not >= 1")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *,
                 bootstrap_servers: str | None = None) -> ControlSettings:
        settings = load(cls, CONTROL_ENV_VARS, env, {"bootstrap_servers": bootstrap_servers})
        return dataclasses.replace(settings, kafka_security=KafkaSecurity.from_env(env))


#: setting -> environment variable (the worker's names: one deployment, one set)
CONTROL_ENV_VARS: Final[dict[str, str]] = {
    "bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
    "topic": "AGENTWATCH_CONTROL_TOPIC",
    "replication_factor": "AGENTWATCH_REPLICATION_FACTOR",
}


@dataclass(frozen=True, slots=True)
class AckSettings:
    """Where ``agentwatch alerts ack`` writes an acknowledgement."""

    bootstrap_servers: str = DEFAULT_BOOTSTRAP_SERVERS
    topic: str = ACKS_TOPIC

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *,
                 bootstrap_servers: str | None = None, topic: str | None = None) -> AckSettings:
        return load(cls, ACK_ENV_VARS, env, {"bootstrap_servers": bootstrap_servers,
                                             "topic": topic})


ACK_ENV_VARS: Final[dict[str, str]] = {
    "bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
    "topic": "AGENTWATCH_ACKS_TOPIC",
}


def operator_record(action: ControlAction, *, tenant: str, agent: str | None,
                    session: str | None, reason: str | None, by: str | None) -> ControlRecord:
    """The operator's record; ConfigError (naming the option) for a bad combination."""
    if not tenant.strip():
        raise ConfigError("--tenant: must not be empty")
    if agent is not None and session is not None:
        raise ConfigError("--agent and --session: give one of them (a session is halted "
                          "on its own; --agent halts every session of the agent)")
    for option, value in (("--agent", agent), ("--session", session), ("--by", by)):
        if value is not None and not value.strip():
            raise ConfigError(f"{option}: must not be empty")
    if action is ControlAction.HALT and not (reason and reason.strip()):
        raise ConfigError('--reason: say why (e.g. --reason "burning money in a loop")')
    return ControlRecord.by_operator(
        action, tenant_id=tenant, agent_id=agent, session_id=session,
        reason=(reason or "resumed by an operator").strip(), by=by or _operator())


def _operator() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "operator"


def _unreachable(settings: ControlSettings, exc: BaseException) -> TransportError:
    return TransportError(f"cannot reach Kafka at {settings.bootstrap_servers} "
                          f"(KAFKA_BOOTSTRAP_SERVERS): {exc or type(exc).__name__}")


async def _ensure_topic(settings: ControlSettings) -> None:
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415
    from aiokafka.errors import TopicAlreadyExistsError  # noqa: PLC0415

    from agentwatch.processors.worker.run import control_topic_spec  # noqa: PLC0415

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers,
                                request_timeout_ms=int(_TIMEOUT_S * 1000),
                                **settings.kafka_security.client_options())
    try:
        try:
            await asyncio.wait_for(admin.start(), _TIMEOUT_S)
        except _UNREACHABLE as exc:
            raise _unreachable(settings, exc) from None
        if settings.topic not in set(await admin.list_topics()):
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([control_topic_spec(settings.topic,
                                                              settings.replication_factor)])
    finally:
        await admin.close()


async def _write(settings: ControlSettings, record: ControlRecord) -> None:
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415

    await _ensure_topic(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all",
                                enable_idempotence=True,
                                request_timeout_ms=int(_TIMEOUT_S * 1000),
                                **settings.kafka_security.client_options())
    try:
        await asyncio.wait_for(producer.start(), _TIMEOUT_S)
    except _UNREACHABLE as exc:
        await producer.stop()
        raise _unreachable(settings, exc) from None
    try:
        key, value = encode_control(record)
        await producer.send_and_wait(settings.topic, value, key=key)
        if record.action is ControlAction.RESUME:  # then let compaction forget the key
            await producer.send_and_wait(settings.topic, None, key=key)
    finally:
        await producer.stop()


def write_control(settings: ControlSettings, record: ControlRecord) -> None:
    """Write ``record`` (and, for a resume, its tombstone) and wait for the broker's acks."""
    asyncio.run(_write(settings, record))


async def _read(settings: ControlSettings) -> dict[str, ControlRecord]:
    from aiokafka import AIOKafkaConsumer  # noqa: PLC0415

    from agentwatch.producer.control import assign_topic  # noqa: PLC0415

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                request_timeout_ms=int(_TIMEOUT_S * 1000),
                                **settings.kafka_security.client_options())
    try:
        try:
            await asyncio.wait_for(consumer.start(), _TIMEOUT_S)
        except _UNREACHABLE as exc:
            raise _unreachable(settings, exc) from None
        try:
            tps = await assign_topic(consumer, settings.topic)
        except LookupError:
            return {}  # never written to: nothing is halted
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        halts: dict[str, ControlRecord] = {}
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for messages in batches.values():
                for message in messages:
                    _apply(halts, message.key, message.value)
        return halts
    finally:
        await consumer.stop()


def _apply(halts: dict[str, ControlRecord], key: bytes | None, value: bytes | None) -> None:
    if value is None:
        if key is not None:
            halts.pop(key.decode(errors="replace"), None)
        return
    try:
        record = decode_control(value)
    except ValueError:
        return  # not ours to judge here: the followers log it
    if record.action is ControlAction.HALT:
        halts[record.key] = record
    else:
        halts.pop(record.key, None)


def read_halts(settings: ControlSettings, tenant: str | None = None) -> list[ControlRecord]:
    """What is halted now (of ``tenant``, or of every tenant), oldest first."""
    halts = asyncio.run(_read(settings))
    return sorted((h for h in halts.values() if tenant is None or h.tenant_id == tenant),
                  key=lambda h: h.ts)


def halt_row(halt: ControlRecord) -> dict[str, Any]:
    """One line of ``control list``."""
    return {"scope": halt.scope_label, "by": halt.by, "reason": halt.reason,
            "since": halt.ts, "alert_id": halt.alert_id}
