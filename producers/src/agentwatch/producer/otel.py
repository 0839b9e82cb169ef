"""In-process OpenTelemetry: a ``SpanProcessor`` that turns finished GenAI spans into
agentwatch events, with no exporter and no network hop.

::

    from opentelemetry.sdk.trace import TracerProvider
    from agentwatch.producer import Agentwatch
    from agentwatch.producer.otel import AgentwatchSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(AgentwatchSpanProcessor(Agentwatch(bootstrap_servers="kafka:9092")))

Each span with a ``gen_ai.*`` attribute becomes one event through the same mapping as
``agentwatch otlp`` (:func:`agentwatch.producer.genai.map_span`, the README's table):
:func:`genai_span` only reads an SDK ``ReadableSpan`` into the :class:`GenAISpan` the
mapping takes, as the receiver reads an OTLP protobuf span. ``on_end`` only maps and
calls ``emit()`` (which enqueues): it never blocks the app and never raises.

Needs the ``otel`` extra (``pip install 'agentwatch-producer[otel]'``); importing
:mod:`agentwatch.producer` does not import OpenTelemetry.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

try:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
    from opentelemetry.trace import StatusCode
except ImportError as exc:  # pragma: no cover -- the extra is installed in the test venv
    raise ImportError(
        "agentwatch.producer.otel needs the OpenTelemetry SDK: "
        "pip install 'agentwatch-producer[otel]'"
    ) from exc

from agentwatch.producer._client import Agentwatch
from agentwatch.producer._queue import RateLimitedLog
from agentwatch.producer.genai import GenAISpan, Skipped, map_span

__all__ = ["AgentwatchSpanProcessor", "SpanProcessorStats", "genai_span"]

logger = logging.getLogger("agentwatch.producer.otel")

_MS: Final = 1000.0


@dataclass(slots=True)
class SpanProcessorStats:
    """Counters of one processor: ``spans == events + skipped_not_genai + invalid_spans
    + errors`` (``errors``: a span the processor failed on, logged)."""

    spans: int = 0
    events: int = 0
    skipped_not_genai: int = 0
    invalid_spans: int = 0
    errors: int = 0


def _attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """SDK attribute values as the OTLP path decodes them: sequences (tuples) as lists."""
    if not attributes:
        return {}
    return {key: list(v) if type(v) is tuple else v for key, v in attributes.items()}


def genai_span(span: ReadableSpan, resource: Mapping[str, Any] | None = None) -> GenAISpan:
    """What the mapping reads from one finished SDK span (the counterpart of the OTLP
    receiver's reading of a protobuf span). ``resource``: the span's resource attributes
    already read (a processor reads its provider's resource once), else read here."""
    context = span.get_span_context()
    trace_id = span_id = ""
    if context is not None:
        trace_id, span_id = f"{context.trace_id:032x}", f"{context.span_id:016x}"
    parent = span.parent
    exception_type: str | None = None
    for event in span.events:
        if event.name == "exception":
            value = (event.attributes or {}).get("exception.type")
            if isinstance(value, str):
                exception_type = value
            break
    status = span.status
    return GenAISpan(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id="" if parent is None else f"{parent.span_id:016x}",
        name=span.name,
        start_ns=span.start_time or 0,
        end_ns=span.end_time or 0,
        is_error=status.status_code is StatusCode.ERROR,
        status_message=status.description or "",
        attributes=_attributes(span.attributes),
        resource=_attributes(span.resource.attributes) if resource is None else resource,
        exception_type=exception_type,
    )


class AgentwatchSpanProcessor(SpanProcessor):
    """Emits the event of every finished GenAI span through ``client``.

    ``client``: the agentwatch producer (not owned: close it yourself, or let its
    ``atexit`` hook do it); ``force_flush`` flushes it. ``tenant_id`` wins over the
    resource's ``agentwatch.tenant.id`` (as the receiver's tenant header does); without
    either the client's tenant applies.
    """

    def __init__(self, client: Agentwatch, *, tenant_id: str | None = None) -> None:
        if not isinstance(client, Agentwatch):
            raise TypeError(
                f"client: expected an agentwatch.producer.Agentwatch, got {type(client).__name__}"
            )
        self.client = client
        self.tenant_id = tenant_id
        self.stats = SpanProcessorStats()
        self._lock = threading.Lock()  # spans end on any thread
        self._log = RateLimitedLog(log=logger)
        # (resource, its attributes read): a provider has one resource, read it once
        self._resource: tuple[Resource | None, Mapping[str, Any]] = (None, {})

    def on_end(self, span: ReadableSpan) -> None:
        try:
            if not any(key.startswith("gen_ai.") for key in span.attributes or ()):
                self._count("skipped_not_genai")  # HTTP, database, ...: nothing to read
                return
            resource, attributes = self._resource
            if span.resource is not resource:
                attributes = _attributes(span.resource.attributes)
                self._resource = (span.resource, attributes)
            mapped = map_span(genai_span(span, attributes), tenant_id=self.tenant_id)
            if isinstance(mapped, Skipped):
                self._count("skipped_not_genai" if mapped.reason == "not_genai"
                            else "invalid_spans")
                if mapped.reason == "invalid":
                    self._log.warn_limited("invalid", "agentwatch: GenAI span %r not sent: %s",
                                           span.name, mapped.detail)
                return
            self.client.emit(mapped)
            self._count("events")
        except Exception as exc:  # noqa: BLE001 -- telemetry never raises into the app
            self._count("errors")
            self._log.warn_limited("error", "agentwatch: a span was not mapped: %r", exc)

    def _count(self, name: str) -> None:
        with self._lock:
            stats = self.stats
            stats.spans += 1
            setattr(stats, name, getattr(stats, name) + 1)

    def shutdown(self) -> None:
        """Flush the client (it stays open: the app owns it)."""
        self.client.flush()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.client.flush(timeout_millis / _MS)
