"""The alert contract (webhook body, alerts topic, alerts table)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer, field_validator

from agentwatch.schemas._time import format_ts

__all__ = ["Alert", "AlertScope", "AlertState", "AlertType", "Severity"]


class AlertType(StrEnum):
    COST = "cost"
    ERROR_RATE = "error_rate"
    RUNAWAY_LOOP = "runaway_loop"
    BUDGET = "budget"
    LATENCY = "latency"
    SCORE = "score"
    TOOL_POLICY = "tool_policy"
    GUARDRAIL = "guardrail"


class AlertState(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertScope(StrEnum):
    SESSION = "session"
    AGENT = "agent"
    TENANT = "tenant"


class Alert(BaseModel):
    """One alert state change. ``alert_id`` is stable: the firing and the resolution
    of one episode share it, and every runtime (replay, worker, embedded) derives the
    same id from the same events, so receivers can deduplicate on
    ``(alert_id, state)``."""

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        frozen=True,
        title="agentwatch alert",
    )

    alert_id: str = Field(description="Stable id of this alert episode (UUID form).")
    rule: str = Field(description="Name of the rule in the rules file, e.g. session_cost.")
    type: AlertType
    state: AlertState
    severity: Severity
    scope: AlertScope
    key: str = Field(description="The scoped entity: session id, agent id or tenant id.")
    tenant_id: str
    agent_id: str | None = Field(default=None, description="Set when scoped to one agent/session.")
    session_id: str | None = Field(default=None, description="Set when scoped to one session.")
    value: float = Field(description="Measured value (USD, error share, repeat or step count).")
    threshold: float
    window_s: int | None = Field(description="Window length; null for whole-session rules.")
    ts: AwareDatetime = Field(description="Event time at which the state changed.")
    reason: str = Field(description="One human sentence.")
    event_ids: Annotated[list[str], Field(max_length=50)] = Field(
        default_factory=list, description="A sample of contributing events."
    )

    @field_validator("ts", mode="after")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        try:
            return value.astimezone(UTC)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00: a ValidationError, not a crash
            raise ValueError("timestamp out of range: not a time in UTC") from None

    @field_serializer("ts")
    def _ser_ts(self, value: datetime) -> str:
        return format_ts(value)
