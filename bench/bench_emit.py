"""emit: the caller-side cost of one `Agentwatch.emit()` (what the agent pays per event),
against an OpenTelemetry SDK span start + end with a BatchSpanProcessor and an exporter
that does nothing, measured in the same run (issue 4: goal >= 5x cheaper).

Both sides run their background work (our packing thread, OTel's batch thread) as usual;
only the caller's time is measured: N calls in a row, best of several rounds, with the
queue drained between rounds (our queue bound is never hit: no drop path is measured).
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

CALLS = 5_000
ROUNDS = 15


class _Discard:
    """A transport that drops what it is given (the caller's side is what is measured)."""

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
        best = min(best, (time.perf_counter() - start) / CALLS * 1e6)
    return best


def main() -> None:
    client = Agentwatch(transport=_Discard(), agent_id="bench", queue_size=100_000)
    event = {"kind": "tool_call", "session_id": "s1", "name": "lookup_order",
             "tool_args_hash": "9f2c4e1d0b7a6c35", "duration_ms": 12.5}
    emit = client.emit

    def ours() -> None:
        for _ in range(CALLS):
            emit(event)

    provider = TracerProvider()
    processor = BatchSpanProcessor(_NoopExporter(), max_queue_size=100_000)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    attributes = {"gen_ai.tool.name": "lookup_order", "gen_ai.operation.name": "execute_tool"}

    def peer() -> None:
        for _ in range(CALLS):
            tracer.start_span("execute_tool lookup_order", attributes=attributes).end()

    ours_us = _best_us(ours, lambda: client.flush(timeout_s=10))
    peer_us = _best_us(peer, processor.force_flush)
    stats = client.stats
    client.close()
    provider.shutdown()
    assert stats.dropped == 0, stats  # the drop path must not be what was timed
    print(f"emit: {CALLS} calls x {ROUNDS} rounds, best round; ours {ours_us:.2f} us/event, "
          f"OpenTelemetry span start+end {peer_us:.2f} us/span", file=sys.stderr)
    summary("emit", "us_per_event", ours_us, peer_us, higher_is_better=False)


if __name__ == "__main__":
    main()
