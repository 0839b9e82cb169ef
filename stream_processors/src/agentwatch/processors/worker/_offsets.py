"""Every record of an input partition reaches its stage, in offset order: none is skipped.

faust-streaming 0.15 can skip records after a rebalance. Its recovery resumes the stream
partitions, then seeks them to their committed offsets; records fetched in between go
into the stream's queue and move faust's read offset, the seek then resets that offset,
and resuming the flow clears the queue: the run of records that was in the queue is
never delivered again, the fetcher goes on after it, and faust records the jump as an
"ack gap" that its commit steps over (faust-streaming #216, #221). Seen in the worker's
crash tests: partition 0 delivered offsets 122..126 and then 144..: records 127..143
never reached the stage and their offsets were committed; one agent window missed an
event (the inexact recovery of issue 15).

So the worker checks for itself. :class:`OffsetGuard` knows the next offset each
partition's stage needs; a record past it is a *hole*. A hole is either real (no record
there on the broker: transaction markers of a transactional producer, or the start of a
log trimmed by retention) or a delivery that went missing. :class:`HoleProbe`
asks the broker which; a missing delivery is read again (the shell seeks back), and the
records that came after the hole are dropped until the expected one arrives: none is
processed or acknowledged, so no offset is committed past a record not processed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

__all__ = ["HoleProbe", "OffsetGuard"]


class OffsetGuard:
    """Per partition of one topic: the next offset its stage must see (pure)."""

    __slots__ = ("_awaiting", "_next")

    def __init__(self) -> None:
        self._next: dict[int, int] = {}
        #: partition -> monotonic time of the seek back that should deliver ``_next``
        self._awaiting: dict[int, float] = {}

    def known(self, partition: int) -> bool:
        return partition in self._next

    def start(self, partition: int, next_offset: int) -> None:
        """The stage of ``partition`` has everything below ``next_offset``."""
        self._next[partition] = next_offset
        self._awaiting.pop(partition, None)

    def next_offset(self, partition: int) -> int:
        return self._next[partition]

    def forget(self) -> None:
        """After a rebalance: every partition starts again from its stage's state."""
        self._next.clear()
        self._awaiting.clear()

    def admit(self, partition: int, offsets: Sequence[int]) -> tuple[list[int], int | None]:
        """Which of these offsets (arrival order) the stage may process, by index, and
        the index of the first record past a hole (``None``: no hole). Offsets below the
        next one are records read again (the stages skip what their state has); past a
        hole, nothing is admitted. While a seek back is awaited, the records past the
        awaited offset are dropped without a new hole (they were read before the seek
        and come again after it)."""
        expected = self._next[partition]
        waiting = partition in self._awaiting
        kept: list[int] = []
        for index, offset in enumerate(offsets):
            if offset > expected:
                if waiting:
                    continue
                self._next[partition] = expected
                return kept, index
            if offset == expected:
                expected += 1
                if waiting:
                    del self._awaiting[partition]
                    waiting = False
            kept.append(index)
        self._next[partition] = expected
        return kept, None

    def skip_to(self, partition: int, offset: int) -> None:
        """The broker has no record between the next offset and ``offset`` (a real hole)."""
        self._next[partition] = offset
        self._awaiting.pop(partition, None)

    def sought_back(self, partition: int, now_s: float | None = None) -> None:
        """The partition was sought back to its next offset: drop what comes past it."""
        self._awaiting[partition] = time.monotonic() if now_s is None else now_s

    def awaiting(self, partition: int) -> bool:
        return partition in self._awaiting

    def overdue(self, after_s: float, now_s: float | None = None) -> list[tuple[int, int]]:
        """(partition, next offset) of seeks back whose record has not come for
        ``after_s``: seek again (a read before the seek may have moved faust's read
        offset past it, and faust then drops the record as already read)."""
        now = time.monotonic() if now_s is None else now_s
        return [(p, self._next[p]) for p, since in self._awaiting.items() if now - since >= after_s]


class HoleProbe:
    """The broker's word on a hole: which offset comes first at or after a given one. A
    consumer of its own (no group, nothing committed), started on first use and kept: a
    transactional producer leaves a marker offset after every transaction, so a topic it
    writes has a (real) hole per transaction, each asked about once."""

    def __init__(self, bootstrap_servers: str, client_options: dict[str, Any] | None = None,
                 ) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._client_options = client_options or {}  # security (KafkaSecurity.client_options)
        self._consumer: Any = None

    async def first_offset_from(self, topic: str, partition: int, offset: int,
                                timeout_s: float = 10.0) -> int | None:
        """The offset of the first record at or after ``offset`` (below the log start: the
        log start); ``None`` if none came within ``timeout_s``."""
        from aiokafka import TopicPartition  # noqa: PLC0415 (worker runtime only)

        consumer = await self._started()
        tp = TopicPartition(topic, partition)
        if consumer.assignment() != {tp}:
            consumer.assign([tp])
        consumer.seek(tp, offset)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = await consumer.getmany(tp, timeout_ms=500, max_records=1)
            for messages in got.values():
                if messages:
                    return int(messages[0].offset)
        return None

    async def _started(self) -> Any:
        if self._consumer is None:
            from aiokafka import AIOKafkaConsumer  # noqa: PLC0415 (worker runtime only)

            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap_servers, group_id=None,
                enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=50,
                **self._client_options)
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()
