"""``agentwatch webhooks``: Kafka's alerts topic -> signed webhooks (needs aiokafka).

::

    from agentwatch.alerts import WebhooksSettings, load_endpoints
    from agentwatch.alerts.kafka import run_dispatcher

    settings = WebhooksSettings.from_env()
    run_dispatcher(settings, load_endpoints(settings.endpoints_file))  # until SIGTERM

How offsets, retries and dead letters work: :mod:`agentwatch.alerts._kafka`.
"""

from __future__ import annotations

from agentwatch.alerts._kafka import (
    COMMIT_EVERY_S,
    DispatcherStats,
    KafkaDispatcher,
    install_signal_handlers,
    run_dispatcher,
)

__all__ = [
    "COMMIT_EVERY_S",
    "DispatcherStats",
    "KafkaDispatcher",
    "install_signal_handlers",
    "run_dispatcher",
]
