"""The embedded pipeline: the whole flow in one process, no infrastructure.

An :class:`~agentwatch.producer.InProcessLog` stands in for Kafka (same packed
records, same keys), the detection core runs exactly as in the worker, a
:class:`~agentwatch.sinks.ClickHouseSink` writes to chDB (or any backend) and
alerts go to signed webhooks through the same
:class:`~agentwatch.alerts.Dispatcher` as ``agentwatch webhooks`` (a queue and
threads per endpoint, retries, firing before resolution). One thread consumes; a slow
endpoint never holds up detection, nor another endpoint. A delivery that finally fails
is stored by the sink (an ``alerts`` row with ``delivery_status = 'failed:<endpoint>'``
and a ``dead_letters`` row), as ``agentwatch sink`` stores the dead-letter topic.

Halt rules (``action: halt``) write the same control records as the worker, to the
log's ``control_topic``, which producers built with ``control=True`` on an
``InProcessTransport`` of the same log follow (a tombstone is an empty value there: the
log keeps bytes). The sink stores them in ``control_log``.

Escalation runs here as in ``agentwatch webhooks`` (an
:class:`~agentwatch.alerts.Escalator` over the dispatcher). An acknowledgement
(:meth:`EmbeddedPipeline.ack`, or the signed link when ``ack_listen`` is given) stops it
and is stored in ``alert_acks``; in this one process there is no acks topic, so a new
pipeline starts with no acknowledgement and no timer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from agentwatch.alerts import (
    Ack,
    AckLinks,
    AckServer,
    DeliveryFailure,
    DeliveryResult,
    Dispatcher,
    EndpointConfig,
    Escalator,
    parse_listen,
)
from agentwatch.processors.core import Engine, EventTimeDriver
from agentwatch.processors.worker import control_records, halt_rules
from agentwatch.producer import InProcessLog
from agentwatch.schemas import CONTROL_TOPIC, Alert, SinkError, decode_control, decode_record
from agentwatch.schemas.settings import EVENTS_TOPIC
from agentwatch.sinks import ClickHouseSink

__all__ = ["EmbeddedPipeline", "PipelineStats"]

_log = logging.getLogger("agentwatch.embedded")


@dataclass(slots=True)
class PipelineStats:
    records: int = 0
    events: int = 0
    invalid: int = 0
    alerts: list[Alert] = field(default_factory=list)
    deliveries: list[DeliveryResult] = field(default_factory=list)
    failures: list[DeliveryFailure] = field(default_factory=list)
    sink_errors: int = 0


class EmbeddedPipeline:
    """Consume ``topic`` of ``log`` through ``engine`` into ``sink`` and ``endpoints``."""

    def __init__(
        self,
        log: InProcessLog,
        engine: Engine,
        sink: ClickHouseSink,
        endpoints: Sequence[EndpointConfig] = (),
        *,
        topic: str = EVENTS_TOPIC,
        flush_interval_s: float = 0.5,
        on_alert: Callable[[Alert], None] | None = None,
        control_topic: str = CONTROL_TOPIC,
        ack_links: AckLinks | None = None,
        ack_listen: str | None = None,
    ) -> None:
        self._log = log
        self._control_topic = control_topic
        self._halt_rules = halt_rules(engine.config)
        self._sink = sink
        self._topic = topic
        self._flush_interval_s = flush_interval_s
        self._on_alert = on_alert
        self._offset = 0
        self._driver = EventTimeDriver(engine)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = PipelineStats()
        self._dispatcher = Dispatcher(
            endpoints,
            on_dead_letter=self._dead_letter,
            on_result=self._delivered,
            ack_links=ack_links,
        )
        self._escalator = Escalator(self._dispatcher)
        self._ack_server: AckServer | None = None
        if ack_listen is not None:
            if ack_links is None:
                raise ValueError("ack_listen: needs ack_links (the links it serves)")
            host, port = parse_listen(ack_listen)
            self._ack_server = AckServer(
                ack_links, endpoints, self._record_ack, host=host, port=port
            )

    @property
    def offset(self) -> int:
        """Next offset to consume: everything before it is processed."""
        return self._offset

    def start(self) -> EmbeddedPipeline:
        if self._ack_server is not None:
            self._ack_server.start()
        self._thread = threading.Thread(target=self._run, name="agentwatch-embedded", daemon=True)
        self._thread.start()
        return self

    def wait_until(self, offset: int, timeout_s: float) -> bool:
        """Block until every record before ``offset`` is processed."""
        deadline = time.monotonic() + timeout_s
        while self._offset < offset:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop consuming, wait up to ``timeout_s`` for webhook deliveries (and their
        retries), write what is buffered."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if not self._dispatcher.wait_idle(timeout_s):
            _log.warning(
                "%d alert(s) not delivered within %.0f s; given up",
                self._dispatcher.in_flight,
                timeout_s,
            )
        if self._ack_server is not None:
            self._ack_server.stop()
        self._escalator.close()
        self._dispatcher.close()
        self._flush_sink()

    @property
    def dispatcher(self) -> Dispatcher:
        return self._dispatcher

    @property
    def escalator(self) -> Escalator:
        return self._escalator

    @property
    def ack_server(self) -> AckServer | None:
        return self._ack_server

    def ack(self, alert_id: str, by: str, *, via: str = "api") -> bool:
        """Acknowledge ``alert_id``: no further escalation; stored in ``alert_acks``.
        True when it is the first acknowledgement of that alert."""
        return self._record_ack(Ack.now(alert_id, by, via=via))

    def _record_ack(self, ack: Ack) -> bool:
        first = self._escalator.ack(ack)
        if first:
            self._sink.add_acks([ack])
        return first

    def _delivered(self, _ref: object, result: DeliveryResult) -> None:
        self.stats.deliveries.append(result)  # on a lane thread; list.append is atomic

    def _dead_letter(self, failure: DeliveryFailure) -> None:
        self.stats.failures.append(failure)
        self._sink.add_delivery_failures([failure])

    # -- the loop -----------------------------------------------------------------------------
    def _run(self) -> None:
        last_flush = time.monotonic()
        while not self._stop.is_set():
            if self._log.wait(self._topic, self._offset, timeout_s=0.05):
                self.process_available()
            if time.monotonic() - last_flush >= self._flush_interval_s:
                self._flush_sink()
                last_flush = time.monotonic()
        self.process_available()

    def process_available(self, max_records: int = 1000) -> int:
        """Process every record available now; returns how many."""
        done = 0
        while True:
            batch = self._log.read(self._topic, self._offset, max_records)
            if not batch:
                return done
            for offset, _key, value in batch:
                self._process_record(offset, value)
            self._offset = batch[-1][0] + 1
            done += len(batch)

    def _process_record(self, offset: int, value: bytes) -> None:
        stats = self.stats
        decoded = decode_record(value)
        stats.records += 1
        if decoded.rejected:
            stats.invalid += len(decoded.rejected)
            self._sink.add_rejected(decoded.rejected, f"{self._topic}@{offset}")
        alerts: list[Alert] = []
        for event in decoded.events:
            alerts += self._driver.feed(event)
        stats.events += len(decoded.events)
        self._sink.add_events(decoded.events)  # after process(): cost_usd is filled in
        if alerts:
            self._sink.add_alerts(alerts)
            if self._halt_rules:
                self._halt(alerts)
            for alert in alerts:
                stats.alerts.append(alert)
                if self._on_alert is not None:
                    self._on_alert(alert)
                self._escalator.submit(alert)

    def _halt(self, alerts: list[Alert]) -> None:
        records = control_records(self._halt_rules, alerts)
        if records:
            self._log.append(self._control_topic, [(k, v or b"") for k, v in records])
            self._sink.add_control(decode_control(v) for _k, v in records if v is not None)

    def _flush_sink(self) -> None:
        try:
            self._sink.flush()
        except SinkError as exc:  # keep the buffer; the next flush retries
            self.stats.sink_errors += 1
            _log.warning("sink flush failed (will retry): %s", exc)
