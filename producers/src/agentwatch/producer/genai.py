"""OpenTelemetry GenAI spans -> agentwatch events: one span, at most one event.

The mapping is pure (no OpenTelemetry import, no I/O): a :class:`GenAISpan` holds what
an OTLP span or an SDK ``ReadableSpan`` carries, already decoded to Python values, and
:func:`map_span` returns the event as the dict ``Agentwatch.emit()`` takes, or a
:class:`Skipped` saying why there is none. ``agentwatch otlp`` builds ``GenAISpan`` from
OTLP protobuf messages; an in-process span processor can build it from SDK spans.

The table (README, "Already on OpenTelemetry?", says the same):

================================  ===========================================================
event field                       from
================================  ===========================================================
kind                              ``gen_ai.operation.name``: chat, text_completion,
                                  generate_content, embeddings -> llm_call; execute_tool,
                                  retrieval -> tool_call; invoke_agent, invoke_workflow ->
                                  agent_step; handoff -> handoff; any other value
                                  (create_agent, vendor names)
                                  -> custom. Without it: tool_call when ``gen_ai.tool.name``
                                  is set, llm_call when a model or token count is, else custom
event_id                          UUID v5 of trace id + span id (a span exported twice is one
                                  event: the worker drops the duplicate)
ts / duration_ms                  span end time / end - start
trace_id, span_id, parent_span_id the span's ids, lowercase hex
session_id                        ``gen_ai.conversation.id`` (span, else resource), else the
                                  trace id
agent_id                          ``gen_ai.agent.id``, else ``gen_ai.agent.name`` (span, else
                                  resource), else the resource's ``service.name``, else the
                                  producer's default
tenant_id                         the receiver's tenant (a header), else the resource's
                                  ``agentwatch.tenant.id``, else the producer's default
name                              tool_call: ``gen_ai.tool.name`` (retrieval:
                                  ``gen_ai.data_source.id``); agent_step: ``gen_ai.agent.name``;
                                  handoff: ``gen_ai.handoff.to_agent``;
                                  llm_call and custom: ``gen_ai.operation.name``; else the span
                                  name
model                             ``gen_ai.request.model``, else ``gen_ai.response.model``
provider                          ``gen_ai.provider.name``, else ``gen_ai.system`` (deprecated)
input_tokens / output_tokens      ``gen_ai.usage.input_tokens`` / ``output_tokens`` (else the
                                  deprecated ``prompt_tokens`` / ``completion_tokens``)
cached_input_tokens               ``gen_ai.usage.cache_read.input_tokens``
reasoning_tokens                  ``gen_ai.usage.reasoning.output_tokens``
cost_usd                          not mapped: the producer prices model + tokens from its table
status / error_type               error when the span status is ERROR or ``error.type`` is set;
                                  ``error.type``, else the ``exception.type`` of the span's
                                  first ``exception`` event
tool_args_hash                    hash of ``gen_ai.tool.call.arguments`` (as parsed JSON, the
                                  producer's hash); the arguments themselves are not sent.
                                  OpenLLMetry's LangChain instrumentation wraps them in an
                                  envelope (``input_str``, ``inputs``, ``kwargs`` holding a
                                  per-call ``tool_call_id``): then only ``inputs`` (else
                                  ``input_str``) is hashed, so one tool called with the same
                                  arguments gives one hash
attributes                        ``gen_ai.operation.name``, ``otel.span.name``,
                                  ``gen_ai.response.model`` (when it differs from model),
                                  ``gen_ai.tool.call.id``, ``gen_ai.agent.name`` (when the
                                  agent id is another), ``gen_ai.handoff.from_agent`` /
                                  ``to_agent``, ``gen_ai.usage.cache_creation.
                                  input_tokens``, ``otel.status_description`` (errors)
================================  ===========================================================

Spans with no ``gen_ai.*`` attribute are skipped (``not_genai``). Nothing makes
``session_start`` / ``session_end`` events: no GenAI span says a session begins or ends.
``gen_ai.evaluation.result`` span events (evaluation scores) map, one each, to ``score``
events with :func:`map_evaluations` (README, "Evaluation scores: the score event"):
``name`` = ``gen_ai.evaluation.name``; ``gen_ai.evaluation.score.value`` (a number),
``.score.label``, ``gen_ai.evaluation.explanation``, ``gen_ai.response.id`` (the event's,
else the span's) and ``agentwatch.evaluation.source`` (if the event has it) as
attributes; ``ts`` = the event's time; ``parent_span_id`` = the span it is on (the scored
operation, as the conventions ask); session, agent and tenant as for the span's own event.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson

from agentwatch.producer._hashing import hash_tool_args

__all__ = [
    "EVALUATION_EVENT",
    "KIND_BY_OPERATION",
    "TENANT_RESOURCE_ATTRIBUTE",
    "GenAISpan",
    "SkipReason",
    "Skipped",
    "map_evaluation_record",
    "map_evaluations",
    "map_span",
]

#: ``gen_ai.operation.name`` -> event kind (any other value: ``custom``).
KIND_BY_OPERATION: Final[Mapping[str, str]] = {
    "chat": "llm_call",
    "text_completion": "llm_call",
    "generate_content": "llm_call",
    "embeddings": "llm_call",
    "execute_tool": "tool_call",
    "retrieval": "tool_call",
    "invoke_agent": "agent_step",
    "invoke_workflow": "agent_step",
    "handoff": "handoff",  # the OpenAI Agents SDK's instrumentation (one agent to another)
}

#: The span event (and log record) name of GenAI evaluation scores (:func:`map_evaluations`).
EVALUATION_EVENT: Final = "gen_ai.evaluation.result"
#: Resource attribute naming the tenant (a request header wins over it).
TENANT_RESOURCE_ATTRIBUTE: Final = "agentwatch.tenant.id"

# Event ids: UUID v5 of "<trace hex><span hex>" in this namespace (fixed forever: the
# same span must give the same id in every receiver and every release).
_EVENT_ID_NAMESPACE: Final = uuid.UUID("6f1c8a52-3b0e-5d7a-9c4e-0a7b1d2e3f40")
_SHORT_TEXT_MAX: Final = 256
_ID_MAX: Final = 256
_TENANT_MAX: Final = 128
_I64_MAX: Final = 2**63 - 1
_NS_PER_MS: Final = 1_000_000
_TS_END_NS: Final = 253_402_300_800 * 1_000_000_000  # 10000-01-01T00:00:00Z
_HEX_TRACE: Final = re.compile(r"^[0-9a-f]{32}$")
_HEX_SPAN: Final = re.compile(r"^[0-9a-f]{16}$")
_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16

SkipReason = Literal["not_genai", "invalid"]


@dataclass(frozen=True, slots=True)
class Skipped:
    """No event for this span: ``reason`` is ``not_genai`` (no ``gen_ai.*`` attribute) or
    ``invalid`` (it cannot make a valid event; ``detail`` says why)."""

    reason: SkipReason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class GenAISpan:
    """What the mapping reads from one span. Ids as lowercase hex (empty when absent),
    times in ns since the epoch (0 when absent), attribute values already decoded
    (str, bool, int, float, or a list/dict of them)."""

    trace_id: str
    span_id: str
    name: str
    start_ns: int
    end_ns: int
    parent_span_id: str = ""
    is_error: bool = False  # span status code ERROR
    status_message: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict)
    resource: Mapping[str, Any] = field(default_factory=dict)
    #: ``exception.type`` of the span's first ``exception`` event, if any
    exception_type: str | None = None
    #: the span's ``gen_ai.evaluation.result`` events: (time in ns, decoded attributes)
    evaluations: tuple[tuple[int, Mapping[str, Any]], ...] = ()


def map_span(span: GenAISpan, *, tenant_id: str | None = None) -> dict[str, Any] | Skipped:
    """The event of ``span`` as a dict for ``Agentwatch.emit()``, or why there is none.

    ``tenant_id`` (from a request header) wins over the resource's
    ``agentwatch.tenant.id``; without either the producer's tenant applies.
    """
    attrs = span.attributes
    if not any(key.startswith("gen_ai.") for key in attrs):
        return Skipped("not_genai")
    problem = _check_ids(span)
    if problem is not None:
        return Skipped("invalid", problem)
    end_ns = span.end_ns or span.start_ns
    if not 0 < end_ns < _TS_END_NS:
        return Skipped("invalid", f"end time {end_ns} ns is not a time between 1970 and 9999")

    operation = _text(attrs.get("gen_ai.operation.name"))
    kind = _kind(operation, attrs)
    event: dict[str, Any] = {
        "event_id": _event_id(span.trace_id + span.span_id),
        "ts": _format_ts_ns(end_ns),
        "kind": kind,
        "trace_id": span.trace_id,
        "span_id": span.span_id,
    }
    if span.parent_span_id:
        event["parent_span_id"] = span.parent_span_id
    if span.start_ns and span.end_ns >= span.start_ns:
        event["duration_ms"] = (span.end_ns - span.start_ns) / _NS_PER_MS

    problem = _identity(span, event, tenant_id)
    if problem is not None:
        return Skipped("invalid", problem)

    response_model = _text(attrs.get("gen_ai.response.model"))
    model = _text(attrs.get("gen_ai.request.model")) or response_model
    for key, text in (
        ("name", _name(kind, operation, span)),
        ("model", model),
        ("provider", _text(attrs.get("gen_ai.provider.name")) or _text(attrs.get("gen_ai.system"))),
    ):
        if text:
            event[key] = text[:_SHORT_TEXT_MAX]
    _tokens(attrs, event)
    _status(span, event)
    args = attrs.get("gen_ai.tool.call.arguments")
    if args is not None:
        event["tool_args_hash"] = hash_tool_args(_parsed_args(args))

    extra = _extra_attributes(span, operation, model, response_model, event)
    if extra:
        event["attributes"] = extra
    return event


#: score attributes copied from an evaluation event (the value is checked apart)
_SCORE_TEXT_KEYS: Final = ("gen_ai.evaluation.score.label", "gen_ai.evaluation.explanation",
                           "gen_ai.response.id", "agentwatch.evaluation.source")
_SCORE_VALUE_KEY: Final = "gen_ai.evaluation.score.value"


def map_evaluations(span: GenAISpan, *, tenant_id: str | None = None
                    ) -> list[dict[str, Any] | Skipped]:
    """One ``score`` event (or why not) per ``gen_ai.evaluation.result`` event of ``span``,
    in order. Each id is a UUID v5 of the span's ids and the event's index."""
    if not span.evaluations:
        return []
    problem = _check_ids(span)
    if problem is not None:
        return [Skipped("invalid", problem) for _ in span.evaluations]
    out: list[dict[str, Any] | Skipped] = []
    for index, (time_ns, attrs) in enumerate(span.evaluations):
        out.append(_evaluation(span, str(index), time_ns or span.end_ns or span.start_ns,
                               attrs, tenant_id))
    return out


#: what an evaluation log record's own attributes may say about whose operation it scores
_IDENTITY_KEYS: Final = ("gen_ai.conversation.id", "gen_ai.agent.id", "gen_ai.agent.name",
                         "gen_ai.response.id")


def map_evaluation_record(
    *, trace_id: str, span_id: str, time_ns: int, attributes: Mapping[str, Any],
    resource: Mapping[str, Any], tenant_id: str | None = None,
) -> dict[str, Any] | Skipped:
    """The ``score`` event of one ``gen_ai.evaluation.result`` **log record** (OTLP logs):
    the same mapping as a span event's, the record's trace and span ids naming the scored
    operation (either may be empty: then the session must come from
    ``gen_ai.conversation.id``, on the record or its resource). Its id is a UUID v5 of
    those ids, the evaluation's name and its time: a record exported twice is one event."""
    scored = GenAISpan(trace_id=trace_id, span_id=span_id, name="", start_ns=0,
                       end_ns=time_ns, resource=resource,
                       attributes={k: attributes[k] for k in _IDENTITY_KEYS if k in attributes})
    problem = _check_ids(scored, optional=True)
    if problem is not None:
        return Skipped("invalid", problem)
    name = _text(attributes.get("gen_ai.evaluation.name")) or ""
    return _evaluation(scored, f"log/{name}/{time_ns}", time_ns, attributes, tenant_id)


