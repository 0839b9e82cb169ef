"""`agentwatch demo` and its fleet, run as a user runs them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from agentwatch.alerts import WebhookReceiver
from agentwatch.cli._demo import with_demo_budget
from agentwatch.cli._fleet import FLEET_TOOL_POLICY, FleetPlan, fleet_events
from agentwatch.processors.core import Engine, rules_from_mapping
from agentwatch.schemas import AlertState, AlertType, decode_event, to_us

OUR_SECRET = "ours-secret"
GONE_SECRET = "gone-secret"


def test_fleet_is_deterministic_and_time_ordered() -> None:
    first = list(fleet_events(FleetPlan()))
    assert first == list(fleet_events(FleetPlan()))
    stamps = [e["ts"] for e in first]
    assert stamps == sorted(stamps)


def test_fleet_injects_the_three_failures_and_each_is_caught() -> None:
    engine = Engine()
    alerts = []
    high = 0
    for raw in fleet_events(FleetPlan()):
        event = decode_event(raw)
        alerts += engine.process(event)
        high = max(high, to_us(event.ts))
        alerts += engine.advance(high - engine.config.disorder_us)
    fired = sorted((a.rule, a.key) for a in alerts if a.state is AlertState.FIRING)
    assert fired == [
        ("agent_error_rate", "retail-concierge"),
        ("loop_repeat", "supply-loop-0001"),
        ("loop_steps", "supply-loop-0001"),
        ("session_cost", "campaign-spike-0001"),
    ]
    resolved = {a.alert_id for a in alerts if a.state is AlertState.RESOLVED}
    assert resolved == {a.alert_id for a in alerts if a.state is AlertState.FIRING}


def test_the_demo_budget_forecasts_the_tenant_runs_out_when_the_cost_spike_starts() -> None:
    plan = FleetPlan()
    engine = Engine(with_demo_budget(Engine().config))
    alerts = []
    for raw in fleet_events(plan):
        alerts += engine.process(decode_event(raw))
    budget = [a for a in alerts if a.type is AlertType.BUDGET]
    assert [(a.rule, a.key, a.state) for a in budget] == [
        ("demo_daily_budget", plan.tenant_id, AlertState.FIRING)]
    # the spike's first call (2 s after its session starts) tips the forecast
    assert budget[0].ts == datetime(2026, 11, 20, 9, tzinfo=UTC) + timedelta(
        seconds=plan.spike_start_s + 2)
    assert "runs out at 2026-11-20T17:" in budget[0].reason
    assert "before the day ends at 2026-11-21T00:00:00Z" in budget[0].reason

def test_the_fleet_policy_catches_the_violation_and_no_healthy_session_cycles() -> None:
    """With the fleet's tool policy, the one violation fires (and nothing else new): no
    healthy session breaks the policy, and loop_cycle (on by default) stays silent."""
    rules = rules_from_mapping({"rules": {"tool_policy": FLEET_TOOL_POLICY}})
    engine = Engine(rules)
    alerts = []
    for raw in fleet_events(FleetPlan()):
        alerts += engine.process(decode_event(raw))
    fired = sorted((a.rule, a.key) for a in alerts if a.state is AlertState.FIRING)
    assert ("tool_policy", "campaign-export-0001") in fired
    assert [key for rule, key in fired if rule in ("tool_policy", "loop_cycle")] == [
        "campaign-export-0001"]
    (violation,) = (a for a in alerts if a.rule == "tool_policy"
                    and a.state is AlertState.FIRING)
    assert "`export_customer_list` is not on the allow-list of agent campaign-optimizer" in (
        violation.reason)


def test_demo_command_runs_end_to_end(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "agentwatch.cli", "demo", "--duration-s", "3",
         "--data-dir", str(data_dir)],
        capture_output=True, timeout=120, check=False,
        env={**os.environ, "COLUMNS": "320"},  # rich wraps at 80 columns without a terminal
    )
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    assert "Traceback" not in proc.stderr.decode()
    # the looping session is halted: its agent stops, so fewer events than the fleet's
    halted = re.search(r"halt: supply-loop-0001 stopped on AgentHalted at \S+ \(by "
                       r"loop_repeat, [\d.]+ s of agent time after the alert fired\); the "
                       r"halt saved (\d+) calls and \$([\d.]+)", " ".join(out.split()))
    assert halted is not None, out
    saved_calls = int(halted.group(1))
    assert saved_calls > 200  # of the loop's 264 calls
    assert float(halted.group(2)) > 0
    n_events = len(list(fleet_events(FleetPlan()))) - saved_calls  # + its own session_end
    assert f"{n_events:,} emitted, {n_events:,} sent, 0 dropped" in out
    assert f"{n_events:,} events, 0 invalid" in out
    # loop_repeat, session_cost, agent_error_rate, tool_policy fire and resolve (loop_steps
    # never fires: the halt stops the loop first); the budget forecast fires (it resolves
    # at midnight)
    assert "webhooks: 9/9 delivered, 9 received by the local receiver, 0 failed" in out
    assert out.count("signature ok") == 9
    assert "export_customer_list" in out  # the tool-policy violation
    assert "BAD SIGNATURE" not in out
    assert "Fleet summary" in out
    assert "Example query" in out

    # the database stays behind with every event and alert, queryable by a new process
    check = (
        "import orjson; from agentwatch.sinks import ChdbBackend\n"
        f"b = ChdbBackend({str(data_dir / 'clickhouse')!r})\n"
        "e = b.query('SELECT count() FROM agentwatch.events').rows[0][0]\n"
        "a = b.query('SELECT count(), uniqExact(alert_id) FROM agentwatch.alerts').rows[0]\n"
        "c = b.query('SELECT action, by, key FROM agentwatch.control_log ORDER BY ts').rows\n"
        "print(orjson.dumps([e, list(a), [list(r) for r in c]]).decode())\n"
        "b.close()\n"
    )
    counted = subprocess.run([sys.executable, "-c", check], capture_output=True, timeout=120,
                             check=True)
    events_rows, (alert_rows, alert_ids), control = orjson.loads(counted.stdout)
    assert events_rows == n_events
    assert (alert_rows, alert_ids) == (9, 5)
    # the halt and its resume (when the loop alert resolved) are in the audit table
    assert control == [["halt", "loop_repeat", "session:acme-retail/supply-loop-0001"],
                       ["resume", "loop_repeat", "session:acme-retail/supply-loop-0001"]]


def test_demo_halts_the_loop_whatever_topics_the_environment_names(tmp_path: Path) -> None:
    """AGENTWATCH_TOPIC and AGENTWATCH_CONTROL_TOPIC are a real deployment's; the demo's
    agent and pipeline share one in-process log (the halt used to go to a control topic
    the agent did not follow: the loop ran to its end)."""
    proc = subprocess.run(
        [sys.executable, "-m", "agentwatch.cli", "demo", "--duration-s", "3",
         "--data-dir", str(tmp_path / "demo")],
        capture_output=True, timeout=120, check=False,
        env={**os.environ, "COLUMNS": "320", "AGENTWATCH_TOPIC": "prod.events",
             "AGENTWATCH_CONTROL_TOPIC": "prod.control"},
    )
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    assert "halt: supply-loop-0001 stopped on AgentHalted" in " ".join(out.split()), out


def test_demo_delivers_to_an_endpoints_file_and_stores_what_finally_failed(
    tmp_path: Path,
) -> None:
    """--endpoints: alerts also go to the user's endpoints, through the same dispatcher
    as `agentwatch webhooks`; a refused delivery is recorded in the alerts table."""
    data_dir = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    with (
        WebhookReceiver(secret=OUR_SECRET) as ours,
        WebhookReceiver(secret=GONE_SECRET, default_status=410) as gone,
    ):
        endpoints = tmp_path / "endpoints.toml"
        endpoints.write_text(
            f'[[endpoints]]\nname = "ours"\nurl = "{ours.url}"\nsecret_env = "OUR_SECRET"\n'
            "allow_private = true\n"
            '[endpoints.filters]\ntypes = ["runaway_loop"]\n'
            f'[[endpoints]]\nname = "gone"\nurl = "{gone.url}"\nsecret = "{GONE_SECRET}"\n'
            "allow_private = true\n"
        )
        proc = subprocess.run(
            [sys.executable, "-m", "agentwatch.cli", "demo", "--duration-s", "3",
             "--data-dir", str(data_dir), "--endpoints", str(endpoints)],
            capture_output=True, timeout=120, check=False,
            env=env | {"COLUMNS": "250", "OUR_SECRET": OUR_SECRET},
        )
        out = proc.stdout.decode()
        assert proc.returncode == 0, out + proc.stderr.decode()
        received, refused = ours.received, gone.received

    # the runaway-loop alert (repeat) fires and resolves; the halt stops the loop before
    # the steps rule would fire
    assert sorted((d.json["rule"], d.json["state"]) for d in received) == [
        ("loop_repeat", "firing"), ("loop_repeat", "resolved")]
    assert all(d.verified for d in received)
    assert len(refused) == 9  # 410 is final: one attempt each
    assert "9 received by the local receiver, 9 failed" in out
    assert "webhook gone: delivery" in out

    check = (
        "import orjson; from agentwatch.sinks import ChdbBackend\n"
        f"b = ChdbBackend({str(data_dir / 'clickhouse')!r})\n"
        "s = b.query('SELECT delivery_status, count() FROM agentwatch.alerts "
        "GROUP BY delivery_status ORDER BY delivery_status').rows\n"
        "d = b.query(\"SELECT count() FROM agentwatch.dead_letters "
        "WHERE source = 'webhook/gone' AND reason LIKE '%HTTP 410%'\").rows[0][0]\n"
        "print(orjson.dumps([[list(r) for r in s], d]).decode())\n"
        "b.close()\n"
    )
    counted = subprocess.run([sys.executable, "-c", check], capture_output=True, timeout=120,
                             check=True)
    statuses, dead_letters = orjson.loads(counted.stdout)
    assert statuses == [["", 9], ["failed:gone", 9]]
    assert dead_letters == 9
