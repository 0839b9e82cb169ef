"""The worker's Prometheus metrics (README, "Operating it").

Most of them are read at scrape time from what the worker counts anyway (its stats
counters, its consumer's highwaters, its stages' offsets): nothing on the hot path. Only
what the stats do not split — alerts by rule and state, dead letters by reason — is
counted per batch output (lists that are almost always empty), and each checkpoint's
duration goes to a histogram.
"""

from __future__ import annotations

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

    from agentwatch.processors.worker._session_stage import StageOutput

__all__ = ["CHECKPOINT_BUCKETS_S", "WorkerMetrics"]

#: a checkpoint takes a few ms (a quiet worker) to a few hundred (thousands of dirty keys)
CHECKPOINT_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: stats counter -> (metric name without ``_total``, help)
_COUNTERS: Final = {
    "events": ("agentwatch_worker_events",
               "Events read from the events topic by the session stage."),
    "records": ("agentwatch_worker_records", "Kafka records read from the events topic."),
    "rekeyed_events": ("agentwatch_worker_rekeyed_events",
                       "Events read by the agent/tenant stage from the rekeyed topic."),
    "forwards": ("agentwatch_worker_forwards",
                 "Records forwarded to the agent/tenant stage (rekeyed topic)."),
    "changelog_bytes": ("agentwatch_worker_changelog_bytes",
                        "Bytes of state written to the changelog topics by checkpoints."),
}


class WorkerMetrics(ServiceMetrics):
    """One worker process's registry. ``worker`` is its ``_Worker`` (read at scrape time
    from the metrics thread: plain reads of counters and offsets)."""

    port_setting = "AGENTWATCH_WORKER_METRICS_PORT"

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.registry = registry = CollectorRegistry()
        self.alerts = Counter("agentwatch_worker_alerts", "Alert state changes produced, by "
                              "rule and state (firing, resolved).", ["rule", "state"],
                              registry=registry)
        self.dead_letters = Counter("agentwatch_worker_dead_letters", "Invalid input sent to "
                                    "the dead-letter topic, by reason.", ["reason"],
                                    registry=registry)
        self.checkpoint_seconds = Histogram(
            "agentwatch_worker_checkpoint_seconds", "Duration of a checkpoint: changelog "
            "writes acknowledged, offsets committed.", buckets=CHECKPOINT_BUCKETS_S,
            registry=registry)
        registry.register(self)  # as a collector: collect() below

    def outputs(self, out: StageOutput) -> None:
        """Count a batch's alerts and dead letters (one call per batch)."""
        for alert in out.alerts:
            self.alerts.labels(alert.rule, alert.state.value).inc()
        for dead in out.dead_letters:
            self.dead_letters.labels(dead_letter_reason(dead.reason)).inc()

    def ready(self) -> str | None:
        """Ready once the worker has joined its group (partitions assigned, possibly none)
        and restored its tables from the changelogs; lag is a metric, not a reason to be
        unready (a worker catching up is doing its job)."""
        worker = self.worker
        if not worker.assigned_s:
            return "not ready: waiting for a partition assignment (joining the group)"
        tables: Any = worker.app.tables
        if not tables.recovery.completed.is_set():
            return "not ready: restoring its tables from the changelog topics"
        return None

    def collect(self) -> Iterator[Metric]:
        worker = self.worker
        total = dict(worker.stats.total)
        for key, (name, doc) in _COUNTERS.items():
            yield counter(name, doc, total[key])
        settings = worker.settings
        lag: list[tuple[tuple[str, str], float]] = []
        assigned = 0
        if worker.assigned_s:
            consumer: Any = worker.app.consumer
            for tp in list(consumer.assignment()):
                if tp.topic != settings.events_topic or not settings.runs_session_stage:
                    continue
                assigned += 1
                highwater = highwater_of(consumer, tp)
                if highwater is not None:
                    done = worker.session_stage.last_offset(tp.partition) + 1
                    lag.append(((tp.topic, str(tp.partition)), max(0, highwater - done)))
        yield gauge("agentwatch_worker_lag_records", "Records of the events topic not yet "
                    "processed, per assigned partition (highwater - next offset).",
                    labels=("topic", "partition"), samples=lag)
        yield gauge("agentwatch_worker_assigned_partitions",
                    "Partitions of the events topic assigned to this worker.", assigned)
        sessions = sum(p.engine.open_sessions
                       for p in list(worker.session_stage.partitions.values()))
        yield gauge("agentwatch_worker_open_sessions", "Sessions with open windows.", sessions)
