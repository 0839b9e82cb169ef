"""span_processor: what an app on the OpenTelemetry SDK pays per GenAI span with
``AgentwatchSpanProcessor`` (the span mapped to an event and emitted on the app's
thread, no network hop), against the same span with the SDK's ``BatchSpanProcessor`` and
an exporter that does nothing (the cheapest way to hand spans to an OTLP exporter, which
would then send them to ``agentwatch otlp``), measured in the same run.

Both sides: span start + end of a chat span with the attributes an instrumentation sets
(operation, model, provider, conversation, agent, tokens), N spans in a row, best of
several rounds, background work drained between rounds (no drop path is measured). Our
client's transport discards what it is given: the caller's side is what is measured.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import summary
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from agentwatch.producer import Agentwatch
from agentwatch.producer.otel import AgentwatchSpanProcessor

SPANS = 5_000
ROUNDS = 15
ATTRIBUTES = {
    "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.provider.name": "openai", "gen_ai.conversation.id": "conv-42",
    "gen_ai.agent.id": "concierge", "gen_ai.usage.input_tokens": 1200,
    "gen_ai.usage.output_tokens": 85,
}


class _Discard:
    def send(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        pass

    def flush(self, timeout_s: float) -> bool:
        return True

    def close(self) -> None:
        pass


class _NoopExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _best_us(one_round: Callable[[], None], settle: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        settle()
        start = time.perf_counter()
        one_round()
        best = min(best, (time.perf_counter() - start) / SPANS * 1e6)
    return best


def _spans(provider: TracerProvider) -> Callable[[], None]:
    tracer = provider.get_tracer("bench")

    def one_round() -> None:
        for _ in range(SPANS):
            tracer.start_span("chat gpt-4o-mini", attributes=ATTRIBUTES).end()

    return one_round


def main() -> None:
    client = Agentwatch(transport=_Discard(), agent_id="bench", queue_size=200_000)
    ours_provider = TracerProvider()
    processor = AgentwatchSpanProcessor(client)
    ours_provider.add_span_processor(processor)

    peer_provider = TracerProvider()
    batch = BatchSpanProcessor(_NoopExporter(), max_queue_size=100_000)
    peer_provider.add_span_processor(batch)

    ours_us = _best_us(_spans(ours_provider), lambda: client.flush(timeout_s=10))
    peer_us = _best_us(_spans(peer_provider), batch.force_flush)
    stats, mapped = client.stats, processor.stats
    client.close()
    ours_provider.shutdown()
    peer_provider.shutdown()
    assert stats.dropped == 0, stats  # the drop path must not be what was timed
    assert mapped.events == mapped.spans == SPANS * ROUNDS, mapped
    print(f"span_processor: {SPANS} spans x {ROUNDS} rounds, best round; "
          f"AgentwatchSpanProcessor {ours_us:.2f} us/span, BatchSpanProcessor + no-op "
          f"exporter {peer_us:.2f} us/span", file=sys.stderr)
    summary("span_processor", "us_per_span", ours_us, peer_us, higher_is_better=False)


if __name__ == "__main__":
    main()