def _evaluation(span: GenAISpan, id_key: str, time_ns: int, attrs: Mapping[str, Any],
                tenant_id: str | None) -> dict[str, Any] | Skipped:
    """The score event of one evaluation of ``span``; ``id_key`` tells it from the span's
    other evaluations in its id."""
    name = _text(attrs.get("gen_ai.evaluation.name"))
    if name is None:
        return Skipped("invalid", "gen_ai.evaluation.result without gen_ai.evaluation.name")
    if not 0 < time_ns < _TS_END_NS:
        return Skipped("invalid", f"evaluation time {time_ns} ns is not between 1970 and 9999")
    event: dict[str, Any] = {
        "event_id": _event_id(f"{span.trace_id}{span.span_id}/evaluation/{id_key}"),
        "ts": _format_ts_ns(time_ns),
        "kind": "score",
        "name": name[:_SHORT_TEXT_MAX],
    }
    if span.trace_id:
        event["trace_id"] = span.trace_id
    if span.span_id:
        event["parent_span_id"] = span.span_id
    problem = _identity(span, event, tenant_id)
    if problem is not None:
        return Skipped("invalid", problem)
    scored: dict[str, Any] = {}
    value = attrs.get(_SCORE_VALUE_KEY)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        scored[_SCORE_VALUE_KEY] = float(value)
    for key in _SCORE_TEXT_KEYS:
        text = _text(attrs.get(key)) or (_text(span.attributes.get(key))
                                         if key == "gen_ai.response.id" else None)
        if text:
            scored[key] = text[:4096]
    event["attributes"] = scored
    return event


