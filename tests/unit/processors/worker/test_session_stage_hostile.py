"""The worker's session stage on hostile records (tests/unit/schemas/hostile_inputs.py):
every rejected record or item becomes a dead letter with a reason, none raises, and the
dead letter itself always encodes (DeadLetter.to_json)."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
from hypothesis import given
from hypothesis import strategies as st

from agentwatch.processors.core import rules_from_mapping
from agentwatch.processors.worker import SessionStage, StageOutput
from agentwatch.processors.worker._session_stage import DEAD_LETTER_RAW_MAX
from agentwatch.schemas import decode_record, partition_batch_key

sys.path.insert(0, str(Path(__file__).parents[2] / "schemas"))
from hostile_inputs import HOSTILE, deeply_nested, records

TOPIC = "agentwatch.events"
N = 4


def _run(records_: list[tuple[bytes | None, bytes | None]], partition: int = 0) -> StageOutput:
    stage = SessionStage(rules_from_mapping({}), TOPIC, N)
    stage.restore(partition, [])
    out = StageOutput()
    stage.process(partition, [(i, k, v) for i, (k, v) in enumerate(records_)], out)
    return out


@HOSTILE
@given(st.lists(st.tuples(
    st.sampled_from([b"default/s-1", None, partition_batch_key(0), b"\xff"]),
    st.one_of(records(), st.none(), st.binary(max_size=60))), max_size=6))
def test_hostile_records_become_dead_letters_with_reasons_never_an_exception(
        batch: list[tuple[bytes | None, bytes | None]]) -> None:
    out = _run(batch)
    for dead in out.dead_letters:
        assert dead.reason.strip()
        body = orjson.loads(dead.to_json())
        assert body["reason"] == dead.reason
    rejected = sum(1 if v is None else len(decode_record(v).rejected) for _, v in batch)
    assert len(out.dead_letters) >= rejected  # plus wrong-partition ones in batches
    for _, _, value in out.writes:
        assert value is None or orjson.loads(value) is not None


def test_deep_nesting_and_out_of_range_times_are_dead_letters() -> None:
    event = b'{"event_id":"00000000-0000-4000-8000-000000000001","agent_id":"a",' \
            b'"session_id":"s","kind":"custom","ts":"%s"}'
    values = [deeply_nested(100_000, "arrays"), event % b"0001-01-01T00:00:00+01:00",
              event % b"9999-12-31T23:59:59-01:00", b"[" + event % b"2300-01-01T00:00:00Z" + b"]"]
    out = _run([(partition_batch_key(0), v) for v in values])
    assert out.events == 0
    assert [d.offset for d in out.dead_letters] == [0, 1, 2, 3]
    assert all(d.reason for d in out.dead_letters)


def test_a_dead_letter_of_a_huge_record_is_sent_cut_to_a_bounded_size() -> None:
    value = b"\x01" * (4 * 1024 * 1024)  # JSON-escaped: 6 bytes per byte
    [dead] = _run([(b"k" * 100_000, value)]).dead_letters
    body = dead.to_json()
    assert len(body) < 1024 * 1024  # under Kafka's default message.max.bytes
    decoded = orjson.loads(body)
    assert decoded["raw_bytes"] == len(value)
    assert len(decoded["raw"]) == DEAD_LETTER_RAW_MAX
    assert decoded["reason"]
