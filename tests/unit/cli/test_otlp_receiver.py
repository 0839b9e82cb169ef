"""``agentwatch otlp`` on loopback: a real OpenTelemetry SDK exporting GenAI spans, an
OTLP/JSON payload, and payloads that must be refused without stopping the server.

The receiver's producer writes to the producer's ``testing`` collector (an in-memory
transport), so the events it produced are compared field by field.
"""

from __future__ import annotations

import asyncio
import gzip
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiohttp import web
from cli_helpers import PROXY_VARS
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status as OtelStatus
from opentelemetry.trace import StatusCode

from agentwatch.cli.otlp import OtlpReceiver, start
from agentwatch.producer.testing import Collector, collector
from agentwatch.schemas import Event, EventKind, EventStatus, default_price_table

SAFETY_TIMEOUT_S = 30.0
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class Served:
    receiver: OtlpReceiver
    client: Collector
    url: str

    def events(self) -> list[Event]:
        """What the receiver's producer sent (after a flush bounded by the safety timeout)."""
        assert self.client.flush(SAFETY_TIMEOUT_S)
        return self.client.transport.events

    def post(self, body: bytes, content_type: str = "application/x-protobuf",
             **headers: str) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(
            self.url, data=body, method="POST", headers={"Content-Type": content_type, **headers})
        try:
            with urllib.request.urlopen(request, timeout=SAFETY_TIMEOUT_S) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, dict(exc.headers), exc.read()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    for name in ("AGENTWATCH_TENANT_ID", "AGENTWATCH_AGENT_ID", "AGENTWATCH_QUEUE_SIZE"):
        monkeypatch.delenv(name, raising=False)


