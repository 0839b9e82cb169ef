"""Stage 2 of the worker: agent-scoped rules over what the session stages forward.

The messages are built as the worker builds them: a :class:`SessionStage` per input
partition over packed records, its forwards, and a mark after every batch. The stage
must compute what ``agentwatch replay`` computes over the time-sorted stream, however
the input partitions were interleaved, and survive a restart from its table.
"""

from __future__ import annotations

import math
import random
import uuid
from typing import Any

import orjson
import pytest
from conftest import US

from agentwatch.processors.core import Engine, RulesConfig, rules_from_mapping
from agentwatch.processors.replay import replay_lines
from agentwatch.processors.worker import RekeyedStage, SessionStage, StageOutput
from agentwatch.processors.worker._forward import (
    MARK_KEY,
    compact_event,
    event_from_model,
    table_key,
)
from agentwatch.schemas import (
    Event,
    EventKind,
    EventStatus,
    encode_event,
    encode_events,
    from_us,
    to_us,
)

CONFIG = rules_from_mapping({"rules": {"agent_error_rate": {"min_events": 10, "window_s": 60}}})
INPUTS = 2  # input partitions
Q = 0  # the rekeyed partition under test: every agent key hashed to it
REKEYED_TOPIC = "g-rekeyed"

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


def _forwarded(events: list[Event], seed: int, config: RulesConfig = CONFIG, *,
               cut_us: int | None = None) -> tuple[list[list[list[Message]]], SessionStage]:
    """Per input partition, the batches of messages its session stage sends (data, mark);
    with ``cut_us``, no record nor batch holds events on both sides of that time."""
    rng = random.Random(seed)
    stage = SessionStage(config, "agentwatch.events", INPUTS)
    batches: list[list[list[Message]]] = []
    for p in range(INPUTS):
        stage.restore(p, [])
        mine = [e for e in events if _partition(e) == p]
        records: list[list[Event]] = []
        cut = len(mine)
        for event in mine:  # consecutive events of one session share a packed record
            if cut_us is not None and cut == len(mine) and to_us(event.ts) > cut_us:
                cut = len(records)  # the first record after the cut
                records.append([event])
            elif (records and records[-1][0].session_id == event.session_id
                    and len(records[-1]) < 4):
                records[-1].append(event)
            else:
                records.append([event])
        values = [(b"k", encode_events(r)) for r in records]
        offset = 0
        part_batches: list[list[Message]] = []
        while offset < len(values):
            size = rng.randint(1, 12)
            if offset < cut:
                size = min(size, cut - offset)
            out = StageOutput()
            stage.process(p, [(o, *values[o]) for o in range(offset, offset + size)
                              if o < len(values)], out)
            part_batches.append([*out.forwards, _mark(stage, p)])
            offset += size
        batches.append(part_batches)
    return batches, stage


def _arrival(seed: int, order: str, events: list[Event] | None = None,
             config: RulesConfig = CONFIG) -> tuple[list[Message], list[Event]]:
    """All messages as the rekeyed partition receives them, ending with idle marks."""
    if events is None:
        events = _stream(seed, 900)
    per_partition, stage = _forwarded(events, seed, config)
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


def _replay(events: list[Event], config: RulesConfig = CONFIG) -> list[dict[str, Any]]:
    alerts: list[Any] = []
    ordered = sorted(events, key=lambda e: (e.ts, e.event_id))
    replay_lines((encode_event(e) for e in ordered), Engine(config), alerts.append)
    return [a.model_dump(mode="json") for a in alerts if a.rule == "agent_error_rate"]


def _stage(table: dict[bytes, bytes] | None = None, config: RulesConfig = CONFIG
           ) -> RekeyedStage:
    stage = RekeyedStage(config, REKEYED_TOPIC, INPUTS)
    stage.restore(Q, list((table or {}).items()))
    return stage


def _apply(table: dict[bytes, bytes], writes: list[tuple[int, bytes, bytes | None]]) -> None:
    for partition, key, value in writes:
        assert partition == Q
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value


