"""Engine state per key as plain data: what a worker writes to its changelog table.

The guarantee the worker relies on: dump every key and the watermark at any point,
load them into a fresh engine, carry on, and the alerts are exactly those of an engine
that never stopped.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import US, EventFactory, random_stream

from agentwatch.processors.core import Engine, EventTimeDriver, rules_from_mapping
from agentwatch.processors.core._detectors import _all_hex, pack_hex, unpack_hex
from agentwatch.processors.core._engine import STATE_FORMAT, pack_ids, unpack_ids, uuid_bytes
from agentwatch.schemas import AlertScope, Event, from_us, to_us


def _stream(seed: int, n: int) -> list[Event]:
    """Sessions over 3 agents with costs, errors, a repeated tool call and disorder."""
    return random_stream(seed, n)


def _engine(scopes: set[AlertScope] | None = None, *, resolve_after_s: int | None = None
            ) -> Engine:
    config = rules_from_mapping({
        "rules": {"agent_error_rate": {"min_events": 10, "resolve_after_s": resolve_after_s},
                  "session_cost": {"cooldown_s": 5, "resolve_after_s": resolve_after_s},
                  "loop_repeat": {"min_repeats": 3}},
        "session_idle_timeout_s": 20,
    })
    return Engine(config, scopes=scopes)


def _run(driver: EventTimeDriver, events: list[Event]) -> list[dict[str, Any]]:
    return [a.model_dump(mode="json") for e in events for a in driver.feed(e)]


def _restart(driver: EventTimeDriver, scopes: set[AlertScope] | None,
             resolve_after_s: int | None = None) -> EventTimeDriver:
    """Dump every key through JSON, as a worker's table would, into a fresh engine."""
    old = driver.engine
    keys = {k for d in old.detectors for k in d.states} | set(old._sessions)
    table = {orjson.dumps(k): orjson.dumps(old.dump_key(k)) for k in keys}
    fresh = _engine(scopes, resolve_after_s=resolve_after_s)
    fresh.restore_watermark(old.watermark_us)
    for raw_key, raw in table.items():
        data = orjson.loads(raw)
        if data is not None:
            fresh.load_key(tuple(orjson.loads(raw_key)), data)  # type: ignore[arg-type]
    restarted = EventTimeDriver(fresh)
    restarted.next_advance_us = driver.next_advance_us
    return restarted


@pytest.mark.parametrize("resolve_after_s", [None, 3])
@pytest.mark.parametrize("seed", range(8))
def test_a_restart_from_dumped_state_changes_no_alert(seed: int,
                                                      resolve_after_s: int | None) -> None:
    events = _stream(seed, 1500)
    expected = _run(EventTimeDriver(_engine(resolve_after_s=resolve_after_s)), events)
    assert any(a["state"] == "resolved" for a in expected)  # the stream exercises resolution
    if resolve_after_s is not None:  # ... and the resolve_after_s clock
        assert any("for 3 s" in a["reason"] for a in expected)

    cuts = sorted(random.Random(seed).sample(range(1, len(events)), 3))
    driver = EventTimeDriver(_engine(resolve_after_s=resolve_after_s))
    got: list[dict[str, Any]] = []
    start = 0
    for cut in [*cuts, len(events)]:
        got += _run(driver, events[start:cut])
        driver = _restart(driver, None, resolve_after_s)
        start = cut
    assert got == expected


@pytest.mark.parametrize("seed", range(6))
def test_a_restart_with_hex_digest_args_hashes_changes_no_alert(seed: int) -> None:
    """The producer's args hashes (32 hex digits): a pattern called once is kept by its
    first 64 bits, and its second call after the restart still counts as a repeat."""
    events = [e if e.tool_args_hash is None else e.model_copy(update={
        "tool_args_hash": hashlib.md5(e.tool_args_hash.encode()).hexdigest()})  # noqa: S324
        for e in _stream(seed, 1500)]
    expected = _run(EventTimeDriver(_engine()), events)
    assert any(a["rule"] == "loop_repeat" for a in expected)
    driver = EventTimeDriver(_engine())
    got: list[dict[str, Any]] = []
    start = 0
    for cut in [*sorted(random.Random(seed).sample(range(1, len(events)), 5)), len(events)]:
        got += _run(driver, events[start:cut])
        driver = _restart(driver, None)
        start = cut
    assert got == expected


