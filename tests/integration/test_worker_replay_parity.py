"""`agentwatch worker` on the real broker computes exactly what `agentwatch replay` does."""

from __future__ import annotations

import sys
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from oscillating_fleet import T0, oscillating_error_share
from worker_harness import (
    WorkerProcess,
    alert_set,
    assert_exactly,
    create_topic,
    pack,
    produce,
    read_alerts,
    read_records,
    replay_alerts,
    topics_for,
    worker_alerts,
)

from agentwatch.cli._fleet import FleetPlan, fleet_events
from agentwatch.processors.core import load_rules
from agentwatch.producer import Agentwatch
from agentwatch.schemas import PARTITION_BATCH_PREFIX, partition_for, session_key

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
from _common import synthetic_events

PARTITIONS = 4


def _run_worker(kafka_bootstrap: str, topic_name: str, tmp_path: Path,
                events: list[dict[str, Any]], expected: list[dict[str, Any]],
                rules: Path | None = None, *, via_client: bool = False,
                stages: str | None = None) -> list[dict[str, Any]]:
    topics = topics_for(topic_name)
    create_topic(kafka_bootstrap, topics["events"], PARTITIONS)
    if via_client:  # the producer library end to end: its packing, zstd, acks=all
        with Agentwatch(bootstrap_servers=kafka_bootstrap, topic=topics["events"],
                        linger_ms=20) as client:
            _emit_paced(client, events)
            assert client.flush(timeout_s=60)
            stats = client.stats
        assert (stats.sent, stats.invalid, stats.failed) == (len(events), 0, 0)
    else:
        produce(kafka_bootstrap, topics["events"], pack(events))
    return worker_alerts(kafka_bootstrap, topics, f"{topic_name}-g", tmp_path,
                         lambda values: len(values) >= len(expected), rules=rules,
                         stages=stages)


#: Event time runs this much faster than the wall clock when the producer sends the fleet.
SPEEDUP = 40


def _emit_paced(client: Agentwatch, events: list[dict[str, Any]]) -> None:
    """Emit at ``SPEEDUP`` times real time. The producer packs what a session emits in one
    wall-clock linger interval into one record, so a partition's records are ordered by
    event time only to within that interval. Sent as fast as possible (~500x), one 20 ms
    interval is ~10 s of event time, over the engine's disorder_s, and a loaded machine
    stretches intervals further: agent windows then saw events as late, an extra alert
    pair in 2 of ~30 CI-like runs (also on the code of issue 4)."""
    start_wall = time.monotonic()
    start_ts = datetime.fromisoformat(events[0]["ts"])
    for event in events:
        due_s = (datetime.fromisoformat(event["ts"]) - start_ts).total_seconds() / SPEEDUP
        ahead_s = due_s - (time.monotonic() - start_wall)
        if ahead_s > 0:
            time.sleep(ahead_s)
        client.emit(event)


