from __future__ import annotations

import orjson

from agentwatch.producer.packing import Packer


def _event(i: int, pad: int = 0) -> bytes:
    return orjson.dumps({"i": i, "pad": "x" * pad})


def _items(value: bytes) -> list[int]:
    return [e["i"] for e in orjson.loads(value)]


def test_one_key_becomes_one_record_in_order() -> None:
    packer = Packer(max_events=100, max_bytes=10_000)
    for i in range(5):
        packer.add(b"t/s", _event(i))
    (record,) = packer.take(all_open=True)
    assert record.key == b"t/s"
    assert _items(record.value) == [0, 1, 2, 3, 4]
    assert record.events == 5


def test_single_event_is_a_one_element_array() -> None:
    packer = Packer(max_events=100, max_bytes=10_000)
    packer.add(b"t/s", _event(7))
    (record,) = packer.take(all_open=True)
    assert record.value == b"[" + _event(7) + b"]"


def test_keys_get_separate_records() -> None:
    packer = Packer(max_events=100, max_bytes=10_000)
    for i in range(6):
        packer.add(b"t/a" if i % 2 else b"t/b", _event(i))
    records = {r.key: _items(r.value) for r in packer.take(all_open=True)}
    assert records == {b"t/a": [1, 3, 5], b"t/b": [0, 2, 4]}


def test_open_chunks_wait_until_taken_with_all_open() -> None:
    packer = Packer(max_events=100, max_bytes=10_000)
    packer.add(b"t/s", _event(0))
    assert packer.take(all_open=False) == []
    assert packer.pending == 1


def test_full_chunk_is_ready_without_waiting() -> None:
    packer = Packer(max_events=2, max_bytes=10_000)
    for i in range(3):
        packer.add(b"t/s", _event(i))
    (record,) = packer.take(all_open=False)
    assert _items(record.value) == [0, 1]
    assert packer.pending == 1


def test_event_bound_splits_a_key_into_records_in_order() -> None:
    packer = Packer(max_events=3, max_bytes=10_000)
    for i in range(10):
        packer.add(b"t/s", _event(i))
    records = packer.take(all_open=True)
    assert [_items(r.value) for r in records] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]


def test_byte_bound_is_never_exceeded() -> None:
    packer = Packer(max_events=1000, max_bytes=1024)
    for i in range(50):
        packer.add(b"t/s", _event(i, pad=100))
    records = packer.take(all_open=True)
    assert len(records) > 1
    assert all(len(r.value) <= 1024 for r in records)
    assert [i for r in records for i in _items(r.value)] == list(range(50))


def test_record_exactly_at_the_byte_bound_is_allowed() -> None:
    event = _event(0, pad=10)
    packer = Packer(max_events=1000, max_bytes=2 + 2 * len(event) + 1)
    packer.add(b"t/s", event)
    packer.add(b"t/s", event)
    (record,) = packer.take(all_open=True)
    assert len(record.value) == 2 + 2 * len(event) + 1


def test_event_larger_than_the_byte_bound_goes_alone() -> None:
    packer = Packer(max_events=1000, max_bytes=1024)
    packer.add(b"t/s", _event(0))
    packer.add(b"t/s", _event(1, pad=2000))
    packer.add(b"t/s", _event(2))
    records = packer.take(all_open=True)
    assert [_items(r.value) for r in records] == [[0], [1], [2]]


def test_records_carry_the_partition_count_they_were_packed_for() -> None:
    packer = Packer(max_events=2, max_bytes=10_000)
    packer.partitions = 4
    for i in range(3):
        packer.add(b"~batch:1", _event(i))
    first = packer.take(all_open=True)
    packer.partitions = 8  # (the sender changes it only with no chunk open)
    packer.add(b"~batch:5", _event(3))
    second = packer.take(all_open=True)
    assert [(r.key, r.partitions) for r in first + second] == [
        (b"~batch:1", 4), (b"~batch:1", 4), (b"~batch:5", 8)]


def test_a_packer_without_a_partition_count_marks_records_with_none() -> None:
    packer = Packer(max_events=100, max_bytes=10_000)
    packer.add(b"t/s", _event(0))
    (record,) = packer.take(all_open=True)
    assert record.partitions == 0
