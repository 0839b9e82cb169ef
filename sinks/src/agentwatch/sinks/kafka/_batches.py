"""Exact batches from Kafka: the pure part of ``agentwatch sink`` (no I/O).

One batch covers a contiguous offset range ``[start, last]`` of **one** input
partition. Its ClickHouse inserts carry ``insert_deduplication_token =
"<group>/<topic>/<partition>/<start>-<last>:<table>"``. The protocol per batch:

1. commit offset ``start`` (where the partition already stands) with the metadata
   ``agentwatch-sink/1 pending <last>``: an *intent*, stored by Kafka with the offset;
2. insert the batch's rows (events, dead letters; or alerts), each insert with its token;
3. commit ``last + 1`` with empty metadata.

After a crash (or a rebalance) anywhere in between, whoever owns the partition next
reads the committed offset **with its metadata**. An intent says the batch
``[start, last]`` may already be in ClickHouse: the next batch is cut at exactly
``last``, so it holds the same rows and carries the same token, and ClickHouse
drops whatever part of it was already stored. Without the intent a restarted sink
could cut the range elsewhere (batches close on size *or* time) and store the
overlap twice.

Why one partition per batch: after a rebalance the partitions of a crashed batch
can belong to different sinks, and each must be able to re-form its own share
with its own token. One insert per partition per round is cheap next to the
batch sizes used (up to ``batch_max_events``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

from pydantic import ValidationError

from agentwatch.schemas import (
    Alert,
    Event,
    PriceTable,
    Rejected,
    decode_record,
    describe_validation_error,
)
from agentwatch.sinks._rows import DeadLetter, dead_letters_from_rejected

__all__ = [
    "INTENT_PREFIX",
    "PartitionBatch",
    "RecentIds",
    "batch_token",
    "intent_metadata",
    "parse_intent",
]

INTENT_PREFIX: Final = "agentwatch-sink/1 pending "


def intent_metadata(last: int) -> str:
    """The commit metadata that says "the batch up to ``last`` may be stored"."""
    return f"{INTENT_PREFIX}{last}"


def parse_intent(metadata: str | None) -> int | None:
    """The ``last`` offset of a pending batch, or None (no intent, or someone else's
    metadata: the group may have been used by another tool)."""
    if not metadata or not metadata.startswith(INTENT_PREFIX):
        return None
    text = metadata[len(INTENT_PREFIX) :]
    return int(text) if text.isdigit() else None


def batch_token(group: str, topic: str, partition: int, start: int, last: int) -> str:
    """The dedup token prefix of a batch (the sink appends ``:<table>``)."""
    return f"{group}/{topic}/{partition}/{start}-{last}"


class RecentIds:
    """The last ``capacity`` event ids of one partition, to drop events a producer sent
    twice (a re-send after a lost acknowledgement lands on the same partition, soon
    after the first copy). Oldest ids are forgotten first."""

    __slots__ = ("_capacity", "_ids")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def seen(self, event_id: str) -> bool:
        """True when ``event_id`` was seen (recently); otherwise remember it."""
        ids = self._ids
        if event_id in ids:
            return True
        ids[event_id] = None
        if len(ids) > self._capacity:
            ids.popitem(last=False)
        return False


@dataclass(slots=True)
class PartitionBatch:
    """What the sink holds for one partition between two commits."""

    topic: str
    partition: int
    is_alerts: bool
    start: int | None = None
    """The committed position: the batch covers offsets from here. None until known
    (no commit yet: the first record read sets it)."""
    cut_at: int | None = None
    """From an intent: the batch must end at exactly this offset."""
    last: int | None = None
    events: list[Event] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    duplicates: int = 0
    opened_at: float | None = None  # monotonic time of the first record
    intent_committed: bool = False

    @property
    def empty(self) -> bool:
        return self.last is None

    @property
    def rows(self) -> int:
        return len(self.events) + len(self.alerts) + len(self.dead_letters)

    @property
    def must_flush(self) -> bool:
        """A batch re-formed from an intent is complete: flush it before reading on."""
        return self.cut_at is not None and self.last is not None and self.last >= self.cut_at

    def token(self, group: str) -> str:
        if self.start is None or self.last is None:
            raise ValueError("an empty batch has no token")
        return batch_token(group, self.topic, self.partition, self.start, self.last)

    def accepts(self, offset: int) -> bool:
        """False when ``offset`` belongs to the next batch (past an intent's cut)."""
        return self.cut_at is None or offset <= self.cut_at

    def add(
        self,
        offset: int,
        value: bytes | None,
        recent: RecentIds | None,
        prices: PriceTable | None = None,
    ) -> None:
        """Decode one record into rows; bad input becomes dead letters. With ``prices``,
        an event without ``cost_usd`` is priced as the detection core prices it, so the
        stored cost is the cost the alert rules saw."""
        if self.start is None:
            self.start = offset
        if self.opened_at is None:
            self.opened_at = time.monotonic()
        self.last = offset
        source = f"{self.topic}/{self.partition}/{offset}"
        if value is None:
            self.dead_letters.append(DeadLetter(source, "record has no value", b""))
            return
        if self.is_alerts:
            self._add_alert(source, value)
            return
        decoded = decode_record(value)
        if decoded.rejected:
            self.dead_letters.extend(dead_letters_from_rejected(decoded.rejected, source))
        for event in decoded.events:
            if recent is not None and recent.seen(event.event_id):
                self.duplicates += 1
                continue
            if prices is not None and event.cost_usd is None:
                prices.fill_cost(event)
            self.events.append(event)

    def _add_alert(self, source: str, value: bytes) -> None:
        try:
            self.alerts.append(Alert.model_validate_json(value))
        except ValidationError as exc:
            reason = describe_validation_error(exc)
            self.dead_letters.extend(dead_letters_from_rejected([Rejected(value, reason)], source))

    def committed(self) -> None:
        """The batch is stored and its end committed: start the next one after it."""
        if self.last is not None:
            self.start = self.last + 1
        self.cut_at = None
        self.last = None
        self.events = []
        self.alerts = []
        self.dead_letters = []
        self.duplicates = 0
        self.opened_at = None
        self.intent_committed = False
