"""Start a worker: check the broker, create missing topics, run the faust app."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import time

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from agentwatch.processors.core import RulesConfig
from agentwatch.processors.worker._settings import WorkerSettings
from agentwatch.schemas import ConfigError, TransportError
from agentwatch.schemas.kafka_security import explain_connect_failure

__all__ = ["control_topic_spec", "ensure_topics", "run_worker", "tune_gc"]

log = logging.getLogger("agentwatch.worker")


async def ensure_topics(settings: WorkerSettings, *, timeout_s: float = 15.0) -> int:
    """Create the events, alerts, dead-letter and control topics when missing; return how
    many partitions the events topic has."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers,
                                request_timeout_ms=int(timeout_s * 1000),
                                **settings.kafka_security.client_options())
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
    except (KafkaError, OSError, TimeoutError) as exc:
        await admin.close()
        auth = await explain_connect_failure(settings.bootstrap_servers, settings.kafka_security)
        if auth is not None:
            raise ConfigError(auth) from None
        raise TransportError(
            f"cannot reach Kafka at {settings.bootstrap_servers} "
            f"(KAFKA_BOOTSTRAP_SERVERS): {exc or type(exc).__name__}") from None
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, settings.partitions, settings.replication_factor)
            for name in (settings.events_topic, settings.alerts_topic, settings.dlq_topic)
            if name not in existing
        ]
        if settings.control_topic not in existing:
            missing.append(control_topic_spec(settings.control_topic,
                                              settings.replication_factor))
        if missing:
            log.info("creating topics %s", [t.name for t in missing])
            await admin.create_topics(missing)
        described = await admin.describe_topics([settings.events_topic])
        partitions = described[0]["partitions"]
        if not partitions:
            raise TransportError(f"topic {settings.events_topic} has no partitions")
        await _ensure_rekeyed_topic(admin, settings, len(partitions), existing, timeout_s)
        return len(partitions)
    finally:
        await admin.close()


def control_topic_spec(name: str, replication_factor: int) -> NewTopic:
    """The control topic: compacted (the latest record per scope is what counts), one
    partition (every follower reads all of it, in order)."""
    return NewTopic(name, 1, replication_factor, topic_configs={"cleanup.policy": "compact"})


async def _ensure_rekeyed_topic(admin: AIOKafkaAdminClient, settings: WorkerSettings,
                                partitions: int, existing: set[str], timeout_s: float) -> None:
    """The internal topic between the stages, created here, before faust subscribes. faust
    declares it itself, but its consumer could subscribe first and then ignore the topic
    for good ("Ignoring missing topic"): the agent/tenant stage then never read a record
    (seen in 1 of 5 runs of a parity test: no agent alert at all)."""
    topic = settings.rekeyed_topic
    if topic not in existing:
        log.info("creating topic %s", topic)
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(topic, partitions,
                                                settings.replication_factor)])
    deadline = time.monotonic() + timeout_s
    while topic not in set(await admin.list_topics()):  # visible to every client
        if time.monotonic() > deadline:
            raise TransportError(f"topic {topic} was created but does not show up")
        await asyncio.sleep(0.1)


#: gen0 collections every 50,000 net allocations instead of 700 (see tune_gc)
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """A worker allocates a few objects per event (the decoded event, alert checks) and
    keeps a large, long-lived state (windows of thousands of sessions). With CPython's
    default thresholds the cyclic collector runs every 700 allocations and keeps walking
    that state: measured on the hot path (200,000 fleet events, 5,000 sessions), 37 µs
    per event with the defaults, 28 µs with these. The state has no reference cycles,
    so little waits longer to be collected; what exists at start is frozen out of it."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run_worker(settings: WorkerSettings, config: RulesConfig, *, loglevel: str = "warning"
               ) -> None:
    """Run until SIGTERM/SIGINT (faust's worker handles both and shuts down cleanly)."""
    if settings.store == "rocksdb":
        try:
            import rocksdict  # noqa: F401, PLC0415
        except ImportError:
            raise ConfigError("store: rocksdb needs the rocksdict package "
                              "(pip install 'agentwatch-processors[rocksdb]')") from None
    partitions = asyncio.run(ensure_topics(settings))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.stages == "split":
        from agentwatch.processors.worker._split import rekeyed_child  # noqa: PLC0415

        with rekeyed_child(settings, loglevel):
            _run_app(dataclasses.replace(settings, stages="session"), config, partitions,
                     loglevel)
    else:
        _run_app(settings, config, partitions, loglevel)


def _run_app(settings: WorkerSettings, config: RulesConfig, partitions: int, loglevel: str
             ) -> None:
    import faust  # noqa: PLC0415 -- heavy: only when a worker runs

    from agentwatch.processors.worker._app import build_app, fatal_error  # noqa: PLC0415

    app = build_app(settings, config, partitions)
    tune_gc()
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    # faust's terminal spinner turns the root logger to DEBUG (to spin on every record) at
    # WARNING and above: every debug call of faust and aiokafka then built a LogRecord, per
    # message sent (profiled: 6 % of the worker). No terminal here needs it.
    worker.spinner = None
    try:
        worker.execute_from_commandline()
    except SystemExit:
        fatal = fatal_error(app)
        if fatal is not None:  # it stopped itself: exit with the reason, not 0
            raise fatal from None
        raise
