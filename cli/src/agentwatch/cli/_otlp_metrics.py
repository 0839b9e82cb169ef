"""The OTLP receiver's Prometheus metrics and probes (README, "Operating it").

``/metrics``, ``/healthz`` and ``/readyz`` are routes of the receiver's own aiohttp app (on
its port, next to ``/v1/traces``); the figures are read at scrape time from
:class:`~agentwatch.cli.otlp.ReceiverStats` and the producer client's stats.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web

from agentwatch.schemas.metrics import (
    CONTENT_TYPE,
    HEALTH_PATH,
    METRICS_PATH,
    READY_PATH,
    CollectorRegistry,
    counter,
    gauge,
    metrics_body,
    readiness,
)

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["OtlpMetrics"]


class OtlpMetrics:
    """One receiver's registry and its three routes. ``receiver`` is an ``OtlpReceiver``."""

    def __init__(self, receiver: Any) -> None:
        self.receiver = receiver
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(METRICS_PATH, self.handle_metrics)
        app.router.add_get(HEALTH_PATH, self.handle_health)
        app.router.add_get(READY_PATH, self.handle_ready)

    async def handle_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=metrics_body(self.registry),
                            headers={"Content-Type": CONTENT_TYPE})

    async def handle_health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def handle_ready(self, request: web.Request) -> web.Response:
        status, body = readiness(self.ready)
        return web.Response(body=body, status=status, content_type="text/plain")

    def ready(self) -> str | None:
        """Ready while the producer's queue has room (when it is full the receiver answers
        503 and exporters retry later: Kafka is unreachable or slower than the spans)."""
        client = self.receiver.client
        if client.stats.queue_depth >= client.settings.queue_size:
            return "not ready: the producer's queue is full (Kafka unreachable or slow)"
        return None

    def collect(self) -> Iterator[Metric]:
        s = self.receiver.stats
        yield counter("agentwatch_otlp_requests", "Export requests received.", s.requests)
        yield counter("agentwatch_otlp_spans", "Spans received, by outcome: accepted (became "
                      "an event), skipped (no gen_ai.* attributes), invalid (a GenAI span "
                      "that maps to no valid event).", labels=("outcome",),
                      samples=[(("accepted",), s.events), (("skipped",), s.skipped_not_genai),
                               (("invalid",), s.invalid_spans)])
        yield counter("agentwatch_otlp_evaluations_skipped", "gen_ai.evaluation.result span "
                      "events and log records counted and not mapped.", s.evaluations_skipped)
        yield counter("agentwatch_otlp_scores", "Score events made of gen_ai.evaluation.result "
                      "span events and log records.", s.scores)
        yield counter("agentwatch_otlp_log_records", "Log records received (/v1/logs), by "
                      "outcome: evaluation (a gen_ai.evaluation.result record) or skipped "
                      "(any other record).", labels=("outcome",),
                      samples=[(("evaluation",), s.log_records - s.log_records_skipped),
                               (("skipped",), s.log_records_skipped)])
        yield counter("agentwatch_otlp_rejected_requests", "Requests refused, by reason "
                      "(bad_protobuf, bad_json, bad_gzip, unsupported_encoding, "
                      "unsupported_media_type, too_large, queue_full, internal).",
                      labels=("reason",),
                      samples=[((r,), n) for r, n in dict(s.rejected_requests).items()])
        p = self.receiver.client.stats
        yield counter("agentwatch_otlp_producer_sent", "Events delivered to Kafka by the "
                      "receiver's producer.", p.sent)
        yield counter("agentwatch_otlp_producer_dropped", "Events dropped by the producer "
                      "(queue full).", p.dropped)
        yield counter("agentwatch_otlp_producer_failed", "Events the producer failed to "
                      "deliver.", p.failed)
        yield gauge("agentwatch_otlp_producer_queue_depth", "Events queued in the producer.",
                    p.queue_depth)
