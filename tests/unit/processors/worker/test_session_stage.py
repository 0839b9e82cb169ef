"""Stage 1 of the worker: one input partition's records in, alerts, forwards and writes out.

The guarantees under test: the stage computes what ``agentwatch replay`` computes for the
same events; bad input is dead-lettered, never raised; and a crash, followed by Kafka
re-delivering records from the last committed offset into a stage rebuilt from the
table, loses no alert and counts no event twice.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import US

from agentwatch.processors.core import Engine, rules_from_mapping
from agentwatch.processors.replay import replay_lines
from agentwatch.processors.worker import SessionStage, StageOutput
from agentwatch.processors.worker._forward import table_key
from agentwatch.schemas import (
    Event,
    EventKind,
    EventStatus,
    PartitionCache,
    encode_event,
    encode_events,
    from_us,
    partition_batch_key,
    to_us,
)

P = 3  # the input partition under test
N = 8  # partitions of the input topic
TOPIC = "agentwatch.events"
SESSION_RULES = rules_from_mapping({
    "rules": {"agent_error_rate": {"enabled": False}, "loop_steps": {"max_steps": 25}},
    "session_idle_timeout_s": 60,
})

Record = tuple[bytes, bytes]  # (Kafka key, value)


def _event(n: int, t_us: int, kind: str = "llm_call", **fields: Any) -> Event:
    fields.setdefault("agent_id", "agent-1")
    fields.setdefault("session_id", "sess-1")
    return Event(event_id=str(uuid.UUID(int=n)), ts=from_us(t_us), kind=EventKind(kind),
                 **fields)


def _stream(seed: int, n_records: int) -> list[list[Event]]:
    """Records of one partition: each 1-4 events of one session, with costs, repeated tool
    calls, errors, a little disorder, ended and abandoned (expiring) sessions."""
    rng = random.Random(seed)
    generation = [0] * 6
    records: list[list[Event]] = []
    t_us = n = 0
    for _ in range(n_records):
        slot = rng.randrange(6)
        session = f"s{slot}.{generation[slot]}"
        events = []
        for _ in range(rng.randint(1, 4)):
            t_us += rng.randrange(0, 800_000)
            n += 1
            fields: dict[str, Any] = {"session_id": session, "agent_id": f"agent-{slot % 3}"}
            if rng.random() < 0.4:
                kind = "llm_call"
                fields["cost_usd"] = rng.choice((0.02, 0.15, 0.4))
            else:
                kind = "tool_call"
                fields["name"] = rng.choice(("search", "lookup"))
                fields["tool_args_hash"] = rng.choice(("same", f"{rng.getrandbits(32):x}"))
            if rng.random() < 0.3:
                fields["status"] = EventStatus.ERROR
            jitter_us = rng.randrange(0, 2 * US) if rng.random() < 0.2 else 0
            events.append(_event(seed << 40 | n, max(0, t_us - jitter_us), kind, **fields))
        roll = rng.random()
        if roll < 0.05:  # the session ends; its slot starts a new one
            n += 1
            events.append(_event(seed << 40 | n, t_us, "session_end", session_id=session,
                                 agent_id=f"agent-{slot % 3}"))
            generation[slot] += 1
        elif roll < 0.07:  # abandoned: it expires after 60 s of event time
            generation[slot] += 1
        records.append(events)
    return records


def _encode(records: list[list[Event]]) -> list[Record]:
    """Packed records; a one-event record goes as a single object (both are accepted)."""
    return [(f"{r[0].tenant_id}/{r[0].session_id}".encode(),
             encode_event(r[0]) if len(r) == 1 else encode_events(r)) for r in records]


def _dump(alerts: list[Any]) -> list[dict[str, Any]]:
    return [a.model_dump(mode="json") for a in alerts]


def _stage(table: dict[bytes, bytes] | None = None, config: Any = SESSION_RULES) -> SessionStage:
    stage = SessionStage(config, TOPIC, N)
    stage.restore(P, list((table or {}).items()))
    return stage


def _apply(table: dict[bytes, bytes], writes: list[tuple[int, bytes, bytes | None]]) -> None:
    for partition, key, value in writes:
        assert partition == P
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value


def _run(stage: SessionStage, records: list[Record], start: int, stop: int, *, size: int = 7,
         table: dict[bytes, bytes] | None = None, every: int = 1
         ) -> tuple[list[dict[str, Any]], int]:
    """Feed records ``start..stop-1`` (offsets = indexes) in batches; (alerts, replayed).
    With a ``table``, a checkpoint is written to it after every ``every`` batches."""
    alerts: list[dict[str, Any]] = []
    replayed = 0
    for n, lo in enumerate(range(start, stop, size), start=1):
        out = StageOutput()
        stage.process(P, [(o, *records[o]) for o in range(lo, min(lo + size, stop))], out)
        alerts += _dump(out.alerts)
        replayed += out.replayed
        if table is not None and n % every == 0:
            _apply(table, stage.checkpoint(P, None))
    return alerts, replayed


def _replay(records: list[list[Event]], config: Any = SESSION_RULES) -> list[dict[str, Any]]:
    alerts: list[Any] = []
    replay_lines((encode_event(e) for r in records for e in r), Engine(config),
                 alerts.append)
    return _dump(alerts)


@pytest.mark.parametrize(("seed", "size"), [(0, 1), (1, 7), (2, 50), (3, 400)])
def test_session_alerts_equal_replay_of_the_same_events(seed: int, size: int) -> None:
    records = _stream(seed, 400)
    expected = _replay(records)
    # (loop_cycle fires too on some seeds: two tools called at random form cycles)
    assert {a["rule"] for a in expected} >= {"loop_repeat", "session_cost", "loop_steps"}
    assert {a["state"] for a in expected} == {"firing", "resolved"}
    got, replayed = _run(_stage(), _encode(records), 0, len(records), size=size)
    assert got == expected
    assert replayed == 0


def test_a_checkpoint_writes_each_dirty_key_once_then_nothing_until_it_changes() -> None:
    records = _encode(_stream(4, 30))
    stage = _stage()
    for half in (records[:15], records[15:]):  # two batches, one checkpoint
        out = StageOutput()
        stage.process(P, [(o, *r) for o, r in enumerate(half)], out)
        assert out.dead_letters == []
    sessions = {k for k, _ in records}
    assert stage.dirty(P) == len(sessions)
    writes = stage.checkpoint(P, None)
    keys = [k for _, k, _ in writes]
    assert len(keys) == len(set(keys)) == len(sessions) + 1  # one write per key, and meta
    assert keys[-1] == table_key(P, "meta")
    meta = orjson.loads(writes[-1][2] or b"null")
    assert meta["o"] == 14
    assert stage.dirty(P) == 0
    assert [k for _, k, _ in stage.checkpoint(P, None)] == [table_key(P, "meta")]


def test_events_are_counted_per_batch() -> None:
    records = _stream(4, 30)
    stage, out = _stage(), StageOutput()
    stage.process(P, [(o, *r) for o, r in enumerate(_encode(records))], out)
    assert out.events == sum(len(r) for r in records)
    assert out.dead_letters == []
    assert out.writes == []  # state is written by checkpoints only
    meta = orjson.loads(stage.checkpoint(P, None)[-1][2] or b"null")
    assert meta["o"] == len(records) - 1
    assert meta["m"] == stage.max_ts_us(P) == max(to_us(e.ts) for r in records for e in r)


def _dead(records: list[tuple[bytes | None, bytes | None]]) -> StageOutput:
    out = StageOutput()
    _stage().process(P, [(o, k, v) for o, (k, v) in enumerate(records)], out)
    return out


def _payload(n: int, **fields: Any) -> dict[str, Any]:
    return {"event_id": str(uuid.UUID(int=n)), "ts": "2026-01-01T00:00:00Z",
            "agent_id": "a", "session_id": "s", "kind": "llm_call", **fields}


@pytest.mark.parametrize(("value", "reason"), [
    (b'{"event_id": ', "malformed JSON"),
    (orjson.dumps(_payload(1, input_tokens="ten")), "field `input_tokens`"),
    (orjson.dumps(_payload(1, schema_version=2)), "field `schema_version`"),
    (b"[]", "empty array"),
    (b"42", "not a JSON object"),
    (None, "empty record (no value)"),
])
def test_an_invalid_record_is_dead_lettered(value: bytes | None, reason: str) -> None:
    out = _dead([(b"default/s", value)])
    assert out.events == 0
    assert out.alerts == []
    [dead] = out.dead_letters
    assert reason in dead.reason
    assert orjson.loads(dead.to_json()) == {
        "reason": dead.reason, "topic": TOPIC, "partition": P, "offset": 0, "index": None,
        "key": "default/s", "raw": (value or b"").decode(),
    }


def test_a_bad_item_of_a_packed_record_is_dead_lettered_alone() -> None:
    bad = _payload(2, input_tokens="ten")
    value = orjson.dumps([_payload(1), bad, _payload(3)])
    out = _dead([(b"default/s", b"not json"), (b"default/s", value)])
    assert out.events == 2  # the good items are processed
    first, second = out.dead_letters
    assert first.offset == 0
    assert "malformed JSON" in first.reason
    assert (second.offset, second.index) == (1, 1)
    body = orjson.loads(second.to_json())
    assert body["index"] == 1
    assert orjson.loads(body["raw"]) == bad
    assert "input_tokens" in body["reason"]


def test_a_duplicate_event_is_counted_and_forwarded_once() -> None:
    stage = _stage(config=rules_from_mapping({}))  # the defaults: agent_error_rate is on
    first, second = _event(1, 0, "tool_call"), _event(2, US, "tool_call")
    out = StageOutput()
    stage.process(P, [(0, b"k", encode_events([first, second])),
                      (1, b"k", encode_event(first))], out)
    assert (out.events, out.duplicates) == (2, 1)
    ids = [c[0] for _, v in out.forwards for c in orjson.loads(v)["e"]]
    assert ids == [first.event_id, second.event_id]


def test_operations_are_forwarded_by_agent_for_the_agent_rule() -> None:
    stage = _stage(config=rules_from_mapping({}))  # the defaults: agent_error_rate is on
    events = [_event(1, 0, "llm_call", cost_usd=0.1), _event(2, 1, "tool_call", name="t"),
              _event(3, 2, "tool_call", agent_id="agent-2", session_id="other"),
              _event(4, 3, "session_end")]
    out = StageOutput()
    stage.process(P, [(0, b"k", encode_events(events))], out)
    by_agent = {tuple(orjson.loads(k)): orjson.loads(v) for k, v in out.forwards}
    assert len(out.forwards) == 2  # one message per agent per batch
    assert set(by_agent) == {("default", "agent-1"), ("default", "agent-2")}
    one = by_agent[("default", "agent-1")]
    assert (one["s"], one["p"]) == ("agent", P)
    assert [c[0] for c in one["e"]] == [events[0].event_id, events[1].event_id]
    assert one["e"][0][1] == 0  # event time in µs
    assert [c[0] for c in by_agent[("default", "agent-2")]["e"]] == [events[2].event_id]


def test_nothing_is_forwarded_without_agent_or_tenant_rules() -> None:
    stage = _stage()
    assert stage.forward_scopes == []
    out = StageOutput()
    stage.process(P, [(o, *r) for o, r in enumerate(_encode(_stream(5, 40)))], out)
    assert out.events > 0
    assert out.forwards == []


def test_an_ended_session_leaves_a_marker_until_its_offset_is_committed() -> None:
    table: dict[bytes, bytes] = {}
    stage = _stage(table)
    key = table_key(P, "default", "sess-1")
    out = StageOutput()
    stage.process(P, [(4, b"k", encode_event(_event(1, 0))),
                      (5, b"k", encode_event(_event(2, 1, "session_end")))], out)
    _apply(table, stage.checkpoint(P, None))
    assert orjson.loads(table[key]) == {"o": 5}

    stage = _stage(table)  # markers survive a restart too

    def deleted(committed: int) -> list[bytes]:
        return [k for _, k, v in stage.checkpoint(P, committed) if v is None]

    assert deleted(5) == []  # offset 5 itself could still be re-delivered
    assert deleted(6) == [key]
    assert deleted(7) == []  # deleted once


@pytest.mark.parametrize("seed", range(6))
def test_a_crash_replayed_from_the_committed_offset_changes_no_alert(seed: int) -> None:
    stream = _stream(seed, 300)
    records = _encode(stream)
    expected, _ = _run(_stage(), records, 0, len(records))
    rng = random.Random(seed)
    crash = rng.randrange(60, 240)  # records before it were processed and written
    committed = rng.randrange(crash - 50, crash + 1)  # Kafka re-delivers from here
    table: dict[bytes, bytes] = {}
    got, _ = _run(_stage(), records, 0, crash, table=table)
    more, replayed = _run(_stage(table), records, committed, len(records), table=table)
    assert got + more == expected
    # every event of the re-delivered records is skipped, by its session's applied offset
    assert replayed == sum(len(r) for r in stream[committed:crash])


def _keys(alerts: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    return Counter((a["alert_id"], a["state"]) for a in alerts)


@pytest.mark.parametrize("seed", [*range(10), 54])  # 54: an ended session's marker
def test_a_crash_with_part_of_a_batch_written_loses_no_alert(seed: int) -> None:
    """The last batch's writes reached the table only in part (never its meta, written
    last): keys that missed theirs re-apply the batch and may send alerts again,
    identical; keys that have theirs skip it."""
    records = _encode(_stream(seed, 300))
    expected, _ = _run(_stage(), records, 0, len(records))
    assert max(_keys(expected).values()) == 1
    rng = random.Random(seed)
    size = 7
    crash = size * rng.randrange(10, 35)
    table: dict[bytes, bytes] = {}
    stage = _stage(table)
    got, _ = _run(stage, records, 0, crash - size, size=size, table=table)
    out = StageOutput()
    stage.process(P, [(o, *records[o]) for o in range(crash - size, crash)], out)
    got += _dump(out.alerts)
    *keys, _meta = stage.checkpoint(P, None)
    _apply(table, [w for w in keys if rng.random() < 0.5])
    committed = crash - size - rng.randrange(0, 3 * size)  # at or before the last batch
    more, _ = _run(_stage(table), records, committed, len(records), table=table)

    assert set(_keys(got + more)) == set(_keys(expected))  # nothing lost, nothing new
    by_key = {(a["alert_id"], a["state"]): a for a in expected}
    for alert in got + more:  # a repeated alert is the same alert again
        assert alert == by_key[alert["alert_id"], alert["state"]]


def test_a_replayed_record_of_an_ended_session_is_not_applied_again() -> None:
    """A session fires and ends in one batch; the crash comes after its end marker reached
    the table but before the batch's meta entry did (it is written last). Kafka re-delivers
    the batch: the marker says the session already has these records."""
    records = [(b"k", encode_event(_event(1, 0, cost_usd=0.6))),
               (b"k", encode_event(_event(2, US, cost_usd=1.2))),
               (b"k", encode_event(_event(3, 2 * US, "session_end")))]
    table: dict[bytes, bytes] = {}
    stage = _stage(table)
    got, _ = _run(stage, records, 0, 1, table=table)
    out = StageOutput()
    stage.process(P, [(o, *records[o]) for o in (1, 2)], out)
    got += _dump(out.alerts)
    assert [(a["state"], a["value"]) for a in got] == [("firing", 1.8), ("resolved", 1.8)]
    *keys, meta = stage.checkpoint(P, None)
    assert meta[1] == table_key(P, "meta")
    _apply(table, keys)  # the session's end marker was written, the meta entry was not

    more, replayed = _run(_stage(table), records, 1, 3, table=table)
    assert more == []  # got: firing and resolved again, same alert_id, value 1.2 not 1.8
    assert replayed == 2


@pytest.mark.parametrize("seed", range(8))
def test_a_crash_between_checkpoints_loses_no_alert_and_counts_nothing_twice(
        seed: int) -> None:
    """Checkpoints every 4 batches; the worker dies some batches after the last one. Kafka
    re-delivers from the committed offset, which is never past the last checkpoint: every
    alert of replay, each the same again when repeated, and no event counted twice."""
    records = _encode(_stream(seed, 300))
    expected, _ = _run(_stage(), records, 0, len(records))
    rng = random.Random(seed)
    size, every = 7, 4
    crash = size * rng.randrange(12, 38)  # batches processed before the crash
    table: dict[bytes, bytes] = {}
    got, _ = _run(_stage(table), records, 0, crash, size=size, table=table, every=every)
    checkpointed = size * every * (crash // (size * every))  # records the table has
    committed = rng.randrange(max(0, checkpointed - 3 * size), checkpointed + 1)
    more, _ = _run(_stage(table), records, committed, len(records), table=table)
    assert set(_keys(got + more)) == set(_keys(expected))
    by_key = {(a["alert_id"], a["state"]): a for a in expected}
    for alert in got + more:
        assert alert == by_key[alert["alert_id"], alert["state"]]
    # the alerts after the crash point are exactly replay's (nothing counted twice)
    after = [a for a in more if (a["alert_id"], a["state"]) not in set(_keys(got))]
    assert after == [a for a in expected if (a["alert_id"], a["state"]) not in set(_keys(got))]


def test_a_partition_batch_event_of_another_partitions_session_is_dead_lettered() -> None:
    owner = PartitionCache(N)
    mine = [f"s{i}" for i in range(40) if owner.get("default", f"s{i}") == P][:3]
    other = next(f"x{i}" for i in range(40) if owner.get("default", f"x{i}") != P)
    events = [_event(i + 1, i * US, "tool_call", name="t", tool_args_hash="h", session_id=s)
              for i, s in enumerate([mine[0], mine[1], other, mine[2]])]
    out = StageOutput()
    _stage().process(P, [(0, partition_batch_key(P), encode_events(events))], out)
    assert out.events == 3
    [dead] = out.dead_letters
    assert dead.reason.startswith("wrong partition: session default/" + other)
    assert f"partition {owner.get('default', other)} of {N}" in dead.reason
    assert orjson.loads(dead.raw)["event_id"] == events[2].event_id
    assert (dead.partition, dead.offset) == (P, 0)


def test_a_one_session_record_is_taken_on_any_partition() -> None:
    """Forms 1 and 2 (third-party producers hash keys their own way) are not checked."""
    owner = PartitionCache(N)
    other = next(f"x{i}" for i in range(40) if owner.get("default", f"x{i}") != P)
    events = [_event(i + 1, i * US, "tool_call", session_id=other) for i in range(3)]
    out = StageOutput()
    _stage().process(P, [(0, f"default/{other}".encode(), encode_events(events[:2])),
                         (1, f"default/{other}".encode(), encode_event(events[2]))], out)
    assert (out.events, out.dead_letters) == (3, [])


def test_a_restored_partition_resumes_after_the_last_record_its_state_saw() -> None:
    # the worker's OffsetGuard starts there: a record past it that comes first is a hole
    records = _encode(_stream(4, 30))
    stage = _stage()
    assert stage.resume_offset(P) is None  # nothing restored: no state to start from
    table: dict[bytes, bytes] = {}
    _run(stage, records, 0, 12, size=12, table=table)
    restored = _stage(table)
    assert restored.resume_offset(P) == 12
    other_rules = _stage(table, config=rules_from_mapping({
        "rules": {"agent_error_rate": {"enabled": False}, "loop_steps": {"max_steps": 26}},
        "session_idle_timeout_s": 60,
    }))
    assert other_rules.resume_offset(P) is None  # other rules: the state is not used


#: session cost with resolve_after_s: resolutions by the clock, its start in the checkpoints
TIMED_COST = rules_from_mapping({
    "rules": {"agent_error_rate": {"enabled": False}, "loop_steps": {"max_steps": 25},
              "session_cost": {"threshold_usd": 0.5, "resolve_after_s": 1}},
    "session_idle_timeout_s": 60,
})


@pytest.mark.parametrize("seed", range(4))
def test_cost_resolve_after_s_equals_replay_across_a_crash(seed: int) -> None:
    stream = _stream(seed, 300)
    records = _encode(stream)
    expected = _replay(stream, TIMED_COST)
    assert sum("for 1 s" in a["reason"] for a in expected) >= 2
    got, _ = _run(_stage(config=TIMED_COST), records, 0, len(records))
    assert got == expected
    rng = random.Random(seed)
    crash = rng.randrange(60, 240)
    committed = rng.randrange(crash - 50, crash + 1)
    table: dict[bytes, bytes] = {}
    before, _ = _run(_stage(config=TIMED_COST), records, 0, crash, table=table)
    after, _ = _run(_stage(table, TIMED_COST), records, committed, len(records), table=table)
    assert before + after == expected


def test_a_session_is_kept_under_one_key_tuple_and_its_tenants_one_string() -> None:
    """The stage's offsets and the engine's state share the tuple of the session's first
    event; sessions of one tenant share its id's string (memory per open session)."""
    owner = PartitionCache(N)
    mine = [f"s{i}" for i in range(60) if owner.get("acme", f"s{i}") == P][:2]
    stage = _stage()
    for offset, session in enumerate([mine[0], mine[1], mine[0]]):
        event = _event(offset + 1, offset * US, tenant_id="acme", session_id=session)
        # each record decodes to new strings and tuples
        stage.process(P, [(offset, partition_batch_key(P), encode_events([event]))],
                      StageOutput())
    part = stage.partitions[P]
    keys = {k[1]: k for k in part.applied}
    engine_keys = {k[1]: k for k in part.engine._sessions}
    assert keys.keys() == engine_keys.keys() == set(mine)
    assert all(keys[s] is engine_keys[s] for s in mine)
    assert keys[mine[0]][0] is keys[mine[1]][0]


@pytest.mark.parametrize("seed", [4, 5])
def test_a_stage_spilling_quiet_sessions_to_files_equals_replay(seed: int,
                                                                 tmp_path: Path) -> None:
    config = rules_from_mapping({**SESSION_RULES.model_dump(mode="json"),
                                 "pack_idle_sessions_s": 2})
    records = _stream(seed, 400)
    stage = SessionStage(config, TOPIC, N, spill_dir=tmp_path / "spill")
    stage.restore(P, [])
    spill = stage.partitions[P].engine._spill
    assert spill is not None
    got, _ = _run(stage, _encode(records), 0, len(records), size=7)
    assert got == _replay(records, config)
    assert spill.file_bytes > 0  # quiet sessions went to the file
    assert list((tmp_path / "spill").iterdir()) == []  # which is not on disk by name
    stage.drop(P)
    with pytest.raises(OSError, match="Bad file descriptor"):
        spill.read(1)  # closed with its partition
