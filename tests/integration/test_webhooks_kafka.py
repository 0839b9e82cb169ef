"""`agentwatch webhooks` on the real broker, delivering to real HTTP servers on 127.0.0.1:
signed deliveries, retries, dead letters on the DLQ topic, offsets committed only when
done; a restart neither loses nor re-sends; a crash re-sends only with the same
delivery id."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sink_harness import group_offsets, wait_caught_up
from webhooks_harness import DispatcherProcess, write_endpoints
from worker_harness import create_topic, produce, read_topic

from agentwatch.alerts import DeliveryFailure, WebhookReceiver, delivery_id
from agentwatch.alerts._progress import METADATA_PREFIX
from agentwatch.schemas import Alert, AlertScope, AlertState, AlertType, Severity, encode_alert

SECRET = "integration-secret"
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)


def make_alerts(n_ids: int) -> list[Alert]:
    """``n_ids`` alert episodes, each firing then resolved; odd ones are runaway loops."""
    alerts: list[Alert] = []
    for i in range(n_ids):
        loop = i % 2 == 1
        for j, state in enumerate((AlertState.FIRING, AlertState.RESOLVED)):
            alerts.append(Alert(
                alert_id=f"al-{i}", rule="loop_repeat" if loop else "session_cost",
                type=AlertType.RUNAWAY_LOOP if loop else AlertType.COST, state=state,
                severity=Severity.CRITICAL, scope=AlertScope.SESSION, key=f"s{i}",
                tenant_id="acme", agent_id="bot", session_id=f"s{i}",
                value=6.0, threshold=5.0, window_s=120, ts=T0 + timedelta(seconds=10 * i + j),
                reason=f"alert {i} {state}", event_ids=[f"e{i}"]))
    return alerts


def records(alerts: list[Alert]) -> list[tuple[bytes | None, bytes]]:
    return [(a.alert_id.encode(), encode_alert(a)) for a in alerts]


def endpoint(name: str, url: str, **extra: object) -> dict[str, object]:
    return {"name": name, "url": url, "secret": SECRET, "backoff_initial_s": 0.05,
            "backoff_max_s": 0.2, "allow_private": True} | extra  # receivers on 127.0.0.1


def deliveries(receiver: WebhookReceiver) -> Counter[tuple[str, str]]:
    """(alert_id, state) -> how many 2xx answers the receiver gave for it."""
    return Counter((d.json["alert_id"], d.json["state"]) for d in receiver.received
                   if 200 <= d.response_status < 300)


def wait_until(check: Callable[[], bool], timeout_s: float, what: str,
               proc: DispatcherProcess) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if proc.proc is not None and proc.proc.poll() is not None:
            raise AssertionError(f"dispatcher exited ({proc.proc.returncode}):\n"
                                 f"{proc.log()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{proc.log()[-3000:]}")
        time.sleep(0.1)


def dispatcher(bootstrap: str, names: dict[str, str], endpoints_file: Path, log_path: Path,
               **options: float) -> DispatcherProcess:
    """`agentwatch webhooks` on this test's topics and group (not started)."""
    return DispatcherProcess(bootstrap, alerts_topic=names["alerts"], dlq_topic=names["dlq"],
                             group=names["group"], endpoints_file=endpoints_file,
                             log_path=log_path, **options)


@pytest.fixture
def names(topic_name: str) -> dict[str, str]:
    return {"alerts": f"{topic_name}.alerts", "dlq": f"{topic_name}.alerts.dlq",
            "group": f"{topic_name}-webhooks"}