def serve_in_thread(client: Collector, **options: Any) -> Iterator[Served]:
    receiver = OtlpReceiver(client, **options)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="otlp-test-loop", daemon=True)
    thread.start()
    runner: web.AppRunner | None = None
    try:
        runner, port = asyncio.run_coroutine_threadsafe(
            start(receiver, "127.0.0.1", 0), loop).result(SAFETY_TIMEOUT_S)
        yield Served(receiver, client, f"http://127.0.0.1:{port}/v1/traces")
    finally:
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(SAFETY_TIMEOUT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(SAFETY_TIMEOUT_S)
        loop.close()
        client.close()


@pytest.fixture
def served() -> Iterator[Served]:
    yield from serve_in_thread(collector(agent_id="fallback-agent", linger_ms=5))


# -- a real OpenTelemetry SDK --------------------------------------------------------------

def record_genai_spans() -> list[ReadableSpan]:
    """An agent run as an instrumented app traces it: agent -> chat, two tools (one
    failing), and an HTTP span that is not GenAI."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(
        {"service.name": "shop-assistant", "agentwatch.tenant.id": "acme"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test.genai")
    with tracer.start_as_current_span("invoke_agent concierge", attributes={
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "concierge",
        "gen_ai.agent.id": "agent-7", "gen_ai.conversation.id": "conv-42",
    }):
        with tracer.start_as_current_span("chat gpt-4o", attributes={
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
            "gen_ai.provider.name": "openai", "gen_ai.usage.input_tokens": 1200,
            "gen_ai.usage.output_tokens": 85, "gen_ai.usage.cache_read.input_tokens": 200,
            "gen_ai.conversation.id": "conv-42", "gen_ai.agent.id": "agent-7",
        }):
            pass
        with tracer.start_as_current_span("execute_tool search", attributes={
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search",
            "gen_ai.tool.call.arguments": '{"q": "red shoes"}',
            "gen_ai.conversation.id": "conv-42", "gen_ai.agent.id": "agent-7",
        }):
            pass
        with tracer.start_as_current_span("execute_tool checkout", attributes={
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "checkout",
            "gen_ai.conversation.id": "conv-42", "gen_ai.agent.id": "agent-7",
        }) as failing:
            failing.set_attribute("error.type", "PaymentDeclined")
            failing.set_status(OtelStatus(StatusCode.ERROR, "card declined"))
        with tracer.start_as_current_span("GET /inventory", attributes={
            "http.request.method": "GET", "url.full": "http://inventory/items"}):
            pass
    provider.shutdown()
    return list(memory.get_finished_spans())


def export(url: str, spans: list[ReadableSpan], **options: Any) -> SpanExportResult:
    exporter = OTLPSpanExporter(endpoint=url, timeout=SAFETY_TIMEOUT_S, **options)
    try:
        return exporter.export(spans)
    finally:
        exporter.shutdown()


def by_name(events: list[Event]) -> dict[str, Event]:
    return {str(e.attributes["otel.span.name"]): e for e in events if e.attributes}


def hex_ids(span: ReadableSpan) -> tuple[str, str, str | None]:
    ctx = span.get_span_context()
    assert ctx is not None
    parent = span.parent
    return (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}",
            None if parent is None else f"{parent.span_id:016x}")


@pytest.mark.parametrize("compression", [Compression.Gzip, Compression.NoCompression])
def test_sdk_exported_genai_spans_become_the_mapped_events(
    served: Served, compression: Compression
) -> None:
    spans = record_genai_spans()
    assert export(served.url, spans, compression=compression) is SpanExportResult.SUCCESS

    events = served.events()
    assert len(events) == 4  # the HTTP span is not GenAI
    spans_by_name = {s.name: s for s in spans}
    got = by_name(events)
    assert sorted(got) == ["chat gpt-4o", "execute_tool checkout", "execute_tool search",
                           "invoke_agent concierge"]
    for name, event in got.items():
        span = spans_by_name[name]
        trace_id, span_id, parent = hex_ids(span)
        assert (event.trace_id, event.span_id, event.parent_span_id) == (
            trace_id, span_id, parent)
        assert event.tenant_id == "acme"  # the resource attribute
        assert event.session_id == "conv-42"
        assert event.agent_id == "agent-7"
        assert span.start_time is not None
        assert span.end_time is not None
        assert event.duration_ms == (span.end_time - span.start_time) / 1e6
        # the end time, cut to microseconds (integer arithmetic: a float would round)
        assert event.ts == EPOCH + timedelta(microseconds=span.end_time // 1000)

    chat = got["chat gpt-4o"]
    assert (chat.kind, chat.name, chat.model, chat.provider) == (
        EventKind.LLM_CALL, "chat", "gpt-4o", "openai")
    assert (chat.input_tokens, chat.output_tokens, chat.cached_input_tokens) == (1200, 85, 200)
    # cost: the producer's price table, not a second lookup in the receiver
    assert chat.cost_usd == default_price_table().cost_usd("gpt-4o", 1200, 85, 200)
    assert chat.cost_usd is not None
    assert chat.cost_usd > 0
    assert chat.status is EventStatus.OK

    search = got["execute_tool search"]
    assert (search.kind, search.name, search.status) == (
        EventKind.TOOL_CALL, "search", EventStatus.OK)
    assert search.tool_args_hash is not None
    checkout = got["execute_tool checkout"]
    assert (checkout.kind, checkout.name, checkout.status, checkout.error_type) == (
        EventKind.TOOL_CALL, "checkout", EventStatus.ERROR, "PaymentDeclined")
    assert checkout.attributes is not None
    assert checkout.attributes["otel.status_description"] == "card declined"
    agent = got["invoke_agent concierge"]
    assert (agent.kind, agent.name, agent.parent_span_id) == (
        EventKind.AGENT_STEP, "concierge", None)

    stats = served.receiver.stats
    assert (stats.requests, stats.spans, stats.events, stats.skipped_not_genai) == (1, 5, 4, 1)
    assert served.client.transport.rejected == []


def test_the_tenant_header_sets_the_tenant(served: Served) -> None:
    spans = record_genai_spans()
    assert export(served.url, spans, headers={"X-Agentwatch-Tenant": "globex"}) is (
        SpanExportResult.SUCCESS)
    assert {e.tenant_id for e in served.events()} == {"globex"}


def test_a_span_exported_twice_makes_two_records_of_one_event_id(served: Served) -> None:
    spans = record_genai_spans()
    assert export(served.url, spans) is SpanExportResult.SUCCESS
    assert export(served.url, spans) is SpanExportResult.SUCCESS
    ids = [e.event_id for e in served.events()]
    assert len(ids) == 8
    assert len(set(ids)) == 4  # a retried export is deduplicated downstream by event_id


def test_the_response_counts_the_skipped_spans_as_partial_success(served: Served) -> None:
    spans = record_genai_spans()
    body = encode_spans(spans)
    status, headers, raw = served.post(body)
    assert status == 200
    assert headers["Content-Type"].startswith("application/x-protobuf")
    response = ExportTraceServiceResponse.FromString(raw)
    assert response.partial_success.rejected_spans == 1
    assert "1 spans without gen_ai.* attributes" in response.partial_success.error_message


def encode_spans(spans: list[ReadableSpan]) -> bytes:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import (  # noqa: PLC0415
        encode_spans as otel_encode,
    )

    return otel_encode(spans).SerializeToString()


# -- OTLP/JSON -----------------------------------------------------------------------------

JSON_PAYLOAD = {
    "resourceSpans": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "json-svc"}},
            {"key": "agentwatch.tenant.id", "value": {"stringValue": "initech"}},
        ]},
        "scopeSpans": [{
            "scope": {"name": "my.instrumentation", "version": "1.0"},
            "spans": [
                {
                    "traceId": "5B8EFFF798038103D269B633813FC60C",
                    "spanId": "EEE19B7EC3C1B174",
                    "parentSpanId": "EEE19B7EC3C1B173",
                    "name": "chat claude-sonnet-4-5",
                    "kind": 3,
                    "startTimeUnixNano": "1796032800000000000",
                    "endTimeUnixNano": "1796032800500000000",
                    "attributes": [
                        {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                        {"key": "gen_ai.request.model",
                         "value": {"stringValue": "claude-sonnet-4-5"}},
                        {"key": "gen_ai.provider.name", "value": {"stringValue": "anthropic"}},
                        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "2000"}},
                        {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 150}},
                        {"key": "gen_ai.conversation.id", "value": {"stringValue": "c-9"}},
                    ],
                    "status": {"code": 2, "message": "overloaded"},
                    "unknownFieldFromTheFuture": True,
                },
                {
                    "traceId": "5b8efff798038103d269b633813fc60c",
                    "spanId": "eee19b7ec3c1b175",
                    "name": "SELECT orders",
                    "startTimeUnixNano": "1796032800000000000",
                    "endTimeUnixNano": "1796032800100000000",
                    "attributes": [{"key": "db.system.name",
                                    "value": {"stringValue": "postgresql"}}],
                },
            ],
        }],
    }],
}


def test_an_otlp_json_payload_with_hex_ids_maps_like_protobuf(served: Served) -> None:
    status, headers, raw = served.post(orjson.dumps(JSON_PAYLOAD), "application/json")
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert orjson.loads(raw)["partialSuccess"]["rejectedSpans"] in ("1", 1)
    [event] = served.events()
    assert (event.trace_id, event.span_id, event.parent_span_id) == (
        "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "eee19b7ec3c1b173")
    assert (event.kind, event.model, event.provider, event.input_tokens, event.output_tokens) == (
        EventKind.LLM_CALL, "claude-sonnet-4-5", "anthropic", 2000, 150)
    assert (event.tenant_id, event.agent_id, event.session_id) == ("initech", "json-svc", "c-9")
    assert (event.status, event.duration_ms) == (EventStatus.ERROR, 500.0)
    assert event.cost_usd == default_price_table().cost_usd("claude-sonnet-4-5", 2000, 150)


def test_a_gzipped_json_payload_is_read(served: Served) -> None:
    status, _, _ = served.post(gzip.compress(orjson.dumps(JSON_PAYLOAD)), "application/json",
                               **{"Content-Encoding": "gzip"})
    assert status == 200
    assert len(served.events()) == 1


def test_spans_without_genai_attributes_only_are_skipped_with_a_full_200(
    served: Served
) -> None:
    payload = orjson.loads(orjson.dumps(JSON_PAYLOAD))
    del payload["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    status, _, raw = served.post(orjson.dumps(payload), "application/json")
    assert status == 200
    assert orjson.loads(raw)["partialSuccess"]["rejectedSpans"] in ("1", 1)
    assert served.events() == []
    assert served.receiver.stats.skipped_not_genai == 1


def test_an_empty_request_is_a_success_with_nothing_rejected(served: Served) -> None:
    status, _, raw = served.post(ExportTraceServiceRequest().SerializeToString())
    assert status == 200
    assert not ExportTraceServiceResponse.FromString(raw).HasField("partial_success")


# -- malformed payloads --------------------------------------------------------------------

@pytest.mark.parametrize(("body", "content_type", "headers", "code", "reason"), [
    (b"\xff\xfe garbage \x00\x01", "application/x-protobuf", {}, 400, "bad_protobuf"),
    (b"{not json", "application/json", {}, 400, "bad_json"),
    (b"[1, 2]", "application/json", {}, 400, "bad_json"),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz!"}]}]}]}',
     "application/json", {}, 400, "bad_json"),
    (b"not gzip at all", "application/x-protobuf", {"Content-Encoding": "gzip"}, 400,
     "bad_gzip"),
    (gzip.compress(b"x" * 1000)[:-12], "application/x-protobuf", {"Content-Encoding": "gzip"},
     400, "bad_gzip"),
    (b"", "application/x-protobuf", {"Content-Encoding": "br"}, 400, "unsupported_encoding"),
    (b"hello", "text/plain", {}, 415, "unsupported_media_type"),
])
def test_a_bad_payload_gets_an_error_status_a_counter_and_the_server_keeps_serving(
    served: Served, body: bytes, content_type: str, headers: dict[str, str], code: int,
    reason: str,
) -> None:
    status, response_headers, raw = served.post(body, content_type, **headers)
    assert status == code
    assert served.receiver.stats.rejected_requests == {reason: 1}
    if code == 400:  # a google.rpc.Status in the request's encoding
        if content_type == "application/json":
            assert orjson.loads(raw)["code"] == 3
        else:
            assert response_headers["Content-Type"].startswith("application/x-protobuf")
            assert Status.FromString(raw).code == 3
    # still serving: a good export right after is taken
    assert export(served.url, record_genai_spans()) is SpanExportResult.SUCCESS
    assert len(served.events()) == 4


def test_a_payload_over_the_size_limit_is_refused_with_413() -> None:
    for served in serve_in_thread(collector(linger_ms=5), max_body_bytes=1000):
        status, _, _ = served.post(b"\x00" * 2000)
        assert status == 413
        bomb = gzip.compress(b"\x00" * 100_000)
        assert len(bomb) < 1000
        status, _, _ = served.post(bomb, **{"Content-Encoding": "gzip"})
        assert status == 413
        assert served.receiver.stats.rejected_requests == {"too_large": 2}


def test_other_paths_and_methods_are_refused(served: Served) -> None:
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(served.url.replace("/v1/traces", "/v1/metrics"), data=b"",
                               timeout=SAFETY_TIMEOUT_S)
    missing.value.close()
    assert missing.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as get:
        urllib.request.urlopen(served.url, timeout=SAFETY_TIMEOUT_S)
    get.value.close()
    assert get.value.code == 405


def test_when_the_producer_queue_has_no_room_the_request_gets_503_and_nothing_is_sent() -> None:
    # a producer whose queue holds 2 events: the 4 events of one export do not fit
    for served in serve_in_thread(collector(queue_size=2, linger_ms=5)):
        status, headers, raw = served.post(encode_spans(record_genai_spans()))
        assert status == 503
        assert headers["Retry-After"] == "1"
        assert "room for 2 events, not 4" in Status.FromString(raw).message
        assert served.receiver.stats.rejected_requests == {"queue_full": 1}
        assert served.events() == []
        assert served.client.stats.dropped == 0


def test_an_invalid_genai_span_is_counted_named_and_the_rest_sent(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    payload = orjson.loads(orjson.dumps(JSON_PAYLOAD))
    spans = payload["resourceSpans"][0]["scopeSpans"][0]["spans"]
    bad = orjson.loads(orjson.dumps(spans[0]))
    bad["spanId"] = "0000000000000000"
    spans.append(bad)
    with caplog.at_level("WARNING", logger="agentwatch.otlp"):
        status, _, raw = served.post(orjson.dumps(payload), "application/json")
    assert status == 200
    partial = orjson.loads(raw)["partialSuccess"]
    assert partial["rejectedSpans"] in ("2", 2)
    assert "1 invalid GenAI spans (first: invalid span id '0000000000000000'" in (
        partial["errorMessage"])
    assert served.receiver.stats.invalid_spans == 1
    assert len(served.events()) == 1
    assert "1 invalid GenAI spans not sent" in caplog.text