def test_a_call_repeating_one_made_before_a_restart_counts(ev: EventFactory) -> None:
    args_hash = uuid.uuid4().hex
    calls = [ev(i, "tool_call", name="search", tool_args_hash=args_hash) for i in (0, 4, 5, 6, 7)]
    fresh = [ev(i, "tool_call", name="search", tool_args_hash=uuid.uuid4().hex)
             for i in (1, 2, 3)]
    key = ("default", "sess-1")
    first = Engine()
    for event in [calls[0], *fresh]:
        first.process(event)
    state = orjson.loads(orjson.dumps(first.dump_key(key, max_ids=16)))
    repeat = state[6]["loop_repeat"]
    assert repeat[3] == []  # every pattern was called once: kept by 64 bits of its hash
    assert len(unpack_hex(repeat[8], 16)) == 4
    assert unpack_hex(repeat[8], 16)[0] == args_hash[:16]
    second = Engine()
    second.load_key(key, state)
    again = orjson.loads(orjson.dumps(second.dump_key(key, max_ids=16)))
    assert again == state  # the restored prefixes are written as they were read
    alerts = [a for e in calls[1:] for a in second.process(e)]
    assert [(a.rule, a.value) for a in alerts] == [("loop_repeat", 5.0)]
    assert orjson.loads(orjson.dumps(second.dump_key(key, max_ids=16)))[6]["loop_repeat"][3] \
        == ["search"]  # the repeated pattern has its whole hash again


def _dip(ev: EventFactory) -> list[Event]:
    """20 calls at 25 % errors (fires at 19 s), then ok calls from 20 s: 5 of 21 (23.8 %) is
    below the threshold, and the share stays above resolve_below (20 %) until 25 s."""
    return [ev(i, "tool_call", status="error" if 15 <= i < 20 else "ok") for i in range(25)]


def _after_engine() -> Engine:
    return Engine(rules_from_mapping({"rules": {
        "agent_error_rate": {"resolve_after_s": 3},
        **{name: {"enabled": False} for name in ("session_cost", "loop_repeat", "loop_steps")},
    }}))


def test_a_restart_in_the_middle_of_a_resolve_after_run_changes_no_alert(
    ev: EventFactory
) -> None:
    events = _dip(ev)
    straight = _after_engine()
    expected = [a for e in events for a in straight.process(e)]
    assert [(a.state, to_us(a.ts)) for a in expected] == [
        ("firing", 19 * US), ("resolved", 23 * US)]  # below since 20 s, for 3 s

    first = _after_engine()
    got = [a for e in events[:22] for a in first.process(e)]  # the run started at 20 s
    key = ("default", "agent-1")
    state = orjson.loads(orjson.dumps(first.dump_key(key)))
    assert state["d"]["agent_error_rate"][2] == 20 * US  # the run's start is in the dump
    second = _after_engine()
    second.load_key(key, state)
    got += [a for e in events[22:] for a in second.process(e)]
    assert got == expected


def test_a_dump_without_the_run_start_still_loads(ev: EventFactory) -> None:
    """Dumps written before hysteresis are [window, tracker]; they load as "not below the
    threshold", so the run is counted from the next event on."""
    events = _dip(ev)
    first = _after_engine()
    for event in events[:22]:
        first.process(event)
    key = ("default", "agent-1")
    state = orjson.loads(orjson.dumps(first.dump_key(key)))
    state["d"]["agent_error_rate"] = state["d"]["agent_error_rate"][:2]
    second = _after_engine()
    second.load_key(key, state)
    assert [a for e in events[22:] for a in second.process(e)] == []
    (resolved,) = second.advance(30 * US)
    assert to_us(resolved.ts) == 25 * US  # below since 22 s, for 3 s (not 23 s)


