"""Escalation and acknowledgement in the embedded pipeline (``agentwatch demo``): the same
Escalator as the Kafka dispatcher, real receivers on 127.0.0.1, acks stored in chDB."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from agentwatch.alerts import EndpointConfig, WebhookReceiver
from agentwatch.cli.embedded import EmbeddedPipeline
from agentwatch.processors.core import Engine, rules_from_mapping
from agentwatch.producer import InProcessLog
from agentwatch.sinks import ChdbBackend, ClickHouseSink, SchemaConfig, migrate

TOPIC = "agentwatch.events"
SECRET = "embedded-escalation-secret"
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
WAIT_S = 15.0


def loop_records(session: str) -> list[tuple[bytes, bytes]]:
    """One session calling the same tool with the same arguments 6 times (a loop)."""
    events = [
        {
            "event_id": str(uuid.uuid4()),
            "ts": (T0 + timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
            "agent_id": "bot",
            "session_id": session,
            "kind": "tool_call",
            "name": "search",
            "tool_args_hash": "same",
        }
        for i in range(6)
    ]
    return [(f"default/{session}".encode(), orjson.dumps(events))]


@pytest.fixture
def receivers() -> Iterator[tuple[WebhookReceiver, WebhookReceiver]]:
    with WebhookReceiver(secret=SECRET) as first, WebhookReceiver(secret=SECRET) as second:
        yield first, second


def endpoints(first: str, second: str) -> list[EndpointConfig]:
    common: dict[str, Any] = {"secret": SECRET, "allow_private": True}
    return [
        EndpointConfig.model_validate(
            {"name": "team", "url": first, "escalate_after_s": 0.3, "escalate_to": "oncall"}
            | common
        ),
        EndpointConfig.model_validate(
            {"name": "oncall", "url": second, "filters": {"tenants": ["nobody"]}} | common
        ),
    ]


def run(
    tmp_path: Path, receivers: tuple[WebhookReceiver, WebhookReceiver], *, ack_by: str | None
) -> tuple[EmbeddedPipeline, list[tuple[Any, ...]]]:
    first, second = receivers
    config = rules_from_mapping({"rules": {"loop_steps": {"enabled": False}}})
    log = InProcessLog()
    log.append(TOPIC, loop_records("s-1"))
    with ChdbBackend(tmp_path / "chdb") as backend:
        migrate(backend, SchemaConfig(ttl_days=None))
        pipeline = EmbeddedPipeline(
            log,
            Engine(config),
            ClickHouseSink(backend),
            endpoints(first.url, second.url),
            topic=TOPIC,
        )
        pipeline.process_available()
        (alert,) = pipeline.stats.alerts
        if ack_by is not None:
            assert pipeline.ack(alert.alert_id, ack_by)
        assert pipeline.escalator.wait_timers(WAIT_S)
        pipeline.stop()
        rows = backend.query("SELECT alert_id, state, acked_by FROM agentwatch.alert_status").rows
    return pipeline, [tuple(r) for r in rows]


def test_no_ack_escalates_to_the_second_endpoint(
    tmp_path: Path, receivers: tuple[WebhookReceiver, WebhookReceiver]
) -> None:
    pipeline, rows = run(tmp_path, receivers, ack_by=None)
    first, second = receivers
    (alert,) = pipeline.stats.alerts
    assert [d.alert().alert_id for d in first.received] == [alert.alert_id]
    assert [d.alert().alert_id for d in second.received] == [alert.alert_id]
    assert rows == [(alert.alert_id, "firing", None)]


def test_ack_stops_the_escalation_and_is_stored(
    tmp_path: Path, receivers: tuple[WebhookReceiver, WebhookReceiver]
) -> None:
    pipeline, rows = run(tmp_path, receivers, ack_by="maria")
    first, second = receivers
    (alert,) = pipeline.stats.alerts
    assert len(first.received) == 1
    assert second.received == []
    assert rows == [(alert.alert_id, "firing", "maria")]
