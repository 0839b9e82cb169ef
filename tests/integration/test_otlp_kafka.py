"""``agentwatch otlp`` as its own process on a real broker: a real OpenTelemetry SDK exports
GenAI spans to it, and the events land on the topic as the mapping says, in partition
batches on the partitions that own their sessions."""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode
from worker_harness import create_topic

from agentwatch.schemas import (
    Event,
    EventKind,
    EventStatus,
    decode_record,
    default_price_table,
    partition_batch_key,
    partition_for,
    session_key,
)

AGENTWATCH = Path(sys.executable).with_name("agentwatch")
SAFETY_TIMEOUT_S = 60.0
PARTITIONS = 3
CONVERSATIONS = 6
LISTENING = re.compile(r"listening on (http://\S+/v1/traces)")
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def _spans() -> list[ReadableSpan]:
    """Per conversation: a chat span and a failing tool span, plus one HTTP span (skipped)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test.otlp.kafka")
    for n in range(CONVERSATIONS):
        with tracer.start_as_current_span(f"chat gpt-4o-mini #{n}", attributes={
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.provider.name": "openai", "gen_ai.conversation.id": f"conv-{n}",
            "gen_ai.usage.input_tokens": 100 + n, "gen_ai.usage.output_tokens": 10 + n,
        }), tracer.start_as_current_span(f"execute_tool lookup #{n}", attributes={
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup",
            "gen_ai.conversation.id": f"conv-{n}",
        }) as tool:
            tool.set_attribute("error.type", "timeout")
            tool.set_status(Status(StatusCode.ERROR))
    with tracer.start_as_current_span("GET /health"):
        pass
    provider.shutdown()
    return list(memory.get_finished_spans())


def _consume(bootstrap: str, topic: str, expected_events: int) -> list[tuple[bytes, int, bytes]]:
    async def go() -> list[tuple[bytes, int, bytes]]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                    auto_offset_reset="earliest")
        await consumer.start()
        out: list[tuple[bytes, int, bytes]] = []
        events = 0
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + SAFETY_TIMEOUT_S
            while events < expected_events and loop.time() < deadline:
                for tp, messages in (await consumer.getmany(timeout_ms=200)).items():
                    for m in messages:
                        assert m.key is not None
                        assert m.value is not None
                        out.append((m.key, tp.partition, m.value))
                        events += len(orjson.loads(m.value))
        finally:
            await consumer.stop()
        return out

    return asyncio.run(go())


def _start_receiver(bootstrap: str, topic: str) -> tuple[subprocess.Popen[str], str,
                                                         queue.Queue[str], threading.Thread]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AGENTWATCH_") and k not in PROXY_VARS}
    env.update(AGENTWATCH_TOPIC=topic, AGENTWATCH_LINGER_MS="20", AGENTWATCH_TENANT_ID="acme")
    process = subprocess.Popen(
        [str(AGENTWATCH), "otlp", "--port", "0", "--bootstrap-servers", bootstrap],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    while True:
        try:
            line = lines.get(timeout=SAFETY_TIMEOUT_S)
        except queue.Empty:
            process.kill()
            raise AssertionError("agentwatch otlp did not say where it listens") from None
        match = LISTENING.search(line)
        if match:
            return process, match.group(1), lines, reader


def test_spans_exported_to_agentwatch_otlp_land_on_kafka_as_mapped_events(
    kafka_bootstrap: str, topic_name: str
) -> None:
    create_topic(kafka_bootstrap, topic_name, PARTITIONS)
    process, url, lines, reader = _start_receiver(kafka_bootstrap, topic_name)
    try:
        spans = _spans()
        exporter = OTLPSpanExporter(endpoint=url, timeout=SAFETY_TIMEOUT_S)
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        exporter.shutdown()
        records = _consume(kafka_bootstrap, topic_name, 2 * CONVERSATIONS)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(SAFETY_TIMEOUT_S)
        reader.join(SAFETY_TIMEOUT_S)
        assert process.stderr is not None
        process.stderr.close()
    assert code == 0
    log = "".join(lines.queue)
    assert "1 requests, 13 spans -> 12 events; skipped 1 without gen_ai.* attributes" in log

    events: list[Event] = []
    for key, partition, value in records:
        decoded = decode_record(value)
        assert decoded.rejected == []
        # a partition batch, every session of it owned by the partition it was written to
        assert key == partition_batch_key(partition)
        for event in decoded.events:
            assert partition_for(session_key(event.tenant_id, event.session_id),
                                 PARTITIONS) == partition
        events.extend(decoded.events)
    assert len(events) == 2 * CONVERSATIONS

    prices = default_price_table()
    by_span = {e.span_id: e for e in events}
    for span in spans:
        ctx = span.get_span_context()
        assert ctx is not None
        event = by_span.pop(f"{ctx.span_id:016x}", None)
        if span.name == "GET /health":
            assert event is None
            continue
        assert event is not None
        n = int(span.name.rsplit("#", 1)[1])
        assert span.start_time is not None
        assert span.end_time is not None
        assert event.trace_id == f"{ctx.trace_id:032x}"
        assert event.parent_span_id == (None if span.parent is None
                                        else f"{span.parent.span_id:016x}")
        assert (event.tenant_id, event.agent_id, event.session_id) == (
            "acme", "support-bot", f"conv-{n}")
        assert event.duration_ms == (span.end_time - span.start_time) / 1e6
        if span.name.startswith("chat"):
            assert (event.kind, event.name, event.model, event.provider, event.status) == (
                EventKind.LLM_CALL, "chat", "gpt-4o-mini", "openai", EventStatus.OK)
            assert (event.input_tokens, event.output_tokens) == (100 + n, 10 + n)
            assert event.cost_usd == prices.cost_usd("gpt-4o-mini", 100 + n, 10 + n)
        else:
            assert (event.kind, event.name, event.status, event.error_type) == (
                EventKind.TOOL_CALL, "lookup", EventStatus.ERROR, "timeout")
    assert by_span == {}
