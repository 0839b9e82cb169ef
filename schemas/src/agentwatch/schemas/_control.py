"""The control contract: halt and resume records on the compacted topic ``agentwatch.control``.

A control record says that a scope is halted (``action: halt``) or runs again
(``action: resume``). Who writes them: the worker (and the embedded pipeline) when an
alert of a rule with ``action: halt`` fires or resolves, and operators through
``agentwatch control halt|resume``. Who reads them: producers with ``control=True``
(the agent stops on ``AgentHalted``), ``agentwatch control list`` and the sink (the
``control_log`` audit table).

Key: the scope it halts, as :func:`control_key` spells it: ``tenant:<tenant>``,
``agent:<tenant>/<agent>`` or ``session:<tenant>/<session>``. The scope name leads the
key so an agent and a session with the same id never share one (compaction would keep
only the later of the two).

Value: one JSON object, :class:`ControlRecord`. Clearing a halt writes a ``resume``
record, then a tombstone (the key with a null value): the resume record is what the
audit table and a follower that is reading at that moment see; the tombstone lets
compaction forget the key altogether, so the topic holds only what is halted now (plus
keys whose tombstones are younger than the topic's ``delete.retention.ms``). A reader
treats a tombstone and a resume record alike: the scope is no longer halted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Self

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from agentwatch.schemas._alert import Alert, AlertScope, AlertState
from agentwatch.schemas._time import format_ts, utc_now
from agentwatch.schemas.settings import CONTROL_TOPIC

__all__ = [
    "CONTROL_TOPIC",
    "ControlAction",
    "ControlRecord",
    "control_key",
    "decode_control",
    "encode_control",
]

# CONTROL_TOPIC (agentwatch.schemas.settings, with the other topic names): the compacted
# topic the control records live on (one partition: every follower reads all of it, in
# order).


class ControlAction(StrEnum):
    HALT = "halt"
    RESUME = "resume"


def control_key(scope: AlertScope, tenant_id: str, agent_id: str | None = None,
                session_id: str | None = None) -> str:
    """The record key of a scope: ``tenant:T``, ``agent:T/A`` or ``session:T/S``."""
    if scope is AlertScope.TENANT:
        return f"tenant:{tenant_id}"
    if scope is AlertScope.AGENT:
        return f"agent:{tenant_id}/{agent_id}"
    return f"session:{tenant_id}/{session_id}"


class ControlRecord(BaseModel):
    """One halt or resume of a scope (tenant, one agent of it, or one session of it)."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="agentwatch control record")

    action: ControlAction
    scope: AlertScope
    tenant_id: str = Field(min_length=1)
    agent_id: str | None = Field(default=None, description="Set when the scope is an agent.")
    session_id: str | None = Field(default=None, description="Set when the scope is a session.")
    alert_id: str | None = Field(default=None,
                                 description="The alert that halted it; null for an operator.")
    reason: str = Field(description="One human sentence.")
    by: str = Field(min_length=1, description="The alert's rule name, or the operator's name.")
    ts: AwareDatetime = Field(description="When: the alert's event time, or the operator's "
                                          "clock.")

    @field_validator("ts", mode="after")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _ids_of_scope(self) -> Self:
        if self.scope is AlertScope.SESSION and not self.session_id:
            raise ValueError("scope session needs session_id")
        if self.scope is AlertScope.AGENT and not self.agent_id:
            raise ValueError("scope agent needs agent_id")
        return self

    @field_serializer("ts")
    def _ser_ts(self, value: datetime) -> str:
        return format_ts(value)

    @property
    def key(self) -> str:
        return control_key(self.scope, self.tenant_id, self.agent_id, self.session_id)

    @property
    def scope_label(self) -> str:
        """``tenant T``, ``agent T/A`` or ``session T/S``: for people."""
        return self.key.replace(":", " ", 1)

    @classmethod
    def from_alert(cls, alert: Alert) -> ControlRecord:
        """The halt (firing) or resume (resolved) record of an alert of a halt rule."""
        return cls(
            action=ControlAction.HALT if alert.state is AlertState.FIRING
            else ControlAction.RESUME,
            scope=alert.scope,
            tenant_id=alert.tenant_id,
            agent_id=alert.agent_id if alert.scope is AlertScope.AGENT else None,
            session_id=alert.session_id if alert.scope is AlertScope.SESSION else None,
            alert_id=alert.alert_id,
            reason=alert.reason,
            by=alert.rule,
            ts=alert.ts,
        )

    @classmethod
    def by_operator(cls, action: ControlAction, *, tenant_id: str, agent_id: str | None = None,
                    session_id: str | None = None, reason: str, by: str,
                    ts: datetime | None = None) -> ControlRecord:
        """An operator's halt or resume of a tenant, one of its agents or one session."""
        scope = (AlertScope.SESSION if session_id else AlertScope.AGENT if agent_id
                 else AlertScope.TENANT)
        return cls(action=action, scope=scope, tenant_id=tenant_id,
                   agent_id=agent_id if scope is AlertScope.AGENT else None,
                   session_id=session_id, reason=reason, by=by, ts=ts or utc_now())


def encode_control(record: ControlRecord) -> tuple[bytes, bytes]:
    """``(key, value)`` of the record on the control topic."""
    return record.key.encode(), record.__pydantic_serializer__.to_json(record)


def decode_control(value: bytes) -> ControlRecord:
    """A control record from its JSON value; ValueError (naming the field) when it is not one."""
    try:
        return ControlRecord.model_validate(orjson.loads(value))
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"control record: not JSON ({exc})") from None
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"]) or "record"
        raise ValueError(f"control record: `{where}`: {err['msg']}") from None
