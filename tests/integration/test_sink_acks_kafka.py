"""`agentwatch sink` on the real broker stores the acknowledgements topic in alert_acks
(chDB), and the alert_status view joins them to their alerts; an unreadable ack record
becomes a dead letter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sink_harness import SinkProcess, wait_caught_up
from worker_harness import create_topic, produce

from agentwatch.alerts import Ack
from agentwatch.alerts._acks_kafka import write_ack
from agentwatch.schemas import Alert, AlertScope, AlertState, AlertType, Severity, encode_alert
from agentwatch.sinks import ChdbBackend

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def alert(alert_id: str) -> Alert:
    return Alert(
        alert_id=alert_id, rule="loop_repeat", type=AlertType.RUNAWAY_LOOP,
        state=AlertState.FIRING, severity=Severity.CRITICAL, scope=AlertScope.SESSION,
        key=alert_id, tenant_id="acme", agent_id="bot", session_id=alert_id, value=6.0,
        threshold=5.0, window_s=120, ts=T0, reason=f"{alert_id} loops", event_ids=[],
    )


def test_the_sink_stores_acks_and_the_view_shows_who_and_when(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    topics = {k: f"{topic_name}.{k}" for k in ("events", "alerts", "acks")}
    create_topic(kafka_bootstrap, topics["events"], 1)
    create_topic(kafka_bootstrap, topics["alerts"], 1)
    produce(kafka_bootstrap, topics["alerts"],
            [(a.encode(), encode_alert(alert(a))) for a in ("al-1", "al-2")])
    # as `agentwatch alerts ack` writes it (this creates the compacted topic)
    write_ack(kafka_bootstrap, topics["acks"],
              Ack("al-1", "maria", T0 + timedelta(minutes=2), "cli"))
    produce(kafka_bootstrap, topics["acks"], [(b"al-x", b'{"alert_id": "al-x"}')])
    group = f"{topic_name}-sink"
    sink = SinkProcess(kafka_bootstrap, events_topic=topics["events"],
                       alerts_topic=topics["alerts"], group=group, chdb_path=tmp_path / "ch",
                       log_path=tmp_path / "sink.log")
    sink.env["AGENTWATCH_ACKS_TOPIC"] = topics["acks"]
    sink.start()
    try:
        wait_caught_up(kafka_bootstrap, group, {topics["alerts"]: 1, topics["acks"]: 1},
                       timeout_s=90, sink=sink)
    finally:
        assert sink.stop() == 0, sink.log()[-3000:]
    with ChdbBackend(tmp_path / "ch") as db:
        acks = db.query("SELECT alert_id, acked_by, acked_at, via FROM agentwatch.alert_acks").rows
        status = db.query("SELECT alert_id, state, acked_by FROM agentwatch.alert_status"
                          " ORDER BY alert_id").rows
        letters = db.query("SELECT source, reason FROM agentwatch.dead_letters").rows
    assert [(r[0], r[1], r[3]) for r in acks] == [("al-1", "maria", "cli")]
    assert acks[0][2].replace(tzinfo=UTC) == T0 + timedelta(minutes=2)
    assert [tuple(r) for r in status] == [("al-1", "firing", "maria"), ("al-2", "firing", None)]
    ((source, reason),) = letters
    assert source.startswith(f"{topics['acks']}/0/")
    assert "not an acknowledgement" in reason