def test_dump_of_an_unknown_key_is_none() -> None:
    assert _engine().dump_key(("default", "nobody")) is None


def test_timers_touch_keys_and_a_gone_session_dumps_none(ev: EventFactory) -> None:
    engine = _engine()
    driver = EventTimeDriver(engine)
    driver.feed(ev(0, cost_usd=0.5))
    key = ("default", "sess-1")
    assert engine.dump_key(key) is not None
    engine.touched.clear()
    driver.feed(ev(100, session_id="other"))  # 100 s later: sess-1 idles out (20 s)
    assert key in engine.touched
    assert engine.dump_key(key) is None


def test_an_agent_stage_engine_keeps_no_sessions(ev: EventFactory) -> None:
    engine = Engine(_engine().config, scopes={AlertScope.AGENT}, track_sessions=False)
    for i in range(12):
        engine.process(ev(i, "tool_call", status="error", session_id=f"s{i}"))
    assert engine.stats.active_sessions == 0
    assert engine.stats.firing == 1
    state = engine.dump_key(("default", "agent-1"))
    assert state is not None
    assert "s" not in state


def test_is_new_reports_recent_duplicates(ev: EventFactory) -> None:
    engine = _engine()
    event = ev(1)
    assert engine.is_new(event)
    engine.process(event)
    assert not engine.is_new(event)
    assert engine.is_new(ev(2))


@pytest.mark.parametrize("tick", [False, True])
def test_session_close_reports_an_earlier_fall_back_whatever_the_timers(
    ev: EventFactory, tick: bool
) -> None:
    """The cost window fell back at 61 s; the session ends at 90 s. Whether a watermark
    timer ran in between (another session's event) or not, the resolution is the same."""
    engine = Engine()
    fired = engine.process(ev(1, cost_usd=1.5))
    assert [a.state for a in fired] == ["firing"]
    if tick:
        engine.process(ev(80, session_id="other"))
        resolved = engine.advance(75 * US)
    else:
        resolved = engine.process(ev(90, "session_end"))
    assert len(resolved) == 1
    assert resolved[0].ts == from_us(61 * US)
    assert "fell back" in resolved[0].reason


def test_a_dump_can_keep_only_the_most_recent_event_ids(ev: EventFactory) -> None:
    config = rules_from_mapping({"dedup_ids_per_session": 4})
    engine = Engine(config)
    events = [ev(i) for i in range(6)]  # 4 ids fill a generation, 2 start the next
    for event in events:
        engine.process(event)
    state = engine.dump_key(("default", "sess-1"), max_ids=3)
    assert state is not None
    ids, n_recent, n_rest = unpack_ids(state[3]), state[4], state[5]
    assert ids[:n_recent] == [events[4].event_id, events[5].event_id]
    assert ids[n_recent:n_recent + n_rest] == [events[3].event_id]
    restored = Engine(config)
    restored.load_key(("default", "sess-1"), state)
    assert not restored.is_new(events[5])
    assert not restored.is_new(events[3])
    assert restored.is_new(events[2])  # beyond what the dump kept


def test_canonical_uuid_ids_are_packed_in_a_dump_and_come_back_the_same() -> None:
    ids = [str(uuid.uuid4()) for _ in range(16)]
    packed = pack_ids(ids)
    assert isinstance(packed, str)
    assert len(orjson.dumps(packed)) < len(orjson.dumps(ids)) * 0.6
    assert unpack_ids(packed) == ids
    assert unpack_ids(ids) == ids  # a list (not packed, or dumped before packing) as it is


@pytest.mark.parametrize("ids", [
    [],
    ["evt-1", "evt-2"],
    [str(uuid.uuid4()).upper()],  # would come back lowercase
    [str(uuid.uuid4()), "not-a-uuid"],
    ["00000000-0000-0000-0000-000000000001"],  # no letter to tell its case by
    ["0123456789ab-cdef-0123-4567-89abcdef01"],  # 36 characters, dashes misplaced
    ["0123456g-89ab-cdef-0123-456789abcdef"],  # not hex
    [str(uuid.uuid4())[:-1] + "é"],
])
def test_ids_that_would_not_come_back_the_same_stay_a_list(ids: list[str]) -> None:
    assert pack_ids(ids) == ids
    assert unpack_ids(pack_ids(ids)) == ids


