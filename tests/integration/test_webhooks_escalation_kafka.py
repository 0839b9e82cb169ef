"""Escalation and acknowledgement through `agentwatch webhooks` on the real broker, with
real HTTP receivers on 127.0.0.1: an alert nobody acknowledged reaches the next endpoint;
one acknowledged by `agentwatch alerts ack` (before it fired) or by its signed link (after)
does not; the escalated endpoint gets the resolution too; a restarted dispatcher reads
the acks back from the compacted topic; an ack reaches a PagerDuty endpoint as Events v2
`acknowledge`, once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from webhooks_harness import DispatcherProcess, write_endpoints
from worker_harness import create_topic, produce, read_topic

from agentwatch.alerts import Ack, WebhookReceiver
from agentwatch.schemas import Alert, AlertScope, AlertState, AlertType, Severity, encode_alert

SECRET = "escalation-integration-secret"
#: alert ids (UUIDs, as every alert id is: `agentwatch alerts ack` refuses anything else)
ACKED_CLI = "aced0000-0000-4000-8000-0000000000c1"
NOBODY = "0b0d0000-0000-4000-8000-000000000000"
PD = "0d000000-0000-4000-8000-0000000000d1"
ACKED_LINK = "aced0000-0000-4000-8000-0000000000c2"
ESCALATE_AFTER_S = 5.0  # room for the test to click the link before it runs out
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def alert(alert_id: str, state: AlertState = AlertState.FIRING) -> Alert:
    return Alert(
        alert_id=alert_id, rule="loop_repeat", type=AlertType.RUNAWAY_LOOP, state=state,
        severity=Severity.CRITICAL, scope=AlertScope.SESSION, key=alert_id, tenant_id="acme",
        agent_id="bot", session_id=alert_id, value=6.0, threshold=5.0, window_s=120,
        ts=T0, reason=f"{alert_id} loops", event_ids=[],
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def wait_until(check: Callable[[], bool], what: str, proc: DispatcherProcess,
               timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if proc.proc is not None and proc.proc.poll() is not None:
            raise AssertionError(f"dispatcher exited:\n{proc.log()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{proc.log()[-3000:]}")
        time.sleep(0.1)


def ids(receiver: WebhookReceiver) -> list[tuple[str, str]]:
    return [(d.json["alert_id"], d.json["state"]) for d in receiver.received]


def cli_ack(bootstrap: str, acks_topic: str, alert_id: str, by: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS}
    done = subprocess.run(
        [sys.executable, "-m", "agentwatch.cli", "alerts", "ack", alert_id, "--by", by],
        env=env | {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "AGENTWATCH_ACKS_TOPIC": acks_topic},
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def click(url: str, by: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    data = urllib.parse.urlencode({"by": by}).encode()
    with opener.open(urllib.request.Request(url, data=data), timeout=30) as response:
        status: int = response.status
    return status


def test_escalation_and_acks_through_kafka(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    alerts_topic, acks_topic = f"{topic_name}.alerts", f"{topic_name}.acks"
    create_topic(kafka_bootstrap, alerts_topic, 1)
    port = free_port()
    with WebhookReceiver(secret=SECRET) as team, WebhookReceiver(secret=SECRET) as oncall:
        file = write_endpoints(tmp_path / "endpoints.yaml", [
            {"name": "team", "url": team.url, "secret": SECRET, "allow_private": True,
             "escalate_after_s": ESCALATE_AFTER_S, "escalate_to": "oncall"},
            {"name": "oncall", "url": oncall.url, "secret": SECRET, "allow_private": True,
             "filters": {"tenants": ["only-by-escalation"]}},
        ])

        def dispatcher(log: str) -> DispatcherProcess:
            return DispatcherProcess(
                kafka_bootstrap, alerts_topic=alerts_topic, dlq_topic=f"{alerts_topic}.dlq",
                group=f"{topic_name}-webhooks", endpoints_file=file, log_path=tmp_path / log,
                extra_env={"AGENTWATCH_ACKS_TOPIC": acks_topic,
                           "AGENTWATCH_ACK_LISTEN": f"127.0.0.1:{port}"},
            )

        proc = dispatcher("webhooks-1.log").start()
        try:
            wait_until(lambda: "webhooks: assigned" in proc.log(), "the assignment", proc)
            # acknowledged before it fires: with the CLI
            out = cli_ack(kafka_bootstrap, acks_topic, ACKED_CLI, "maria")
            assert f"{ACKED_CLI} acknowledged by maria" in out
            produce(kafka_bootstrap, alerts_topic, [
                (a.alert_id.encode(), encode_alert(a))
                for a in (alert(ACKED_CLI), alert(ACKED_LINK), alert(NOBODY))
            ])
            wait_until(lambda: len(team.received) >= 3, "the first deliveries", proc)
            # acknowledged after it fired: with the signed link in its body
            (by_link,) = [d for d in team.received if d.json["alert_id"] == ACKED_LINK]
            assert by_link.ack_url is not None
            assert by_link.ack_url.startswith(f"http://127.0.0.1:{port}/ack?")
            assert click(by_link.ack_url, "li") == 200
            # nobody acknowledged NOBODY: the on-call endpoint gets it
            wait_until(lambda: (NOBODY, "firing") in ids(oncall), "the escalation", proc)
            produce(kafka_bootstrap, alerts_topic, [
                (NOBODY.encode(), encode_alert(alert(NOBODY, AlertState.RESOLVED)))
            ])
            wait_until(lambda: (NOBODY, "resolved") in ids(oncall), "the resolution", proc)
        finally:
            assert proc.stop() == 0, proc.log()[-3000:]
        assert ids(oncall) == [(NOBODY, "firing"), (NOBODY, "resolved")]
        assert all(d.verified for d in oncall.received)
        assert sorted(ids(team)) == sorted([
            (ACKED_CLI, "firing"), (ACKED_LINK, "firing"),
            (NOBODY, "firing"), (NOBODY, "resolved"),
        ])

        # both acks are on the compacted topic, and a new dispatcher reads them back
        acks = [Ack.decode(v) for v in read_topic(
            kafka_bootstrap, acks_topic, until=lambda v: len(v) >= 2, timeout_s=30)]
        assert sorted((a.alert_id, a.by, a.via) for a in acks) == [
            (ACKED_CLI, "maria", "cli"), (ACKED_LINK, "li", "link:team")]
        again = dispatcher("webhooks-2.log").start()
        try:
            wait_until(lambda: "webhooks: assigned" in again.log(), "the restart", again)
        finally:
            assert again.stop() == 0, again.log()[-3000:]
        assert f"2 acknowledgement(s) read from {acks_topic}" in again.log()


PD_ROUTING_KEY = "R0UT1NGKEY0123456789abcdef012345"


def test_cli_ack_sends_pagerduty_acknowledge_once(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    """`agentwatch alerts ack` -> Events v2 `acknowledge` with the trigger's dedup_key, to
    a local server answering like PagerDuty (202 + JSON); a second ack and a restart
    (the acks read back) send nothing more."""
    alerts_topic, acks_topic = f"{topic_name}.alerts", f"{topic_name}.acks"
    create_topic(kafka_bootstrap, alerts_topic, 1)
    pd_answer = orjson.dumps({"status": "success", "message": "Event processed",
                              "dedup_key": PD}).decode()
    with WebhookReceiver(default_status=202, response_body=pd_answer) as pd:
        file = write_endpoints(tmp_path / "endpoints.yaml", [
            {"name": "pd", "url": pd.url, "secret": SECRET, "allow_private": True,
             "format": "pagerduty", "routing_key": PD_ROUTING_KEY},
        ])

        def dispatcher(log: str) -> DispatcherProcess:
            return DispatcherProcess(
                kafka_bootstrap, alerts_topic=alerts_topic, dlq_topic=f"{alerts_topic}.dlq",
                group=f"{topic_name}-webhooks", endpoints_file=file, log_path=tmp_path / log,
                extra_env={"AGENTWATCH_ACKS_TOPIC": acks_topic},
            )

        def actions() -> list[tuple[str, str]]:
            return [(d.json["event_action"], d.json["dedup_key"]) for d in pd.received]

        proc = dispatcher("webhooks-1.log").start()
        try:
            wait_until(lambda: "webhooks: assigned" in proc.log(), "the assignment", proc)
            produce(kafka_bootstrap, alerts_topic, [(PD.encode(), encode_alert(alert(PD)))])
            wait_until(lambda: len(pd.received) >= 1, "the trigger", proc)
            cli_ack(kafka_bootstrap, acks_topic, PD, "maria")
            wait_until(lambda: len(pd.received) >= 2, "the acknowledge", proc)
            cli_ack(kafka_bootstrap, acks_topic, PD, "li")  # not new: nothing sent
            time.sleep(2.0)  # room for anything extra to show up
        finally:
            assert proc.stop() == 0, proc.log()[-3000:]
        again = dispatcher("webhooks-2.log").start()
        try:
            wait_until(lambda: "webhooks: assigned" in again.log(), "the restart", again)
            time.sleep(2.0)  # room for anything extra to show up
        finally:
            assert again.stop() == 0, again.log()[-3000:]
        assert "2 acknowledgement(s) read" in again.log()
    assert actions() == [("trigger", PD), ("acknowledge", PD)]
    assert [d.response_status for d in pd.received] == [202, 202]
