"""PagerDuty's `acknowledge` is not lost to a dispatcher crash, on the real broker with a
local server answering like PagerDuty (202 + JSON): `agentwatch webhooks` is SIGKILLed

- while the `acknowledge` of an acknowledged alert is under way (the request reached
  PagerDuty, no answer yet): the restarted dispatcher sends it again;
- before an acknowledgement made with `agentwatch alerts ack` while it was down: the
  restarted dispatcher reads the ack and sends the `acknowledge` to the incident the
  trigger opened.

Either way the incident ends acknowledged, and a clean restart afterwards sends nothing
more."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sink_harness import group_offsets
from test_webhooks_escalation_kafka import PD_ROUTING_KEY, alert, cli_ack, wait_until
from webhooks_harness import DispatcherProcess, write_endpoints
from worker_harness import create_topic, produce

from agentwatch.alerts import ReceivedDelivery, WebhookReceiver
from agentwatch.schemas import encode_alert

SECRET = "pagerduty-restart-secret"
#: alert ids (UUIDs, as every alert id is: `agentwatch alerts ack` refuses anything else)
HELD = "0e1d0000-0000-4000-8000-000000000001"
DOWN = "d0000000-0000-4000-8000-000000000001"
PD_ANSWER = '{"status":"success","message":"Event processed","dedup_key":"x"}'
JOURNAL_ROOM_S = 1.5
"""Room for the dispatcher to write its escalations journal (every 0.1 s) before a kill."""


class _Setup:
    def __init__(self, bootstrap: str, topic_name: str, tmp_path: Path, pd_url: str) -> None:
        self.bootstrap = bootstrap
        self.alerts_topic = f"{topic_name}.alerts"
        self.acks_topic = f"{topic_name}.acks"
        self.group = f"{topic_name}-webhooks"
        self.tmp_path = tmp_path
        create_topic(bootstrap, self.alerts_topic, 1)
        self.file = write_endpoints(tmp_path / "endpoints.yaml", [
            {"name": "pd", "url": pd_url, "secret": SECRET, "allow_private": True,
             "format": "pagerduty", "routing_key": PD_ROUTING_KEY, "timeout_s": 30},
        ])

    def dispatcher(self, log: str) -> DispatcherProcess:
        return DispatcherProcess(
            self.bootstrap, alerts_topic=self.alerts_topic, dlq_topic=f"{self.alerts_topic}.dlq",
            group=self.group, endpoints_file=self.file, log_path=self.tmp_path / log,
            extra_env={"AGENTWATCH_ACKS_TOPIC": self.acks_topic},
        ).start()

    def fire(self, alert_id: str, proc: DispatcherProcess, pd: WebhookReceiver) -> None:
        """``alert_id`` fires; PagerDuty gets the trigger and the dispatcher commits it."""
        wait_until(lambda: "webhooks: assigned" in proc.log(), "the assignment", proc)
        produce(self.bootstrap, self.alerts_topic, [
            (alert_id.encode(), encode_alert(alert(alert_id)))])
        wait_until(lambda: len(pd.received) >= 1, "the trigger", proc)
        wait_until(lambda: group_offsets(self.bootstrap, self.group).get(
            (self.alerts_topic, 0), (0, ""))[0] >= 1, "the commit", proc)

    def restart_until(self, pd: WebhookReceiver, deliveries: int, what: str) -> None:
        """A restarted dispatcher sends until PagerDuty has ``deliveries``; then a clean
        stop, and a quiet restart after it (nothing more is sent)."""
        proc = self.dispatcher("webhooks-2.log")
        try:
            wait_until(lambda: len(pd.received) >= deliveries, what, proc)
            time.sleep(1.0)  # its end reaches the journal
        finally:
            assert proc.stop() == 0, proc.log()[-3000:]
        self.quiet_restart("webhooks-3.log")

    def quiet_restart(self, log: str) -> None:
        """A clean run that must send nothing: ``stop`` after a while."""
        proc = self.dispatcher(log)
        try:
            wait_until(lambda: "webhooks: assigned" in proc.log(), "the restart", proc)
            time.sleep(2.0)  # room for anything extra to show up
        finally:
            assert proc.stop() == 0, proc.log()[-3000:]


def _actions(pd: WebhookReceiver) -> list[tuple[str, str]]:
    return [(d.json["event_action"], d.json["dedup_key"]) for d in pd.received]


def test_acknowledge_under_way_at_a_crash_is_sent_after_the_restart(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    release = threading.Event()
    arrived = threading.Event()

    def hold_the_first_acknowledge(delivery: ReceivedDelivery) -> None:
        if delivery.json["event_action"] == "acknowledge" and not arrived.is_set():
            arrived.set()
            release.wait(60)  # no answer until the dispatcher is dead

    with WebhookReceiver(default_status=202, response_body=PD_ANSWER,
                         on_receive=hold_the_first_acknowledge) as pd:
        setup = _Setup(kafka_bootstrap, topic_name, tmp_path, pd.url)
        first = setup.dispatcher("webhooks-1.log")
        try:
            setup.fire(HELD, first, pd)
            cli_ack(kafka_bootstrap, setup.acks_topic, HELD, "maria")
            wait_until(arrived.is_set, "the acknowledge", first)
            time.sleep(JOURNAL_ROOM_S)  # what the dispatcher writes meanwhile, it writes
        finally:
            first.kill()  # SIGKILL with the acknowledge under way
            release.set()

        setup.restart_until(pd, 3, "the acknowledge again")

    assert _actions(pd) == [("trigger", HELD), ("acknowledge", HELD),
                            ("acknowledge", HELD)]
    assert pd.received[1].delivery_id == pd.received[2].delivery_id  # the same delivery


def test_ack_made_while_the_dispatcher_is_down_reaches_pagerduty_after_the_restart(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    with WebhookReceiver(default_status=202, response_body=PD_ANSWER) as pd:
        setup = _Setup(kafka_bootstrap, topic_name, tmp_path, pd.url)
        first = setup.dispatcher("webhooks-1.log")
        try:
            setup.fire(DOWN, first, pd)
        finally:
            first.kill()
        cli_ack(kafka_bootstrap, setup.acks_topic, DOWN, "maria")

        setup.restart_until(pd, 2, "the acknowledge")

    assert _actions(pd) == [("trigger", DOWN), ("acknowledge", DOWN)]
    assert all(d.response_status == 202 for d in pd.received)