def test_a_session_dump_with_producer_ids_restores_its_dedup_memory(ev: EventFactory) -> None:
    engine = Engine(rules_from_mapping({}))
    events = [ev(i).model_copy(update={"event_id": str(uuid.uuid4())}) for i in range(5)]
    for event in events:
        engine.process(event)
    state = engine.dump_key(("default", "sess-1"), max_ids=16)
    assert state is not None
    assert isinstance(state[3], str)  # packed
    restored = Engine(rules_from_mapping({}))
    restored.load_key(("default", "sess-1"), orjson.loads(orjson.dumps(state)))
    assert not any(restored.is_new(e) for e in events)
    assert restored.is_new(ev(9).model_copy(update={"event_id": str(uuid.uuid4())}))


_V1_STATE = Path(__file__).parent / "data" / "engine_state_v1.json"


def _v1_stream(seed: int, n: int) -> list[Event]:
    """:func:`_stream` with agent ids that do not depend on string hashing (the same in
    every process, as the saved state needs)."""
    return [e.model_copy(update={"agent_id": f"agent-{int(e.session_id[1:]) % 3}"})
            for e in _stream(seed, n)]


def test_state_dumped_in_the_first_format_loads_and_changes_no_alert() -> None:
    """A worker upgraded over a changelog written by the first state format (commit
    04fcc8d: JSON lists, absolute µs, event ids as strings; made by dumping every key of
    this stream after 600 events, ``max_ids=16`` as the session stage does) carries on
    exactly like an engine that never stopped."""
    saved, events, after = _frozen_dump(_V1_STATE)
    steps = [d["d"]["loop_steps"] for _, d in saved["table"] if "loop_steps" in d.get("d", {})]
    assert steps
    assert all(isinstance(s[0], list) for s in steps)  # trackers: the first format
    assert _resumed(saved, events) == after


def _frozen_dump(path: Path) -> tuple[dict[str, Any], list[Event], list[dict[str, Any]]]:
    """A frozen dump (every key of ``_v1_stream`` after ``cut`` events), its stream, and
    the alerts an engine that never stopped raises after the cut."""
    saved = orjson.loads(path.read_bytes())
    events = _v1_stream(saved["seed"], saved["events"])
    expected = _run(EventTimeDriver(_engine(resolve_after_s=3)), events)
    before = _run(EventTimeDriver(_engine(resolve_after_s=3)), events[:saved["cut"]])
    assert expected[:len(before)] == before
    after = expected[len(before):]
    assert {a["rule"] for a in after} >= {"session_cost", "loop_repeat"}  # firing ones go on
    return saved, events, after


def _resumed(saved: dict[str, Any], events: list[Event]) -> list[dict[str, Any]]:
    """The alerts of an engine restored from the frozen dump, fed the rest of the stream."""
    fresh = _engine(resolve_after_s=3)
    fresh.restore_watermark(saved["watermark_us"])
    for key, data in saved["table"]:
        assert fresh.load_key(tuple(key), data)  # type: ignore[arg-type]
    driver = EventTimeDriver(fresh)
    driver.next_advance_us = saved["next_advance_us"]
    return _run(driver, events[saved["cut"]:])


def test_a_session_dump_names_its_samples_ids_by_position_among_its_kept_ids(
    ev: EventFactory
) -> None:
    engine = Engine()
    for i in range(12):
        engine.process(ev(i, "tool_call", name="search", tool_args_hash=f"h{i}"))
    key = ("default", "sess-1")
    state = orjson.loads(orjson.dumps(engine.dump_key(key, max_ids=16)))
    sample = state[6]["loop_steps"][0]
    assert sample == list(range(2, 12))  # the last 10 of the 12 ids the dump keeps
    restored = Engine()
    restored.load_key(key, state)
    tracker = restored.detectors[[d.name for d in restored.detectors].index("loop_steps")
                                 ].tracker(key)
    assert tracker is not None
    assert tracker.sample.ids() == unpack_ids(state[3])[2:]


