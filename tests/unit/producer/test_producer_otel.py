"""``AgentwatchSpanProcessor`` on a real OpenTelemetry SDK: the events it emits are the
mapping of the spans, field by field, and the very events ``agentwatch otlp`` makes of
the same spans exported to it over OTLP/HTTP on loopback."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentwatch.cli.otlp import OtlpReceiver, start
from agentwatch.producer.genai import Skipped, map_span
from agentwatch.producer.otel import AgentwatchSpanProcessor, genai_span
from agentwatch.producer.testing import Collector, collector
from agentwatch.schemas import Event, EventKind, EventStatus, default_price_table

SAFETY_TIMEOUT_S = 30.0
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


def _client() -> Collector:
    return collector(agent_id="fallback-agent", linger_ms=5)


@pytest.fixture
def client() -> Iterator[Collector]:
    aw = _client()
    yield aw
    aw.close()


def run_agent(provider: TracerProvider) -> None:
    """An agent run as an instrumented app traces it: agent -> chat, two tools (one
    failing, with an exception event), and an HTTP span that is not GenAI."""
    tracer = provider.get_tracer("test.genai")
    with tracer.start_as_current_span("invoke_agent concierge", attributes={
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "concierge",
        "gen_ai.agent.id": "agent-7", "gen_ai.conversation.id": "conv-42",
    }):
        with tracer.start_as_current_span("chat gpt-4o", attributes={
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.provider.name": "openai", "gen_ai.usage.input_tokens": 1200,
            "gen_ai.usage.output_tokens": 85, "gen_ai.usage.cache_read.input_tokens": 200,
            "gen_ai.conversation.id": "conv-42", "gen_ai.agent.id": "agent-7",
            "gen_ai.response.finish_reasons": ["tool_calls"],  # a sequence attribute
        }):
            pass
        with tracer.start_as_current_span("execute_tool search", attributes={
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search",
            "gen_ai.tool.call.arguments": '{"q": "red shoes"}', "gen_ai.tool.call.id": "c1",
            "gen_ai.conversation.id": "conv-42", "gen_ai.agent.id": "agent-7",
        }):
            pass
        try:
            with tracer.start_as_current_span("execute_tool checkout", attributes={
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "checkout",
                "gen_ai.conversation.id": "conv-42", "gen_ai.agent.id": "agent-7",
            }):
                raise TimeoutError("payment service")  # noqa: TRY301 -- recorded as an exception event
        except TimeoutError:
            pass
        with tracer.start_as_current_span("GET /inventory", attributes={
            "http.request.method": "GET", "url.full": "http://inventory/items"}):
            pass


def traced(client: Collector, **options: Any) -> tuple[AgentwatchSpanProcessor,
                                                       list[ReadableSpan]]:
    """Run the agent under a provider with the processor; also the finished spans."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(
        {"service.name": "shop-assistant", "agentwatch.tenant.id": "acme"}))
    processor = AgentwatchSpanProcessor(client, **options)
    provider.add_span_processor(processor)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    run_agent(provider)
    provider.shutdown()
    return processor, list(memory.get_finished_spans())


def json_of(event: Event) -> dict[str, Any]:
    decoded: dict[str, Any] = orjson.loads(event.model_dump_json(exclude_none=True))
    return decoded


def test_the_processor_emits_the_mapping_of_each_genai_span(client: Collector) -> None:
    processor, spans = traced(client)
    events = {e.span_id: e for e in client.events}
    assert client.transport.rejected == []
    assert len(events) == 4  # the HTTP span is not GenAI
    for span in spans:
        mapped = map_span(genai_span(span))
        if span.name == "GET /inventory":
            assert mapped == Skipped("not_genai")
            continue
        assert isinstance(mapped, dict)
        event = json_of(events.pop(mapped["span_id"]))
        for key, value in mapped.items():  # what the mapping sets is what the event says
            assert event[key] == value, key
        # and the producer filled in only its defaults and the price
        assert set(event) - set(mapped) <= {"schema_version", "status", "cost_usd"}
    assert events == {}
    stats = processor.stats
    assert (stats.spans, stats.events, stats.skipped_not_genai, stats.invalid_spans,
            stats.errors) == (5, 4, 1, 0, 0)


