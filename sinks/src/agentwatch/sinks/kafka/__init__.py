"""``agentwatch sink``: Kafka (events, alerts, failed deliveries) -> ClickHouse, exactly once.

::

    from agentwatch.sinks import SinkSettings, StoreSettings
    from agentwatch.sinks.kafka import run_sink

    run_sink(SinkSettings.from_env(), StoreSettings.from_env())  # until SIGINT/SIGTERM

Needs ``aiokafka`` (installed with ``agentwatch-sinks``). How batches stay exact
across crashes and rebalances: :mod:`agentwatch.sinks.kafka._batches`.
"""

from __future__ import annotations

import asyncio
import gc
import logging

from agentwatch.schemas.kafka_group import configure_logging, install_signal_handlers
from agentwatch.sinks._ddl import migrate
from agentwatch.sinks._settings import SinkSettings, StoreSettings
from agentwatch.sinks.kafka._batches import (
    INTENT_PREFIX,
    BatchKind,
    CommitMeta,
    PartitionBatch,
    RecentIds,
    batch_token,
    intent_metadata,
    memory_metadata,
    parse_commit,
    parse_intent,
)
from agentwatch.sinks.kafka._runner import KafkaSink, SinkStats

__all__ = [
    "INTENT_PREFIX",
    "BatchKind",
    "CommitMeta",
    "KafkaSink",
    "PartitionBatch",
    "RecentIds",
    "SinkStats",
    "batch_token",
    "intent_metadata",
    "memory_metadata",
    "parse_commit",
    "parse_intent",
    "run_sink",
]

log = logging.getLogger("agentwatch.sink")


def run_sink(sink: SinkSettings, store: StoreSettings, *, loglevel: str = "info") -> int:
    """Migrate the schema (idempotent), then consume until SIGINT/SIGTERM. Returns 0."""
    configure_logging(loglevel)
    with store.open() as backend:
        schema = store.schema()
        applied = migrate(backend, schema)
        if applied:
            log.info("sink: applied migrations %s to %s", applied, store.describe())

        async def main() -> SinkStats:
            runner = KafkaSink(sink, backend, schema)
            install_signal_handlers(runner)
            log.info(
                "sink: %s -> %s (group %s)",
                ", ".join(sink.topics),
                store.describe(),
                sink.group_id,
            )
            if sink.metrics_port:
                runner.metrics.start(sink.metrics_port)
            try:
                return await runner.run()
            finally:
                runner.metrics.close()

        # Batches hold many small objects that die by reference counting; the cyclic
        # collector scanning them over and over cost more than the decoding itself.
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        stats = asyncio.run(main())
    log.info("sink: stopped: %s", stats)
    return 0
