"""The control loop on a real broker: a worker (another process) halts the looping session
of a producer (this process) through the compacted control topic; operators halt and
resume with the CLI; a restarted producer sees the current halts; fail-open and -closed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from sink_harness import SinkProcess, wait_caught_up
from worker_harness import WorkerProcess, create_topic, topics_for

from agentwatch.producer import AgentHalted, Agentwatch

WAIT_S = 60.0


def _until(check: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


def _cli(bootstrap: str, control_topic: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "AGENTWATCH_CONTROL_TOPIC": control_topic,
           "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "agentwatch.cli", "control", *args],
                          env=env, capture_output=True, text=True, timeout=60, check=False)


def _cleanup_policy(bootstrap: str, topic: str) -> str:
    async def go() -> str:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            [response] = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic)])
            for resource in response.resources:
                for entry in resource[-1]:  # (name, value, ...) per config
                    if entry[0] == "cleanup.policy":
                        return str(entry[1])
            return ""
        finally:
            await admin.close()

    return asyncio.run(go())


@pytest.fixture
def names(topic_name: str) -> dict[str, str]:
    return {**topics_for(topic_name), "control": f"{topic_name}.control"}


def _client(bootstrap: str, names: dict[str, str], **options: object) -> Agentwatch:
    return Agentwatch(bootstrap_servers=bootstrap, topic=names["events"], tenant_id="acme",
                      agent_id="bot", control=True, control_topic=names["control"],
                      linger_ms=20, **options)  # type: ignore[arg-type]


@pytest.fixture
def worker(kafka_bootstrap: str, names: dict[str, str], topic_name: str, tmp_path: Path
           ) -> Iterator[WorkerProcess]:
    create_topic(kafka_bootstrap, names["events"], 2)
    proc = WorkerProcess(kafka_bootstrap, names, f"{topic_name}-g", tmp_path / "data",
                         tmp_path / "worker.log")
    proc.env["AGENTWATCH_CONTROL_TOPIC"] = names["control"]
    proc.start()
    try:
        assert proc.wait_for_log("assigned partitions", WAIT_S), proc.log()[-3000:]
        yield proc
    finally:
        proc.stop()
    assert "Traceback" not in proc.log(), proc.log()[-3000:]


def test_the_looping_session_is_halted_and_the_others_of_its_agent_run_on(
        kafka_bootstrap: str, names: dict[str, str], worker: WorkerProcess) -> None:
    with _client(kafka_bootstrap, names) as aw:
        calls = 0
        halted: AgentHalted | None = None
        deadline = time.monotonic() + WAIT_S
        with aw.session("loop"):
            while halted is None and time.monotonic() < deadline:
                try:
                    with aw.tool_call("reroute_shipment", args={"order": 42}):
                        calls += 1
                    with aw.session("healthy"), aw.llm_call(model="gpt-4o") as span:
                        span.input_tokens, span.output_tokens = 10, 5
                except AgentHalted as exc:
                    halted = exc
                time.sleep(0.05)
        assert halted is not None, worker.log()[-3000:]
        assert halted.halt.by == "loop_repeat"
        assert halted.halt.session_id == "loop"
        assert halted.halt.alert_id
        assert calls >= 5  # the rule fires on the 5th same call
        assert aw.halted("loop") is not None
        assert aw.halted("healthy") is None
        with aw.session("healthy"), aw.llm_call(model="gpt-4o"):
            pass  # no AgentHalted
        assert aw.control_errors == 0
    assert _cleanup_policy(kafka_bootstrap, names["control"]) == "compact"


def test_an_operator_halts_an_agent_a_restarted_producer_sees_it_and_resume_frees_it(
        kafka_bootstrap: str, names: dict[str, str]) -> None:
    with _client(kafka_bootstrap, names) as aw:
        aw.emit({"kind": "custom"})
        done = _cli(kafka_bootstrap, names["control"], "halt", "--tenant", "acme",
                    "--agent", "bot", "--reason", "burning money", "--by", "alice")
        assert done.returncode == 0, done.stderr
        assert "halted agent acme/bot (by alice)" in done.stdout
        assert _until(lambda: aw.halted("s1") is not None and aw.halted("s2") is not None)
        for session in ("s1", "s2"):
            with pytest.raises(AgentHalted, match="burning money"), aw.session(session), \
                    aw.llm_call(model="gpt-4o"):
                pass
    listed = _cli(kafka_bootstrap, names["control"], "list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    rows = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["scope"], r["by"], r["reason"]) for r in rows] == [
        ("agent acme/bot", "alice", "burning money")]
    with _client(kafka_bootstrap, names) as restarted:  # reads the topic from its beginning
        assert _until(lambda: restarted.halted("s3") is not None)
        done = _cli(kafka_bootstrap, names["control"], "resume", "--tenant", "acme",
                    "--agent", "bot")
        assert done.returncode == 0, done.stderr
        assert _until(lambda: restarted.halted("s3") is None)
        with restarted.session("s3"), restarted.tool_call("search"):
            pass
    listed = _cli(kafka_bootstrap, names["control"], "list")
    assert "(0 rows; halted now)" in listed.stdout


def test_without_a_control_topic_the_agent_runs_and_the_client_counts(
        kafka_bootstrap: str, names: dict[str, str]) -> None:
    with _client(kafka_bootstrap, names) as aw:
        assert _until(lambda: aw.control_errors > 0)
        with aw.llm_call(model="gpt-4o"):
            pass
        assert aw.halted() is None


def test_fail_closed_refuses_calls_while_the_control_topic_cannot_be_read(
        kafka_bootstrap: str, names: dict[str, str]) -> None:
    with _client(kafka_bootstrap, names, control_fail_closed=True) as aw:
        with pytest.raises(AgentHalted) as info, aw.llm_call(model="gpt-4o"):
            pass
        assert info.value.halt.by == "agentwatch"
        done = _cli(kafka_bootstrap, names["control"], "resume", "--tenant", "acme")
        assert done.returncode == 0, done.stderr  # creates the topic: now it can be read
        assert _until(lambda: aw.halted() is None)


def test_the_sink_stores_every_halt_and_resume_in_control_log(
        kafka_bootstrap: str, names: dict[str, str], topic_name: str, tmp_path: Path) -> None:
    for args in (("halt", "--tenant", "acme", "--session", "s9", "--reason", "stuck",
                  "--by", "alice"),
                 ("resume", "--tenant", "acme", "--session", "s9", "--by", "bob")):
        done = _cli(kafka_bootstrap, names["control"], *args)
        assert done.returncode == 0, done.stderr
    create_topic(kafka_bootstrap, names["events"], 1)
    create_topic(kafka_bootstrap, names["alerts"], 1)
    chdb = tmp_path / "chdb"
    sink = SinkProcess(kafka_bootstrap, events_topic=names["events"],
                       alerts_topic=names["alerts"], group=f"{topic_name}-sink",
                       chdb_path=chdb, log_path=tmp_path / "sink.log")
    sink.env["AGENTWATCH_CONTROL_TOPIC"] = names["control"]
    sink.start()
    try:
        wait_caught_up(kafka_bootstrap, f"{topic_name}-sink", {names["control"]: 1},
                       timeout_s=WAIT_S, sink=sink)
    finally:
        assert sink.stop() == 0, sink.log()[-3000:]
    from agentwatch.sinks import ChdbBackend  # noqa: PLC0415

    with ChdbBackend(chdb) as backend:
        rows = backend.query("SELECT action, key, by, reason FROM agentwatch.control_log "
                             "ORDER BY ts").rows
        dead = backend.query("SELECT count() FROM agentwatch.dead_letters").rows
    assert rows == [("halt", "session:acme/s9", "alice", "stuck"),
                    ("resume", "session:acme/s9", "bob", "resumed by an operator")]
    assert dead == [(0,)]  # the tombstone after the resume is skipped, not a dead letter
