"""The producer rides out Kafka outages: a broker down at start, down for 10 s, down for
longer than aiokafka's own request timeout, and an agent killed while it is down (disk
spool). Nothing that fit in the buffer is lost; re-sent records may arrive twice and are
told apart by ``event_id`` (what the worker and the sinks deduplicate on)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from kafka_broker import KafkaBroker
from test_producer_kafka import _consume_all
from worker_harness import create_topic

from agentwatch.producer import Agentwatch
from agentwatch.schemas import partition_batch_key, partition_for, session_key

RATE_PER_S = 400
SESSIONS = 8


def _emit_through_a_restart(client: Agentwatch, broker: KafkaBroker, *, around_s: float,
                            down_s: float) -> int:
    """An agent thread emits ``RATE_PER_S`` events/s (``seq`` numbered, over ``SESSIONS``
    sessions) for ``around_s``, through a broker restart of ``down_s``, and ``around_s``
    more; returns how many it emitted."""
    stop = threading.Event()
    emitted = 0

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
        time.sleep(around_s)
        broker.restart(down_s=down_s)
        time.sleep(around_s)
    finally:
        stop.set()
        thread.join()
    return emitted


def test_a_broker_down_for_10_s_mid_stream_loses_nothing(
    own_broker: KafkaBroker, topic_name: str
) -> None:
    bootstrap = own_broker.bootstrap_servers
    create_topic(bootstrap, topic_name, 4)
    client = Agentwatch(bootstrap_servers=bootstrap, topic=topic_name, linger_ms=20,
                        queue_size=20_000)
    # ~4,000 events are emitted while it is down
    emitted = _emit_through_a_restart(client, own_broker, around_s=3, down_s=10)
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


def _consume_unique(bootstrap: str, topic: str, expected: int) -> tuple[list[dict[str, Any]], int]:
    """Read ``topic`` until ``expected`` distinct event ids were seen (60 s at most): the
    events in log order with re-sent copies left out, and how many copies there were."""

    async def go() -> tuple[list[dict[str, Any]], int]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                    auto_offset_reset="earliest")
        await consumer.start()
        seen: set[str] = set()
        events: list[dict[str, Any]] = []
        copies = 0
        try:
            deadline = asyncio.get_running_loop().time() + 60
            while len(seen) < expected and asyncio.get_running_loop().time() < deadline:
                for messages in (await consumer.getmany(timeout_ms=200)).values():
                    for message in messages:
                        assert message.value is not None
                        for event in orjson.loads(message.value):
                            if event["event_id"] in seen:
                                copies += 1
                                continue
                            seen.add(event["event_id"])
                            events.append(event)
        finally:
            await consumer.stop()
        return events, copies

    return asyncio.run(go())


def _assert_complete_and_ordered(events: list[dict[str, Any]], emitted: int) -> None:
    seqs: dict[str, list[int]] = defaultdict(list)
    for event in events:
        seqs[event["session_id"]].append(event["attributes"]["seq"])
    assert sorted(s for per_session in seqs.values() for s in per_session) == list(range(emitted))
    for per_session in seqs.values():
        assert per_session == sorted(per_session)  # in order per session


def test_kafka_down_at_start_buffers_then_delivers_compressed(
    own_broker: KafkaBroker, topic_name: str
) -> None:
    bootstrap = own_broker.bootstrap_servers
    create_topic(bootstrap, topic_name, 4)
    own_broker.pause()
    client = Agentwatch(bootstrap_servers=bootstrap, topic=topic_name, linger_ms=20,
                        queue_size=5_000)
    for seq in range(1_500):
        client.emit({"kind": "agent_step", "session_id": f"s{seq % SESSIONS}",
                     "attributes": {"seq": seq}})
    assert client.flush(timeout_s=3) is False  # nowhere to go yet
    stats = client.stats
    assert (stats.sent, stats.dropped, stats.failed) == (0, 0, 0)
    assert stats.retries >= 1
    assert stats.buffered + stats.queue_depth == 1_500
    own_broker.resume()
    assert client.flush(timeout_s=60)
    stats = client.stats
    client.close(timeout_s=10)
    assert (stats.sent, stats.dropped, stats.failed) == (1_500, 0, 0)
    events, _ = _consume_unique(bootstrap, topic_name, 1_500)
    _assert_complete_and_ordered(events, 1_500)
    assert own_broker.log_codecs(topic_name) == {"zstd"}  # compression="auto" picked zstd


def test_an_outage_longer_than_the_request_timeout_loses_nothing(
    own_broker: KafkaBroker, topic_name: str
) -> None:
    """aiokafka expires what it cannot place after request_timeout_ms (3 s here); the client
    sends it all again once the broker is back."""
    bootstrap = own_broker.bootstrap_servers
    create_topic(bootstrap, topic_name, 4)
    client = Agentwatch(bootstrap_servers=bootstrap, topic=topic_name, linger_ms=20,
                        queue_size=20_000, kafka_options={"request_timeout_ms": 3_000})
    emitted = _emit_through_a_restart(client, own_broker, around_s=2, down_s=10)
    assert client.flush(timeout_s=60)
    stats = client.stats
    client.close(timeout_s=10)
    assert (stats.sent, stats.dropped, stats.failed) == (emitted, 0, 0)
    assert stats.retries >= 1  # the expiry really happened and was retried
    events, copies = _consume_unique(bootstrap, topic_name, emitted)
    _assert_complete_and_ordered(events, emitted)
    print(f"outage > request timeout: {emitted} events, {copies} re-sent copies")


_KILLED_AGENT = textwrap.dedent("""
    import os, signal, sys
    from agentwatch.producer import Agentwatch
    bootstrap, topic, spool = sys.argv[1:4]
    client = Agentwatch(bootstrap_servers=bootstrap, topic=topic, spool_dir=spool, linger_ms=20)
    for seq in range(600):
        client.emit({"kind": "agent_step", "session_id": f"s{seq % 8}",
                     "attributes": {"seq": seq}})
    client.flush(timeout_s=1)  # closes the open records: into the spool (Kafka is down)
    print(client.stats.buffered, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no close(), no atexit: a crash
""")


def test_the_spool_keeps_events_of_an_agent_killed_while_kafka_is_down(
    own_broker: KafkaBroker, topic_name: str, tmp_path: Path
) -> None:
    bootstrap = own_broker.bootstrap_servers
    create_topic(bootstrap, topic_name, 4)
    own_broker.pause()
    spool = tmp_path / "spool"
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_AGENT, bootstrap, topic_name, str(spool)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert done.stdout.strip() == "600"  # all of it was in the spool when it died
    own_broker.resume()
    client = Agentwatch(bootstrap_servers=bootstrap, topic=topic_name, spool_dir=spool)
    assert client.stats.recovered == 600
    assert client.flush(timeout_s=60)
    stats = client.stats
    client.close(timeout_s=10)
    assert (stats.sent, stats.buffered, stats.failed) == (600, 0, 0)
    events, copies = _consume_unique(bootstrap, topic_name, 600)
    _assert_complete_and_ordered(events, 600)
    assert copies == 0  # nothing had reached Kafka before the crash


def test_a_spool_written_while_kafka_was_down_is_delivered_as_partition_batches(
    own_broker: KafkaBroker, topic_name: str, tmp_path: Path
) -> None:
    """Never connected, the client packed per session (no partition count yet) into the
    spool; the next client sends those records as partition batches, each on the
    partition that owns its sessions."""
    bootstrap = own_broker.bootstrap_servers
    create_topic(bootstrap, topic_name, 4)
    own_broker.pause()
    spool = tmp_path / "spool"
    client = Agentwatch(bootstrap_servers=bootstrap, topic=topic_name, spool_dir=spool,
                        linger_ms=20)
    for seq in range(400):
        client.emit({"kind": "agent_step", "session_id": f"s{seq % 40}",
                     "attributes": {"seq": seq}})
    client.close(timeout_s=3)
    assert client.stats.buffered == 400  # kept in the spool
    own_broker.resume()
    later = Agentwatch(bootstrap_servers=bootstrap, topic=topic_name, spool_dir=spool)
    assert later.flush(timeout_s=60)
    later.close(timeout_s=10)
    records = _consume_all(bootstrap, topic_name, 400)
    events = []
    for key, partition, value in records:
        assert key == partition_batch_key(partition)
        batch = orjson.loads(value)
        assert {partition_for(session_key(e["tenant_id"], e["session_id"]), 4)
                for e in batch} == {partition}
        events += batch
    _assert_complete_and_ordered(events, 400)