def _feed(stage: RekeyedStage, messages: list[Message], start: int, stop: int, *,
          size: int = 5, table: dict[bytes, bytes] | None = None, every: int = 1,
          safe: list[int] | None = None) -> StageOutput:
    """Deliver messages ``start..stop-1`` (offsets = indexes) in batches; one merged output.
    With a ``table``, a checkpoint goes to it after every ``every`` batches, and the offset
    the worker may then commit is appended to ``safe``."""
    total = StageOutput()
    for n, lo in enumerate(range(start, stop, size), start=1):
        out = StageOutput()
        stage.process(Q, [(o, *messages[o]) for o in range(lo, min(lo + size, stop))], out)
        assert out.writes == []  # state goes out with checkpoints only
        total.alerts += out.alerts
        total.events += out.events
        if table is not None and n % every == 0:
            _apply(table, stage.checkpoint(Q))
            if safe is not None:
                safe.append(stage.safe_offset(Q))
    return total


def _dump(out: StageOutput) -> list[dict[str, Any]]:
    return [a.model_dump(mode="json") for a in out.alerts]


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
def test_a_restart_from_the_checkpoint_feeds_no_event_twice(seed: int, order: str) -> None:
    """Checkpoint after every batch; Kafka re-delivers from an offset at or before the
    last safe one: every buffered event comes back, none released twice."""
    messages, events = _arrival(seed, order)
    expected = _dump(_feed(_stage(), messages, 0, len(messages)))
    assert expected == _replay(events)
    rng = random.Random(seed)
    for _ in range(3):  # three crashes
        table: dict[bytes, bytes] = {}
        safe: list[int] = []
        stage = _stage()
        crash = 5 * rng.randrange(20, len(messages) // 5 - 20)
        before = _feed(stage, messages, 0, crash, table=table, safe=safe)
        assert stage.buffered(Q) == 0 or safe[-1] < crash  # held messages are not safe
        committed = rng.randrange(max(0, safe[-1] - 60), safe[-1] + 1)
        restarted = _stage(table)
        assert restarted.buffered(Q) == 0  # buffered events come back from Kafka
        after = _feed(restarted, messages, committed, len(messages), table=table)
        assert _dump(before) + _dump(after) == expected
        assert before.events + after.events == sum(e.kind in {"llm_call", "tool_call"}
                                                   for e in events)


@pytest.mark.parametrize("seed", range(6))
def test_a_crash_between_checkpoints_loses_no_alert(seed: int) -> None:
    """Checkpoints every 3 batches, and the last one reached the changelog only in part
    (a prefix: one partition's writes keep their order): alerts after the restart may
    repeat, identical, and none is lost or new."""
    messages, _ = _arrival(seed, "interleaved")
    expected = _dump(_feed(_stage(), messages, 0, len(messages)))
    rng = random.Random(seed)
    table: dict[bytes, bytes] = {}
    safe: list[int] = []
    stage = _stage()
    crash = 5 * rng.randrange(20, len(messages) // 5 - 20)
    before = _feed(stage, messages, 0, crash, table=table, every=3, safe=safe)
    writes = stage.checkpoint(Q)
    _apply(table, writes[:rng.randrange(len(writes) + 1)])  # acks never came: no commit
    committed = safe[-1] if safe else 0
    after = _feed(_stage(table), messages, committed, len(messages), table=table, every=3)
    got = _dump(before) + _dump(after)
    assert {(a["alert_id"], a["state"]) for a in got} == {
        (a["alert_id"], a["state"]) for a in expected}
    by_key = {(a["alert_id"], a["state"]): a for a in expected}
    for alert in got:
        assert alert == by_key[alert["alert_id"], alert["state"]]


def test_the_safe_offset_is_the_first_message_still_holding_an_unreleased_event() -> None:
    per_partition, stage = _forwarded(_stream(10, 60), 10)
    first = [m for batch in per_partition[0] for m in batch]
    rekeyed = _stage()
    _feed(rekeyed, first, 0, len(first), size=len(first))
    data = [o for o, m in enumerate(first) if m[0] != MARK_KEY]
    assert rekeyed.safe_offset(Q) == data[0]  # nothing released: partition 1 sent no mark
    messages = [*first, _mark(stage, 0, idle=True), _mark(stage, 1, idle=True)]
    _feed(rekeyed, messages, len(first), len(messages), size=2)
    assert rekeyed.buffered(Q) == 0
    assert rekeyed.safe_offset(Q) == len(messages)  # everything released
    assert table_key(Q, "meta") in [k for _, k, _ in rekeyed.checkpoint(Q)]


def test_a_restored_partition_resumes_at_its_last_checkpoints_safe_offset() -> None:
    per_partition, _ = _forwarded(_stream(10, 60), 10)
    first = [m for batch in per_partition[0] for m in batch]
    rekeyed = _stage()
    assert rekeyed.resume_offset(Q) is None
    table: dict[bytes, bytes] = {}
    _feed(rekeyed, first, 0, len(first), size=len(first))
    safe = rekeyed.safe_offset(Q)
    assert safe < len(first)  # events held back: partition 1 sent no mark
    _apply(table, rekeyed.checkpoint(Q))
    assert _stage(table).resume_offset(Q) == safe


# -- hysteresis: an error share oscillating around the threshold --------------------------------
def _oscillating(seed: int) -> list[Event]:
    """Two agents over 8 sessions for ten minutes, 4 calls a second each; every call's
    status keeps its agent's 300 s error share on 25 % +- 0.8 % (a 40 s sine), with a
    little disorder (the shares are computed in generation order)."""
    rng = random.Random(seed)
    events: list[Event] = []
    history: dict[str, list[tuple[int, bool]]] = {"agent-0": [], "agent-1": []}
    for i in range(600 * 4 * 2):
        t_us = i * US // 8
        agent = f"agent-{i % 2}"
        calls = history[agent]
        bucket = t_us // US
        in_window = [err for b, err in calls if bucket - 300 < b]
        errors, n = sum(in_window), len(in_window) + 1
        target = 0.25 + 0.008 * math.sin(2 * math.pi * t_us / (40 * US) + i % 2)
        error = abs((errors + 1) / n - target) < abs(errors / n - target)
        calls.append((bucket, error))
        slot = rng.randrange(4) * 2 + i % 2  # agent-0 in sessions 0, 2, 4, 6
        jitter_us = rng.randrange(0, 2 * US) if rng.random() < 0.1 else 0
        events.append(Event(
            event_id=str(uuid.UUID(int=seed << 40 | i)), ts=from_us(max(0, t_us - jitter_us)),
            kind=EventKind.TOOL_CALL, agent_id=agent, session_id=f"s{slot}",
            status=EventStatus.ERROR if error else EventStatus.OK,
        ))
    return events


def _oscillation_config(resolve_after_s: int | None) -> RulesConfig:
    return rules_from_mapping({"rules": {"agent_error_rate": {
        "min_events": 600, "resolve_after_s": resolve_after_s}}})


@pytest.mark.parametrize("order", ["sequential", "interleaved"])
def test_an_oscillating_error_share_fires_once_per_agent_as_in_replay(order: str) -> None:
    config = _oscillation_config(None)
    messages, events = _arrival(10, order, _oscillating(10), config)
    expected = _replay(events, config)
    assert sorted((a["state"], a["key"]) for a in expected) == [
        ("firing", "agent-0"), ("firing", "agent-1")]
    out = _feed(_stage(config=config), messages, 0, len(messages), size=7)
    assert _dump(out) == expected
    # without hysteresis the same stream flaps, in replay as in the stage
    flapping = _oscillation_config(0)
    messages, _ = _arrival(10, order, events, flapping)
    expected = _replay(events, flapping)
    assert sum(a["state"] == "firing" for a in expected) > 10
    assert _dump(_feed(_stage(config=flapping), messages, 0, len(messages), size=7)) == expected


@pytest.mark.parametrize("seed", [11, 12])
def test_resolve_after_s_over_an_oscillating_share_survives_restarts_as_in_replay(
    seed: int
) -> None:
    """resolve_after_s shorter than the dips: many episodes, each resolved by the clock;
    a crash and a restart from the checkpoint change none of them."""
    config = _oscillation_config(5)
    messages, events = _arrival(seed, "interleaved", _oscillating(seed), config)
    expected = _replay(events, config)
    assert sum("for 5 s" in a["reason"] for a in expected) > 5
    assert _dump(_feed(_stage(config=config), messages, 0, len(messages))) == expected
    rng = random.Random(seed)
    table: dict[bytes, bytes] = {}
    safe: list[int] = []
    stage = _stage(config=config)
    crash = 5 * rng.randrange(20, len(messages) // 5 - 20)
    before = _feed(stage, messages, 0, crash, table=table, safe=safe)
    after = _feed(_stage(table, config), messages, safe[-1], len(messages), table=table)
    assert _dump(before) + _dump(after) == expected


def _outage(seed: int, *, with_time: bool) -> tuple[list[Message], list[Event]]:
    """What the rekeyed partition receives around a broker outage: both input partitions
    read up to event time T and announced idle; then partition 0's backlog (the producers'
    buffers, delivered when the broker was back) arrives whole before partition 1's.
    ``with_time``: the idle marks carry ``t`` = T (the worker's marks); else the marks of a
    worker before ``t`` existed."""
    events = _stream(seed, 900)
    outage_ts = sorted(e.ts for e in events)[450]
    per_partition, _ = _forwarded(events, seed)
    before: list[list[Message]] = [[], []]
    after: list[list[Message]] = [[], []]
    last_w = [0, 0]
    for p, batches in enumerate(per_partition):
        for batch in batches:
            w = orjson.loads(batch[-1][1])["w"]
            if w <= to_us(outage_ts):
                before[p] += batch
                last_w[p] = w
            else:
                after[p] += batch
    idle = [(MARK_KEY, orjson.dumps({"p": p, "w": last_w[p], "idle": True}
                                    | ({"t": to_us(outage_ts)} if with_time else {})))
            for p in range(INPUTS)]
    final = [(MARK_KEY, orjson.dumps({"p": p, "w": orjson.loads(per_partition[p][-1][-1][1])["w"],
                                      "idle": True})) for p in range(INPUTS)]
    return [*before[0], *before[1], *idle, *after[0], *after[1], *final], events


def test_an_idle_mark_from_before_an_outage_holds_back_the_backlog_of_the_others() -> None:
    messages, events = _outage(11, with_time=True)
    expected = _replay(events)
    stage = _stage()
    assert _dump(_feed(stage, messages, 0, len(messages))) == expected
    assert stage.buffered(Q) == 0
    # the marks of before (idle = nothing more at all) are held at the newest event time
    # announced too (test_an_idle_mark_releases_no_event_time_beyond_...)
    messages, _ = _outage(11, with_time=False)
    assert _dump(_feed(_stage(), messages, 0, len(messages))) == expected
    # a mark letting partition 0's backlog run ahead of partition 1's (whose events then
    # come late) gives other alerts: what this test would catch
    messages, _ = _outage(11, with_time=True)
    ahead = orjson.loads(messages[-1][1])["w"]
    messages = [(k, orjson.dumps({"p": 1, "w": ahead, "idle": False}))
                if k == MARK_KEY and orjson.loads(v)["p"] == 1 else (k, v) for k, v in messages]
    assert _dump(_feed(_stage(), messages, 0, len(messages))) != expected


def test_an_idle_mark_releases_the_others_only_up_to_its_time() -> None:
    events = [e for e in _stream(12, 400) if _partition(e) == 0]  # partition 1 gets nothing
    per_partition, stage = _forwarded(events, 12)
    messages = [m for batch in per_partition[0] for m in batch]
    rekeyed = _stage()
    assert _feed(rekeyed, messages, 0, len(messages)).events == 0
    operations = [e for e in events if e.kind in {"llm_call", "tool_call"}]
    until_us = to_us(operations[len(operations) // 3].ts)
    messages.append((MARK_KEY, orjson.dumps({"p": 1, "w": 0, "idle": True, "t": until_us})))
    out = _feed(rekeyed, messages, len(messages) - 1, len(messages))
    assert out.events == sum(to_us(e.ts) <= until_us for e in operations)
    # a newer mark (the broker confirmed partition 1 idle again) releases the rest
    messages.append((MARK_KEY, orjson.dumps({"p": 1, "w": 0, "idle": True, "t": 1 << 61})))
    out = _feed(rekeyed, messages, len(messages) - 1, len(messages))
    released_up_to = stage.max_ts_us(0) - CONFIG.disorder_us
    assert out.events == sum(until_us < to_us(e.ts) <= released_up_to for e in operations)


def _late_producer(seed: int, *, lead_us: int, start: bool = False
                   ) -> tuple[list[Message], list[Event]]:
    """What the rekeyed partition receives when the producers' records come late (a
    producer starting, or stalled while the broker answers): both input partitions read up
    to event time T (every event up to T, as one producer's records of a linger interval
    deliver them) and announced idle with ``t`` = T + ``lead_us`` (the broker confirmed them
    quiet while the wall clock ran on); then partition 0's share of the late records
    arrives whole before partition 1's. ``start``: T is before the first event."""
    events = _stream(seed, 900)
    times = sorted(to_us(e.ts) for e in events)
    read_us = times[0] - 1 if start else times[300]
    per_partition, _ = _forwarded(events, seed, cut_us=read_us)
    before: list[list[Message]] = [[], []]
    after: list[list[Message]] = [[], []]
    last_w = [-(1 << 62)] * INPUTS
    for p, batches in enumerate(per_partition):
        for batch in batches:
            w = orjson.loads(batch[-1][1])["w"]
            if w <= read_us:
                before[p] += batch
                last_w[p] = w
            else:
                after[p] += batch
    idle = [(MARK_KEY, orjson.dumps({"p": p, "w": last_w[p], "idle": True,
                                     "t": read_us + lead_us})) for p in range(INPUTS)]
    final = [(MARK_KEY, orjson.dumps({"p": p, "w": orjson.loads(per_partition[p][-1][-1][1])["w"],
                                      "idle": True, "t": times[-1] + US}))
             for p in range(INPUTS)]
    return [*before[0], *before[1], *idle, *after[0], *after[1], *final], events


@pytest.mark.parametrize(("seed", "lead_us", "start"), [
    (13, 3 * US, False), (14, 20 * US, False), (15, 30 * US, True), (16, 60 * US, True),
])
def test_an_idle_mark_releases_no_event_time_beyond_what_the_partitions_announced(
        seed: int, lead_us: int, start: bool) -> None:
    # a producer stalled 3 or 20 s while the broker confirmed every partition quiet; a
    # fleet whose producers deliver their first records 30 or 60 s late (every partition
    # quiet since the worker started). Partition 0's share of those records is read first:
    # with idle marks taken at their word, its events up to the marks' time were released
    # before partition 1's older ones came (late, other alerts than replay's)
    messages, events = _late_producer(seed, lead_us=lead_us, start=start)
    stage = _stage()
    assert _dump(_feed(stage, messages, 0, len(messages))) == _replay(events)
    assert stage.partitions[Q].late == 0
    assert stage.buffered(Q) == 0


@pytest.mark.parametrize("seed", range(4))
def test_unsorted_messages_ties_and_copies_are_released_in_replays_order(seed: int) -> None:
    """Each message's events are a run the stage sorts and merges with the others: events
    out of order inside a message, many at the same instant in several messages and
    agents, and whole messages forwarded again still reach the engine in ``(ts,
    event_id)`` order, each once: the alerts equal replay of the time-sorted stream."""
    rng = random.Random(seed)
    events = []
    for i in range(1200):  # whole seconds: ties everywhere
        t_us = (i // 6) * US - (rng.randrange(0, 3) * US if rng.random() < 0.2 else 0)
        slot = rng.randrange(8)
        error_share = 0.5 if (i // 150) % 2 else 0.1
        events.append(Event(
            event_id=str(uuid.UUID(int=seed << 40 | rng.getrandbits(32))), ts=from_us(max(0, t_us)),
            kind=EventKind.TOOL_CALL, agent_id=f"agent-{slot % 3 % 2}", session_id=f"s{slot}",
            status=EventStatus.ERROR if rng.random() < error_share else EventStatus.OK))
    messages: list[Message] = []
    newest = [-(1 << 62)] * INPUTS
    sent: list[Message] = []
    for lo in range(0, len(events), 30):  # every 30 events: a message per partition and agent
        chunk = events[lo:lo + 30]
        for p in range(INPUTS):
            for agent in ("agent-0", "agent-1"):
                mine = [compact_event(event_from_model(e)) for e in chunk
                        if _partition(e) == p and e.agent_id == agent]
                if not mine:
                    continue
                rng.shuffle(mine)
                message = (orjson.dumps(["default", agent]),
                           orjson.dumps({"s": "agent", "p": p, "e": mine}))
                messages.append(message)
                sent.append(message)
                newest[p] = max(newest[p], *(c[1] for c in mine))
            if rng.random() < 0.2:
                messages.append(rng.choice(sent))  # forwarded again (a re-read record)
            messages.append((MARK_KEY, orjson.dumps({"p": p, "w": newest[p], "idle": False})))
    messages += [(MARK_KEY, orjson.dumps({"p": p, "w": newest[p], "idle": True}))
                 for p in range(INPUTS)]
    expected = _replay(events)
    assert "firing" in {a["state"] for a in expected}
    stage = _stage()
    out = _feed(stage, messages, 0, len(messages), size=rng.randint(1, 9))
    assert _dump(out) == expected
    assert out.events == len({(e.ts, e.event_id) for e in events})
    assert stage.buffered(Q) == 0
