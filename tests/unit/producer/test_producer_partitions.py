"""Partition batches: with a transport that knows its partition count, every event of one
linger interval bound for partition p goes into one record on p, whatever its session,
each session's events in order (DESIGN.md, "Kafka records")."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import orjson
import pytest

from agentwatch.producer import Agentwatch, Record
from agentwatch.producer._spool import DiskSpool
from agentwatch.producer.packing import PackedRecord
from agentwatch.schemas import (
    is_partition_batch,
    partition_batch_key,
    partition_for,
    session_key,
)

SAFETY_TIMEOUT_S = 30.0
#: no linger tick during a test: records close on flush (or on a bound) only
NEVER_MS = 60_000


class PartitionedTransport:
    """A plain transport (accepted = delivered) of a topic of ``count`` partitions, whose
    broker can be down (``up``) and whose count can change."""

    def __init__(self, count: int | None) -> None:
        self.count = count
        self.up = True
        self.records: list[Record] = []
        self.lock = threading.Lock()

    def partitions(self) -> int | None:
        return self.count

    def send(self, records: Sequence[Record]) -> None:
        if not self.up:
            raise ConnectionError("broker down")
        with self.lock:
            self.records.extend(records)

    def flush(self, timeout_s: float) -> bool:
        return True

    def close(self) -> None:
        pass


class ReportingPartitionedTransport(PartitionedTransport):
    """Delivers asynchronously: each ``poll_deliveries`` confirms at most ``per_poll`` of
    the records it tracks, or refuses the ones ``refuse`` picks."""

    def __init__(self, count: int, refuse: Callable[[Record], bool] = lambda _: False) -> None:
        super().__init__(count)
        self.per_poll = 1_000_000
        self.refuse = refuse
        self._tracking: list[Record] = []

    def send(self, records: Sequence[Record]) -> None:
        super().send(records)
        with self.lock:
            self._tracking.extend(records)

    def poll_deliveries(self) -> tuple[int, Literal["reject"] | None]:
        with self.lock:
            done = 0
            while self._tracking and done < self.per_poll:
                record = self._tracking.pop(0)
                if self.refuse(record):
                    return done, "reject"
                done += 1
            return done, None


def _events(records: Sequence[Record]) -> list[dict[str, Any]]:
    return [event for _, value in records for event in orjson.loads(value)]


def _home(event: dict[str, Any], partitions: int) -> int:
    return partition_for(session_key(event["tenant_id"], event["session_id"]), partitions)


def _partition_of(key: bytes) -> int:
    assert is_partition_batch(key), key
    return int(key.split(b":")[1])


def _emit(client: Agentwatch, sessions: int, per_session: int, first: int = 0) -> None:
    for i in range(first, first + per_session):
        for s in range(sessions):  # interleaved, as concurrent agents emit
            client.emit({"kind": "custom", "session_id": f"s{s}", "attributes": {"i": i}})


def _seqs(records: Sequence[Record]) -> dict[str, list[int]]:
    seqs: dict[str, list[int]] = defaultdict(list)
    for event in _events(records):
        seqs[event["session_id"]].append(event["attributes"]["i"])
    return seqs


def _assert_each_event_on_its_partition(records: Sequence[Record], partitions: int) -> None:
    for key, value in records:
        homes = {_home(event, partitions) for event in orjson.loads(value)}
        assert homes == {_partition_of(key)}


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTWATCH_RETRY_BACKOFF_MS", "1")


def test_many_sessions_of_one_interval_become_one_record_per_partition() -> None:
    transport = PartitionedTransport(4)
    client = Agentwatch(transport=transport, tenant_id="acme", linger_ms=NEVER_MS)
    _emit(client, sessions=200, per_session=2)
    assert client.flush(timeout_s=SAFETY_TIMEOUT_S)
    client.close()
    assert sorted(key for key, _ in transport.records) == [
        partition_batch_key(p) for p in range(4)]
    _assert_each_event_on_its_partition(transport.records, 4)
    assert len(_events(transport.records)) == 400


def test_each_linger_interval_gets_its_own_records() -> None:
    transport = PartitionedTransport(2)
    client = Agentwatch(transport=transport, linger_ms=NEVER_MS)
    _emit(client, sessions=50, per_session=1)
    assert client.flush(timeout_s=SAFETY_TIMEOUT_S)
    _emit(client, sessions=50, per_session=1, first=1)
    assert client.flush(timeout_s=SAFETY_TIMEOUT_S)
    client.close()
    assert [_partition_of(key) for key, _ in transport.records] in ([0, 1, 0, 1], [1, 0, 1, 0])


def test_each_sessions_order_holds_within_and_across_records() -> None:
    transport = PartitionedTransport(3)
    client = Agentwatch(transport=transport, linger_ms=1, max_batch_events=7)
    _emit(client, sessions=20, per_session=30)
    assert client.flush(timeout_s=SAFETY_TIMEOUT_S)
    client.close()
    assert len(transport.records) >= 600 / 7  # the bound split the partitions' events
    assert _seqs(transport.records) == {f"s{s}": list(range(30)) for s in range(20)}
    _assert_each_event_on_its_partition(transport.records, 3)


def test_the_event_bound_splits_a_partition_batch() -> None:
    transport = PartitionedTransport(1)
    client = Agentwatch(transport=transport, linger_ms=NEVER_MS, max_batch_events=5)
    _emit(client, sessions=6, per_session=2)
    assert client.flush(timeout_s=SAFETY_TIMEOUT_S)
    client.close()
    assert [len(orjson.loads(value)) for _, value in transport.records] == [5, 5, 2]
    assert {key for key, _ in transport.records} == {partition_batch_key(0)}


def test_the_byte_bound_splits_a_partition_batch() -> None:
    transport = PartitionedTransport(2)
    client = Agentwatch(transport=transport, linger_ms=NEVER_MS, max_batch_bytes=1024)
    _emit(client, sessions=30, per_session=3)
    assert client.flush(timeout_s=SAFETY_TIMEOUT_S)
    client.close()
    assert len(transport.records) > 2
    assert all(len(value) <= 1024 for _, value in transport.records)
    assert len(_events(transport.records)) == 90
    _assert_each_event_on_its_partition(transport.records, 2)


def test_without_a_partition_count_each_session_gets_its_own_records() -> None:
    transport = PartitionedTransport(None)
    client = Agentwatch(transport=transport, tenant_id="acme", linger_ms=NEVER_MS)
    _emit(client, sessions=5, per_session=2)
    assert client.flush(timeout_s=SAFETY_TIMEOUT_S)
    client.close()
    assert sorted(key for key, _ in transport.records) == [b"acme/s%d" % s for s in range(5)]


def test_a_changed_count_is_logged_once_and_later_records_follow_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = PartitionedTransport(2)
    client = Agentwatch(transport=transport, linger_ms=NEVER_MS)
    _emit(client, sessions=40, per_session=1)
    assert client.flush(timeout_s=SAFETY_TIMEOUT_S)
    before = len(transport.records)
    transport.count = 8
    with caplog.at_level(logging.WARNING, logger="agentwatch.producer"):
        for first in (1, 2):
            _emit(client, sessions=40, per_session=1, first=first)
            assert client.flush(timeout_s=SAFETY_TIMEOUT_S)
    client.close()
    _assert_each_event_on_its_partition(transport.records[:before], 2)
    _assert_each_event_on_its_partition(transport.records[before:], 8)
    changes = [r.getMessage() for r in caplog.records if "partitions" in r.getMessage()]
    assert len(changes) == 1
    assert "now has 8 partitions (was 2)" in changes[0]


def test_records_packed_for_an_old_count_are_placed_again_before_they_are_sent() -> None:
    transport = PartitionedTransport(2)
    transport.up = False  # the records wait in the outbox, packed for 2 partitions
    client = Agentwatch(transport=transport, linger_ms=NEVER_MS)
    _emit(client, sessions=40, per_session=3)
    assert client.flush(timeout_s=0.2) is False
    transport.count, transport.up = 5, True
    client.emit({"kind": "custom", "session_id": "s0", "attributes": {"i": 3}})
    assert client.flush(timeout_s=SAFETY_TIMEOUT_S)
    stats = client.stats
    client.close()
    _assert_each_event_on_its_partition(transport.records, 5)
    expected = {f"s{s}": list(range(3)) for s in range(40)}
    expected["s0"].append(3)
    assert _seqs(transport.records) == expected
    assert (stats.sent, stats.failed) == (121, 0)
    assert stats.records == len(transport.records)


def test_records_packed_before_the_count_was_known_go_as_partition_batches() -> None:
    transport = PartitionedTransport(None)
    transport.up = False
    client = Agentwatch(transport=transport, tenant_id="acme", linger_ms=NEVER_MS)
    _emit(client, sessions=6, per_session=2)
    assert client.flush(timeout_s=0.2) is False  # packed per session, waiting
    transport.count, transport.up = 3, True
    assert client.flush(timeout_s=SAFETY_TIMEOUT_S)
    client.close()
    assert all(is_partition_batch(key) for key, _ in transport.records)
    _assert_each_event_on_its_partition(transport.records, 3)
    assert _seqs(transport.records) == {f"s{s}": [0, 1] for s in range(6)}


def test_a_split_record_is_confirmed_only_once_all_its_parts_are() -> None:
    transport = ReportingPartitionedTransport(1)
    transport.up = False
    client = Agentwatch(transport=transport, linger_ms=NEVER_MS)
    _emit(client, sessions=40, per_session=1)
    assert client.flush(timeout_s=0.2) is False  # one record, packed for 1 partition
    transport.per_poll = 1
    transport.count, transport.up = 4, True  # sent as 4 records, confirmed one per poll
    deadline = time.monotonic() + SAFETY_TIMEOUT_S
    seen_sent = set()
    while (sent := client.stats.sent) < 40:
        seen_sent.add(sent)
        assert time.monotonic() < deadline
        time.sleep(0.001)
    assert seen_sent <= {0}  # never part of the record: all 40 at once
    assert client.flush(timeout_s=SAFETY_TIMEOUT_S)
    assert client.stats.records == 4
    client.close()


def test_a_refused_part_fails_its_whole_record_and_the_rest_goes_on() -> None:
    transport = ReportingPartitionedTransport(1)
    transport.up = False
    client = Agentwatch(transport=transport, linger_ms=NEVER_MS)
    _emit(client, sessions=40, per_session=1)  # one record, packed for 1 partition
    assert client.flush(timeout_s=0.2) is False
    transport.refuse = lambda record: record[0] == partition_batch_key(1)
    transport.count, transport.up = 4, True  # split in 4: the part on partition 1 refused
    assert client.flush(timeout_s=SAFETY_TIMEOUT_S) is False  # events failed
    transport.refuse = lambda _: False
    client.emit({"kind": "custom", "session_id": "s1", "attributes": {"i": 1}})
    assert client.flush(timeout_s=SAFETY_TIMEOUT_S)
    stats = client.stats
    client.close()
    assert (stats.sent, stats.failed) == (1, 40)


# -- the spool: records written by an earlier run ---------------------------------------------


def test_spooled_batches_are_placed_again_when_the_count_changed(tmp_path: Path) -> None:
    down = PartitionedTransport(2)
    down.up = False
    client = Agentwatch(transport=down, spool_dir=tmp_path, linger_ms=NEVER_MS)
    _emit(client, sessions=30, per_session=2)
    client.close(timeout_s=1)
    assert client.stats.buffered == 60  # kept in the spool, in partition batches of 2

    up = PartitionedTransport(6)
    later = Agentwatch(transport=up, spool_dir=tmp_path, linger_ms=NEVER_MS)
    assert later.stats.recovered == 60
    assert later.flush(timeout_s=SAFETY_TIMEOUT_S)
    later.close()
    _assert_each_event_on_its_partition(up.records, 6)
    assert _seqs(up.records) == {f"s{s}": [0, 1] for s in range(30)}


def test_spooled_batches_of_the_same_count_are_sent_as_they_were(tmp_path: Path) -> None:
    down = PartitionedTransport(3)
    down.up = False
    client = Agentwatch(transport=down, spool_dir=tmp_path, linger_ms=NEVER_MS)
    _emit(client, sessions=30, per_session=2)
    client.close(timeout_s=1)
    spooled = [(r.key, r.value) for r in _read_spool(tmp_path)]

    up = PartitionedTransport(3)
    later = Agentwatch(transport=up, spool_dir=tmp_path, linger_ms=NEVER_MS)
    assert later.flush(timeout_s=SAFETY_TIMEOUT_S)
    later.close()
    assert up.records == spooled


def test_one_session_records_of_an_older_spool_go_as_partition_batches(
    tmp_path: Path,
) -> None:
    spool = DiskSpool(tmp_path)  # as the producer wrote it before partition batches
    spool.append([PackedRecord(b"acme/s%d" % s, _array("acme", f"s{s}", 2), 2)
                  for s in range(8)])
    spool.close()
    transport = PartitionedTransport(4)
    client = Agentwatch(transport=transport, spool_dir=tmp_path, linger_ms=NEVER_MS)
    assert client.flush(timeout_s=SAFETY_TIMEOUT_S)
    client.close()
    _assert_each_event_on_its_partition(transport.records, 4)
    assert len(_events(transport.records)) == 16


def _array(tenant_id: str, session_id: str, count: int) -> bytes:
    return orjson.dumps([{"event_id": f"00000000-0000-4000-8000-{i:012d}",
                          "ts": "2026-11-20T09:00:00.000000Z", "agent_id": "a",
                          "kind": "custom", "tenant_id": tenant_id, "session_id": session_id}
                         for i in range(count)])


def _read_spool(directory: Path) -> list[PackedRecord]:
    spool = DiskSpool(directory)
    try:
        return spool.take_unsent(1_000_000)
    finally:
        spool.close()
