"""The worker's rekeyed stage on malformed messages of its internal topic: each one is a
dead letter naming what is wrong (topic, partition, offset, the raw bytes), skipped; the
rest of the batch is processed as if it were not there; nothing raises (hypothesis, with
the strategies of tests/unit/schemas/hostile_inputs.py)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_rekeyed_stage import CONFIG, INPUTS, REKEYED_TOPIC, Q, _arrival, _dump, _replay

from agentwatch.processors.worker import RekeyedStage, StageOutput
from agentwatch.processors.worker._forward import MARK_KEY, compact_event, event_from_model
from agentwatch.processors.worker._rekeyed_stage import problem
from agentwatch.processors.worker._session_stage import DEAD_LETTER_RAW_MAX
from agentwatch.schemas import Event, EventKind, from_us

sys.path.insert(0, str(Path(__file__).parents[2] / "schemas"))
from hostile_inputs import HOSTILE, NUMBER_TOKENS, json_text, records, scalars

TS_US = 1_796_032_800_000_000  # 2026-12-01
KEY = b'["default","agent-1"]'


def _compact(i: int, **fields: Any) -> list[Any]:
    event = Event(event_id=str(uuid.UUID(int=i)), ts=from_us(TS_US + i), agent_id="agent-1",
                  session_id="s", kind=EventKind.TOOL_CALL, **fields)
    return compact_event(event_from_model(event))


def _data(*compacts: list[Any]) -> bytes:
    return orjson.dumps({"s": "agent", "p": 0, "e": list(compacts)})


def _mark(p: int, w: int = TS_US, **more: Any) -> bytes:
    return orjson.dumps({"p": p, "w": w, "idle": False, **more})


GOOD_DATA = _data(_compact(1), _compact(2, cost_usd=0.5, duration_ms=3.0, model="m"))
GOOD_MARK = _mark(0)


def _stage() -> RekeyedStage:
    stage = RekeyedStage(CONFIG, REKEYED_TOPIC, INPUTS)
    stage.restore(Q, [])
    return stage


def _run(messages: list[tuple[bytes | None, bytes | None]], stage: RekeyedStage | None = None
         ) -> StageOutput:
    stage = stage or _stage()
    out = StageOutput()
    stage.process(Q, [(o, k, v) for o, (k, v) in enumerate(messages)], out)
    return out


def _with_idle_marks(messages: list[tuple[bytes | None, bytes | None]]
                     ) -> list[tuple[bytes | None, bytes | None]]:
    marks = [(MARK_KEY, _mark(p, TS_US + 10**6, idle=True)) for p in range(INPUTS)]
    return [*messages, *marks]


MALFORMED: list[tuple[str, bytes | None, bytes | None, str]] = [
    ("no value", KEY, None, "empty record (no value)"),
    ("not JSON", KEY, b'{"s": "agent", "p"', "malformed JSON"),
    ("not UTF-8", KEY, b"\xff\xfe", "malformed JSON"),
    ("empty", KEY, b"", "malformed JSON"),
    ("an array", KEY, b"[1, 2]", "not a JSON object: an array of 2 items"),
    ("a string", KEY, b'"e"', 'not a JSON object: "e"'),
    ("a number", KEY, b"3", "not a JSON object: 3"),
    ("NaN", KEY, b'{"p": 0, "w": NaN}', "malformed JSON"),
    ("infinity", KEY, b'{"p": 0, "w": 1e999}', "malformed JSON"),
    ("neither form", KEY, b'{"x": 1}', 'neither a data message (no field "e") nor a mark'),
    ("mark: unknown field", MARK_KEY, _mark(0, extra=1), 'mark: unknown field "extra"'),
    ("mark: missing p", MARK_KEY, b'{"w": 5}', 'mark: missing field "p"'),
    ("mark: p a string", MARK_KEY, b'{"p": "0", "w": 5}', 'field "p" must be an input partition'),
    ("mark: p a bool", MARK_KEY, b'{"p": true, "w": 5}', 'field "p" must be an input partition'),
    ("mark: p out of range", MARK_KEY, _mark(INPUTS), "an integer 0..1, got 2"),
    ("mark: p negative", MARK_KEY, _mark(-1), 'field "p" must be an input partition'),
    ("mark: w a float", MARK_KEY, b'{"p": 0, "w": 1.5}', 'field "w" must be an event time'),
    ("mark: w huge", MARK_KEY, _mark(0, 2**64 - 1), 'field "w" must be an event time'),
    ("mark: w far future", MARK_KEY, _mark(0, 2**62 - 1), 'field "w" must be an event time'),
    ("mark: idle a string", MARK_KEY, _mark(0, idle="yes"), 'field "idle" must be true or false'),
    ("mark: t a list", MARK_KEY, _mark(0, t=[1]), 'field "t" must be an event time'),
    ("mark: t past 2^62", MARK_KEY, _mark(0, t=2**63), 'field "t" must be an event time'),
    ("data: unknown field", KEY, b'{"s":"agent","p":0,"e":[],"x":1}',
     'data message: unknown field "x"'),
    ("data: missing s", KEY, b'{"p":0,"e":[]}', 'data message: missing field "s"'),
    ("data: unknown scope", KEY, b'{"s":"session","p":0,"e":[]}',
     'field "s" must be "agent" or "tenant", got "session"'),
    ("data: unhashable scope", KEY, b'{"s":["agent"],"p":0,"e":[]}', 'field "s" must be'),
    ("data: p a float", KEY, b'{"s":"agent","p":0.0,"e":[]}', 'field "p" must be'),
    ("data: e an object", KEY, b'{"s":"agent","p":0,"e":{}}',
     'field "e" must be an array of events'),
    ("data: no key", None, GOOD_DATA, "data message without a key"),
    ("data: key not JSON", b"default/agent-1", GOOD_DATA, "malformed JSON"),
    ("data: key of 3 items", b'["default","agent-1","x"]', GOOD_DATA,
     "the key must be a JSON array of 2 strings"),
    ("data: key a string", b'"default"', GOOD_DATA, "the key must be a JSON array"),
    ("data: key of numbers", b"[1, 2]", GOOD_DATA, "the key must be a JSON array"),
    ("data: key too long", orjson.dumps(["default", "a" * 257]), GOOD_DATA,
     "1..128 and 1..256 characters"),
    ("data: key of another agent", b'["default","agent-2"]', GOOD_DATA,
     "event 0: field 3 (agent_id) must be the key's agent_id"),
    ("event not an array", KEY, _data(_compact(1), {"a": 1}),
     "event 1: not an array: an object of 1 fields"),
    ("event a string", KEY, _data("abcdefghij"), 'event 0: not an array: "abcdefghij"'),
    ("event too short", KEY, _data(_compact(1)[:9]), "event 0: 9 fields, not 10 or 13"),
    ("event too long", KEY, _data([*_compact(1), None, None, None, 1]),
     "event 0: 14 fields, not 10 or 13"),
    ("event id a number", KEY, _data([7, *_compact(1)[1:]]),
     "event 0: field 0 (event_id) must be a string"),
    ("event id huge", KEY, _data(["x" * 300, *_compact(1)[1:]]),
     'field 0 (event_id) must be a string of at most 256 characters, got "xxx'),
    ("ts a string", KEY, _data([_compact(1)[0], "2026-12-01T00:00:00Z", *_compact(1)[2:]]),
     "field 1 (ts_us) must be an integer"),
    ("ts a float", KEY, _data([_compact(1)[0], 1.5, *_compact(1)[2:]]), "field 1 (ts_us)"),
    ("ts a bool", KEY, _data([_compact(1)[0], True, *_compact(1)[2:]]), "field 1 (ts_us)"),
    ("ts past 2299", KEY, _data([_compact(1)[0], 2**63 - 1, *_compact(1)[2:]]),
     "field 1 (ts_us)"),
    ("ts u64", KEY, _data([_compact(1)[0], 2**64 - 1, *_compact(1)[2:]]), "field 1 (ts_us)"),
    ("tenant a number", KEY, _data([*_compact(1)[:2], 1, *_compact(1)[3:]]),
     "field 2 (tenant_id) must be the key's tenant_id, got 1"),
    ("session null", KEY, _data([*_compact(1)[:4], None, *_compact(1)[5:]]),
     "field 4 (session_id) must be a string"),
    ("unknown kind", KEY, _data([*_compact(1)[:5], "nope", *_compact(1)[6:]]),
     'field 5 (kind) must be one of [\'agent_step\''),
    ("unhashable kind", KEY, _data([*_compact(1)[:5], ["tool_call"], *_compact(1)[6:]]),
     "field 5 (kind)"),
    ("unknown status", KEY, _data([*_compact(1)[:6], "failed", *_compact(1)[7:]]),
     "field 6 (status)"),
    ("cost a string", KEY, _data([*_compact(1)[:7], "0.5", *_compact(1)[8:]]),
     "field 7 (cost_usd) must be a number or null"),
    ("cost a bool", KEY, _data([*_compact(1)[:7], True, *_compact(1)[8:]]), "field 7"),
    ("name an object", KEY, _data([*_compact(1)[:8], {}, *_compact(1)[9:]]), "field 8 (name)"),
    ("args hash a number", KEY, _data([*_compact(1)[:9], 12]), "field 9 (tool_args_hash)"),
    ("duration a string", KEY, _data([*_compact(1), "3", None, None]),
     "field 10 (duration_ms) must be a number or null"),
    ("model a number", KEY, _data([*_compact(1), 3.0, 4, None]), "field 11 (model)"),
    ("attributes an array", KEY, _data([*_compact(1), 3.0, None, []]),
     "field 12 (attributes) must be an object or null, got an empty array"),
]


@pytest.mark.parametrize(("key", "value", "reason"), [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_a_malformed_message_is_a_dead_letter_naming_what_is_wrong_and_the_rest_counts(
        key: bytes | None, value: bytes | None, reason: str) -> None:
    messages = _with_idle_marks([(KEY, GOOD_DATA), (key, value), (MARK_KEY, GOOD_MARK),
                                 (KEY, _data(_compact(3)))])
    out = _run(messages)
    [dead] = out.dead_letters
    assert reason in dead.reason
    assert (dead.topic, dead.partition, dead.offset, dead.index) == (REKEYED_TOPIC, Q, 1, None)
    assert (dead.key, dead.raw) == (key, value or b"")
    assert orjson.loads(dead.to_json())["reason"] == dead.reason
    assert dead.reason == problem(key, value, INPUTS)
    assert out.events == 3  # the good messages' events, all released by the idle marks


def test_the_well_formed_messages_of_the_table_have_no_problem() -> None:
    assert problem(KEY, GOOD_DATA, INPUTS) is None
    assert problem(MARK_KEY, GOOD_MARK, INPUTS) is None
    assert problem(None, _mark(1, -(1 << 62), idle=True, t=5), INPUTS) is None  # none seen yet
    assert problem(b'["t","t"]', b'{"s":"tenant","p":1,"e":[]}', INPUTS) is None
    tenant_scoped = _data(_compact(1)).replace(b'"agent"', b'"tenant"', 1)
    assert problem(b'["default","default"]', tenant_scoped, INPUTS) is None
    assert _run([(b'["default","default"]', tenant_scoped)]).dead_letters == []


def test_garbage_among_the_forwards_changes_no_alert() -> None:
    messages, events = _arrival(11, "interleaved")
    garbage: list[tuple[bytes | None, bytes | None]] = [
        (KEY, b"\x00garbage"), (MARK_KEY, _mark(7)), (KEY, _data(_compact(1)[:3])),
        (MARK_KEY, _mark(0, 2**64 - 1)), (None, None), (KEY, b"[]")]
    mixed: list[tuple[bytes | None, bytes | None]] = []
    for i, message in enumerate(messages):
        mixed.append(message)
        if i % 40 == 0:
            mixed.append(garbage[(i // 40) % len(garbage)])
    stage = _stage()
    out = StageOutput()
    for lo in range(0, len(mixed), 7):
        stage.process(Q, [(o, *mixed[o]) for o in range(lo, min(lo + 7, len(mixed)))], out)
    assert _dump(out) == _replay(events)
    assert len(out.dead_letters) == len(range(0, len(messages), 40))
    assert {d.offset for d in out.dead_letters} == {
        o for o, m in enumerate(mixed) if m in garbage}
    assert stage.buffered(Q) == 0


def test_a_dead_letter_of_a_huge_message_is_sent_cut_to_a_bounded_size() -> None:
    # ~2.5 MB, its last event bad
    value = orjson.dumps({"s": "agent", "p": 0, "e": [*[_compact(1)] * 20_000, {"x": 1}]})
    [dead] = _run([(KEY, value)]).dead_letters
    assert "event 20000: not an array" in dead.reason
    body = dead.to_json()
    assert len(body) < 1024 * 1024  # under Kafka's default message.max.bytes
    decoded = orjson.loads(body)
    assert (decoded["raw_bytes"], len(decoded["raw"])) == (len(value), DEAD_LETTER_RAW_MAX)


def test_two_events_of_the_same_time_and_id_in_a_message_do_not_break_the_buffer() -> None:
    # a heap that compared the compact events would compare 0.5 with None: a TypeError
    one, other = _compact(1, cost_usd=0.5), _compact(1)
    out = _run(_with_idle_marks([(KEY, _data(one, other)), (KEY, _data(other, one))]))
    assert out.dead_letters == []
    assert out.events == 1  # the copies are the same event: released once


def test_nothing_of_a_malformed_message_is_queued() -> None:
    stage = _stage()
    out = _run([(KEY, _data(_compact(1), _compact(2), [*_compact(3)[:5], "nope",
                                                       *_compact(3)[6:]]))], stage)
    assert len(out.dead_letters) == 1
    assert stage.buffered(Q) == 0
    assert stage.safe_offset(Q) == 1  # nothing held: its offset may be committed


# -- property: arbitrary keys and values never raise; a dead letter iff problem() says so ------

def _mutations() -> st.SearchStrategy[bytes]:
    """A well-formed message with one field (or one compact event's field) replaced by a
    hostile value, or a hostile number token written in place of a number."""
    hostile = st.one_of(scalars, st.sampled_from([[], {}, [1], {"a": 1}, -(1 << 62), 2**64 - 1,
                                                  2**63, TS_US, "agent", "tenant", "ok"]))

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        if draw(st.booleans()):
            message: dict[str, Any] = orjson.loads(GOOD_MARK)
            fields = ["p", "w", "idle", "t", "x"]
        else:
            message = orjson.loads(GOOD_DATA)
            fields = ["s", "p", "e", "x", *["e.0", "e.1"] * 4]  # mostly inside an event
        field = draw(st.sampled_from(fields))
        if field.startswith("e."):
            compact = message["e"][int(field[2:])]
            i = draw(st.integers(0, len(compact) + 1))
            if i >= len(compact):
                del compact[draw(st.integers(0, len(compact) - 1)):]
            else:
                compact[i] = draw(hostile)
        elif draw(st.integers(0, 5)) == 0:
            message.pop(field, None)
        else:
            message[field] = draw(hostile)
        try:
            text = orjson.dumps(message)
        except TypeError:  # an integer past 64 bits: written as text, read back as a float
            return b'{"p":0,"w":18446744073709551616}'
        if draw(st.integers(0, 5)) == 0:
            token = draw(st.sampled_from(NUMBER_TOKENS))
            text = text.replace(b":0", b":" + token, 1).replace(b",0,", b"," + token + b",", 1)
        return text

    return build()


_KEYS = st.one_of(st.sampled_from([KEY, MARK_KEY, None, b'["default","default"]', b"[]",
                                   b'["default"]', b'[1,"agent-1"]']),
                  st.binary(max_size=30), json_text())
_VALUES = st.one_of(_mutations(), st.just(GOOD_DATA), st.just(GOOD_MARK), records(),
                    json_text(), st.binary(max_size=80), st.none())


@HOSTILE
@given(st.lists(st.tuples(_KEYS, _VALUES), max_size=8))
def test_arbitrary_messages_never_raise_and_every_malformed_one_is_a_dead_letter(
        messages: list[tuple[bytes | None, bytes | None]]) -> None:
    stage = _stage()
    out = _run(_with_idle_marks(messages), stage)
    problems = {o: problem(k, v, INPUTS) for o, (k, v) in enumerate(messages)}
    assert {d.offset: d.reason for d in out.dead_letters} == {
        o: why for o, why in problems.items() if why is not None}
    for dead in out.dead_letters:
        assert dead.reason.strip()
        assert not dead.reason.startswith("malformed: ")  # problem() found what the checks did
        assert orjson.loads(dead.to_json())["topic"] == REKEYED_TOPIC
    assert stage.buffered(Q) == 0  # the idle marks released every event taken
    assert orjson.loads(stage.checkpoint(Q)[-1][2] or b"null")["o"] == len(messages) + INPUTS
