"""Pending escalations survive dispatcher crashes, on the real broker with real HTTP
receivers on 127.0.0.1: `agentwatch webhooks` is SIGKILLed while an escalation waits,
twice; each level of the chain team -> oncall -> boss gets the alert exactly once (a
deadline that passed while the dispatcher was down escalates right after the restart,
a pending one at its deadline), and an alert acknowledged or resolved while it was down
is never escalated."""

from __future__ import annotations

import time
from pathlib import Path

from sink_harness import group_offsets
from test_webhooks_escalation_kafka import alert, cli_ack, ids, wait_until
from webhooks_harness import DispatcherProcess, write_endpoints
from worker_harness import create_topic, produce, read_records

from agentwatch.alerts import EscalationState, WebhookReceiver
from agentwatch.schemas import AlertState, encode_alert

SECRET = "escalation-restart-secret"
#: alert ids (UUIDs, as every alert id is: `agentwatch alerts ack` refuses anything else)
RESOLVED = "5e500000-0000-4000-8000-000000000001"
PASSED = "0a550000-0000-4000-8000-000000000001"
ACKED = "aced0000-0000-4000-8000-000000000001"
TEAM_AFTER_S = 6.0  # room to kill the dispatcher before the first deadline
ONCALL_AFTER_S = 6.0  # ... and before the second one
FIRINGS = (PASSED, ACKED, RESOLVED)


def journaled(bootstrap: str, topic: str, alert_id: str, endpoint: str) -> bool:
    """The escalations topic records that ``endpoint`` has ``alert_id``."""
    records = read_records(bootstrap, topic, timeout_s=5, settle_s=0.0, until=lambda rs: any(
        r.key == alert_id.encode()
        and endpoint in EscalationState.decode(r.value).received for r in rs))
    return any(r.key == alert_id.encode() and endpoint in EscalationState.decode(r.value).received
               for r in records)


def test_pending_escalations_survive_sigkill(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    alerts_topic, acks_topic = f"{topic_name}.alerts", f"{topic_name}.acks"
    escalations_topic = f"{acks_topic}.escalations"
    group = f"{topic_name}-webhooks"
    create_topic(kafka_bootstrap, alerts_topic, 1)
    with (WebhookReceiver(secret=SECRET) as team, WebhookReceiver(secret=SECRET) as oncall,
          WebhookReceiver(secret=SECRET) as boss):
        file = write_endpoints(tmp_path / "endpoints.yaml", [
            {"name": "team", "url": team.url, "secret": SECRET, "allow_private": True,
             "escalate_after_s": TEAM_AFTER_S, "escalate_to": "oncall"},
            {"name": "oncall", "url": oncall.url, "secret": SECRET, "allow_private": True,
             "filters": {"tenants": ["only-by-escalation"]},
             "escalate_after_s": ONCALL_AFTER_S, "escalate_to": "boss"},
            {"name": "boss", "url": boss.url, "secret": SECRET, "allow_private": True,
             "filters": {"tenants": ["only-by-escalation"]}},
        ])

        def dispatcher(log: str) -> DispatcherProcess:
            return DispatcherProcess(
                kafka_bootstrap, alerts_topic=alerts_topic, dlq_topic=f"{alerts_topic}.dlq",
                group=group, endpoints_file=file, log_path=tmp_path / log,
                extra_env={"AGENTWATCH_ACKS_TOPIC": acks_topic},
            )

        # 1. three firings reach the team and are committed; killed while the timers wait
        first = dispatcher("webhooks-1.log").start()
        try:
            wait_until(lambda: "webhooks: assigned" in first.log(), "the assignment", first)
            fired_at = time.monotonic()
            produce(kafka_bootstrap, alerts_topic, [
                (a.encode(), encode_alert(alert(a))) for a in FIRINGS])
            wait_until(lambda: len(team.received) >= len(FIRINGS), "the firings", first)
            wait_until(lambda: group_offsets(kafka_bootstrap, group).get(
                (alerts_topic, 0), (0, ""))[0] >= len(FIRINGS), "the commit", first)
        finally:
            first.kill()  # SIGKILL: no drain, no last commit

        # 2. while it is down: one alert is acknowledged, one resolved, and the first
        # deadline passes
        cli_ack(kafka_bootstrap, acks_topic, ACKED, "maria")
        produce(kafka_bootstrap, alerts_topic, [
            (RESOLVED.encode(), encode_alert(alert(RESOLVED, AlertState.RESOLVED)))])
        time.sleep(max(0.0, fired_at + TEAM_AFTER_S + 1.0 - time.monotonic()))

        # 3. restarted: the passed deadline escalates at once; killed again while the
        # second level waits
        second = dispatcher("webhooks-2.log").start()
        try:
            wait_until(lambda: (PASSED, "firing") in ids(oncall), "level 1", second)
            wait_until(lambda: journaled(kafka_bootstrap, escalations_topic, PASSED,
                                         "oncall"), "the journal", second)
        finally:
            second.kill()
        assert "2 open alert(s) restored" in second.log()  # ACKED is closed by its ack

        # 4. restarted again: the pending second level escalates at its deadline
        third = dispatcher("webhooks-3.log").start()
        try:
            wait_until(lambda: (PASSED, "firing") in ids(boss), "level 2", third)
            time.sleep(2.0)  # room for anything extra to show up
        finally:
            assert third.stop() == 0, third.log()[-3000:]
        assert "1 open alert(s) restored" in third.log()

    assert ids(oncall) == [(PASSED, "firing")]
    assert ids(boss) == [(PASSED, "firing")]
    assert all(d.verified for d in oncall.received + boss.received)
    assert sorted(ids(team)) == sorted(
        [(a, "firing") for a in FIRINGS] + [(RESOLVED, "resolved")])
