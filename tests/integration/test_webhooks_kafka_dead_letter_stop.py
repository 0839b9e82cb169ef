"""The dispatcher's dead-letter write (alerts/_kafka.py) retries while Kafka
refuses the record, and a stop ends the wait between two attempts: the write gives up
(the delivery stays unfinished for the next run) instead of sleeping on and trying once
more after the service was asked to stop; and the stop's drain does not then wait
``drain_s`` for that delivery, which nothing can finish any more.

Kafka refuses here because the record is larger than the producer's ``max_request_size``
(the real client's check, on the real broker's topic)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from worker_harness import create_topic, produce

from agentwatch.alerts import EndpointConfig, WebhookReceiver, WebhooksSettings
from agentwatch.alerts._kafka import KafkaDispatcher
from agentwatch.schemas import (
    Alert,
    AlertScope,
    AlertState,
    AlertType,
    DeliveryFailure,
    Severity,
    encode_alert,
)

_LOGGER = "agentwatch.webhooks"


class _CountingProducer(AIOKafkaProducer):  # type: ignore[misc]  # untyped base
    """The real producer, counting the writes it is asked for."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.sends = 0

    async def send_and_wait(self, *args: Any, **kwargs: Any) -> Any:
        self.sends += 1
        return await super().send_and_wait(*args, **kwargs)


class _StopOnRetry(logging.Handler):
    """Stops the dispatcher when it says it will retry (its wait comes next)."""

    def __init__(self, dispatcher: KafkaDispatcher) -> None:
        super().__init__(logging.WARNING)
        self.dispatcher = dispatcher
        self.retries = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "dead-letter topic" in record.getMessage():
            self.retries += 1
            self.dispatcher.stop()


@pytest.fixture
def dispatcher(kafka_bootstrap: str, topic_name: str, tmp_path: Path
               ) -> Iterator[KafkaDispatcher]:
    create_topic(kafka_bootstrap, f"{topic_name}.dlq", 1)
    settings = WebhooksSettings(endpoints_file=str(tmp_path / "endpoints.yaml"),
                                bootstrap_servers=kafka_bootstrap, dlq_topic=f"{topic_name}.dlq",
                                alerts_topic=f"{topic_name}.alerts", group_id=f"{topic_name}-g")
    dispatcher = KafkaDispatcher(settings, [])
    yield dispatcher
    dispatcher.dispatcher.close()
    dispatcher.escalator.close()


def _failure() -> DeliveryFailure:
    alert = Alert(
        alert_id="al-1", rule="loop_repeat", type=AlertType.RUNAWAY_LOOP,
        state=AlertState.FIRING, severity=Severity.CRITICAL, scope=AlertScope.SESSION,
        key="s1", tenant_id="acme", agent_id="bot", session_id="s1", value=6.0,
        threshold=5.0, window_s=120, ts=datetime(2026, 11, 20, 9, tzinfo=UTC),
        reason="s1 loops", event_ids=[],
    )
    return DeliveryFailure(alert=alert, endpoint="ops", delivery_id="d-1", attempts=3,
                           status_code=503, error="HTTP 503")


def test_a_stop_during_the_dead_letter_retry_wait_gives_up_without_another_attempt(
    dispatcher: KafkaDispatcher, kafka_bootstrap: str
) -> None:
    handler = _StopOnRetry(dispatcher)
    logger = logging.getLogger(_LOGGER)
    logger.addHandler(handler)

    async def main() -> int:
        producer = _CountingProducer(bootstrap_servers=kafka_bootstrap, max_request_size=64)
        await producer.start()
        dispatcher._producer = producer
        try:
            with pytest.raises(KafkaError):
                await dispatcher._produce_failure(_failure())
        finally:
            await producer.stop()
        return int(producer.sends)

    try:
        sends = asyncio.run(main())
    finally:
        logger.removeHandler(handler)
    assert handler.retries == 1  # it failed once and was going to wait
    assert sends == 1  # the stop ended the wait: no second attempt
    assert dispatcher.stats.dead_lettered == 0


class _RefusingDispatcher(KafkaDispatcher):
    """The real dispatcher whose producer refuses records past 200 bytes (a dead letter
    is larger; the topics it creates and reads are not)."""

    def _make_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(bootstrap_servers=self._settings.bootstrap_servers,
                                max_request_size=200)


def test_a_stop_does_not_wait_drain_s_for_a_dead_letter_write_that_gave_up(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    alerts_topic = f"{topic_name}.alerts"
    create_topic(kafka_bootstrap, alerts_topic, 1)
    create_topic(kafka_bootstrap, f"{topic_name}.dlq", 1)
    drain_s = 600.0  # a stop that waited for it would outlast the test's timeout
    with WebhookReceiver(default_status=400) as receiver:  # final: dead-lettered at once
        endpoint = EndpointConfig.model_validate(
            {"name": "ops", "url": receiver.url, "secret": "s", "allow_private": True})
        settings = WebhooksSettings(
            endpoints_file=str(tmp_path / "endpoints.yaml"), bootstrap_servers=kafka_bootstrap,
            dlq_topic=f"{topic_name}.dlq", alerts_topic=alerts_topic,
            group_id=f"{topic_name}-g", acks_topic=f"{topic_name}.acks", drain_s=drain_s)
        runner = _RefusingDispatcher(settings, [endpoint])
        handler = _StopOnRetry(runner)
        logger = logging.getLogger(_LOGGER)
        logger.addHandler(handler)

        async def main() -> None:
            task = asyncio.create_task(runner.run())
            await asyncio.wait_for(runner.ready.wait(), 60)
            await asyncio.to_thread(produce, kafka_bootstrap, alerts_topic,
                                    [(b"al-1", encode_alert(_failure().alert))])
            await asyncio.wait_for(task, 60)  # was: drain_s

        caplog.set_level(logging.INFO, _LOGGER)
        try:
            asyncio.run(main())
        finally:
            logger.removeHandler(handler)
    assert handler.retries >= 1
    assert runner.dispatcher.abandoned == 1
    assert "1 alert(s) unfinished; the next run delivers them" in caplog.text
    assert runner.stats.dead_lettered == 0
