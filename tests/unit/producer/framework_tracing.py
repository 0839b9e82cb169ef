"""One framework run traced through its OTel instrumentation into agentwatch's span
processor (the README's three lines), for the framework tests of this folder."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentwatch.producer.otel import AgentwatchSpanProcessor
from agentwatch.producer.testing import collector
from agentwatch.schemas import Event

PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")

Traced = tuple[list[Event], list[ReadableSpan], AgentwatchSpanProcessor]


@contextmanager
def traced_run(instrumentor: Any, run: Callable[[TracerProvider], object],
               expected: object) -> Iterator[Traced]:
    """Instrument a fresh provider (service ``shop-app``) with ``instrumentor`` and
    agentwatch's processor, call ``run(provider)`` (it must return ``expected``: the run
    went as scripted) and give the events the processor emitted and the finished spans.
    Proxy variables are unset meanwhile: the fake provider is on 127.0.0.1."""
    saved = {name: os.environ.pop(name, None) for name in PROXY_VARS}
    aw = collector(agent_id="fallback", linger_ms=5)
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "shop-app"}))
    processor = AgentwatchSpanProcessor(aw)
    instrumentor.instrument(tracer_provider=provider)  # the instrumentation ...
    provider.add_span_processor(processor)  # ... and agentwatch's span processor
    provider.add_span_processor(SimpleSpanProcessor(memory))
    try:
        assert run(provider) == expected
        provider.force_flush()
        yield aw.events, list(memory.get_finished_spans()), processor
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
        aw.close()
        for name, value in saved.items():
            if value is not None:
                os.environ[name] = value