def test_alerts_are_delivered_retried_and_dead_lettered_then_committed(
    kafka_bootstrap: str, names: dict[str, str], tmp_path: Path
) -> None:
    create_topic(kafka_bootstrap, names["alerts"], 2)
    create_topic(kafka_bootstrap, names["dlq"], 1)
    alerts = make_alerts(10)  # 20 state changes; 10 of them runaway loops
    loops = [a for a in alerts if a.type == "runaway_loop"]
    produce(kafka_bootstrap, names["alerts"], [*records(alerts), (b"junk", b"{not an alert")])

    with (
        WebhookReceiver(secret=SECRET) as verified,
        WebhookReceiver(secret=SECRET, statuses=[503, 500, 429]) as flaky,
        WebhookReceiver(secret=SECRET, default_status=500) as broken,
    ):
        file = write_endpoints(tmp_path / "endpoints.yaml", [
            endpoint("verified", verified.url),
            endpoint("flaky", flaky.url, max_attempts=6, concurrency=1),
            endpoint("broken", broken.url, max_attempts=2,
                     filters={"types": ["runaway_loop"]}),
        ])
        proc = dispatcher(kafka_bootstrap, names, file, tmp_path / "webhooks.log").start()
        try:
            wait_caught_up(kafka_bootstrap, names["group"], {names["alerts"]: 2},
                           timeout_s=90, sink=proc)
            dlq = read_topic(kafka_bootstrap, names["dlq"], until=lambda v: len(v) >= len(loops),
                             timeout_s=30)
        finally:
            assert proc.stop() == 0, proc.log()[-3000:]

    expected = Counter((a.alert_id, a.state.value) for a in alerts)
    # every alert reached the healthy endpoint once, signed, with its stable delivery id
    assert deliveries(verified) == expected
    assert all(d.verified for d in verified.received), [d.verify_error for d in verified.received]
    assert {d.delivery_id for d in verified.received} == {
        delivery_id(a.alert_id, a.state, "verified") for a in alerts}
    # the flaky one answered 503, 500 and 429 first: retried, then everything arrived once
    assert deliveries(flaky) == expected
    assert len(flaky.received) == len(alerts) + 3
    # the broken one saw each loop alert twice (max_attempts), and each went to the DLQ
    assert Counter((d.json["alert_id"], d.json["state"]) for d in broken.received) == Counter(
        {(a.alert_id, a.state.value): 2 for a in loops})
    failures = [DeliveryFailure.decode(v) for v in dlq]
    assert sorted((f.alert.alert_id, f.alert.state.value) for f in failures) == sorted(
        (a.alert_id, a.state.value) for a in loops)
    assert {(f.endpoint, f.attempts, f.status_code) for f in failures} == {("broken", 2, 500)}
    assert all(f.alert in loops for f in failures)
    assert "not an alert" in proc.log()  # the unreadable record was reported and skipped
    committed = group_offsets(kafka_bootstrap, names["group"])
    assert sum(offset for offset, _ in committed.values()) == len(alerts) + 1


def test_a_restart_neither_loses_nor_resends_delivered_alerts(
    kafka_bootstrap: str, names: dict[str, str], tmp_path: Path
) -> None:
    """One endpoint is down: its alerts hold the committed offsets back. A stop and a
    restart must not send the healthy endpoint its alerts again (the commit metadata says
    it has them); once the other endpoint is back, it gets every alert."""
    create_topic(kafka_bootstrap, names["alerts"], 1)
    create_topic(kafka_bootstrap, names["dlq"], 1)
    alerts = make_alerts(10)
    produce(kafka_bootstrap, names["alerts"], records(alerts))
    expected = Counter((a.alert_id, a.state.value) for a in alerts)

    with WebhookReceiver(secret=SECRET) as healthy:
        down = WebhookReceiver(secret=SECRET, default_status=503).start()
        down_port = int(down.url.rsplit(":", 1)[1].strip("/"))
        file = write_endpoints(tmp_path / "endpoints.yaml", [
            endpoint("healthy", healthy.url),
            endpoint("down", down.url, max_attempts=50, backoff_max_s=1),
        ])

        def start(log: str) -> DispatcherProcess:
            return dispatcher(kafka_bootstrap, names, file, tmp_path / log, drain_s=1).start()

        first = start("first.log")
        try:
            wait_until(lambda: deliveries(healthy) == expected, 60, "the healthy endpoint", first)

            def metadata_written() -> bool:
                offsets = group_offsets(kafka_bootstrap, names["group"])
                return bool(offsets) and all(
                    meta.startswith(METADATA_PREFIX) for _, meta in offsets.values())

            wait_until(metadata_written, 30, "a commit naming the healthy endpoint", first)
        finally:
            assert first.stop() == 0, first.log()[-3000:]
        [(offset, _meta)] = group_offsets(kafka_bootstrap, names["group"]).values()
        assert offset == 0  # the first alert is not delivered to "down": nothing committed
        down.stop()

        with WebhookReceiver(secret=SECRET, port=down_port) as back:
            second = start("second.log")
            try:
                wait_caught_up(kafka_bootstrap, names["group"], {names["alerts"]: 1},
                               timeout_s=90, sink=second)
            finally:
                assert second.stop() == 0, second.log()[-3000:]
            assert deliveries(back) == expected  # nothing lost

    assert deliveries(healthy) == expected  # nothing sent twice across the restart
    assert len(healthy.received) == len(alerts)


