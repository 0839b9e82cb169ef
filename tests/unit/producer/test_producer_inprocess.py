from __future__ import annotations

import threading

import pytest

from agentwatch.producer import InProcessLog, InProcessTransport
from agentwatch.schemas import TransportError


def test_append_returns_the_first_offset_and_read_returns_offsets() -> None:
    log = InProcessLog()
    assert log.append("t", [(b"k1", b"v1"), (b"k2", b"v2")]) == 0
    assert log.append("t", [(b"k3", b"v3")]) == 2
    assert log.read("t", 1, 10) == [(1, b"k2", b"v2"), (2, b"k3", b"v3")]


def test_read_respects_max_records() -> None:
    log = InProcessLog()
    log.append("t", [(b"k", str(i).encode()) for i in range(5)])
    assert [offset for offset, _, _ in log.read("t", 0, 2)] == [0, 1]


def test_read_past_the_end_and_unknown_topic_are_empty() -> None:
    log = InProcessLog()
    log.append("t", [(b"k", b"v")])
    assert log.read("t", 5, 10) == []
    assert log.read("other", 0, 10) == []


def test_negative_offset_is_refused() -> None:
    with pytest.raises(ValueError, match="offset"):
        InProcessLog().read("t", -1, 10)


def test_topics_are_separate_logs() -> None:
    log = InProcessLog()
    log.append("a", [(b"k", b"1")])
    log.append("b", [(b"k", b"2"), (b"k", b"3")])
    assert (log.end_offset("a"), log.end_offset("b"), log.end_offset("c")) == (1, 2, 0)
    assert log.topics() == ["a", "b"]


def test_wait_returns_true_at_once_when_the_record_exists() -> None:
    log = InProcessLog()
    log.append("t", [(b"k", b"v")])
    assert log.wait("t", 0, timeout_s=0)


def test_wait_times_out_false_when_nothing_arrives() -> None:
    assert not InProcessLog().wait("t", 0, timeout_s=0.01)


def test_wait_wakes_when_another_thread_appends() -> None:
    log = InProcessLog()
    waiting = threading.Event()
    result: list[bool] = []

    def waiter() -> None:
        waiting.set()
        result.append(log.wait("t", 0, timeout_s=30))

    thread = threading.Thread(target=waiter)
    thread.start()
    waiting.wait(30)
    log.append("t", [(b"k", b"v")])
    thread.join(30)
    assert result == [True]


def test_close_wakes_waiters_with_false_and_refuses_appends() -> None:
    log = InProcessLog()
    log.close()
    assert not log.wait("t", 0, timeout_s=30)
    with pytest.raises(TransportError):
        log.append("t", [(b"k", b"v")])


def test_transport_appends_records_to_its_topic() -> None:
    log = InProcessLog()
    transport = InProcessTransport(log, "events")
    transport.send([(b"k", b"v")])
    assert transport.flush(1.0)
    assert log.read("events", 0, 10) == [(0, b"k", b"v")]


def test_transport_refuses_sends_after_close() -> None:
    transport = InProcessTransport(InProcessLog(), "events")
    transport.close()
    with pytest.raises(TransportError):
        transport.send([(b"k", b"v")])


def test_concurrent_appends_lose_nothing() -> None:
    log = InProcessLog()

    def writer(n: int) -> None:
        for i in range(200):
            log.append("t", [(str(n).encode(), str(i).encode())])

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    records = log.read("t", 0, 10_000)
    assert len(records) == 800
    for n in range(4):
        mine = [int(v) for _, k, v in records if k == str(n).encode()]
        assert mine == list(range(200))
