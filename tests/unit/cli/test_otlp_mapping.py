"""GenAI spans (hand-built OTLP protobuf messages) -> events, field by field."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from agentwatch.cli.otlp import genai_span
from agentwatch.producer import hash_tool_args
from agentwatch.producer.genai import KIND_BY_OPERATION, Skipped, map_span
from agentwatch.schemas import Event

TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN = bytes.fromhex("eee19b7ec3c1b174")
PARENT = bytes.fromhex("eee19b7ec3c1b173")
START_NS = 1_796_032_800_000_000_000  # 2026-11-30T10:00:00Z
END_NS = START_NS + 1_250_500_000  # 1250.5 ms later


def anyvalue(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[anyvalue(v) for v in value]))
    return AnyValue(string_value=value)


def make_span(attributes: dict[str, Any], *, name: str = "chat gpt-4o", error: bool = False,
              message: str = "", parent: bytes = PARENT, trace: bytes = TRACE,
              span_id: bytes = SPAN, start_ns: int = START_NS, end_ns: int = END_NS,
              events: list[Span.Event] | None = None) -> Span:
    return Span(
        trace_id=trace, span_id=span_id, parent_span_id=parent, name=name,
        kind=Span.SPAN_KIND_CLIENT, start_time_unix_nano=start_ns, end_time_unix_nano=end_ns,
        attributes=[KeyValue(key=k, value=anyvalue(v)) for k, v in attributes.items()],
        status=Status(code=Status.STATUS_CODE_ERROR if error else Status.STATUS_CODE_UNSET,
                      message=message),
        events=events or [],
    )


def mapped(span: Span, resource: dict[str, Any] | None = None,
           tenant_id: str | None = None) -> dict[str, Any]:
    result = map_span(genai_span(span, resource or {}), tenant_id=tenant_id)
    assert not isinstance(result, Skipped), result
    # whatever the mapping makes is a valid event once the producer adds its defaults
    Event.model_validate_json(orjson.dumps({"agent_id": "default", **result}))
    return result


CHAT = {
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.response.model": "gpt-4o-2024-08-06",
    "gen_ai.provider.name": "openai",
    "gen_ai.usage.input_tokens": 1200,
    "gen_ai.usage.output_tokens": 85,
    "gen_ai.usage.cache_read.input_tokens": 1000,
    "gen_ai.usage.reasoning.output_tokens": 40,
    "gen_ai.usage.cache_creation.input_tokens": 7,
    "gen_ai.conversation.id": "conv-1",
    "gen_ai.agent.id": "asst_42",
    "gen_ai.agent.name": "concierge",
    "gen_ai.request.temperature": 0.2,
}


def test_a_chat_span_maps_to_an_llm_call_field_by_field() -> None:
    event = mapped(make_span(CHAT), resource={"service.name": "shop"})
    assert event == {
        "event_id": str(uuid.uuid5(uuid.UUID("6f1c8a52-3b0e-5d7a-9c4e-0a7b1d2e3f40"),
                                   TRACE.hex() + SPAN.hex())),
        "ts": "2026-11-30T10:00:01.250500Z",
        "kind": "llm_call",
        "trace_id": TRACE.hex(),
        "span_id": SPAN.hex(),
        "parent_span_id": PARENT.hex(),
        "duration_ms": 1250.5,
        "session_id": "conv-1",
        "agent_id": "asst_42",
        "name": "chat",
        "model": "gpt-4o",
        "provider": "openai",
        "input_tokens": 1200,
        "output_tokens": 85,
        "cached_input_tokens": 1000,
        "reasoning_tokens": 40,
        "attributes": {
            "gen_ai.operation.name": "chat",
            "otel.span.name": "chat gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.agent.name": "concierge",
            "gen_ai.usage.cache_creation.input_tokens": 7,
        },
    }


def test_the_same_span_always_gets_the_same_event_id_and_other_spans_another() -> None:
    first = mapped(make_span(CHAT))["event_id"]
    assert mapped(make_span(CHAT))["event_id"] == first
    assert mapped(make_span(CHAT, span_id=bytes.fromhex("00000000000000aa")))["event_id"] != first


def test_an_execute_tool_span_is_a_tool_call_with_the_hash_of_its_arguments() -> None:
    event = mapped(make_span({
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "search",
        "gen_ai.tool.call.id": "call_9",
        "gen_ai.tool.call.arguments": '{"q": "shoes", "n": 3}',
    }, name="execute_tool search"))
    assert event["kind"] == "tool_call"
    assert event["name"] == "search"
    # the producer's own hash of the same arguments: loop detection sees one tool call
    assert event["tool_args_hash"] == hash_tool_args({"n": 3, "q": "shoes"})
    assert "gen_ai.tool.call.arguments" not in event.get("attributes", {})
    assert event["attributes"]["gen_ai.tool.call.id"] == "call_9"
    assert event["session_id"] == TRACE.hex()  # no conversation id: the trace is the session


def test_tool_arguments_that_are_not_json_are_hashed_as_text() -> None:
    event = mapped(make_span({"gen_ai.tool.name": "sh", "gen_ai.tool.call.arguments": "ls -l"}))
    assert event["tool_args_hash"] == hash_tool_args("ls -l")


@pytest.mark.parametrize(("operation", "kind"), [
    *sorted(KIND_BY_OPERATION.items()),
    ("create_agent", "custom"),
    ("my_vendor_op", "custom"),
])
def test_each_operation_name_maps_to_its_kind(operation: str, kind: str) -> None:
    assert mapped(make_span({"gen_ai.operation.name": operation}))["kind"] == kind


def test_an_unknown_operation_is_custom_and_named_after_it() -> None:
    event = mapped(make_span({"gen_ai.operation.name": "rerank"}, name="rerank docs"))
    assert (event["kind"], event["name"]) == ("custom", "rerank")


@pytest.mark.parametrize(("attributes", "kind"), [
    ({"gen_ai.tool.name": "search"}, "tool_call"),
    ({"gen_ai.request.model": "gpt-4o"}, "llm_call"),
    ({"gen_ai.usage.output_tokens": 3}, "llm_call"),
    ({"gen_ai.conversation.id": "c"}, "custom"),
])
def test_without_an_operation_name_the_kind_comes_from_the_other_attributes(
    attributes: dict[str, Any], kind: str
) -> None:
    assert mapped(make_span(attributes))["kind"] == kind


def test_an_invoke_agent_span_is_an_agent_step_named_after_the_agent() -> None:
    event = mapped(make_span({"gen_ai.operation.name": "invoke_agent",
                              "gen_ai.agent.name": "planner"}, name="invoke_agent planner"))
    assert (event["kind"], event["name"], event["agent_id"]) == (
        "agent_step", "planner", "planner")
    assert "gen_ai.agent.name" not in event["attributes"]  # it is the agent id already


def test_deprecated_token_and_provider_names_are_read_too() -> None:
    event = mapped(make_span({"gen_ai.system": "anthropic", "gen_ai.usage.prompt_tokens": 10,
                              "gen_ai.usage.completion_tokens": 2}))
    assert (event["provider"], event["input_tokens"], event["output_tokens"]) == (
        "anthropic", 10, 2)


def test_token_counts_that_are_not_counts_are_left_out() -> None:
    event = mapped(make_span({"gen_ai.usage.input_tokens": -5,
                              "gen_ai.usage.output_tokens": "12",
                              "gen_ai.usage.cache_read.input_tokens": 4.0}))
    assert "input_tokens" not in event
    assert "output_tokens" not in event
    assert event["cached_input_tokens"] == 4  # an integral double is a count


def test_the_response_model_is_the_model_when_there_is_no_request_model() -> None:
    event = mapped(make_span({"gen_ai.response.model": "gpt-4o-mini-2024-07-18"}))
    assert event["model"] == "gpt-4o-mini-2024-07-18"
    assert "gen_ai.response.model" not in event["attributes"]


def test_an_error_status_with_error_type_is_an_error_event() -> None:
    event = mapped(make_span({"gen_ai.operation.name": "chat", "error.type": "RateLimitError"},
                             error=True, message="429 Too Many Requests"))
    assert (event["status"], event["error_type"]) == ("error", "RateLimitError")
    assert event["attributes"]["otel.status_description"] == "429 Too Many Requests"


def test_an_error_status_without_error_type_takes_the_exception_event_type() -> None:
    exception = Span.Event(name="exception", time_unix_nano=END_NS, attributes=[
        KeyValue(key="exception.type", value=anyvalue("TimeoutError")),
        KeyValue(key="exception.message", value=anyvalue("read timed out"))])
    event = mapped(make_span({"gen_ai.tool.name": "fetch"}, error=True, events=[exception]))
    assert (event["status"], event["error_type"]) == ("error", "TimeoutError")


def test_error_type_alone_makes_an_error_event() -> None:
    event = mapped(make_span({"gen_ai.tool.name": "fetch", "error.type": "timeout"}))
    assert (event["status"], event["error_type"]) == ("error", "timeout")


def test_an_ok_span_has_no_status_field_so_the_default_ok_applies() -> None:
    event = mapped(make_span(CHAT))
    assert "status" not in event
    assert "error_type" not in event


def test_agent_and_session_fall_back_to_the_resource() -> None:
    event = mapped(make_span({"gen_ai.operation.name": "chat"}),
                   resource={"gen_ai.agent.id": "res-agent",
                             "gen_ai.conversation.id": "res-conv", "service.name": "svc"})
    assert (event["agent_id"], event["session_id"]) == ("res-agent", "res-conv")


def test_the_agent_is_the_service_name_when_no_gen_ai_agent_attribute_is_set() -> None:
    event = mapped(make_span({"gen_ai.operation.name": "chat"}), resource={"service.name": "svc"})
    assert event["agent_id"] == "svc"


def test_without_any_agent_the_producer_default_applies() -> None:
    assert "agent_id" not in mapped(make_span({"gen_ai.operation.name": "chat"}))


def test_the_tenant_header_wins_over_the_resource_attribute() -> None:
    span = make_span(CHAT)
    resource = {"agentwatch.tenant.id": "from-resource"}
    assert mapped(span, resource)["tenant_id"] == "from-resource"
    assert mapped(span, resource, tenant_id="from-header")["tenant_id"] == "from-header"
    assert "tenant_id" not in mapped(span)


def test_a_root_span_has_no_parent_span_id() -> None:
    assert "parent_span_id" not in mapped(make_span(CHAT, parent=b""))


def test_a_span_without_end_time_takes_its_start_and_no_duration() -> None:
    event = mapped(make_span(CHAT, end_ns=0))
    assert event["ts"] == "2026-11-30T10:00:00.000000Z"
    assert "duration_ms" not in event


def test_long_texts_are_cut_to_the_contract_length() -> None:
    event = mapped(make_span({"gen_ai.tool.name": "t" * 300}))
    assert event["name"] == "t" * 256


def test_a_span_without_gen_ai_attributes_is_skipped() -> None:
    span = make_span({"http.request.method": "GET", "url.full": "https://x"}, name="GET")
    assert map_span(genai_span(span, {})) == Skipped("not_genai")


@pytest.mark.parametrize(("changes", "detail"), [
    ({"trace": b"\x00" * 16}, "invalid trace id"),
    ({"trace": b"\x01" * 8}, "invalid trace id"),
    ({"span_id": b""}, "invalid span id"),
    ({"parent": b"\x01\x02"}, "invalid parent span id"),
    ({"start_ns": 0, "end_ns": 0}, "end time 0 ns"),
])
def test_a_genai_span_that_cannot_make_a_valid_event_is_invalid(
    changes: dict[str, Any], detail: str
) -> None:
    result = map_span(genai_span(make_span(CHAT, **changes), {}))
    assert isinstance(result, Skipped)
    assert result.reason == "invalid"
    assert detail in result.detail


def test_a_tenant_with_a_slash_is_invalid() -> None:
    result = map_span(genai_span(make_span(CHAT), {}), tenant_id="a/b")
    assert isinstance(result, Skipped)
    assert "tenant 'a/b'" in result.detail


def test_a_conversation_id_longer_than_the_contract_allows_is_invalid() -> None:
    result = map_span(genai_span(make_span({"gen_ai.conversation.id": "c" * 257}), {}))
    assert isinstance(result, Skipped)
    assert "conversation" in result.detail
