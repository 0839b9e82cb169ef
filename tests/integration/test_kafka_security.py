"""Every agentwatch Kafka client on a broker that requires SASL_SSL (SCRAM-SHA-512, a
self-signed certificate), configured only through the documented ``KAFKA_*`` variables:
the producer library, the worker, the sink and the webhook dispatcher, end to end; and a
wrong password (or CA) is one line naming the setting, not a retry loop or a traceback.

Topics are created and read back through the broker's PLAINTEXT listener (the test's own
inspection); every agentwatch process is given only the SASL_SSL address.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sink_harness import SinkProcess, wait_caught_up
from webhooks_harness import DispatcherProcess, write_endpoints
from worker_harness import WorkerProcess, create_topic, topics_for

from agentwatch.alerts import WebhookReceiver
from agentwatch.producer import Agentwatch
from agentwatch.sinks import StoreSettings

SECRET = "security-secret"
LOOP_CALLS = 6  # the default loop_repeat rule fires at 5 identical calls


def _loop_session(aw: Agentwatch, session_id: str) -> None:
    with aw.session(session_id):
        for _ in range(LOOP_CALLS):
            with aw.tool_call("search_orders", {"customer": 42}):
                pass


def test_producer_worker_sink_and_dispatcher_run_end_to_end_over_sasl_ssl(
    kafka_bootstrap: str, kafka_secure_env: dict[str, str], topic_name: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topics = topics_for(topic_name)
    create_topic(kafka_bootstrap, topics["events"], 2)
    create_topic(kafka_bootstrap, topics["alerts"], 1)
    secure = kafka_secure_env["KAFKA_BOOTSTRAP_SERVERS"]
    chdb = tmp_path / "chdb"

    worker = WorkerProcess(secure, topics, f"{topic_name}-w", tmp_path / "data",
                           tmp_path / "worker.log")
    sink = SinkProcess(secure, events_topic=topics["events"], alerts_topic=topics["alerts"],
                       group=f"{topic_name}-sink", chdb_path=chdb, log_path=tmp_path / "sink.log")
    with WebhookReceiver(secret=SECRET) as receiver:
        endpoints = write_endpoints(tmp_path / "endpoints.yaml", [
            {"name": "ops", "url": receiver.url, "secret": SECRET, "allow_private": True}])
        dispatcher = DispatcherProcess(
            secure, alerts_topic=topics["alerts"], dlq_topic=f"{topic_name}.alerts.dlq",
            group=f"{topic_name}-webhooks", endpoints_file=endpoints,
            log_path=tmp_path / "webhooks.log")
        services = (worker, sink, dispatcher)
        for service in services:
            service.env.update(kafka_secure_env)
            service.start()
        try:
            # the producer library reads the same variables
            for name, value in kafka_secure_env.items():
                monkeypatch.setenv(name, value)
            aw = Agentwatch(agent_id="secure-bot", bootstrap_servers=secure,
                            topic=topics["events"])
            try:
                _loop_session(aw, "s-secure-loop")
                assert aw.flush(60), aw.stats
                stats = aw.stats
            finally:
                aw.close()
            # + session_start, session_end
            assert (stats.sent, stats.failed) == (LOOP_CALLS + 2, 0), stats

            deadline = time.monotonic() + 120
            # the loop alert fires, and resolves with the session's end
            while len([d for d in receiver.received if d.json["rule"] == "loop_repeat"]) < 2:
                for service in services:
                    assert service.proc is not None
                    assert service.proc.poll() is None, service.log()[-3000:]
                assert time.monotonic() < deadline, (
                    f"no alert delivered:\n{worker.log()[-2000:]}\n{dispatcher.log()[-2000:]}")
                time.sleep(0.2)
            wait_caught_up(kafka_bootstrap, f"{topic_name}-sink",
                           {topics["events"]: 2, topics["alerts"]: 1}, timeout_s=90, sink=sink)
        finally:
            for service in services:
                service.stop()

    delivered = [d for d in receiver.received if d.json["rule"] == "loop_repeat"]
    assert [(d.json["state"], d.json["session_id"], d.verified) for d in delivered] == [
        ("firing", "s-secure-loop", True), ("resolved", "s-secure-loop", True)]
    with StoreSettings(url=str(chdb)).open(create=False) as backend:
        rows = backend.query(
            "SELECT count(), uniqExact(event_id) FROM agentwatch.events "
            "WHERE session_id = 's-secure-loop'").rows
        alerts = backend.query("SELECT rule, state FROM agentwatch.alerts").rows
    assert rows == [(LOOP_CALLS + 2, LOOP_CALLS + 2)]
    assert sorted(alerts) == [("loop_repeat", "firing"), ("loop_repeat", "resolved")]


@pytest.mark.parametrize("command", ["worker", "sink", "webhooks"])
def test_a_wrong_password_is_one_line_naming_the_setting(
    kafka_secure_env: dict[str, str], command: str, tmp_path: Path
) -> None:
    endpoints = write_endpoints(tmp_path / "endpoints.yaml", [
        {"name": "ops", "url": "https://example.com/hook", "secret": SECRET}])
    env = {
        **kafka_secure_env,
        "PATH": "/usr/bin:/bin",
        "KAFKA_SASL_PASSWORD": "not-the-password",
        "AGENTWATCH_DATA_DIR": str(tmp_path / "data"),
        "AGENTWATCH_WEBHOOKS_FILE": str(endpoints),
        "CLICKHOUSE_URL": str(tmp_path / "chdb"),
    }
    args = [sys.executable, "-m", "agentwatch.cli", command]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120,
                          check=False, cwd=tmp_path)
    assert done.returncode != 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if "KAFKA_SASL_PASSWORD" in line]
    assert len(errors) == 1, done.stderr
    assert "KAFKA_SASL_USERNAME='agentwatch'" in errors[0]
    assert "not-the-password" not in done.stderr + done.stdout


def test_a_ca_that_does_not_match_is_one_line_naming_the_ca_setting(
    kafka_secure_env: dict[str, str], tmp_path: Path
) -> None:
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_text(_any_system_ca())  # real CAs, none of which signed the broker's
    env = {**kafka_secure_env, "PATH": "/usr/bin:/bin", "KAFKA_SSL_CAFILE": str(other_ca),
           "AGENTWATCH_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run([sys.executable, "-m", "agentwatch.cli", "worker"], env=env,
                          capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    assert [line for line in done.stderr.splitlines() if "KAFKA_SSL_CAFILE" in line], done.stderr


def _any_system_ca() -> str:
    import ssl  # noqa: PLC0415

    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and Path(candidate).is_file():
            return Path(candidate).read_text()
    pytest.skip("no system CA bundle to stand in for a wrong CA")


def test_the_producer_reports_refused_credentials_naming_the_setting(
    kafka_secure_env: dict[str, str], topic_name: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for name, value in {**kafka_secure_env, "KAFKA_SASL_PASSWORD": "not-the-password"}.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.WARNING)
    aw = Agentwatch(agent_id="bot", bootstrap_servers=kafka_secure_env["KAFKA_BOOTSTRAP_SERVERS"],
                    topic=f"{topic_name}.events")
    try:
        aw.emit({"kind": "custom", "session_id": "s1"})
        assert not aw.flush(5)  # nothing can be delivered with refused credentials
    finally:
        aw.close(timeout_s=1)
    warnings = [r.getMessage() for r in caplog.records if "KAFKA_SASL_PASSWORD" in r.getMessage()]
    assert warnings, [r.getMessage() for r in caplog.records]
    assert "not-the-password" not in " ".join(r.getMessage() for r in caplog.records)