def test_the_events_carry_what_the_spans_say(client: Collector) -> None:
    _, spans = traced(client)
    got = {str((e.attributes or {})["otel.span.name"]): e for e in client.events}
    agent_span = next(s for s in spans if s.name == "invoke_agent concierge")
    ctx = agent_span.get_span_context()
    assert ctx is not None
    for event in got.values():
        assert (event.tenant_id, event.session_id, event.agent_id, event.trace_id) == (
            "acme", "conv-42", "agent-7", f"{ctx.trace_id:032x}")
    chat = got["chat gpt-4o"]
    assert (chat.kind, chat.name, chat.model, chat.provider, chat.parent_span_id) == (
        EventKind.LLM_CALL, "chat", "gpt-4o", "openai", f"{ctx.span_id:016x}")
    assert chat.cost_usd == default_price_table().cost_usd("gpt-4o", 1200, 85, 200)
    assert chat.attributes is not None
    assert chat.attributes["gen_ai.response.model"] == "gpt-4o-2024-08-06"
    assert got["execute_tool search"].tool_args_hash is not None
    checkout = got["execute_tool checkout"]
    # no error.type attribute: the exception event's type
    assert (checkout.status, checkout.error_type) == (EventStatus.ERROR, "TimeoutError")
    assert checkout.attributes is not None
    assert checkout.attributes["otel.status_description"] == "TimeoutError: payment service"
    assert got["invoke_agent concierge"].kind is EventKind.AGENT_STEP


def test_the_tenant_argument_wins_over_the_resource(client: Collector) -> None:
    traced(client, tenant_id="globex")
    assert {e.tenant_id for e in client.events} == {"globex"}


def test_an_invalid_genai_span_is_counted_and_never_raises(client: Collector) -> None:
    processor, _ = traced(client, tenant_id="bad/tenant")
    assert client.events == []
    assert (processor.stats.invalid_spans, processor.stats.skipped_not_genai) == (4, 1)


def test_a_mapping_failure_is_counted_not_raised(client: Collector) -> None:
    processor = AgentwatchSpanProcessor(client)
    processor.on_end(object())  # type: ignore[arg-type] -- not a span at all
    assert (processor.stats.spans, processor.stats.errors) == (1, 1)


def test_the_client_must_be_an_agentwatch_producer() -> None:
    with pytest.raises(TypeError, match=r"client: expected an agentwatch\.producer\.Agentwatch"):
        AgentwatchSpanProcessor("kafka:9092")  # type: ignore[arg-type]


def test_force_flush_hands_the_events_on(client: Collector) -> None:
    processor, _ = traced(client)
    assert processor.force_flush(int(SAFETY_TIMEOUT_S * 1000))
    assert len(client.transport.events) == 4  # the transport's own list: no flush in between


# -- the same events as `agentwatch otlp` ----------------------------------------------------

@pytest.fixture
def receiver_url() -> Iterator[tuple[str, Collector]]:
    """``agentwatch otlp``'s handler on 127.0.0.1, its producer a collector."""
    receiving = _client()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="otlp-test-loop", daemon=True)
    thread.start()
    runner: web.AppRunner | None = None
    try:
        runner, port = asyncio.run_coroutine_threadsafe(
            start(OtlpReceiver(receiving), "127.0.0.1", 0), loop).result(SAFETY_TIMEOUT_S)
        yield f"http://127.0.0.1:{port}/v1/traces", receiving
    finally:
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(SAFETY_TIMEOUT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(SAFETY_TIMEOUT_S)
        loop.close()
        receiving.close()


def test_the_processor_and_the_otlp_receiver_make_the_same_events(
    client: Collector, receiver_url: tuple[str, Collector]
) -> None:
    url, receiving = receiver_url
    _, spans = traced(client)
    exporter = OTLPSpanExporter(endpoint=url, timeout=SAFETY_TIMEOUT_S)
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    in_process = sorted((json_of(e) for e in client.events), key=lambda e: e["span_id"])
    over_otlp = sorted((json_of(e) for e in receiving.events), key=lambda e: e["span_id"])
    assert len(in_process) == 4
    assert in_process == over_otlp


def test_importing_the_producer_does_not_import_opentelemetry() -> None:
    code = ("import sys, agentwatch.producer, agentwatch.producer.testing; "
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=SAFETY_TIMEOUT_S).stdout
    assert out.strip() == "[]"


def test_without_the_sdk_the_import_error_names_the_extra() -> None:
    code = ("import sys; sys.modules['opentelemetry.sdk.trace'] = None\n"
            "try:\n    import agentwatch.producer.otel\n"
            "except ImportError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=SAFETY_TIMEOUT_S).stdout
    assert "pip install 'agentwatch-producer[otel]'" in out
