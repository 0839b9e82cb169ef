from __future__ import annotations

from typing import Any

import orjson
import pytest

from agentwatch.producer import _placement as placement_module
from agentwatch.producer._placement import Parts, Placement
from agentwatch.producer.packing import PackedRecord
from agentwatch.schemas import partition_batch_key, partition_for, session_key


def _event(session_id: str, i: int) -> dict[str, Any]:
    return {"tenant_id": "acme", "session_id": session_id, "i": i}


def _home(session_id: str, partitions: int) -> int:
    return partition_for(session_key("acme", session_id), partitions)


def _batch(events: list[dict[str, Any]], partition: int, packed_for: int) -> PackedRecord:
    return PackedRecord(partition_batch_key(partition), orjson.dumps(events), len(events),
                        packed_for)


def test_without_a_partition_count_a_session_is_its_own_key() -> None:
    assert Placement(0).key_of("acme", "s1") == b"acme/s1"


def test_with_a_partition_count_a_session_goes_to_its_partitions_batch() -> None:
    assert Placement(4).key_of("acme", "s1") == partition_batch_key(_home("s1", 4))


def test_the_key_memo_is_per_tenant_and_starts_over_when_full(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(placement_module, "_KEYS_MAX", 3)
    placement = Placement(0)
    assert placement.key_of("acme", "s1") == b"acme/s1"
    assert placement.key_of("beta", "s1") == b"beta/s1"
    assert placement.key_of("acme", "s1") == b"acme/s1"  # known: not counted again
    assert placement.keys == {"acme": {"s1": b"acme/s1"}, "beta": {"s1": b"beta/s1"}}
    placement.key_of("acme", "s2")  # the third session: the memo is full
    assert placement.keys == {"acme": {"s1": b"acme/s1", "s2": b"acme/s2"},
                              "beta": {"s1": b"beta/s1"}}
    assert placement.key_of("beta", "s3") == b"beta/s3"  # starts over, then remembers
    assert placement.keys == {"beta": {"s3": b"beta/s3"}}


def test_a_record_packed_for_the_count_in_use_goes_as_it_is() -> None:
    record = _batch([_event("s1", 0)], 9, packed_for=4)  # (not checked: trusted)
    assert Placement(4).wire(record) == [(record.key, record.value)]


def test_a_one_session_record_gets_its_partitions_batch_key() -> None:
    record = PackedRecord(b"acme/s1", b"[1,2]", 2)
    assert Placement(4).wire(record) == [(partition_batch_key(_home("s1", 4)), b"[1,2]")]


def test_a_batch_whose_sessions_still_belong_to_its_partition_goes_as_it_is() -> None:
    sessions = [s for s in (f"s{i}" for i in range(50)) if _home(s, 8) == 3][:4]
    record = _batch([_event(s, 0) for s in sessions], 3, packed_for=0)  # read from a spool
    assert Placement(8).wire(record) == [(record.key, record.value)]


def test_a_batch_whose_sessions_moved_is_split_per_partition_in_order() -> None:
    events = [_event(f"s{i % 12}", i) for i in range(36)]  # all on partition 0 of 1
    parts = Placement(4).wire(_batch(events, 0, packed_for=1))
    assert len(parts) > 1
    got: list[dict[str, Any]] = []
    for key, value in parts:
        part = orjson.loads(value)
        assert {partition_batch_key(_home(e["session_id"], 4)) for e in part} == {key}
        got += part
    for s in range(12):
        mine = [e["i"] for e in got if e["session_id"] == f"s{s}"]
        assert mine == [i for i in range(36) if i % 12 == s]
    assert len(got) == 36


def test_a_batch_that_is_not_json_goes_as_it_is() -> None:
    record = PackedRecord(partition_batch_key(1), b"not json", 1, 0)
    assert Placement(4).wire(record) == [(record.key, record.value)]


def test_a_split_record_is_confirmed_once_all_its_parts_are() -> None:
    parts = Parts()
    for count in (1, 3, 1):
        parts.sent(count)
    assert parts.confirmed(1) == 1
    assert parts.confirmed(2) == 0
    assert parts.confirmed(2) == 2


def test_a_refused_part_fails_its_record_once_and_its_other_parts_are_skipped() -> None:
    parts = Parts()
    parts.sent(3)
    parts.sent(1)
    assert parts.confirmed(1) == 0  # the first part of the first record
    assert parts.refused() is True  # the second: the record fails
    assert parts.refused() is False  # the third, refused too: same record
    assert parts.confirmed(1) == 1  # the second record