#: a handoff's agents (the OpenAI Agents SDK's instrumentation), kept as attributes
_HANDOFF_KEYS: Final = ("gen_ai.handoff.from_agent", "gen_ai.handoff.to_agent")


def _extra_attributes(
    span: GenAISpan, operation: str | None, model: str | None, response_model: str | None,
    event: dict[str, Any],
) -> dict[str, Any]:
    attrs = span.attributes
    extra: dict[str, Any] = {}
    if operation:
        extra["gen_ai.operation.name"] = operation
    if span.name:
        extra["otel.span.name"] = span.name
    if response_model and response_model != model:
        extra["gen_ai.response.model"] = response_model
    call_id = _text(attrs.get("gen_ai.tool.call.id"))
    if call_id:
        extra["gen_ai.tool.call.id"] = call_id
    agent_name = _text(attrs.get("gen_ai.agent.name"))
    if agent_name and agent_name != event.get("agent_id"):
        extra["gen_ai.agent.name"] = agent_name
    for key in _HANDOFF_KEYS:
        agent = _text(attrs.get(key))
        if agent:
            extra[key] = agent
    cache_creation = _count(attrs.get("gen_ai.usage.cache_creation.input_tokens"))
    if cache_creation is not None:
        extra["gen_ai.usage.cache_creation.input_tokens"] = cache_creation
    if event.get("status") == "error" and span.status_message:
        extra["otel.status_description"] = span.status_message
    return extra


