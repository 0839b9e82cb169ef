"""Acknowledgements on chDB: the alert_acks table (migration 4) and the alert_status
view, which gives every alert its latest state and who acknowledged it, when."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from agentwatch.alerts import Ack
from agentwatch.schemas import Alert, AlertState
from agentwatch.sinks import ClickHouseSink
from agentwatch.sinks.backends.chdb import ChdbBackend

AlertFactory = Callable[..., Alert]
ACKED_AT = datetime(2026, 11, 20, 9, 5, 0, 123456, tzinfo=UTC)


def status(backend: ChdbBackend, alert_id: str) -> tuple[object, ...]:
    result = backend.query(
        "SELECT state, acked_by, acked_at, resolved_at IS NULL "
        "FROM agentwatch.alert_status WHERE alert_id = {id:String}",
        {"id": alert_id},
    )
    (row,) = result.rows
    return tuple(row)


def test_acked_alert_shows_who_and_when(backend: ChdbBackend, make_alert: AlertFactory) -> None:
    alert = make_alert(alert_id=str(uuid.uuid4()))
    sink = ClickHouseSink(backend)
    sink.add_alerts([alert])
    sink.add_acks([Ack(alert.alert_id, "maria", ACKED_AT, "cli")])
    stats = sink.flush()
    assert stats.inserted.acks == 1
    state, by, at, open_ = status(backend, alert.alert_id)
    assert (state, by, open_) == ("firing", "maria", 1)
    assert isinstance(at, datetime)
    assert at.replace(tzinfo=UTC) == ACKED_AT


def test_unacked_alert_has_null_ack(backend: ChdbBackend, make_alert: AlertFactory) -> None:
    alert = make_alert(alert_id=str(uuid.uuid4()))
    sink = ClickHouseSink(backend)
    sink.add_alerts([alert])
    sink.flush()
    assert status(backend, alert.alert_id)[1:3] == (None, None)


def test_first_ack_wins_and_resolution_is_the_latest_state(
    backend: ChdbBackend, make_alert: AlertFactory
) -> None:
    alert = make_alert(alert_id=str(uuid.uuid4()))
    resolved = alert.model_copy(
        update={"state": AlertState.RESOLVED, "ts": alert.ts + timedelta(seconds=30)}
    )
    sink = ClickHouseSink(backend)
    sink.add_alerts([alert, resolved])
    sink.add_acks(
        [
            Ack(alert.alert_id, "li", ACKED_AT + timedelta(seconds=5), "link:team"),
            Ack(alert.alert_id, "maria", ACKED_AT, "cli"),
        ]
    )
    sink.flush()
    state, by, _at, open_ = status(backend, alert.alert_id)
    assert (state, by, open_) == ("resolved", "maria", 0)
    rows = backend.query(
        "SELECT count() FROM agentwatch.alert_acks WHERE alert_id = {id:String}",
        {"id": alert.alert_id},
    ).rows
    assert rows == [(2,)]
