"""Delivery: records stay buffered until confirmed, are re-sent in order after a failure,
and the buffer's bound turns a long outage into counted drops, never into blocking."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import orjson
import pytest

from agentwatch.producer import Agentwatch, Record
from agentwatch.producer._outbox import MemoryOutbox
from agentwatch.producer.packing import PackedRecord
from agentwatch.schemas import ConfigError

SAFETY_TIMEOUT_S = 30.0  # a test that goes wrong must fail, not hang
Verdict = Literal["ok", "wait", "retry", "reject"]


def wait_until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + SAFETY_TIMEOUT_S
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def events_of(records: Sequence[Record]) -> list[dict[str, object]]:
    return [event for _, value in records for event in orjson.loads(value)]


class SwitchTransport:
    """A plain transport (accepted = delivered) whose broker can be down."""

    def __init__(self) -> None:
        self.up = False
        self.calls = 0
        self.records: list[Record] = []

    def send(self, records: Sequence[Record]) -> None:
        self.calls += 1
        if not self.up:
            raise ConnectionError("broker down")
        self.records.extend(records)

    def flush(self, timeout_s: float) -> bool:
        return True

    def close(self) -> None:
        pass


class ReportingTransport:
    """A transport that delivers asynchronously: ``verdict(record, attempt)`` decides what
    ``poll_deliveries`` reports for each record it tracks, in send order."""

    def __init__(self, verdict: Callable[[Record, int], Verdict]) -> None:
        self.verdict = verdict
        self.sent: list[Record] = []  # every record handed to send(), re-sends included
        self.delivered: list[Record] = []
        self.attempts: dict[Record, int] = {}
        self._tracking: list[Record] = []
        self.lock = threading.Lock()

    def send(self, records: Sequence[Record]) -> None:
        with self.lock:
            self.sent.extend(records)
            self._tracking.extend(records)

    def poll_deliveries(self) -> tuple[int, Literal["retry", "reject"] | None]:
        with self.lock:
            done = 0
            while self._tracking:
                record = self._tracking[0]
                attempt = self.attempts.get(record, 0)
                verdict = self.verdict(record, attempt)
                if verdict == "wait":
                    break
                self.attempts[record] = attempt + 1
                if verdict == "retry":
                    self._tracking.clear()
                    return done, "retry"
                self._tracking.pop(0)
                if verdict == "reject":
                    return done, "reject"
                self.delivered.append(record)
                done += 1
            return done, None

    def flush(self, timeout_s: float) -> bool:
        return True

    def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTWATCH_RETRY_BACKOFF_MS", "1")


def test_unreachable_at_start_buffers_then_delivers_in_order_when_it_comes_back() -> None:
    transport = SwitchTransport()
    client = Agentwatch(transport=transport, queue_size=10, linger_ms=0, max_batch_events=1)
    for i in range(10):
        client.emit({"kind": "custom", "session_id": "s", "attributes": {"i": i}})
    wait_until(lambda: client.stats.buffered == 10)  # the outbox is full, the queue empty
    for i in range(10, 25):
        client.emit({"kind": "custom", "session_id": "s", "attributes": {"i": i}})
    stats = client.stats
    assert (stats.buffered, stats.queue_depth, stats.dropped, stats.sent) == (10, 10, 5, 0)
    assert transport.calls >= 1
    assert stats.retries >= 1
    transport.up = True
    assert client.flush(timeout_s=SAFETY_TIMEOUT_S)
    received = [e["attributes"]["i"] for e in events_of(transport.records)]  # type: ignore[index]
    assert received == list(range(20))  # the oldest are kept: a gap-free prefix
    stats = client.stats
    assert (stats.sent, stats.dropped, stats.failed, stats.buffered) == (20, 5, 0, 0)
    client.close()


def test_a_failed_delivery_resends_everything_unconfirmed_in_order() -> None:
    def fail_second_record_once(record: Record, attempt: int) -> Verdict:
        return "retry" if b'"i":1}' in record[1] and attempt == 0 else "ok"

    transport = ReportingTransport(fail_second_record_once)
    client = Agentwatch(transport=transport, linger_ms=0, max_batch_events=1)
    for i in range(4):
        client.emit({"kind": "custom", "session_id": "s", "attributes": {"i": i}})
    assert client.flush(timeout_s=SAFETY_TIMEOUT_S)
    delivered = [e["attributes"]["i"] for e in events_of(transport.delivered)]  # type: ignore[index]
    assert delivered == [0, 1, 2, 3]
    sent = [e["attributes"]["i"] for e in events_of(transport.sent)]  # type: ignore[index]
    first_retry = sent.index(1, 2)  # the second 1: what followed the failure, sent again
    assert sent[first_retry:] == [1, 2, 3]
    assert (client.stats.sent, client.stats.retries, client.stats.failed) == (4, 1, 0)
    client.close()


def test_a_rejected_record_is_counted_failed_and_does_not_block_the_rest() -> None:
    transport = ReportingTransport(
        lambda record, _: "reject" if b'"i":2}' in record[1] else "ok"
    )
    client = Agentwatch(transport=transport, linger_ms=0, max_batch_events=1)
    for i in range(5):
        client.emit({"kind": "custom", "session_id": "s", "attributes": {"i": i}})
    assert client.flush(timeout_s=SAFETY_TIMEOUT_S) is False  # one event failed
    delivered = [e["attributes"]["i"] for e in events_of(transport.delivered)]  # type: ignore[index]
    assert delivered == [0, 1, 3, 4]
    assert (client.stats.sent, client.stats.failed, client.stats.retries) == (4, 1, 0)
    client.close()


def test_flush_waits_for_confirmation_not_just_for_the_hand_off() -> None:
    release = threading.Event()
    transport = ReportingTransport(lambda record, _: "ok" if release.is_set() else "wait")
    client = Agentwatch(transport=transport, linger_ms=0)
    client.emit({"kind": "custom"})
    assert client.flush(timeout_s=0.2) is False
    assert len(transport.sent) == 1
    assert client.stats.sent == 0
    release.set()
    assert client.flush(timeout_s=SAFETY_TIMEOUT_S)
    assert client.stats.sent == 1
    client.close()


@pytest.mark.parametrize("seed", range(5))
def test_random_failures_lose_nothing_and_keep_each_sessions_order(seed: int) -> None:
    rng = random.Random(seed)
    lock = threading.Lock()

    def flaky(record: Record, attempt: int) -> Verdict:
        with lock:
            roll = rng.random()
        return "retry" if roll < 0.2 and attempt < 3 else "wait" if roll < 0.3 else "ok"

    transport = ReportingTransport(flaky)
    client = Agentwatch(transport=transport, linger_ms=1, max_batch_events=7)
    for i in range(600):
        client.emit({"kind": "custom", "session_id": f"s{i % 9}", "attributes": {"i": i}})
    assert client.flush(timeout_s=SAFETY_TIMEOUT_S)
    seen: set[object] = set()
    per_session: dict[object, list[int]] = {}
    for event in events_of(transport.delivered):
        if event["event_id"] in seen:  # a re-sent record: later stages drop it on event_id
            continue
        seen.add(event["event_id"])
        per_session.setdefault(event["session_id"], []).append(event["attributes"]["i"])  # type: ignore[index]
    assert sum(len(v) for v in per_session.values()) == 600
    for session, numbers in per_session.items():
        assert numbers == sorted(numbers), session
    assert client.stats.sent == 600
    client.close()


def test_memory_outbox_rewind_keeps_order_and_counts() -> None:
    outbox = MemoryOutbox(capacity_events=10)
    records = [PackedRecord(b"k", f"[{i}]".encode(), 2) for i in range(4)]
    outbox.append(records)
    assert (outbox.events, outbox.room_events(100)) == (8, 2)
    assert outbox.take_unsent(3) == records[:3]
    assert outbox.acknowledge(1) == 2
    outbox.rewind()
    assert (outbox.in_flight, outbox.unsent, outbox.events) == (0, 3, 6)
    assert outbox.take_unsent(10) == records[1:]


# -- the disk spool, through the client ------------------------------------------------------


def test_close_during_an_outage_keeps_events_in_the_spool_for_the_next_client(
    tmp_path: Path,
) -> None:
    down = SwitchTransport()
    client = Agentwatch(transport=down, spool_dir=tmp_path / "spool", linger_ms=5)
    for i in range(30):
        client.emit({"kind": "custom", "session_id": f"s{i % 3}", "attributes": {"i": i}})
    client.close(timeout_s=2)
    stats = client.stats
    assert (stats.sent, stats.failed, stats.buffered) == (0, 0, 30)  # kept, not lost

    up = SwitchTransport()
    up.up = True
    later = Agentwatch(transport=up, spool_dir=tmp_path / "spool", linger_ms=5)
    assert later.stats.recovered == 30
    later.emit({"kind": "custom", "session_id": "s0", "attributes": {"i": 30}})
    assert later.flush(timeout_s=SAFETY_TIMEOUT_S)
    stats = later.stats
    assert (stats.emitted, stats.recovered, stats.sent, stats.buffered) == (1, 30, 31, 0)
    per_session: dict[object, list[int]] = {}
    for event in events_of(up.records):
        per_session.setdefault(event["session_id"], []).append(event["attributes"]["i"])  # type: ignore[index]
    assert per_session == {f"s{s}": list(range(s, 30, 3)) + ([30] if s == 0 else [])
                           for s in range(3)}  # the old ones first, in order
    later.close()


def test_a_spool_in_use_by_another_client_is_a_config_error(tmp_path: Path) -> None:
    first = Agentwatch(transport=SwitchTransport(), spool_dir=tmp_path)
    with pytest.raises(ConfigError, match="spool_dir"):
        Agentwatch(transport=SwitchTransport(), spool_dir=tmp_path)
    first.close(timeout_s=0.1)
    Agentwatch(transport=SwitchTransport(), spool_dir=tmp_path).close(timeout_s=0.1)