def _check_ids(span: GenAISpan, *, optional: bool = False) -> str | None:
    """Why the span's ids are not valid, or None; ``optional``: an empty trace or span id
    is valid (an evaluation log record need not name a span)."""
    trace_id, span_id = span.trace_id, span.span_id
    if (trace_id or not optional) and (not _HEX_TRACE.match(trace_id)
                                       or trace_id == _ZERO_TRACE):
        return f"invalid trace id {trace_id[:40]!r} (16 bytes, not all zero)"
    if ((span_id or not optional) and not _HEX_SPAN.match(span_id)) or span_id == _ZERO_SPAN:
        return f"invalid span id {span_id[:40]!r} (8 bytes, not all zero)"
    if span.parent_span_id and not _HEX_SPAN.match(span.parent_span_id):
        return f"invalid parent span id {span.parent_span_id[:40]!r}"
    return None


def _kind(operation: str | None, attrs: Mapping[str, Any]) -> str:
    if operation is not None:
        return KIND_BY_OPERATION.get(operation, "custom")
    if _text(attrs.get("gen_ai.tool.name")):
        return "tool_call"
    if (
        _text(attrs.get("gen_ai.request.model"))
        or _text(attrs.get("gen_ai.response.model"))
        or any(key.startswith("gen_ai.usage.") for key in attrs)
    ):
        return "llm_call"
    return "custom"


def _name(kind: str, operation: str | None, span: GenAISpan) -> str | None:
    attrs = span.attributes
    if kind == "tool_call":
        named = _text(attrs.get("gen_ai.tool.name")) or _text(attrs.get("gen_ai.data_source.id"))
    elif kind == "agent_step":
        named = _text(attrs.get("gen_ai.agent.name"))
    elif kind == "handoff":
        named = _text(attrs.get("gen_ai.handoff.to_agent"))
    else:
        named = operation
    return named or span.name or operation


