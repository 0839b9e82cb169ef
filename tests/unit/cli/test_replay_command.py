"""`agentwatch replay`: hand-made scenarios give exactly the expected alerts."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def event(at_s: float, session: str = "s1", agent: str = "a1", **fields: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "ts": (T0 + timedelta(seconds=at_s)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "agent_id": agent,
        "session_id": session,
        "kind": fields.pop("kind", "llm_call"),
        **fields,
    }


def write_jsonl(path: Path, events: list[dict[str, Any]], extra_lines: list[bytes] = ()) -> Path:
    with path.open("wb") as f:
        for e in events:
            f.write(orjson.dumps(e) + b"\n")
        for line in extra_lines:
            f.write(line + b"\n")
    return path


def run(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "agentwatch.cli", *args], capture_output=True, timeout=120,
        check=False,
    )


def alerts_of(proc: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in proc.stdout.splitlines()]


def test_runaway_loop_fires_once_and_resolves_at_session_end(tmp_path: Path) -> None:
    events = [event(0, kind="session_start")]
    events += [event(1 + i, kind="tool_call", name="reroute", tool_args_hash="h")
               for i in range(12)]
    events.append(event(20, kind="session_end"))
    proc = run("replay", str(write_jsonl(tmp_path / "loop.jsonl", events)))
    assert proc.returncode == 0, proc.stderr
    alerts = alerts_of(proc)
    assert [(a["rule"], a["state"]) for a in alerts] == [
        ("loop_repeat", "firing"), ("loop_repeat", "resolved"),
    ]
    assert alerts[0]["alert_id"] == alerts[1]["alert_id"]
    assert alerts[0]["ts"] == "2026-11-20T09:00:05.000000Z"  # the 5th identical call
    assert alerts[1]["ts"] == "2026-11-20T09:00:20.000000Z"


def test_cost_spike_fires_once_then_resolves_when_window_slides(tmp_path: Path) -> None:
    events = [event(i * 5, cost_usd=0.3) for i in range(6)]  # 0..25 s: $1.80 in 60 s
    events.append(event(200, session="other", cost_usd=0.01))  # moves the watermark on
    proc = run("replay", str(write_jsonl(tmp_path / "cost.jsonl", events)))
    alerts = alerts_of(proc)
    assert [(a["rule"], a["state"]) for a in alerts] == [
        ("session_cost", "firing"), ("session_cost", "resolved"),
    ]
    assert alerts[0]["ts"] == "2026-11-20T09:00:15.000000Z"  # 4 x $0.30 = $1.20 > $1
    assert alerts[0]["value"] == pytest.approx(1.2)
    # $1.80 until the first bucket leaves at 60 s; it is $0.90 at 70 s, and the fall under
    # $0.80 (resolve_below_usd: 0.8 x the threshold by default) happens at 75 s
    assert alerts[1]["ts"] == "2026-11-20T09:01:15.000000Z"


def test_cost_is_priced_from_tokens_when_absent(tmp_path: Path) -> None:
    # gpt-4o: $2.50 / M input -> 500k tokens = $1.25 > $1
    events = [event(0, model="gpt-4o", input_tokens=500_000, output_tokens=0)]
    proc = run("replay", str(write_jsonl(tmp_path / "priced.jsonl", events)))
    alerts = alerts_of(proc)
    assert [a["rule"] for a in alerts] == ["session_cost"]
    assert alerts[0]["value"] == pytest.approx(1.25)


def test_error_burst_needs_twenty_calls(tmp_path: Path) -> None:
    events = [event(i, session=f"s{i % 3}", kind="tool_call", name="t", status="error")
              for i in range(19)]
    proc = run("replay", str(write_jsonl(tmp_path / "few.jsonl", events)))
    assert alerts_of(proc) == []
    events.append(event(19, kind="tool_call", name="t", status="error"))
    proc = run("replay", str(write_jsonl(tmp_path / "twenty.jsonl", events)))
    alerts = alerts_of(proc)
    assert [(a["rule"], a["key"], a["scope"]) for a in alerts] == [
        ("agent_error_rate", "a1", "agent"),
    ]


def test_invalid_lines_are_reported_with_line_numbers_and_skipped(tmp_path: Path) -> None:
    events = [event(i, cost_usd=0.3) for i in range(4)]
    path = write_jsonl(tmp_path / "mixed.jsonl", events[:2], [b"{not json", b'{"kind": "x"}'])
    with path.open("ab") as f:
        for e in events[2:]:
            f.write(orjson.dumps(e) + b"\n")
    proc = run("replay", str(path))
    assert proc.returncode == 0
    err = proc.stderr.decode()
    assert "mixed.jsonl:3: invalid event: malformed JSON" in err
    assert "mixed.jsonl:4: invalid event:" in err
    assert "`event_id`" in err
    assert "4 events from 6 lines, 2 invalid" in err
    assert [a["rule"] for a in alerts_of(proc)] == ["session_cost"]  # the run went on


def test_tenants_do_not_share_state(tmp_path: Path) -> None:
    events = [event(i, tenant_id=t, cost_usd=0.6) for i in range(2) for t in ("t1", "t2")]
    proc = run("replay", str(write_jsonl(tmp_path / "tenants.jsonl", events)))
    alerts = alerts_of(proc)
    # each tenant's session s1 spent $1.20 on its own; one alert each, not one for $2.40
    assert sorted((a["tenant_id"], a["value"]) for a in alerts) == [
        ("t1", pytest.approx(1.2)), ("t2", pytest.approx(1.2)),
    ]


def test_duplicate_event_ids_do_not_double_count(tmp_path: Path) -> None:
    first = event(0, cost_usd=0.6)
    proc = run("replay", str(write_jsonl(tmp_path / "dup.jsonl", [first, first, first])))
    assert alerts_of(proc) == []
    assert "2 duplicates" in proc.stderr.decode()


def test_rules_file_changes_thresholds(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text("[rules.session_cost]\nthreshold_usd = 5.0\n")
    events = [event(i, cost_usd=0.6) for i in range(4)]  # $2.40: below $5
    proc = run("replay", str(write_jsonl(tmp_path / "e.jsonl", events)), "--config", str(rules))
    assert proc.returncode == 0
    assert alerts_of(proc) == []


def test_bad_rules_key_is_named_without_traceback(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  session_cost:\n    treshold_usd: 2\n")
    proc = run("replay", str(write_jsonl(tmp_path / "e.jsonl", [event(0)])), "-c", str(rules))
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert "rules.session_cost.treshold_usd" in err
    assert "unknown key" in err
    assert "Traceback" not in err


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    proc = run("replay", str(tmp_path / "nope.jsonl"))
    assert proc.returncode == 2
    assert b"cannot read" in proc.stderr
    assert b"Traceback" not in proc.stderr


def test_replay_reads_standard_input(tmp_path: Path) -> None:
    data = b"".join(orjson.dumps(event(i, cost_usd=0.6)) + b"\n" for i in range(2))
    proc = subprocess.run([sys.executable, "-m", "agentwatch.cli", "replay", "-"], input=data,
                          capture_output=True, timeout=60, check=False)
    assert [a["rule"] for a in alerts_of(proc)] == ["session_cost"]


def test_schema_command_prints_the_committed_schema() -> None:
    root = Path(__file__).resolve().parents[3]
    for name in ("event", "alert"):
        proc = run("schema", name)
        assert proc.returncode == 0
        assert proc.stdout == (root / "schemas" / "json" / f"{name}.schema.json").read_bytes()


def test_unknown_subcommand_prints_usage_not_traceback() -> None:
    proc = run("frobnicate")
    assert proc.returncode == 2
    assert b"Traceback" not in proc.stderr
    assert b"No such command" in proc.stderr


def test_a_dump_of_partition_batches_replays_to_the_alerts_of_one_event_per_line(
    tmp_path: Path,
) -> None:
    """A topic dump of partition batches (DESIGN.md, "Kafka records", form 3: one array of
    many sessions' events per line) gives the same alerts as the same events one per line,
    in the dump's order (replay takes events in the order given: across partitions a dump
    is in event-time order only to within a linger interval)."""
    from agentwatch.cli._fleet import FleetPlan, fleet_events  # noqa: PLC0415
    from agentwatch.schemas import partition_for, session_key  # noqa: PLC0415

    partitions, linger_events = 4, 8  # a linger interval: ~4 s of the fleet's event time
    events = list(fleet_events(FleetPlan()))
    batches: list[bytes] = []
    for i in range(0, len(events), linger_events):
        by_partition: dict[int, list[dict[str, Any]]] = {}
        for e in events[i:i + linger_events]:
            p = partition_for(session_key(e["tenant_id"], e["session_id"]), partitions)
            by_partition.setdefault(p, []).append(e)
        batches += [orjson.dumps(by_partition[p]) for p in sorted(by_partition)]
    assert max(len({e["session_id"] for e in orjson.loads(b)}) for b in batches) > 1
    in_dump_order = [e for b in batches for e in orjson.loads(b)]
    singles = run("replay", str(write_jsonl(tmp_path / "events.jsonl", in_dump_order)))
    packed = run("replay", str(write_jsonl(tmp_path / "batches.jsonl", [], batches)))
    assert singles.returncode == packed.returncode == 0, packed.stderr
    assert {a["rule"] for a in alerts_of(singles)} >= {"loop_repeat", "agent_error_rate"}
    assert alerts_of(packed) == alerts_of(singles)
    assert f"{len(events)} events from {len(batches)} lines".encode() in packed.stderr
