"""The sink's Prometheus metrics (README, "Operating it").

Counters are read at scrape time from :class:`~agentwatch.sinks.kafka._runner.SinkStats`;
lag from the consumer's highwaters and the next offset per partition the loop notes
after each fetch; dead letters by reason are counted when their round is stored; each
insert's duration goes to a histogram.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import Counter, Histogram

from agentwatch.schemas.metrics import (
    CollectorRegistry,
    ServiceMetrics,
    counter,
    dead_letter_reason,
    gauge,
    highwater_of,
)

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["INSERT_BUCKETS_S", "SinkMetrics"]

#: an insert of a batch: ~10 ms (chDB, a few rows) to seconds (100,000 rows to a server)
INSERT_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: SinkStats field -> (metric name without ``_total``, help)
_COUNTERS: Final = {
    "records": ("agentwatch_sink_records", "Kafka records read (events, alerts, failures)."),
    "events": ("agentwatch_sink_events", "Events stored in the events table."),
    "alerts": ("agentwatch_sink_alerts", "Alert rows stored in the alerts table."),
    "duplicates": ("agentwatch_sink_duplicates",
                   "Events left out as already stored (same event_id re-sent)."),
    "rounds": ("agentwatch_sink_rounds", "Flush rounds stored and committed."),
    "retries": ("agentwatch_sink_insert_retries",
                "Inserts retried while ClickHouse failed or pushed back."),
}


class SinkMetrics(ServiceMetrics):
    """One sink's registry. ``sink`` is its ``KafkaSink`` (read at scrape time from the
    metrics thread: plain reads of counters and offsets)."""

    port_setting = "AGENTWATCH_SINK_METRICS_PORT"

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.registry = registry = CollectorRegistry()
        #: (topic, partition) -> the next offset to read, noted after each fetch
        self.positions: dict[tuple[str, int], int] = {}
        self.dead_letters = Counter("agentwatch_sink_dead_letters", "Rows stored in the "
                                    "dead_letters table, by reason.", ["reason"],
                                    registry=registry)
        self.insert_seconds = Histogram("agentwatch_sink_insert_seconds", "Duration of one "
                                        "successful insert, by table.", ["table"],
                                        buckets=INSERT_BUCKETS_S, registry=registry)
        registry.register(self)

    def stored(self, reasons: Tally[str]) -> None:
        """A round's dead letters, by reason text, once the round is stored."""
        for reason, n in reasons.items():
            self.dead_letters.labels(dead_letter_reason(reason)).inc(n)

    def ready(self) -> str | None:
        """Ready once partitions are assigned, and while ClickHouse takes inserts (the sink
        pauses its partitions while it retries a failing insert)."""
        sink = self.sink
        if not sink.ready.is_set():
            return "not ready: waiting for a partition assignment (joining the group)"
        if sink._paused:
            return "not ready: ClickHouse does not take inserts (retrying, partitions paused)"
        return None

    def collect(self) -> Iterator[Metric]:
        stats = self.sink.stats
        for field, (name, doc) in _COUNTERS.items():
            yield counter(name, doc, getattr(stats, field))
        lag: list[tuple[tuple[str, str], float]] = []
        consumer: Any = self.sink._consumer
        if consumer is not None:
            for tp in list(consumer.assignment()):
                highwater = highwater_of(consumer, tp)
                position = self.positions.get((tp.topic, tp.partition))
                if highwater is not None and position is not None:
                    lag.append(((tp.topic, str(tp.partition)), max(0, highwater - position)))
        yield gauge("agentwatch_sink_lag_records", "Records not yet read, per assigned "
                    "partition (highwater - next offset).", labels=("topic", "partition"),
                    samples=lag)
