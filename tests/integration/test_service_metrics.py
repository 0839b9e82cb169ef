"""``/metrics``, ``/healthz`` and ``/readyz`` of the worker, the sink and the webhooks
dispatcher, each run as its own process on the suite's broker, scraped over HTTP on
127.0.0.1: after a known fleet (and one malformed record) the counters say exactly what
went through — events in, dead letters by reason, alerts by rule and state, deliveries by
endpoint and outcome, inserts and checkpoints timed — and the lag comes down to 0."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sink_harness import ServiceProcess, SinkProcess, wait_caught_up
from webhooks_harness import DispatcherProcess, write_endpoints
from worker_harness import (
    WorkerProcess,
    create_topic,
    pack_partition_batches,
    produce,
    replay_alerts,
    topics_for,
)

from agentwatch.alerts import WebhookReceiver
from agentwatch.cli._fleet import FleetPlan, fleet_events

PIPELINE = Path(__file__).resolve().parents[2] / "deploy/grafana/dashboards/pipeline.json"
PARTITIONS = 4
IDLE_AFTER_S = 6.0  # as test_worker_record_forms: the fleet runs faster than real time
SAFETY_TIMEOUT_S = 150.0
SECRET = "metrics-secret"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with _NO_PROXY.open(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def scrape(port: int) -> Samples:
    """Every sample of ``/metrics``: (name, sorted labels) -> value."""
    status, text = get(port, "/metrics")
    assert status == 200, text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def by_label(samples: Samples, name: str, *keys: str) -> dict[tuple[str, ...], float]:
    """The samples of ``name`` by the values of the labels ``keys`` (non-zero ones)."""
    out = {}
    for (n, labels), v in samples.items():
        if n == name and v:
            d = dict(labels)
            out[tuple(d[k] for k in keys)] = v
    return out


def wait_for(check: Callable[[], bool], what: str, *procs: Any) -> None:
    deadline = time.monotonic() + SAFETY_TIMEOUT_S
    while True:
        try:
            if check():
                return
        except (OSError, AssertionError):
            pass  # not serving yet
        for proc in procs:
            if proc.proc is not None and proc.proc.poll() is not None:
                raise AssertionError(f"{proc.args if hasattr(proc, 'args') else 'worker'} "
                                     f"exited:\n{proc.log()[-3000:]}")
        if time.monotonic() > deadline:
            logs = "\n---\n".join(p.log()[-2000:] for p in procs)
            raise AssertionError(f"timed out waiting for {what}:\n{logs}")
        time.sleep(0.3)


def with_port(proc: WorkerProcess | ServiceProcess, var: str) -> int:
    port = free_port()
    proc.env[var] = str(port)
    return port


@pytest.fixture
def fleet() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    events = list(fleet_events(FleetPlan()))
    return events, replay_alerts(events)


def test_worker_sink_and_dispatcher_export_what_went_through(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path,
    fleet: tuple[list[dict[str, Any]], list[dict[str, Any]]],
) -> None:
    events, expected = fleet
    assert expected, "the fleet raises alerts"
    topics = topics_for(topic_name)
    create_topic(kafka_bootstrap, topics["events"], PARTITIONS)
    create_topic(kafka_bootstrap, topics["alerts"], 2)
    records = [*pack_partition_batches(events, PARTITIONS, flush_every=4),
               (b"junk", b"{not json")]
    produce(kafka_bootstrap, topics["events"], records)

    worker = WorkerProcess(kafka_bootstrap, topics, f"{topic_name}-w", tmp_path / "data",
                           tmp_path / "worker.log", idle_after_s=IDLE_AFTER_S)
    worker_port = with_port(worker, "AGENTWATCH_WORKER_METRICS_PORT")
    sink = SinkProcess(kafka_bootstrap, events_topic=topics["events"],
                       alerts_topic=topics["alerts"], group=f"{topic_name}-s",
                       chdb_path=tmp_path / "chdb", log_path=tmp_path / "sink.log")
    sink_port = with_port(sink, "AGENTWATCH_SINK_METRICS_PORT")
    with WebhookReceiver(secret=SECRET) as receiver:
        endpoints = write_endpoints(tmp_path / "endpoints.yaml", [
            {"name": "ops", "url": receiver.url, "secret": SECRET, "allow_private": True}])
        dispatcher = DispatcherProcess(
            kafka_bootstrap, alerts_topic=topics["alerts"], dlq_topic=f"{topic_name}.adlq",
            group=f"{topic_name}-d", endpoints_file=endpoints,
            log_path=tmp_path / "webhooks.log")
        hooks_port = with_port(dispatcher, "AGENTWATCH_WEBHOOKS_METRICS_PORT")
        procs = (worker.start(), sink.start(), dispatcher.start())
        try:
            for port in (worker_port, sink_port, hooks_port):
                wait_for(lambda p=port: get(p, "/healthz") == (200, "ok\n"),  # type: ignore[misc]
                         f"/healthz on {port}", *procs)
                wait_for(lambda p=port: get(p, "/readyz") == (200, "ready\n"),  # type: ignore[misc]
                         f"/readyz on {port}", *procs)
            expected_alerts = Counter((a["rule"], a["state"]) for a in expected)

            def worker_done() -> bool:
                m = scrape(worker_port)
                return (by_label(m, "agentwatch_worker_alerts_total", "rule", "state")
                        == expected_alerts
                        and value(m, "agentwatch_worker_events_total") >= len(events))

            wait_for(worker_done, "the worker's alerts", *procs)
            wait_for(lambda: value(scrape(sink_port), "agentwatch_sink_events_total")
                     >= len(events) and value(scrape(sink_port), "agentwatch_sink_records_total")
                     >= len(records) + len(expected), "the sink's events and alerts", *procs)
            wait_for(lambda: value(scrape(hooks_port), "agentwatch_webhooks_deliveries_total",
                                   endpoint="ops", outcome="delivered") >= len(expected),
                     "the deliveries", *procs)
            wait_for(lambda: not by_label(scrape(worker_port), "agentwatch_worker_lag_records",
                                          "partition"), "the worker's lag at 0", *procs)
            # read is not stored: the sink's last rounds (the alerts among them) are stored
            # once it has committed the end of both topics
            wait_caught_up(kafka_bootstrap, f"{topic_name}-s",
                           {topics["events"]: PARTITIONS, topics["alerts"]: 2},
                           timeout_s=SAFETY_TIMEOUT_S, sink=sink)
            w, s, d = scrape(worker_port), scrape(sink_port), scrape(hooks_port)
        finally:
            for proc in procs:
                proc.stop()

    assert_dashboard_metrics_exported(w, s, d)
    assert_worker(w, events, records, expected_alerts)
    assert_sink(s, events, records, expected)
    assert_dispatcher(d, receiver, expected)


def assert_dashboard_metrics_exported(*scrapes: Samples) -> None:
    """Every worker, sink and webhooks metric of the pipeline dashboard is exported."""
    exprs = [t["expr"] for p in json.loads(PIPELINE.read_text())["panels"] for t in p["targets"]]
    wanted = {n for e in exprs for n in re.findall(r"\bagentwatch_(?:worker|sink|webhooks)_\w+", e)}
    scraped = {name for m in scrapes for name, _ in m}
    assert wanted
    assert wanted <= scraped, wanted - scraped


def assert_worker(w: Samples, events: list[Any], records: list[Any],
                  expected_alerts: Counter[tuple[str, str]]) -> None:
    """Every event in, the malformed record a dead letter, the alerts of replay."""
    assert value(w, "agentwatch_worker_events_total") == len(events)
    assert value(w, "agentwatch_worker_records_total") == len(records)
    assert by_label(w, "agentwatch_worker_dead_letters_total", "reason") == {
        ("malformed_json",): 1}
    assert by_label(w, "agentwatch_worker_alerts_total", "rule", "state") == expected_alerts
    assert value(w, "agentwatch_worker_checkpoint_seconds_count") >= 1
    assert value(w, "agentwatch_worker_assigned_partitions") == PARTITIONS
    lag = {labels for (name, labels) in w if name == "agentwatch_worker_lag_records"}
    assert {dict(lb)["partition"] for lb in lag} == {str(p) for p in range(PARTITIONS)}


def assert_sink(s: Samples, events: list[Any], records: list[Any], expected: list[Any]) -> None:
    """The same events and the same dead letter stored, the alerts too, inserts timed."""
    assert value(s, "agentwatch_sink_events_total") == len(events)
    # every record of both topics read (an alert's firing and resolution can make one row)
    assert value(s, "agentwatch_sink_records_total") == len(records) + len(expected)
    assert 1 <= value(s, "agentwatch_sink_alerts_total") <= len(expected)
    assert by_label(s, "agentwatch_sink_dead_letters_total", "reason") == {
        ("malformed_json",): 1}
    tables = {dict(lb)["table"].rsplit(".", 1)[-1] for (name, lb) in s
              if name == "agentwatch_sink_insert_seconds_count"}
    assert {"events", "alerts", "dead_letters"} <= tables


def assert_dispatcher(d: Samples, receiver: WebhookReceiver, expected: list[Any]) -> None:
    """Each alert delivered once to the endpoint, timed, nothing failed."""
    assert value(d, "agentwatch_webhooks_alerts_total") == len(expected)
    assert by_label(d, "agentwatch_webhooks_deliveries_total", "endpoint", "outcome") == {
        ("ops", "delivered"): len(expected)}
    assert value(d, "agentwatch_webhooks_delivery_seconds_count", endpoint="ops",
                 outcome="delivered") == len(expected)
    assert value(d, "agentwatch_webhooks_dead_letters_total") == 0
    assert len([r for r in receiver.received if 200 <= r.response_status < 300]) == len(expected)
    assert receiver.received[0].json["rule"] in {a["rule"] for a in expected}


def test_a_sink_without_its_broker_is_healthy_but_not_ready(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there: the sink keeps retrying to connect
    sink = SinkProcess(f"127.0.0.1:{closed}", events_topic="e", alerts_topic="a", group="g",
                       chdb_path=tmp_path / "chdb", log_path=tmp_path / "sink.log")
    port = with_port(sink, "AGENTWATCH_SINK_METRICS_PORT")
    sink.start()
    try:
        wait_for(lambda: get(port, "/healthz")[0] == 200, "/healthz", sink)
        status, body = get(port, "/readyz")
        assert status == 503
        assert "partition assignment" in body
        assert get(port, "/nothing")[0] == 404
    finally:
        sink.stop()