_DICT_STATE = Path(__file__).parent / "data" / "engine_state_dict.json"


def test_state_dumped_in_the_dict_form_loads_and_changes_no_alert() -> None:
    """A worker upgraded over a changelog written before format 2 (the dict form of commit
    4e47128: ``{"s": [last_ts_us, packed ids, packed ids], "d": {rule: state}}``, trackers
    as dicts naming their samples' ids by position; made by dumping every key of this
    stream after ``cut`` events with ``max_ids=16``, as the session stage did) carries on
    exactly like an engine that never stopped."""
    saved, events, after = _frozen_dump(_DICT_STATE)
    sessions = [d for _, d in saved["table"] if "s" in d]
    assert sessions
    assert all(isinstance(d["s"][1], str) for d in sessions)  # packed ids: the dict form
    assert _resumed(saved, events) == after


def test_a_session_state_is_written_in_format_2() -> None:
    events = _v1_stream(3, 300)
    driver = EventTimeDriver(_engine())
    _run(driver, events)
    engine = driver.engine
    key = next(iter(engine._sessions))
    state = orjson.loads(orjson.dumps(engine.dump_key(key, max_ids=16)))
    assert state[0] == STATE_FORMAT == 2
    assert state[1] == engine._sessions[key].last_ts_us
    assert isinstance(state[6], dict)
    assert "agent_error_rate" not in state[6]  # agent keys are not the session's
    agent_key = ("default", state[2])
    assert engine.dump_key(agent_key)["d"]  # type: ignore[index]  # the dict form


def test_a_state_in_a_format_this_version_cannot_read_starts_the_key_fresh(
    ev: EventFactory, caplog: pytest.LogCaptureFixture
) -> None:
    engine = Engine()
    engine.process(ev(1))
    key = ("default", "sess-1")
    newer = [3, 1, "whatever a later version writes"]
    restored = Engine()
    with caplog.at_level("WARNING", logger="agentwatch.processors.core"):
        assert restored.load_key(key, newer) is False
    assert "default/sess-1 is in format 3" in caplog.text
    assert "starts fresh" in caplog.text
    assert restored.dump_key(key) is None
    assert restored.process(ev(2)) == []  # and the key goes on as a new session
    assert restored.dump_key(key) is not None


def test_a_damaged_state_starts_the_key_fresh_and_says_why(
    ev: EventFactory, caplog: pytest.LogCaptureFixture
) -> None:
    engine = Engine()
    for i in range(3):
        engine.process(ev(i, "tool_call", name="search", tool_args_hash="h"))
    key = ("default", "sess-1")
    state = orjson.loads(orjson.dumps(engine.dump_key(key, max_ids=16)))
    state[6]["loop_steps"][0] = [99]  # a sample position past the id table
    restored = Engine()
    with caplog.at_level("WARNING", logger="agentwatch.processors.core"):
        assert restored.load_key(key, state) is False
    assert "could not be read (ValueError: a sample refers to event id #99" in caplog.text
    assert restored.dump_key(key) is None  # nothing half-loaded stays behind
    assert all(not d.states for d in restored.detectors)


def test_hex_digest_args_hashes_are_packed_in_a_session_state(ev: EventFactory) -> None:
    engine = Engine()
    hashes = [uuid.uuid4().hex for _ in range(6)]
    for i, args_hash in enumerate(hashes + hashes[:1] * 5):
        engine.process(ev(i, "tool_call", name="search", tool_args_hash=args_hash))
    key = ("default", "sess-1")
    state = orjson.loads(orjson.dumps(engine.dump_key(key, max_ids=16)))
    repeat = state[6]["loop_repeat"]
    assert isinstance(repeat[4], str)
    assert unpack_hex(repeat[4]) == hashes[:1]  # the repeated pattern, its whole hash
    assert repeat[6] == [0]  # hot
    assert unpack_hex(repeat[8], 16) == [h[:16] for h in hashes[1:]]  # called once
    restored = Engine()
    restored.load_key(key, state)
    assert orjson.loads(orjson.dumps(restored.dump_key(key, max_ids=16))) == state