def _identity(span: GenAISpan, event: dict[str, Any], tenant_id: str | None) -> str | None:
    """session_id, agent_id and tenant_id (absent: the producer's defaults)."""
    attrs, resource = span.attributes, span.resource
    session = (
        _text(attrs.get("gen_ai.conversation.id"))
        or _text(resource.get("gen_ai.conversation.id"))
        or span.trace_id
    )
    if not session:  # an evaluation log record may name no span
        return "neither gen_ai.conversation.id nor a trace id names the session"
    if len(session) > _ID_MAX:
        return f"gen_ai.conversation.id longer than {_ID_MAX} characters"
    event["session_id"] = session
    agent = (
        _text(attrs.get("gen_ai.agent.id"))
        or _text(attrs.get("gen_ai.agent.name"))
        or _text(resource.get("gen_ai.agent.id"))
        or _text(resource.get("gen_ai.agent.name"))
        or _text(resource.get("service.name"))
    )
    if agent:
        if len(agent) > _ID_MAX:
            return f"agent id longer than {_ID_MAX} characters"
        event["agent_id"] = agent
    tenant = tenant_id or _text(resource.get(TENANT_RESOURCE_ATTRIBUTE))
    if tenant:
        if len(tenant) > _TENANT_MAX or "/" in tenant:
            return f"tenant {tenant[:40]!r}: at most {_TENANT_MAX} characters, no '/'"
        event["tenant_id"] = tenant
    return None


def _tokens(attrs: Mapping[str, Any], event: dict[str, Any]) -> None:
    for target, keys in (
        ("input_tokens", ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")),
        ("output_tokens", ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")),
        ("cached_input_tokens", ("gen_ai.usage.cache_read.input_tokens",)),
        ("reasoning_tokens", ("gen_ai.usage.reasoning.output_tokens",)),
    ):
        for key in keys:
            count = _count(attrs.get(key))
            if count is not None:
                event[target] = count
                break


def _status(span: GenAISpan, event: dict[str, Any]) -> None:
    error_type = _text(span.attributes.get("error.type"))
    if span.is_error or error_type:
        event["status"] = "error"
        error_type = error_type or span.exception_type
        if error_type:
            event["error_type"] = error_type[:_SHORT_TEXT_MAX]


def _text(value: Any) -> str | None:
    """A non-empty string attribute (other types: None)."""
    return value if isinstance(value, str) and value else None


def _count(value: Any) -> int | None:
    """A token count: an int (or an integral float) in [0, 2**63)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and 0 <= value <= _I64_MAX:
        return value
    return None


#: keys of OpenLLMetry's LangChain envelope around a tool's arguments (its ``kwargs`` hold
#: the per-call ``tool_call_id``, which would make every call's hash differ)
_LANGCHAIN_ENVELOPE: Final = frozenset({"input_str", "kwargs"})


def _parsed_args(args: Any) -> Any:
    """Tool arguments as the agent passed them: a JSON string parsed (instrumentations
    serialize them), anything else as it is; from OpenLLMetry's LangChain envelope only
    the arguments (``inputs``, else ``input_str``)."""
    if isinstance(args, str):
        try:
            args = orjson.loads(args)
        except orjson.JSONDecodeError:
            return args
    if isinstance(args, dict) and args.keys() >= _LANGCHAIN_ENVELOPE:
        inputs = args.get("inputs")
        return inputs if isinstance(inputs, dict) else args["input_str"]
    return args


def _event_id(name: str) -> str:
    """``str(uuid.uuid5(_EVENT_ID_NAMESPACE, name))`` at a third of the cost."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode()).digest()[:16])  # noqa: S324 -- UUID v5 is SHA-1 by definition
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_NAMESPACE_BYTES: Final = _EVENT_ID_NAMESPACE.bytes
# (epoch second, its formatted text), swapped whole: one strftime per second, thread-safe
_ts_memo: list[tuple[int, str]] = [(-1, "")]


def _format_ts_ns(ts_ns: int) -> str:
    """RFC 3339 UTC with microseconds, as the producer writes ``ts``."""
    seconds, ns = divmod(ts_ns, 1_000_000_000)
    memo_second, prefix = _ts_memo[0]
    if memo_second != seconds:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _ts_memo[0] = (seconds, prefix)
    return f"{prefix}.{ns // 1000:06d}Z"
