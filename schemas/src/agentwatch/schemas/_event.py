"""The event contract, schema_version 1 (see DESIGN.md, "Event")."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Final

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_serializer,
)

from agentwatch.schemas._time import format_ts

__all__ = [
    "MAX_ATTRIBUTES",
    "MAX_ATTRIBUTE_TEXT",
    "MAX_INT",
    "MIN_INT",
    "OPERATION_KINDS",
    "SCHEMA_VERSION",
    "TS_MAX",
    "TS_MIN",
    "Event",
    "EventKind",
    "EventStatus",
]

SCHEMA_VERSION: Final = 1


class EventKind(StrEnum):
    LLM_CALL = "llm_call"
    TOOL_CALL = "tool_call"
    AGENT_STEP = "agent_step"
    SESSION_START = "session_start"
    SESSION_END = "session_end"
    HANDOFF = "handoff"
    GUARDRAIL = "guardrail"
    CUSTOM = "custom"
    SCORE = "score"


class EventStatus(StrEnum):
    OK = "ok"
    ERROR = "error"


#: The kinds that are an operation an agent performs (counted by the steps rule).
OPERATION_KINDS: Final = frozenset({EventKind.LLM_CALL, EventKind.TOOL_CALL})

_HEX = "[0-9a-fA-F]"
UUID_PATTERN: Final = rf"^{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}$"

# Input limits (README, "Input limits"): every number and string of an event has a bound,
# so a hostile record cannot make a decoder, the detection core or the store misbehave.
#: integers (token counts, attribute values) are 64-bit signed, what every JSON reader
#: down the line holds (orjson makes a float of an integer past 64 bits); an attribute
#: integer past it is taken as a float, as pydantic's union does
MIN_INT: Final = -(1 << 63)
MAX_INT: Final = (1 << 63) - 1
#: ``ts`` must lie in the range of ClickHouse's DateTime64 (the events table's ``ts``)
TS_MIN: Final = datetime(1900, 1, 1, tzinfo=UTC)
TS_MAX: Final = datetime(2299, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
#: attributes per event (OpenTelemetry's default attribute count limit)
MAX_ATTRIBUTES: Final = 128
#: characters of an attribute's string value (the producer's raw tool arguments cut)
MAX_ATTRIBUTE_TEXT: Final = 4096


def _in_range(value: datetime) -> datetime:
    if not TS_MIN <= value <= TS_MAX:
        raise ValueError(
            "timestamp out of range: must be between 1900-01-01T00:00:00Z and "
            "2299-12-31T23:59:59.999999Z"
        )
    return value


Id = Annotated[str, StringConstraints(min_length=1, max_length=256)]
# A tenant id may not contain "/": the Kafka key is "<tenant_id>/<session_id>".
TenantId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^/]+$")]
ShortText = Annotated[str, StringConstraints(max_length=256)]
Tokens = Annotated[int, Field(ge=0, le=MAX_INT)]
AttributeValue = (
    Annotated[str, StringConstraints(max_length=MAX_ATTRIBUTE_TEXT)]
    | Annotated[int, Field(ge=MIN_INT, le=MAX_INT)]
    | Annotated[float, Field(allow_inf_nan=False)]
    | bool
)


class Event(BaseModel):
    """One thing an agent did. Required: event_id, ts, agent_id, session_id, kind.

    Validation is strict (no type coercion, unknown fields rejected) so that a
    typo such as ``input_token`` is an error, not a silently dropped number.
    """

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        frozen=False,
        use_enum_values=False,
        title="agentwatch event (schema_version 1)",
        ser_json_inf_nan="constants",
    )

    event_id: Annotated[str, StringConstraints(pattern=UUID_PATTERN)] = Field(
        description="UUID of this event; later stages deduplicate on it."
    )
    ts: Annotated[AwareDatetime, AfterValidator(_in_range)] = Field(
        description="Event time, RFC 3339 with an offset, e.g. 2026-11-20T09:00:01.250000Z "
        "(serialized in UTC; a naive time is an error), between 1900-01-01T00:00:00Z and "
        "2299-12-31T23:59:59.999999Z."
    )
    agent_id: Id = Field(description="Which agent (gen_ai.agent.id).")
    session_id: Id = Field(description="Which session / conversation (gen_ai.conversation.id).")
    kind: EventKind = Field(description="What happened.")
    # a strict int in [1, 1], not Literal[1]: pydantic lets JSON `true` pass for Literal[1]
    schema_version: Annotated[int, Field(ge=1, le=1, strict=True)] = Field(
        default=1, description="Contract version; only 1 exists."
    )
    tenant_id: TenantId = Field(default="default", description="Tenant; isolates all state.")
    trace_id: ShortText | None = None
    span_id: ShortText | None = None
    parent_span_id: ShortText | None = None
    name: ShortText | None = Field(
        default=None,
        description="Tool name for tool_call (gen_ai.tool.name); step or operation name otherwise.",
    )
    status: EventStatus = Field(default=EventStatus.OK)
    error_type: ShortText | None = Field(default=None, description="error.type when status=error.")
    model: ShortText | None = Field(default=None, description="gen_ai.request.model")
    provider: ShortText | None = Field(default=None, description="gen_ai.system / provider name")
    input_tokens: Tokens | None = None
    output_tokens: Tokens | None = None
    cached_input_tokens: Tokens | None = None
    reasoning_tokens: Tokens | None = None
    cost_usd: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = Field(
        default=None,
        description="Cost of this event; filled from the model price table when absent.",
    )
    duration_ms: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    tool_args_hash: ShortText | None = Field(
        default=None, description="Stable hash of the tool arguments (raw arguments are not sent)."
    )
    attributes: (
        Annotated[
            dict[Annotated[str, StringConstraints(max_length=256)], AttributeValue],
            Field(max_length=MAX_ATTRIBUTES),
        ]
        | None
    ) = Field(default=None, description="Free-form scalar attributes.")

    @field_serializer("ts")
    def _ser_ts(self, value: datetime) -> str:
        return format_ts(value)

    @property
    def key(self) -> str:
        """The Kafka record key: ``<tenant_id>/<session_id>`` (one session -> one partition)."""
        return f"{self.tenant_id}/{self.session_id}"
