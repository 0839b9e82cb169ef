"""Stage 2 of the worker: agent-scoped rules over what the session stages forward.

The messages are built as the worker builds them: a :class:`SessionStage` per input
partition over packed records, its forwards, and a mark after every batch. The stage
must compute what ``agentwatch replay`` computes over the time-sorted stream, however
the input partitions were interleaved, and survive a restart from its table.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

import orjson
import pytest
from conftest import US

from agentwatch.processors.core import Engine, rules_from_mapping
from agentwatch.processors.replay import replay_lines
from agentwatch.processors.worker import RekeyedStage, SessionStage, StageOutput
from agentwatch.processors.worker._forward import MARK_KEY, table_key
from agentwatch.schemas import Event, EventKind, EventStatus, encode_event, encode_events, from_us

CONFIG = rules_from_mapping({"rules": {"agent_error_rate": {"min_events": 10, "window_s": 60}}})
INPUTS = 2  # input partitions
Q = 0  # the rekeyed partition under test: every agent key hashed to it

Message = tuple[bytes, bytes]


def _stream(seed: int, n: int) -> list[Event]:
    """Events of 2 agents in 8 sessions (sessions 0, 2, ... in partition 0), error-heavy
    phases and quiet ones, a little disorder, and a last event long after the rest."""
    rng = random.Random(seed)
    events = []
    t_us = 0
    for i in range(n):
        t_us += rng.randrange(0, 600_000)
        jitter_us = rng.randrange(0, 2 * US) if rng.random() < 0.2 else 0
        slot = rng.randrange(8)
        error_share = 0.5 if (i // 120) % 2 else 0.1
        kind = rng.choice(("llm_call", "tool_call", "tool_call", "agent_step"))
        events.append(Event(
            event_id=str(uuid.UUID(int=seed << 40 | i)), ts=from_us(max(0, t_us - jitter_us)),
            kind=EventKind(kind), agent_id=f"agent-{slot % 3 % 2}", session_id=f"s{slot}",
            status=EventStatus.ERROR if rng.random() < error_share else EventStatus.OK,
        ))
    events.append(Event(event_id=str(uuid.UUID(int=seed << 40 | n)), ts=from_us(t_us + 900 * US),
                        kind=EventKind.TOOL_CALL, agent_id="agent-0", session_id="s0"))
    return events


def _partition(event: Event) -> int:
    return int(event.session_id[1:]) % INPUTS


def _mark(stage: SessionStage, p: int, *, idle: bool = False) -> Message:
    return MARK_KEY, orjson.dumps({"p": p, "w": stage.max_ts_us(p), "idle": idle})


def _forwarded(events: list[Event], seed: int) -> tuple[list[list[list[Message]]], SessionStage]:
    """Per input partition, the batches of messages its session stage sends (data, mark)."""
    rng = random.Random(seed)
    stage = SessionStage(CONFIG, "agentwatch.events")
    batches: list[list[list[Message]]] = []
    for p in range(INPUTS):
        stage.restore(p, [])
        mine = [e for e in events if _partition(e) == p]
        records: list[list[Event]] = []
        for event in mine:  # consecutive events of one session share a packed record
            if records and records[-1][0].session_id == event.session_id and len(records[-1]) < 4:
                records[-1].append(event)
            else:
                records.append([event])
        values = [(b"k", encode_events(r)) for r in records]
        offset = 0
        part_batches: list[list[Message]] = []
        while offset < len(values):
            size = rng.randint(1, 12)
            out = StageOutput()
            stage.process(p, [(o, *values[o]) for o in range(offset, offset + size)
                              if o < len(values)], out)
            part_batches.append([*out.forwards, _mark(stage, p)])
            offset += size
        batches.append(part_batches)
    return batches, stage


def _arrival(seed: int, order: str) -> tuple[list[Message], list[Event]]:
    """All messages as the rekeyed partition receives them, ending with idle marks."""
    events = _stream(seed, 900)
    per_partition, stage = _forwarded(events, seed)
    if order == "sequential":  # a worker catching up: partition 0, then partition 1
        messages = [m for batches in per_partition for batch in batches for m in batch]
    else:
        rng = random.Random(seed)
        queues = [list(b) for b in per_partition]
        messages = []
        while any(queues):
            queue = rng.choice([q for q in queues if q])
            messages += queue.pop(0)
    return [*messages, *(_mark(stage, p, idle=True) for p in range(INPUTS))], events


def _replay(events: list[Event]) -> list[dict[str, Any]]:
    alerts: list[Any] = []
    ordered = sorted(events, key=lambda e: (e.ts, e.event_id))
    replay_lines((encode_event(e) for e in ordered), Engine(CONFIG), alerts.append)
    return [a.model_dump(mode="json") for a in alerts if a.rule == "agent_error_rate"]


def _stage(table: dict[bytes, bytes] | None = None) -> RekeyedStage:
    stage = RekeyedStage(CONFIG, INPUTS)
    stage.restore(Q, list((table or {}).items()))
    return stage


def _feed(stage: RekeyedStage, messages: list[Message], start: int, stop: int, *,
          size: int = 5, table: dict[bytes, bytes] | None = None) -> StageOutput:
    """Deliver messages ``start..stop-1`` (offsets = indexes) in batches; one merged output."""
    total = StageOutput()
    for lo in range(start, stop, size):
        out = StageOutput()
        stage.process(Q, [(o, *messages[o]) for o in range(lo, min(lo + size, stop))], out)
        total.alerts += out.alerts
        total.events += out.events
        total.writes += out.writes
        for partition, key, value in out.writes:
            assert partition == Q
            if table is None:
                continue
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
    return total


def _dump(out: StageOutput) -> list[dict[str, Any]]:
    return [a.model_dump(mode="json") for a in out.alerts]


def _pending(table: dict[bytes, bytes]) -> list[bytes]:
    return [k for k in table if orjson.loads(k)[1] == "pend"]


@pytest.mark.parametrize(("seed", "order", "size"), [
    (0, "sequential", 5), (1, "sequential", 1000), (2, "interleaved", 1), (3, "interleaved", 7),
])
def test_agent_alerts_equal_replay_of_the_time_sorted_stream(seed: int, order: str,
                                                             size: int) -> None:
    messages, events = _arrival(seed, order)
    expected = _replay(events)
    assert {a["state"] for a in expected} == {"firing", "resolved"}
    stage = _stage()
    out = _feed(stage, messages, 0, len(messages), size=size)
    assert _dump(out) == expected
    assert out.events == sum(e.kind in {"llm_call", "tool_call"} for e in events)
    assert stage.buffered(Q) == 0


def test_nothing_is_released_before_every_input_partition_sent_a_mark() -> None:
    per_partition, _ = _forwarded(_stream(4, 300), 4)
    first = [m for batch in per_partition[0] for m in batch]
    rekeyed = _stage()
    out = _feed(rekeyed, first, 0, len(first))  # partition 0's whole stream and its marks
    assert (out.events, out.alerts) == (0, [])
    n = sum(len(orjson.loads(v)["e"]) for k, v in first if k != MARK_KEY)
    assert rekeyed.buffered(Q) == n
    data_of_1 = [m for batch in per_partition[1] for m in batch if m[0] != MARK_KEY]
    messages = [*first, *data_of_1, per_partition[1][-1][-1]]  # partition 1's last mark
    assert _feed(rekeyed, messages, len(first), len(messages) - 1).events == 0
    assert _feed(rekeyed, messages, len(messages) - 1, len(messages)).events > 0


def test_an_idle_partition_no_longer_holds_back_the_others() -> None:
    events = [e for e in _stream(5, 400) if _partition(e) == 0]  # partition 1 gets nothing
    per_partition, stage = _forwarded(events, 5)
    messages = [m for batch in per_partition[0] for m in batch]
    rekeyed = _stage()
    assert _feed(rekeyed, messages, 0, len(messages)).events == 0
    messages.append(_mark(stage, 1, idle=True))
    out = _feed(rekeyed, messages, len(messages) - 1, len(messages))
    released_up_to = stage.max_ts_us(0) - CONFIG.disorder_us
    operations = [e for e in events if e.kind in {"llm_call", "tool_call"}]
    assert out.events == sum(e.ts <= from_us(released_up_to) for e in operations)
    assert 0 < out.events < len(operations)
    messages.append(_mark(stage, 0, idle=True))  # now every partition is idle
    out = _feed(rekeyed, messages, len(messages) - 1, len(messages))
    assert rekeyed.buffered(Q) == 0
    assert out.events == sum(e.ts > from_us(released_up_to) for e in operations)


@pytest.mark.parametrize(("seed", "order"), [
    (6, "sequential"), (7, "sequential"), (8, "interleaved"), (9, "interleaved"),
])
def test_a_restart_from_the_table_feeds_no_event_twice(seed: int, order: str) -> None:
    messages, events = _arrival(seed, order)
    expected = _dump(_feed(_stage(), messages, 0, len(messages)))
    assert expected == _replay(events)
    rng = random.Random(seed)
    table: dict[bytes, bytes] = {}
    for _ in range(3):  # three crashes, each re-delivering from an earlier offset
        stage = _stage()
        crash = 5 * rng.randrange(20, len(messages) // 5 - 20)
        committed = rng.randrange(crash - 60, crash + 1)
        table.clear()
        before = _feed(stage, messages, 0, crash, table=table)
        buffered = stage.buffered(Q)
        assert len(_pending(table)) > 0 if buffered else _pending(table) == []
        restarted = _stage(table)
        assert restarted.buffered(Q) == buffered  # held events survive in the table
        after = _feed(restarted, messages, committed, len(messages), table=table)
        assert _dump(before) + _dump(after) == expected
        assert before.events + after.events == sum(e.kind in {"llm_call", "tool_call"}
                                                   for e in events)
        assert _pending(table) == []  # deleted once released


def test_a_pending_message_is_stored_once_and_deleted_when_released() -> None:
    per_partition, stage = _forwarded(_stream(10, 60), 10)
    first = [m for batch in per_partition[0] for m in batch]
    rekeyed = _stage()
    out = _feed(rekeyed, first, 0, len(first), size=len(first))
    pending = [(k, v) for _, k, v in out.writes if orjson.loads(k)[1] == "pend"]
    data = [(o, m) for o, m in enumerate(first) if m[0] != MARK_KEY]
    assert [orjson.loads(k) for k, _ in pending] == [[Q, "pend", o] for o, _ in data]
    assert [orjson.loads(v or b"") for _, v in pending] == [
        [orjson.loads(k), orjson.loads(v)] for _, (k, v) in data]
    messages = [*first, _mark(stage, 0, idle=True), _mark(stage, 1, idle=True)]
    out = _feed(rekeyed, messages, len(first), len(messages), size=2)
    deleted = [k for _, k, v in out.writes if v is None]
    assert sorted(deleted) == sorted(k for k, _ in pending)
    assert table_key(Q, "meta") in [k for _, k, _ in out.writes]


def test_a_crash_between_the_writes_of_a_batch_loses_no_buffered_event() -> None:
    """Agent-1's 12 errors wait in a pending entry (their offset is committed); they are
    released and fire; the crash comes after the entry's deletion reached the table, before
    the agent's state did. The alert must still resolve once the window empties."""
    session = SessionStage(CONFIG, "agentwatch.events")
    session.restore(0, [])

    def forwarded(offset: int, events: list[Event]) -> list[Message]:
        out = StageOutput()
        session.process(0, [(offset, b"k", encode_events(events))], out)
        return out.forwards

    def tool_call(n: int, t_s: int, status: str) -> Event:
        return Event(event_id=str(uuid.UUID(int=n)), ts=from_us(t_s * US),
                     kind=EventKind.TOOL_CALL, agent_id="agent-1", session_id="s1",
                     status=EventStatus(status))

    messages = [*forwarded(0, [tool_call(i, i, "error") for i in range(12)]),
                _mark(session, 0), _mark(session, 1, idle=True), _mark(session, 0, idle=True)]
    messages += [*forwarded(1, [tool_call(99, 200, "ok")]), _mark(session, 0, idle=True)]
    assert len(messages) == 6
    expected = _dump(_feed(_stage(), messages, 0, 6, size=2))
    assert [a["state"] for a in expected] == ["firing", "resolved"]

    table: dict[bytes, bytes] = {}
    stage = _stage()
    before = _feed(stage, messages, 0, 2, table=table)  # buffered, stored as pending
    assert _pending(table) == [table_key(Q, "pend", 0)]
    out = StageOutput()
    stage.process(Q, [(2, *messages[2]), (3, *messages[3])], out)  # released: fires
    assert [a["state"] for a in _dump(out)] == ["firing"]
    deletion = next(i for i, (_, _, v) in enumerate(out.writes) if v is None)
    for _, key, value in out.writes[:deletion + 1]:  # the writes that reached the table
        if value is None:
            table.pop(key)
        else:
            table[key] = value
    after = _feed(_stage(table), messages, 2, 6, size=2, table=table)  # from the commit
    got = _dump(before) + _dump(out) + _dump(after)
    assert {(a["alert_id"], a["state"]) for a in got} == {
        (a["alert_id"], a["state"]) for a in expected}
