"""The producer rides out a broker restart: nothing that fit in its buffer is lost."""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict

import orjson
import pytest
from kafka_broker import KafkaBroker, KafkaUnavailable, start_broker
from test_producer_kafka import _consume_all
from worker_harness import create_topic

from agentwatch.producer import Agentwatch

RATE_PER_S = 400
SESSIONS = 8


@pytest.fixture
def own_broker() -> KafkaBroker:
    """A broker of this test's own: it is stopped and started again mid-test."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip():
        pytest.skip("restarts a broker it starts itself (KAFKA_BOOTSTRAP_SERVERS is set)")
    try:
        broker = start_broker()
    except KafkaUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"no Kafka broker: {exc.reason}", pytrace=False)
        pytest.skip(f"no Kafka broker: {exc.reason}")
    yield broker  # type: ignore[misc]
    broker.stop()


def test_a_broker_down_for_10_s_mid_stream_loses_nothing(
    own_broker: KafkaBroker, topic_name: str
) -> None:
    bootstrap = own_broker.bootstrap_servers
    create_topic(bootstrap, topic_name, 4)
    stop = threading.Event()
    emitted = 0
    client = Agentwatch(bootstrap_servers=bootstrap, topic=topic_name, linger_ms=20,
                        queue_size=20_000)

    def agent() -> None:
        nonlocal emitted
        while not stop.is_set():
            client.emit({"kind": "agent_step", "session_id": f"s{emitted % SESSIONS}",
                         "attributes": {"seq": emitted}})
            emitted += 1
            time.sleep(1 / RATE_PER_S)

    thread = threading.Thread(target=agent)
    thread.start()
    try:
        time.sleep(3)
        own_broker.restart(down_s=10)  # ~4,000 events are emitted while it is down
        time.sleep(3)
    finally:
        stop.set()
        thread.join()
    assert client.flush(timeout_s=60)
    stats = client.stats
    client.close(timeout_s=10)
    assert stats.dropped == stats.failed == 0
    assert stats.sent == emitted

    records = _consume_all(bootstrap, topic_name, emitted)
    seqs: dict[str, list[int]] = defaultdict(list)
    for _, _, value in records:
        for event in orjson.loads(value):
            seqs[event["session_id"]].append(event["attributes"]["seq"])
    got = sorted(s for per_session in seqs.values() for s in per_session)
    assert got == list(range(emitted))  # every event once: none lost, none doubled
    for per_session in seqs.values():
        assert per_session == sorted(per_session)  # and in order per session