def test_the_demo_fleet_sent_by_the_producer_gives_the_same_alerts_as_replay(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    # 20 s of accepted disorder: at SPEEDUP, half a second of wall-clock delay (a loaded
    # machine) before a record is sent; the same rules for replay and the worker.
    rules = tmp_path / "rules.yaml"
    rules.write_text("disorder_s: 20\n")
    events = list(fleet_events(FleetPlan()))
    expected = replay_alerts(events, load_rules(rules))
    # the three injected failures: a loop (2 rules), a cost spike, an error burst
    assert {a["rule"] for a in expected} >= {
        "loop_repeat", "loop_steps", "session_cost", "agent_error_rate"}
    got = _run_worker(kafka_bootstrap, topic_name, tmp_path, events, expected, rules,
                      via_client=True)
    assert len(got) == len(expected)
    assert alert_set(got) == alert_set(expected)


@pytest.mark.parametrize(("n_events", "stages"), [(20_000, "all"), (20_000, "split")])
def test_many_sessions_over_every_partition_give_the_same_alerts_as_replay(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path, n_events: int, stages: str
) -> None:
    """500 sessions of 5 agents over 4 partitions: agent error-rate and tenant cost windows
    need events from every partition, consumed in whatever order the worker gets them;
    ``split``: the agent/tenant stage in a child process of the worker (--stages split)."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n"
        "  tenant_cost:\n"
        "    type: cost\n"
        "    scope: tenant\n"
        "    window_s: 30\n"
        "    threshold_usd: 1.5\n"
    )
    config = load_rules(rules)
    events = [orjson.loads(line) for line in synthetic_events(n_events, loops_every=2000)]
    for i, event in enumerate(events):  # an error burst of agent-1 half-way through
        if 6000 <= i < 14000 and event["kind"] == "tool_call" and event["agent_id"] == "agent-1":
            event["status"] = "error"
    expected = replay_alerts(events, config)
    assert any(a["rule"] == "agent_error_rate" for a in expected)
    assert any(a["rule"] == "tenant_cost" for a in expected)
    assert sum(a["rule"] == "loop_repeat" for a in expected) >= 10
    got = _run_worker(kafka_bootstrap, topic_name, tmp_path, events, expected, rules,
                      stages=stages)
    assert len(got) == len(expected)
    assert alert_set(got) == alert_set(expected)


#: demo fleets sent at once, one tenant each: ~16x the open sessions of one
FLEET_TENANTS = 16


def _many_fleets(tenants: int) -> list[dict[str, Any]]:
    """The demo fleet of ``tenants`` tenants (seeds) at once, merged in event-time order:
    each with its loop, cost spike and error burst; ~1,070 events per tenant."""
    events = [e for t in range(tenants)
              for e in fleet_events(FleetPlan(tenant_id=f"tenant-{t:02d}", seed=t))]
    events.sort(key=lambda e: e["ts"])  # stable: a fleet's own order holds on equal ts
    return events


def _record_form(key: bytes | None, value: bytes) -> str:
    if key is not None and key.startswith(PARTITION_BATCH_PREFIX):
        return "partition batch"
    return "one-session array" if value.startswith(b"[") else "event"


def test_many_open_sessions_sent_by_the_producer_in_partition_batches_match_replay_exactly(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    """The project's producer with its defaults (partition batches, linger 50 ms) on many
    open sessions: records hold many sessions each, on the partition each session maps to
    (DESIGN.md, "Kafka records"); the worker gives exactly replay's alerts."""
    rules = tmp_path / "rules.yaml"
    rules.write_text("disorder_s: 20\n")  # as above: SPEEDUP and a loaded machine
    events = _many_fleets(FLEET_TENANTS)
    expected = replay_alerts(events, load_rules(rules))
    assert {(a["tenant_id"], a["rule"]) for a in expected} >= {
        (f"tenant-{t:02d}", rule) for t in range(FLEET_TENANTS)
        for rule in ("loop_repeat", "session_cost", "agent_error_rate")}
    topics = topics_for(topic_name)
    create_topic(kafka_bootstrap, topics["events"], PARTITIONS)
    with Agentwatch(bootstrap_servers=kafka_bootstrap, topic=topics["events"]) as client:
        _emit_paced(client, events)
        assert client.flush(timeout_s=60)
        stats = client.stats
    assert (stats.sent, stats.invalid, stats.failed) == (len(events), 0, 0)
    records = read_records(kafka_bootstrap, topics["events"], timeout_s=60, settle_s=0,
                           until=lambda rs: sum(len(_events_of(r.value)) for r in rs)
                           >= len(events))
    worker = WorkerProcess(kafka_bootstrap, topics, f"{topic_name}-g", tmp_path / "data",
                           tmp_path / "worker.log", rules=rules).start()
    try:
        got = read_alerts(kafka_bootstrap, topics["alerts"], distinct=len(expected))
    finally:
        worker.stop()
    assert "Traceback" not in worker.log(), worker.log()[-3000:]
    assert_exactly(got, expected)
    assert len(got) == len(expected)
    # what the producer wrote: every event once, in partition batches of many sessions
    assert sorted(e["event_id"] for r in records for e in _events_of(r.value)) == sorted(
        e["event_id"] for e in events)
    forms = Counter(_record_form(r.key, r.value) for r in records)
    assert set(forms) == {"partition batch"}, f"the producer wrote {dict(forms)}"
    for r in records:
        assert r.key == b"~batch:%d" % r.partition
        assert {partition_for(session_key(e["tenant_id"], e["session_id"]), PARTITIONS)
                for e in _events_of(r.value)} == {r.partition}
    sessions = [len({(e["tenant_id"], e["session_id"]) for e in _events_of(r.value)})
                for r in records]
    assert sum(sessions) / len(sessions) > 2, Counter(sessions)


def _events_of(value: bytes) -> list[dict[str, Any]]:
    parsed = orjson.loads(value)
    return parsed if isinstance(parsed, list) else [parsed]


def _oscillating_fleet() -> list[dict[str, Any]]:
    """:func:`oscillating_error_share`, then a last call 20 minutes later: the agents'
    windows empty before it."""
    events = oscillating_error_share()
    events.append({**events[-1], "event_id": str(uuid.UUID(int=len(events) + 1)),
                   "ts": (T0 + timedelta(seconds=1800)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                   "status": "ok"})
    return events


@pytest.mark.parametrize("resolve_after_s", [None, 5])
def test_an_error_share_oscillating_around_the_threshold_gives_replays_alerts(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path, resolve_after_s: int | None
) -> None:
    """Hysteresis in the worker (issue 16): with the default resolve_below (20 %) one firing
    per agent and one resolution when its window empties; with resolve_after_s shorter
    than the dips, many episodes, resolved by the clock, the same as replay's."""
    rules = tmp_path / "rules.yaml"
    # pack() groups each session's events of 200 consecutive ones (25 s here) into a record:
    # a partition's events are up to 24 s out of order, so 30 s of accepted disorder
    rules.write_text(
        "disorder_s: 30\n"
        "rules:\n"
        "  loop_steps: {enabled: false}\n"  # sessions of 600 calls: not what is tested
        "  agent_error_rate:\n"
        "    min_events: 600\n"
        + ("" if resolve_after_s is None else f"    resolve_after_s: {resolve_after_s}\n"))
    events = _oscillating_fleet()
    expected = replay_alerts(events, load_rules(rules))
    episodes = Counter((a["key"], a["state"]) for a in expected)
    if resolve_after_s is None:
        assert episodes == {("agent-0", "firing"): 1, ("agent-0", "resolved"): 1,
                            ("agent-1", "firing"): 1, ("agent-1", "resolved"): 1}
    else:
        assert sum("for 5 s" in a["reason"] for a in expected) > 5
    got = _run_worker(kafka_bootstrap, topic_name, tmp_path, events, expected, rules)
    assert_exactly(got, expected)
