"""``agentwatch webhooks``: the alerts topic -> webhooks, committed only when done.

One consumer group (``agentwatch-webhooks``) reads ``agentwatch.alerts``; each alert goes
to the :class:`~agentwatch.alerts.Dispatcher`, whose lanes deliver it. The
position of a partition is committed only past alerts that every matching endpoint has
finished with: delivered, or dead-lettered to ``agentwatch.alerts.dlq`` (acknowledged by
Kafka before it counts). The commit's metadata names the endpoints finished with the
alerts past it (:mod:`agentwatch.alerts._progress`), so a restart or a
rebalance re-reads the unfinished alerts without re-sending them to endpoints that
already have them. An alert can be sent twice, with the same delivery id, only after a
crash between a delivery and the next commit (every :data:`COMMIT_EVERY_S`), or when a
rebalance moves a partition while its deliveries are still under way after a short wait
(the old owner finishes them; the new one starts from the last commit).

While :attr:`WebhooksSettings.max_in_flight` alerts are unfinished (a dead endpoint
holds its alerts through their retries), every partition is paused; the consumer keeps
polling, so it stays in the group.

Escalation and acknowledgements (:mod:`agentwatch.alerts._escalation`): before it
reads an alert, the dispatcher reads the compacted acks topic from its beginning
(:class:`~agentwatch.alerts._acks_kafka.AckFollower`), then follows it, so an
alert acknowledged before a restart is not escalated after it. With ``ack_listen`` set,
it serves the signed acknowledgement links; an ack made there is written to the acks
topic (every dispatcher of the group, and the sink, read it) before it is confirmed.
The open alerts (escalation timers running, or a PagerDuty incident to acknowledge) are
journaled to the compacted topic ``<acks_topic>.escalations``, written before each
commit. When partitions are assigned, the dispatcher reads that topic back (after the
acks) and restores the open alerts read from those partitions, so a pending escalation
survives a crash or moves with its partition; no timer runs until the alerts written
meanwhile are read (one may resolve an alert whose deadline passed). A revoked
partition's open alerts are dropped here: its next owner restores them
(:mod:`~agentwatch.alerts._escalation`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from pydantic import ValidationError

from agentwatch.alerts._acks import Ack, AckServer, parse_listen
from agentwatch.alerts._acks_kafka import AckFollower, publish_ack, read_compacted
from agentwatch.alerts._dispatcher import Dispatcher, EndpointStats
from agentwatch.alerts._endpoints import EndpointConfig
from agentwatch.alerts._escalation import EscalationState, Escalator, escalations_topic
from agentwatch.alerts._metrics import DispatcherMetrics
from agentwatch.alerts._progress import PartitionProgress, endpoint_tag, parse_progress
from agentwatch.alerts._sender import DeliveryResult
from agentwatch.alerts._settings import WebhooksSettings
from agentwatch.schemas import Alert, DeliveryFailure
from agentwatch.schemas.backoff import Backoff, sleep_async
from agentwatch.schemas.errors import TransportError
from agentwatch.schemas.kafka_group import (
    C,
    CommittedOffsets,
    configure_logging,
    ensure_compacted_topic,
    install_signal_handlers,
    rebalance_listener,
    start_with_retry,
)

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition

__all__ = [
    "COMMIT_EVERY_S",
    "DispatcherStats",
    "KafkaDispatcher",
    "install_signal_handlers",
    "run_dispatcher",
]

log = logging.getLogger("agentwatch.webhooks")

COMMIT_EVERY_S: Final = 0.1
_POLL_MS: Final = 100
_MAX_RECORDS: Final = 500
_STATS_EVERY_S: Final = 60.0
_DLQ_RETRY_MAX_S: Final = 10.0
_REVOKE_WAIT_S: Final = 5.0
_ACKS_CATCH_UP_S: Final = 30.0
_ACK_WRITE_TIMEOUT_S: Final = 15.0
_JOURNAL_READ_S: Final = 20.0
_CATCH_UP_S: Final = 60.0
"""Escalation timers wait at most this long after an assignment for the backlog."""


@dataclass(slots=True)
class DispatcherStats:
    alerts: int = 0
    unreadable: int = 0
    commits: int = 0
    dead_lettered: int = 0

    def __str__(self) -> str:
        return (
            f"{self.alerts} alerts read, {self.unreadable} unreadable, "
            f"{self.dead_lettered} dead-lettered, {self.commits} commits"
        )


@dataclass(frozen=True, slots=True)
class _Ref:
    tp: TopicPartition
    generation: int
    offset: int


class KafkaDispatcher:
    """Consume alerts, deliver them, commit what is done (see the module docstring)."""

    def __init__(self, settings: WebhooksSettings, endpoints: Sequence[EndpointConfig]) -> None:
        self._settings = settings
        self._endpoints = list(endpoints)
        self._tags = {endpoint_tag(e.name): e.name for e in self._endpoints}
        self._stopping = asyncio.Event()
        self._progress: dict[TopicPartition, PartitionProgress] = {}
        self._generation: dict[TopicPartition, int] = {}
        self._dirty: set[TopicPartition] = set()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._paused = False
        self._lock = asyncio.Lock()
        self._committed = CommittedOffsets(settings.bootstrap_servers, settings.group_id,
                                           settings.kafka_security, stopping=self._stopping)
        self.stats = DispatcherStats()
        self.ready = asyncio.Event()  # set once partitions are assigned
        self.metrics = DispatcherMetrics(self)  # /metrics: reads the stats at scrape time
        self.dispatcher = Dispatcher(
            self._endpoints,
            on_dead_letter=self._dead_letter,
            on_result=self._on_result,
            on_done=self._on_done,
            ack_links=settings.ack_links(),
        )
        self._escalations_topic = escalations_topic(settings.acks_topic)
        self._journal_lock = threading.Lock()
        self._journal_pending: list[tuple[str, bytes | None]] = []
        self._catching_up: dict[TopicPartition, int] = {}
        """Partition -> its end offset at assignment, until read that far."""
        self._catch_up_deadline = 0.0
        self.escalator = Escalator(self.dispatcher, journal=self._journal)
        self.ack_server: AckServer | None = None

    def stop(self) -> None:
        """Ask :meth:`run` to finish what is under way (up to ``drain_s``), commit and
        return."""
        self._stopping.set()

    def endpoint_stats(self) -> dict[str, EndpointStats]:
        return self.dispatcher.stats()

    # -- the clients ----------------------------------------------------------------
    def _make_consumer(self) -> AIOKafkaConsumer:
        from aiokafka import AIOKafkaConsumer  # noqa: PLC0415 (optional runtime dependency)

        s = self._settings
        return AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap_servers,
            group_id=s.group_id,
            client_id=f"{s.group_id}-webhooks",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            fetch_max_wait_ms=_POLL_MS,  # an alert waits at most this long in the broker
            **s.kafka_security.client_options(),
        )

    def _make_producer(self) -> AIOKafkaProducer:
        from aiokafka import AIOKafkaProducer  # noqa: PLC0415

        s = self._settings
        return AIOKafkaProducer(
            bootstrap_servers=s.bootstrap_servers,
            client_id=f"{s.group_id}-dlq",
            acks="all",
            enable_idempotence=True,
            **s.kafka_security.client_options(),
        )

    async def _start(self, make: Callable[[], C]) -> C | None:
        """A client from ``make()``, once Kafka answers; None when stopped meanwhile."""
        return await start_with_retry(
            make,
            self._stopping,
            log=log,
            what="webhooks",
            bootstrap_servers=self._settings.bootstrap_servers,
            security=self._settings.kafka_security,
            max_backoff_s=self._settings.max_backoff_s,
        )

    async def run(self) -> DispatcherStats:
        s = self._settings
        self._loop = asyncio.get_running_loop()
        producer = await self._start(self._make_producer)
        if producer is None:
            self.dispatcher.close()
            return self.stats
        self._producer = producer
        acks_task: asyncio.Task[None] | None = None
        try:
            acks_task = await self._follow_acks()
            try:
                await ensure_compacted_topic(
                    s.bootstrap_servers, self._escalations_topic, security=s.kafka_security
                )
            except TransportError as exc:  # read again at each assignment
                log.warning("webhooks: cannot create %s (%s)", self._escalations_topic, exc)
            self._start_ack_server()
            consumer = await self._start(self._make_consumer)
            if consumer is None:
                self.dispatcher.close()
                return self.stats
            self._consumer = consumer
            try:
                consumer.subscribe(
                    [self._settings.alerts_topic],
                    listener=rebalance_listener(self._on_revoked, self._on_assigned),
                )
                await self._consume(consumer)
                await self._drain()
            finally:
                self.dispatcher.close()
                with contextlib.suppress(Exception):
                    await consumer.stop()
                with contextlib.suppress(Exception):
                    await self._committed.close()
        finally:
            if self.ack_server is not None:
                self.ack_server.stop()
            self.escalator.close()
            self._stopping.set()
            if acks_task is not None:
                with contextlib.suppress(Exception):
                    await acks_task
            with contextlib.suppress(Exception):
                await producer.stop()
        log.info("webhooks: stopped: %s", self.stats)
        return self.stats

    # -- acknowledgements ---------------------------------------------------------------
    async def _follow_acks(self) -> asyncio.Task[None]:
        """Read the acks topic up to its end (up to a while), then follow it."""
        s = self._settings
        try:
            await ensure_compacted_topic(s.bootstrap_servers, s.acks_topic,
                                         security=s.kafka_security)
        except TransportError as exc:  # the follower retries reading it
            log.warning("webhooks: cannot create %s (%s)", s.acks_topic, exc)
        follower = AckFollower(
            s.bootstrap_servers, s.acks_topic, self.escalator.ack, security=s.kafka_security
        )
        task = asyncio.create_task(follower.run(self._stopping))
        try:
            await asyncio.wait_for(follower.caught_up.wait(), _ACKS_CATCH_UP_S)
        except TimeoutError:
            log.warning(
                "webhooks: %s not read to its end within %.0f s; going on (an alert acked "
                "before may be escalated once)",
                s.acks_topic,
                _ACKS_CATCH_UP_S,
            )
        log.info("webhooks: %d acknowledgement(s) read from %s", follower.read, s.acks_topic)
        return task

    async def _restore_escalations(self, partitions: set[int]) -> None:
        """Take back the open alerts read from ``partitions`` (just assigned) from the
        escalations topic; timers wait until the alerts topic is read up to its end."""
        s, topic = self._settings, self._escalations_topic
        records, complete = await read_compacted(
            s.bootstrap_servers, topic, timeout_s=_JOURNAL_READ_S, security=s.kafka_security
        )
        if not complete:
            log.warning(
                "webhooks: %s not read to its end; pending escalations may be lost", topic
            )
        states = []
        for key, value in records.items():
            try:
                state = EscalationState.decode(value)
            except ValueError as exc:
                log.warning("webhooks: %s: record %r unreadable, skipped: %s", topic, key, exc)
                continue
            if state.partition in partitions:
                states.append(state)
        restored = self.escalator.restore(states)
        log.info("webhooks: %d open alert(s) restored from %s", restored, topic)

    async def _check_caught_up(self, consumer: AIOKafkaConsumer) -> None:
        for tp, end in list(self._catching_up.items()):
            progress = self._progress.get(tp)
            # a transactional tail ends with a marker no record shows: the position does
            if (
                progress is None
                or progress.next_offset >= end
                or await consumer.position(tp) >= end
            ):
                self._caught_up(tp)
        if self._catching_up and time.monotonic() > self._catch_up_deadline:
            log.warning(
                "webhooks: %s not read up to its end within %.0f s; escalation timers run",
                self._settings.alerts_topic,
                _CATCH_UP_S,
            )
            self._catching_up.clear()
            self.escalator.release()

    def _caught_up(self, tp: TopicPartition) -> None:
        """``tp`` is read up to its end of the assignment: timers run once all are."""
        if self._catching_up.pop(tp, None) is not None and not self._catching_up:
            log.info("webhooks: caught up with %s; escalation timers run",
                     self._settings.alerts_topic)
            self.escalator.release()

    def _journal(self, alert_id: str, record: bytes | None) -> None:
        """From any thread: an open alert's change, written before the next commit."""
        with self._journal_lock:
            self._journal_pending.append((alert_id, record))

    async def _write_journal(self) -> bool:
        """Write the journal's pending records in order; False (they stay pending) when
        Kafka does not take them."""
        from aiokafka.errors import KafkaError  # noqa: PLC0415

        producer = self._producer
        with self._journal_lock:
            pending, self._journal_pending = self._journal_pending, []
        if not pending or producer is None:
            return True
        try:
            sent = [
                await producer.send(self._escalations_topic, record, key=alert_id.encode())
                for alert_id, record in pending
            ]
            await asyncio.gather(*sent)
        except KafkaError as exc:
            with self._journal_lock:
                self._journal_pending[:0] = pending
            log.warning("webhooks: cannot write %s (%s); will retry",
                        self._escalations_topic, exc)
            return False
        return True

    def _start_ack_server(self) -> None:
        links = self.dispatcher.ack_links
        if links is None:
            return
        host, port = parse_listen(self._settings.ack_listen)
        self.ack_server = AckServer(
            links, self._endpoints, self._record_ack, host=host, port=port
        ).start()

    def _record_ack(self, ack: Ack) -> None:
        """On the link server's thread: write ``ack`` to the acks topic, then apply it."""
        loop, producer = self._loop, self._producer
        if loop is None or producer is None:
            raise RuntimeError("dispatcher not running")
        asyncio.run_coroutine_threadsafe(
            publish_ack(producer, self._settings.acks_topic, ack), loop
        ).result(_ACK_WRITE_TIMEOUT_S)
        self.escalator.ack(ack)

    # -- the loop --------------------------------------------------------------------
    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        next_commit = time.monotonic() + COMMIT_EVERY_S
        next_stats = time.monotonic() + _STATS_EVERY_S
        while not self._stopping.is_set():
            self._throttle(consumer)
            data = await consumer.getmany(timeout_ms=_POLL_MS, max_records=_MAX_RECORDS)
            async with self._lock:
                for tp, records in data.items():
                    self._take(tp, records)
                await self._check_caught_up(consumer)
            now = time.monotonic()
            if now >= next_commit:
                next_commit = now + COMMIT_EVERY_S
                await self._commit()
            if now >= next_stats:
                next_stats = now + _STATS_EVERY_S
                log.info("webhooks: %s; endpoints %s", self.stats, self.endpoint_stats())

    def _throttle(self, consumer: AIOKafkaConsumer) -> None:
        """Pause every partition while too many alerts are unfinished."""
        full = self.dispatcher.in_flight >= self._settings.max_in_flight
        if full and not self._paused:
            log.warning(
                "webhooks: %d alerts unfinished (max_in_flight): pausing reads",
                self.dispatcher.in_flight,
            )
            consumer.pause(*consumer.assignment())
            self._paused = True
        elif not full and self._paused:
            consumer.resume(*consumer.assignment())
            self._paused = False

    def _take(self, tp: TopicPartition, records: Sequence[Any]) -> None:
        progress = self._progress.get(tp)
        if progress is None:  # revoked while these were in flight
            return
        generation = self._generation[tp]
        for record in records:
            if record.offset < progress.next_offset:
                continue  # fetched before a seek: already read
            carried = progress.read(record.offset)
            ref = _Ref(tp, generation, record.offset)
            try:
                alert = Alert.model_validate_json(record.value or b"")
            except ValidationError as exc:
                # the sink stores unreadable alert records in dead_letters; here they are
                # skipped, loudly
                self.stats.unreadable += 1
                log.warning(
                    "webhooks: %s/%d/%d is not an alert, skipped: %s",
                    tp.topic,
                    tp.partition,
                    record.offset,
                    exc.errors(include_url=False)[:1],
                )
                progress.done(record.offset)
                self._dirty.add(tp)
                continue
            self.stats.alerts += 1
            skip = {self._tags[t] for t in carried if t in self._tags}
            self.escalator.submit(alert, ref, skip=skip, partition=tp.partition)

    # -- callbacks from the lanes' threads ------------------------------------------------
    def _call(self, fn: Any, *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(fn, *args)

    def _on_result(self, ref: object, result: DeliveryResult) -> None:
        self.metrics.finished(result)
        self._call(self._finished, ref, result.endpoint)

    def _on_done(self, ref: object) -> None:
        self._call(self._done, ref)

    def _progress_of(self, ref: object) -> PartitionProgress | None:
        if not isinstance(ref, _Ref) or self._generation.get(ref.tp) != ref.generation:
            return None  # revoked since: the next owner handles it
        return self._progress.get(ref.tp)

    def _finished(self, ref: _Ref, endpoint: str) -> None:
        progress = self._progress_of(ref)
        if progress is not None:
            progress.finished(ref.offset, endpoint_tag(endpoint))
            self._dirty.add(ref.tp)

    def _done(self, ref: _Ref) -> None:
        progress = self._progress_of(ref)
        if progress is not None:
            progress.done(ref.offset)
            self._dirty.add(ref.tp)

    def _dead_letter(self, failure: DeliveryFailure) -> None:
        """On a lane thread: produce the failure and wait for Kafka's acknowledgement
        (retrying until it comes, or the dispatcher stops: then the delivery stays
        unfinished and the next run tries it again)."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("dispatcher not running")
        asyncio.run_coroutine_threadsafe(self._produce_failure(failure), loop).result()

    async def _produce_failure(self, failure: DeliveryFailure) -> None:
        from aiokafka.errors import KafkaError  # noqa: PLC0415

        producer = self._producer
        if producer is None:
            raise RuntimeError("the dead-letter producer is not running")
        backoff = Backoff(0.5, _DLQ_RETRY_MAX_S)
        while True:
            try:
                await producer.send_and_wait(
                    self._settings.dlq_topic, failure.encode(), key=failure.alert.alert_id.encode()
                )
            except KafkaError as exc:
                if self._stopping.is_set():
                    raise
                wait_s = backoff.next_s()
                log.warning("webhooks: cannot write the dead-letter topic (%s); retrying in "
                            "%.1f s", exc, wait_s)
                if await sleep_async(wait_s, self._stopping):
                    raise  # stopping: the delivery stays unfinished, the next run retries it
            else:
                self.stats.dead_lettered += 1
                return

    # -- commits and rebalances -------------------------------------------------------
    async def _commit(self, partitions: Sequence[TopicPartition] | None = None) -> None:
        from aiokafka.errors import KafkaError  # noqa: PLC0415
        from aiokafka.structs import OffsetAndMetadata  # noqa: PLC0415

        if not await self._write_journal():
            return  # not past alerts whose escalation state is not durable yet
        consumer = self._consumer
        wanted = set(self._dirty if partitions is None else partitions)
        offsets = {
            tp: OffsetAndMetadata(p.committed, p.metadata())
            for tp in wanted
            if (p := self._progress.get(tp)) is not None
        }
        if consumer is None or not offsets:
            return
        self._dirty -= wanted
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:  # a rebalance under way: the next owner re-reads
            self._dirty |= set(offsets)
            log.warning("webhooks: commit failed (%s); will retry", exc)
            return
        self.stats.commits += 1

    async def _drain(self) -> None:
        """Give deliveries under way up to ``drain_s``, then commit what is done (one
        whose dead-letter write gave up on the stop is not under way any more)."""
        dispatcher = self.dispatcher
        if dispatcher.in_flight:
            log.info(
                "webhooks: stopping; waiting up to %.0f s for %d alert(s) under way",
                self._settings.drain_s,
                dispatcher.in_flight,
            )
            deadline = time.monotonic() + self._settings.drain_s
            while dispatcher.in_flight and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        async with self._lock:
            await self._commit(list(self._progress))
        if unfinished := dispatcher.in_flight + dispatcher.abandoned:
            log.info("webhooks: %d alert(s) unfinished; the next run delivers them", unfinished)

    async def _on_revoked(self, revoked: list[TopicPartition]) -> None:
        # give the deliveries under way a moment (fewer alerts sent twice), then commit;
        # a stop has drained already
        wait_s = 0.0 if self._stopping.is_set() else min(self._settings.drain_s, _REVOKE_WAIT_S)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(
            (p := self._progress.get(tp)) is not None and p.open for tp in revoked
        ):
            await asyncio.sleep(0.05)
        async with self._lock:
            await self._commit(revoked)
            for tp in revoked:
                self._progress.pop(tp, None)
                self._generation[tp] = self._generation.get(tp, 0) + 1
                self._caught_up(tp)
            self.escalator.forget({tp.partition for tp in revoked})

    async def _on_assigned(self, assigned: list[TopicPartition]) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        async with self._lock:
            committed = await self._committed.read(assigned)
            fresh = [tp for tp in assigned if committed.get(tp, (None, ""))[0] is None]
            beginnings = await consumer.beginning_offsets(fresh) if fresh else {}
            self.escalator.hold()
            self._catch_up_deadline = time.monotonic() + _CATCH_UP_S
            await self._restore_escalations({tp.partition for tp in assigned})
            ends = await consumer.end_offsets(assigned)
            for tp in assigned:
                offset, metadata = committed.get(tp, (None, ""))
                start = offset if offset is not None else beginnings[tp]
                self._generation[tp] = self._generation.get(tp, 0) + 1
                self._progress[tp] = PartitionProgress(start, parse_progress(metadata, start))
                consumer.seek(tp, start)
                self._catching_up[tp] = ends[tp]
            for tp in assigned:
                if ends[tp] <= self._progress[tp].next_offset:
                    self._caught_up(tp)
            if not self._catching_up:
                self.escalator.release()
            if self._paused:
                consumer.pause(*assigned)
        log.info(
            "webhooks: assigned %s", ", ".join(f"{tp.topic}/{tp.partition}" for tp in assigned)
        )
        self.ready.set()


def run_dispatcher(
    settings: WebhooksSettings, endpoints: Sequence[EndpointConfig], *, loglevel: str = "info"
) -> int:
    """Deliver alerts until SIGINT/SIGTERM. Returns 0."""
    configure_logging(loglevel)
    log.info(
        "webhooks: %d endpoint(s): %s; reading %s at %s",
        len(endpoints),
        ", ".join(f"{e.name} ({e.format})" for e in endpoints),
        settings.alerts_topic,
        settings.bootstrap_servers,
    )

    async def main() -> DispatcherStats:
        runner = KafkaDispatcher(settings, endpoints)
        install_signal_handlers(runner)
        if settings.metrics_port:
            runner.metrics.start(settings.metrics_port)
        try:
            return await runner.run()
        finally:
            runner.metrics.close()

    asyncio.run(main())
    return 0