def test_a_crash_resends_at_most_what_was_unfinished_with_the_same_delivery_ids(
    kafka_bootstrap: str, names: dict[str, str], tmp_path: Path
) -> None:
    create_topic(kafka_bootstrap, names["alerts"], 1)
    create_topic(kafka_bootstrap, names["dlq"], 1)
    alerts = make_alerts(15)
    produce(kafka_bootstrap, names["alerts"], records(alerts))
    expected = Counter((a.alert_id, a.state.value) for a in alerts)

    with WebhookReceiver(secret=SECRET, hang_s=0.2) as slow:  # 5 alerts/s, one at a time
        file = write_endpoints(tmp_path / "endpoints.yaml",
                               [endpoint("slow", slow.url, concurrency=1)])

        def start(log: str) -> DispatcherProcess:
            return dispatcher(kafka_bootstrap, names, file, tmp_path / log).start()

        first = start("first.log")
        wait_until(lambda: len(slow.received) >= 10, 60, "10 deliveries", first)
        first.kill()  # SIGKILL: no drain, no last commit
        before = len(slow.received)
        second = start("second.log")
        try:
            wait_caught_up(kafka_bootstrap, names["group"], {names["alerts"]: 1},
                           timeout_s=90, sink=second)
        finally:
            assert second.stop() == 0, second.log()[-3000:]

    got = deliveries(slow)
    assert set(got) == set(expected)  # nothing lost
    resent = sum(got.values()) - len(expected)
    # at most the deliveries since the last commit (every 0.1 s) and the one under way
    assert 0 <= resent <= 3, got
    by_id: dict[str, set[bytes]] = {}
    for d in slow.received:
        by_id.setdefault(d.delivery_id or "", set()).add(d.body)
    assert len(by_id) == len(alerts)  # a re-sent alert carries the same delivery id ...
    assert all(len(bodies) == 1 for bodies in by_id.values())  # ... and the same body
    assert before >= 10


def test_two_dispatchers_share_the_partitions_and_lose_nothing_across_rebalances(
    kafka_bootstrap: str, names: dict[str, str], tmp_path: Path
) -> None:
    """A second dispatcher joins while alerts flow, then leaves (two rebalances): every
    alert arrives; a copy is possible only for a delivery under way at a rebalance, and
    then carries the same delivery id."""
    create_topic(kafka_bootstrap, names["alerts"], 4)
    create_topic(kafka_bootstrap, names["dlq"], 1)
    alerts = make_alerts(60)
    expected = Counter((a.alert_id, a.state.value) for a in alerts)

    with WebhookReceiver(secret=SECRET, hang_s=0.02) as receiver:
        file = write_endpoints(tmp_path / "endpoints.yaml", [endpoint("ops", receiver.url)])

        def start(log: str) -> DispatcherProcess:
            return dispatcher(kafka_bootstrap, names, file, tmp_path / log).start()

        first = start("first.log")
        second = dispatcher(kafka_bootstrap, names, file, tmp_path / "second.log")
        try:
            produce(kafka_bootstrap, names["alerts"], records(alerts[:40]), pace_s=0.05)
            second.start()
            produce(kafka_bootstrap, names["alerts"], records(alerts[40:80]), pace_s=0.05)
            wait_until(lambda: "assigned" in second.log(), 60, "the second to join", second)
            assert second.stop() == 0, second.log()[-3000:]
            produce(kafka_bootstrap, names["alerts"], records(alerts[80:]), pace_s=0.02)
            wait_caught_up(kafka_bootstrap, names["group"], {names["alerts"]: 4},
                           timeout_s=90, sink=first)
        finally:
            assert first.stop() == 0, first.log()[-3000:]

    got = deliveries(receiver)
    assert set(got) == set(expected)  # nothing lost
    assert sum(got.values()) - len(expected) <= 8, got  # copies only of deliveries under way
    assert {d.delivery_id for d in receiver.received} == {
        delivery_id(a.alert_id, a.state, "ops") for a in alerts}
    assert all(d.verified for d in receiver.received)