@pytest.mark.parametrize("values", [
    [], ["same"], [uuid.uuid4().hex.upper()], [uuid.uuid4().hex, "short"],
    [uuid.uuid4().hex[:-1] + "g"], [uuid.uuid4().hex[:-2] + " 1"],
])
def test_hashes_that_would_not_come_back_the_same_stay_a_list(values: list[str]) -> None:
    assert pack_hex(values) == values
    assert unpack_hex(pack_hex(values)) == values


def _uuid_bytes_by_islower(ids: list[str]) -> bytes | None:
    """uuid_bytes as it was written first (str.islower), the reference of the test below."""
    n = len(ids)
    if any(len(i) != 36 for i in ids):
        return None
    joined = "".join(ids)
    if n == 0 or not joined.islower() or any(
            joined[at::36].count("-") != n for at in (8, 13, 18, 23)):
        return None
    try:
        raw = bytes.fromhex(joined.replace("-", ""))
    except ValueError:
        return None
    return raw if len(raw) == 16 * n else None


def _all_hex_by_islower(values: list[str], width: int) -> bool:
    """_all_hex as it was written first (str.islower), the reference of the test below."""
    joined = "".join(values)
    if width % 2 or len(joined) != width * len(values) or not joined.islower():
        return False
    try:
        return len(bytes.fromhex(joined)) * 2 == len(joined)
    except ValueError:
        return False


def _mutated(rng: random.Random, text: str) -> str:
    """``text`` with one character changed into something the case and hex checks treat
    apart: a capital, a decimal digit, a dash, whitespace, a non-ASCII letter or digit."""
    at = rng.randrange(len(text))
    new = rng.choice(["A", "F", "a", "0", "9", "-", " ", "\n", "g", "é", "É", "٣", "ǅ"])
    return text[:at] + new + text[at + 1:]


@pytest.mark.parametrize("seed", range(4))
def test_the_packed_forms_lowercase_check_agrees_with_str_islower(seed: int) -> None:
    """uuid_bytes and _all_hex tell lowercase without str.islower (hex() of their bytes,
    not all decimal): the same answers on ids and hashes with capitals, no letter at all,
    whitespace, misplaced dashes and non-ASCII characters."""
    rng = random.Random(seed)
    for _ in range(2_000):
        n = rng.randrange(0, 4)
        ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(n)]
        hashes = [uuid.UUID(int=rng.getrandbits(128)).hex for _ in range(n)]
        if rng.random() < 0.3:  # no letter anywhere
            ids = ["".join(c if c == "-" else rng.choice("0123456789") for c in i)
                   for i in ids]
            hashes = ["".join(rng.choice("0123456789") for _ in h) for h in hashes]
        if ids and rng.random() < 0.7:
            i = rng.randrange(n)
            ids[i] = _mutated(rng, ids[i])
            hashes[i] = _mutated(rng, hashes[i])
        if hashes and rng.random() < 0.2:  # lengths that add up right, one by one wrong
            hashes[0] = hashes[0][:-1]
            hashes[-1] += "a"
        assert uuid_bytes(ids) == _uuid_bytes_by_islower(ids), ids
        for width in (32, 16, 7):
            values = hashes if width == 32 else [h[:width] for h in hashes]
            assert _all_hex(values, width) == _all_hex_by_islower(values, width), values


def test_tool_calls_with_other_args_hashes_are_kept_whole(ev: EventFactory) -> None:
    engine = Engine()
    for i, args_hash in enumerate(["h1", uuid.uuid4().hex, "h1"]):
        engine.process(ev(i, "tool_call", name="search", tool_args_hash=args_hash))
    repeat = orjson.loads(orjson.dumps(engine.dump_key(("default", "sess-1"))))[6][
        "loop_repeat"]
    assert repeat[3:6] == [["search"], ["h1"], [[2 * US, 0]]]  # base - t of both calls
    assert len(unpack_hex(repeat[8], 16)) == 1
