"""`agentwatch sink` on the real broker stores failed webhook deliveries: each record of the
alerts dead-letter topic becomes an `alerts` row with `delivery_status = 'failed:<endpoint>'`
and a `dead_letters` row with the reason, exactly once even when the sink is SIGKILLed
between an insert and its commit; an unreadable record becomes a dead letter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sink_harness import SinkProcess, group_offsets, wait_caught_up
from worker_harness import create_topic, produce

from agentwatch.schemas import (
    Alert,
    AlertScope,
    AlertState,
    AlertType,
    DeliveryFailure,
    Severity,
    encode_alert,
)
from agentwatch.sinks import ChdbBackend
from agentwatch.sinks.kafka import INTENT_PREFIX

# Event times near now: the sink creates its tables with the default 30-day TTL.
T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
PARTITIONS = {"events": 1, "alerts": 2, "dlq": 2}
ENDPOINTS = ("team-slack", "pager")
BROKEN = b'{"alert": {"rule": 1}, "endpoint": "team-slack"}'


def make_alerts() -> list[Alert]:
    """Six alerts' state changes in order: cost alerts (even) and runaway loops (odd) that
    fire; al-2 and al-5 also resolve. ``value`` is the change's index."""
    alerts: list[Alert] = []
    for k in range(6):
        loop = k % 2 == 1
        states = [AlertState.FIRING] + ([AlertState.RESOLVED] if k % 3 == 2 else [])
        for state in states:
            j = len(alerts)
            alerts.append(Alert(
                alert_id=f"al-{k}", rule="loop_repeat" if loop else "session_cost",
                type=AlertType.RUNAWAY_LOOP if loop else AlertType.COST, state=state,
                severity=Severity.WARNING, scope=AlertScope.SESSION, key=f"s{k}",
                tenant_id="t0", agent_id="agent-0", session_id=f"s{k}", value=float(j),
                threshold=1.0, window_s=60, ts=T0 + timedelta(seconds=j),
                reason=f"alert {k} {state.value}", event_ids=[f"e{j}"]))
    return alerts


#: change index -> the endpoints it failed to reach (al-0's firing both; al-2's
#: resolution; al-5's firing and resolution).
FAILED = {0: ENDPOINTS, 3: ("pager",), 6: ("team-slack",), 7: ("pager",)}


def make_failures(alerts: list[Alert]) -> list[DeliveryFailure]:
    return [
        DeliveryFailure(
            alert=alerts[j], endpoint=endpoint, delivery_id=f"d-{j}-{endpoint}", attempts=8,
            status_code=503, error="HTTP 503: upstream unavailable",
            failed_at=T0 + timedelta(minutes=5, seconds=j))
        for j, endpoints in FAILED.items() for endpoint in endpoints
    ]


@pytest.fixture
def topics(kafka_bootstrap: str, topic_name: str) -> dict[str, str]:
    names = {kind: f"{topic_name}.{kind}" for kind in PARTITIONS}
    for kind, name in names.items():
        create_topic(kafka_bootstrap, name, PARTITIONS[kind])
    return names


def _sink(kafka_bootstrap: str, topics: dict[str, str], group: str, tmp_path: Path,
          log_name: str, **options: Any) -> SinkProcess:
    sink = SinkProcess(kafka_bootstrap, events_topic=topics["events"],
                       alerts_topic=topics["alerts"], group=group, chdb_path=tmp_path / "ch",
                       log_path=tmp_path / log_name, batch_max_events=4, **options)
    sink.env["AGENTWATCH_ALERTS_DLQ_TOPIC"] = topics["dlq"]
    return sink


def test_sink_stores_failed_deliveries_as_alert_rows_and_dead_letters_exactly_once(
    kafka_bootstrap: str, topics: dict[str, str], topic_name: str, tmp_path: Path
) -> None:
    alerts = make_alerts()
    failures = make_failures(alerts)
    assert (len(alerts), len(failures)) == (8, 5)
    assert alerts[3].state is AlertState.RESOLVED
    group = f"{topic_name}-sink"
    # Only failures to read at first: the doomed sink's first insert is a failure batch's.
    produce(kafka_bootstrap, topics["dlq"],
            [(f.alert.alert_id.encode(), f.encode()) for f in failures])
    doomed = _sink(kafka_bootstrap, topics, group, tmp_path, "doomed.log",
                   kill_after_inserts=1).start()
    assert doomed.wait(timeout_s=90) == -9, doomed.log()[-3000:]
    pending = [meta for (topic, _), (_, meta) in group_offsets(kafka_bootstrap, group).items()
               if topic == topics["dlq"] and meta.startswith(INTENT_PREFIX)]
    assert pending, group_offsets(kafka_bootstrap, group)

    produce(kafka_bootstrap, topics["alerts"],
            [(a.alert_id.encode(), encode_alert(a)) for a in alerts])
    produce(kafka_bootstrap, topics["dlq"], [(b"al-broken", BROKEN)])
    sink = _sink(kafka_bootstrap, topics, group, tmp_path, "sink.log").start()
    try:
        wait_caught_up(kafka_bootstrap, group,
                       {topics[k]: PARTITIONS[k] for k in ("alerts", "dlq")}, timeout_s=90,
                       sink=sink)
    finally:
        assert sink.stop() == 0, sink.log()[-3000:]
    assert "completing a batch that may be stored" in sink.log()

    with ChdbBackend(tmp_path / "ch") as db:
        stored = db.query(
            "SELECT alert_id, state, value, delivery_status FROM agentwatch.alerts"
            " ORDER BY value, delivery_status").rows
        letters = db.query(
            "SELECT source, reason, raw FROM agentwatch.dead_letters ORDER BY source").rows
        open_alerts = db.query("SELECT alert_id FROM agentwatch.open_alerts ORDER BY alert_id").rows
        loops = db.query("SELECT alert_id, status FROM agentwatch.loop_incidents"
                         " ORDER BY alert_id").rows
    plain = [(a.alert_id, a.state.value, a.value, "") for a in alerts]
    failed = [(f.alert.alert_id, f.alert.state.value, f.alert.value, f"failed:{f.endpoint}")
              for f in failures]
    assert stored == sorted(plain + failed, key=lambda r: (r[2], r[3]))
    assert [r[3] for r in stored if r[0] == "al-0"] == ["", "failed:pager", "failed:team-slack"]

    by_raw = {raw: (source, reason) for source, reason, raw in letters}
    assert len(letters) == len(failures) + 1  # each failure once, and the broken record
    for failure in failures:
        source, reason = by_raw[failure.encode().decode()]
        # As the embedded pipeline stores it (ClickHouseSink.add_delivery_failures): where
        # the delivery failed, not where its record sat on the dead-letter topic.
        assert source == f"webhook/{failure.endpoint}"
        assert reason == failure.reason
        assert f"webhook {failure.endpoint}: delivery {failure.delivery_id}" in reason
    source, reason = by_raw[BROKEN.decode()]
    assert source.startswith(f"{topics['dlq']}/")
    assert "field `alert.rule`: Input should be a valid string" in reason
    # The failure rows change no answer of the BI views: one row per alert.
    assert open_alerts == [("al-0",), ("al-1",), ("al-3",), ("al-4",)]
    assert loops == [("al-1", "open"), ("al-3", "open"), ("al-5", "resolved")]
