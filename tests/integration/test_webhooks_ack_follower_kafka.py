"""The dispatcher's acks follower on the real broker: it reads the acks topic from its
beginning, and after Kafka comes back its retry delay starts over (it used to keep
growing with every outage of the dispatcher's life)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

from agentwatch.alerts import Ack
from agentwatch.alerts._acks_kafka import AckFollower, write_ack

WAIT_S = 60.0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def test_retry_delay_starts_over_once_the_topic_is_read_again(
    kafka_bootstrap: str, topic_name: str
) -> None:
    topic = f"{topic_name}.acks"
    write_ack(kafka_bootstrap, topic, Ack.now("al-1", "maria", via="cli"))
    got: list[Ack] = []

    async def main() -> tuple[int, int]:
        follower = AckFollower(f"127.0.0.1:{_closed_port()}", topic, got.append)
        stopping = asyncio.Event()
        task = asyncio.create_task(follower.run(stopping))
        try:
            await _until(lambda: follower.errors >= 1, "a failure")
            failures_while_down = follower.backoff.failures
            follower._bootstrap_servers = kafka_bootstrap  # Kafka is reachable again
            await _until(lambda: bool(got), "the ack")
            await asyncio.sleep(0.5)  # a few polls past the end
            return failures_while_down, follower.backoff.failures
        finally:
            stopping.set()
            await task

    failures_while_down, failures_after = asyncio.run(main())
    assert failures_while_down >= 1
    assert failures_after == 0
    assert [(a.alert_id, a.by) for a in got] == [("al-1", "maria")]
