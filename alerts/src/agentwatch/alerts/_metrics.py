"""The webhooks dispatcher's Prometheus metrics (README, "Operating it").

Read at scrape time from what the dispatcher counts anyway (its stats, every endpoint's
counters, the consumer's highwaters and the next offset of each partition); each finished
delivery's duration goes to a histogram.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import Histogram

from agentwatch.schemas.metrics import (
    CollectorRegistry,
    ServiceMetrics,
    counter,
    gauge,
    highwater_of,
)

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from agentwatch.alerts._sender import DeliveryResult

__all__ = ["DELIVERY_BUCKETS_S", "DispatcherMetrics"]

#: a delivery, from its first attempt to its end (retries and their backoff included)
DELIVERY_BUCKETS_S: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                             60.0, 300.0)


class DispatcherMetrics(ServiceMetrics):
    """One dispatcher's registry. ``dispatcher`` is its ``KafkaDispatcher`` (read at scrape
    time from the metrics thread)."""

    port_setting = "AGENTWATCH_WEBHOOKS_METRICS_PORT"

    def __init__(self, dispatcher: Any) -> None:
        self.dispatcher = dispatcher
        self.registry = registry = CollectorRegistry()
        self.delivery_seconds = Histogram(
            "agentwatch_webhooks_delivery_seconds", "Duration of a finished delivery (all its "
            "attempts), by endpoint and outcome (delivered, dead_lettered).",
            ["endpoint", "outcome"], buckets=DELIVERY_BUCKETS_S, registry=registry)
        registry.register(self)

    def finished(self, result: DeliveryResult) -> None:
        """One delivery's end (called on the endpoint's lane thread)."""
        outcome = "delivered" if result.delivered else "dead_lettered"
        self.delivery_seconds.labels(result.endpoint, outcome).observe(result.elapsed_s)

    def ready(self) -> str | None:
        """Ready once the dead-letter producer runs and partitions are assigned."""
        if not self.dispatcher.ready.is_set():
            return "not ready: waiting for a partition assignment (joining the group)"
        return None

    def collect(self) -> Iterator[Metric]:
        d = self.dispatcher
        stats = d.stats
        yield counter("agentwatch_webhooks_alerts", "Alert records read.", stats.alerts)
        yield counter("agentwatch_webhooks_unreadable", "Records of the alerts topic that are "
                      "not alerts (skipped).", stats.unreadable)
        yield counter("agentwatch_webhooks_dead_letters", "Failed deliveries written to the "
                      "alerts dead-letter topic (acknowledged by Kafka).", stats.dead_lettered)
        endpoints = d.endpoint_stats()
        deliveries: list[tuple[tuple[str, str], float]] = []
        for name, s in endpoints.items():
            deliveries += [((name, "delivered"), s.delivered),
                           ((name, "dead_lettered"), s.dead_lettered)]
        yield counter("agentwatch_webhooks_deliveries", "Finished deliveries, by endpoint and "
                      "outcome (delivered, dead_lettered).", labels=("endpoint", "outcome"),
                      samples=deliveries)
        yield counter("agentwatch_webhooks_attempts", "HTTP attempts, by endpoint.",
                      labels=("endpoint",),
                      samples=[((n,), s.attempts) for n, s in endpoints.items()])
        yield counter("agentwatch_webhooks_retries", "Attempts that were retries, by endpoint.",
                      labels=("endpoint",),
                      samples=[((n,), s.retries) for n, s in endpoints.items()])
        yield gauge("agentwatch_webhooks_queued", "Deliveries not finished (waiting, being "
                    "sent or between attempts), by endpoint.", labels=("endpoint",),
                    samples=[((n,), s.queued) for n, s in endpoints.items()])
        lag: list[tuple[tuple[str, str], float]] = []
        consumer: Any = d._consumer
        progress: dict[Any, Any] = dict(d._progress)
        if consumer is not None:
            for tp, p in progress.items():
                highwater = highwater_of(consumer, tp)
                if highwater is not None:
                    lag.append(((tp.topic, str(tp.partition)),
                                max(0, highwater - p.next_offset)))
        yield gauge("agentwatch_webhooks_lag_records", "Alert records not yet read, per "
                    "assigned partition (highwater - next offset).",
                    labels=("topic", "partition"), samples=lag)
