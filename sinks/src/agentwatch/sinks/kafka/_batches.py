"""Exact batches from Kafka: the pure part of ``agentwatch sink`` (no I/O).

One batch covers a contiguous offset range ``[start, last]`` of **one** input
partition. Its ClickHouse inserts carry ``insert_deduplication_token =
"<group>/<topic>/<partition>/<start>-<last>:<table>"``. The protocol per batch:

1. commit offset ``start`` (where the partition already stands) with the metadata
   ``agentwatch-sink/2 pending <last> ids <a> <b>``: an *intent*, stored by Kafka with
   the offset (``ids``: where the recent-id memory starts, see :class:`RecentIds`);
2. insert the batch's rows (events, dead letters; or alerts; or the alert rows and dead
   letters of failed webhook deliveries), each insert with its token;
3. commit ``last + 1`` with the metadata ``agentwatch-sink/2 ids <a> <b>`` (events topics;
   none otherwise).

After a crash (or a rebalance) anywhere in between, whoever owns the partition next
reads the committed offset **with its metadata**. An intent says the batch
``[start, last]`` may already be in ClickHouse: the next batch is cut at exactly
``last``, so it holds the same rows and carries the same token, and ClickHouse
drops whatever part of it was already stored. Without the intent a restarted sink
could cut the range elsewhere (batches close on size *or* time) and store the
overlap twice. The same rows matter as much as the same range: ClickHouse recognises a
token per table partition (a day of ``events``), so a retry holding more rows (say, a
re-sent copy a cold memory did not drop) stores those of another day. Hence a memory
rebuilt from the log (:class:`RecentIds`), never one that starts empty.

Why one partition per batch: after a rebalance the partitions of a crashed batch
can belong to different sinks, and each must be able to re-form its own share
with its own token. One insert per partition per round is cheap next to the
batch sizes used (up to ``batch_max_events``).

What a record becomes depends on the topic's :data:`BatchKind`: ``"events"`` records
(one event or a packed array) become ``events`` rows, ``"alerts"`` records ``alerts``
rows, and ``"alert_failures"`` records (a
:class:`~agentwatch.schemas.DeliveryFailure` from the webhook
dispatcher's dead-letter topic) failures, which the sink contract
(:meth:`~agentwatch.sinks.ClickHouseSink.add_delivery_failures`) stores as an ``alerts``
row with ``delivery_status = 'failed:<endpoint>'`` **and** a ``dead_letters`` row (source
``webhook/<endpoint>``) with the failure's reason. A batch
holds one partition, so of one kind: its ``alerts`` insert is its only one into that
table, and the per-table token stays unique. ``"acks"`` records (the acks topic,
:class:`~agentwatch.alerts.Ack`) become ``alert_acks`` rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from pydantic import ValidationError

from agentwatch.schemas import (
    Ack,
    Alert,
    ControlRecord,
    DeliveryFailure,
    PriceTable,
    Rejected,
    decode_control,
    describe_validation_error,
)
from agentwatch.sinks._rows import DeadLetter, dead_letters_from_rejected
from agentwatch.sinks.kafka._decode import decode_rows

__all__ = [
    "INTENT_PREFIX",
    "BatchKind",
    "CommitMeta",
    "IdSpan",
    "PartitionBatch",
    "RecentIds",
    "batch_token",
    "intent_metadata",
    "memory_metadata",
    "parse_commit",
    "parse_intent",
    "record_event_ids",
]

INTENT_PREFIX: Final = "agentwatch-sink/2 pending "
"""Commit metadata of a pending batch: ``agentwatch-sink/2 pending <last>[ ids <a> <b>]``."""
_MEMORY_PREFIX: Final = "agentwatch-sink/2 ids "
_V1_INTENT_PREFIX: Final = "agentwatch-sink/1 pending "  # sinks before the id memory spans

BatchKind = Literal["events", "alerts", "alert_failures", "control", "acks"]
"""What a topic's records are: events, alerts, failed webhook deliveries, halts and
resumes (the control topic: ``control_log`` rows; its tombstones are skipped), or acks."""

IdSpan = tuple[int, int]
"""Where a partition's recent-id memory comes from: ``(older_from, newer_from)``, the first
offsets of its two generations (see :class:`RecentIds`)."""


@dataclass(frozen=True, slots=True)
class CommitMeta:
    """What the sink keeps in a committed offset's metadata."""

    cut_at: int | None = None
    """An intent: the batch starting at the committed offset ends at exactly this offset."""
    ids: IdSpan | None = None
    """The recent-id memory at the committed offset: re-read these records to rebuild it."""

    def encode(self) -> str:
        ids = "" if self.ids is None else f"ids {self.ids[0]} {self.ids[1]}"
        if self.cut_at is None:
            return f"{_MEMORY_PREFIX}{ids[4:]}" if ids else ""
        return f"{INTENT_PREFIX}{self.cut_at}" + (f" {ids}" if ids else "")


def intent_metadata(last: int, ids: IdSpan | None = None) -> str:
    """The commit metadata that says "the batch up to ``last`` may be stored" (and where
    the partition's recent-id memory starts)."""
    return CommitMeta(last, ids).encode()


def memory_metadata(ids: IdSpan | None) -> str:
    """The metadata of a batch's final commit: where the recent-id memory starts."""
    return CommitMeta(None, ids).encode()


def parse_commit(metadata: str | None) -> CommitMeta:
    """The sink's metadata, or an empty :class:`CommitMeta` (none, or someone else's: the
    group may have been used by another tool)."""
    if not metadata:
        return CommitMeta()
    words = metadata.split()
    if metadata.startswith((INTENT_PREFIX, _V1_INTENT_PREFIX)):
        rest = words[2:]
        if not rest or not rest[0].isdigit():
            return CommitMeta()
        cut_at = int(rest[0])
        ids = _parse_ids(rest[1:]) if metadata.startswith(INTENT_PREFIX) else None
        return CommitMeta(cut_at, ids)
    if metadata.startswith(_MEMORY_PREFIX):
        return CommitMeta(None, _parse_ids(words[1:]))
    return CommitMeta()


def _parse_ids(words: list[str]) -> IdSpan | None:
    if len(words) == 3 and words[0] == "ids" and words[1].isdigit() and words[2].isdigit():
        older_from, newer_from = int(words[1]), int(words[2])
        if older_from <= newer_from:
            return older_from, newer_from
    return None


def parse_intent(metadata: str | None) -> int | None:
    """The ``last`` offset of a pending batch, or None (no intent, or someone else's
    metadata: the group may have been used by another tool)."""
    return parse_commit(metadata).cut_at


def batch_token(group: str, topic: str, partition: int, start: int, last: int) -> str:
    """The dedup token prefix of a batch (the sink appends ``:<table>``)."""
    return f"{group}/{topic}/{partition}/{start}-{last}"


class RecentIds:
    """Recent event ids of one partition, to drop events a producer sent twice (a re-send
    after a lost acknowledgement lands on the same partition, soon after the first copy).

    What it holds is a function of the log alone, so a restarted sink rebuilds exactly the
    memory the crashed one had (and a re-formed batch drops exactly the same events, which
    keeps its rows those its dedup token was first inserted with): two generations of
    *record ranges*, ``[older_from, newer_from)`` and ``[newer_from, next record)``, each
    holding every event id of its records. A generation flips only at a record boundary:
    before a record, when the newer holds ``capacity / 2`` ids or more, it becomes the
    older and the oldest are forgotten at once. So between ``capacity / 2`` and
    ``capacity`` of the latest ids are remembered (one record more at most), at the cost
    of two set lookups. :attr:`span` goes into every commit's metadata; after a restart
    or a rebalance :meth:`prime` replays the records from ``older_from`` on."""

    __slots__ = ("_half", "_newer", "_older", "newer_from", "older_from")

    def __init__(self, capacity: int, span: IdSpan | None = None) -> None:
        self._half = max(1, capacity // 2)
        self._newer: set[str] = set()
        self._older: set[str] = set()
        self.older_from: int | None = None if span is None else span[0]
        self.newer_from: int | None = None if span is None else span[1]

    def __len__(self) -> int:
        return len(self._newer) + len(self._older)

    @property
    def span(self) -> IdSpan | None:
        if self.older_from is None or self.newer_from is None:
            return None
        return self.older_from, self.newer_from

    def prime(self, offset: int, event_ids: list[str]) -> None:
        """Re-read a record from before the committed offset (rebuilding the memory)."""
        if self.newer_from is None or self.older_from is None or offset < self.older_from:
            return
        (self._older if offset < self.newer_from else self._newer).update(event_ids)

    def at_record(self, offset: int) -> None:
        """Before a new record's events: flip the generations when the newer is full."""
        if self.newer_from is None:
            self.older_from = self.newer_from = offset
        elif len(self._newer) >= self._half:
            self._older, self._newer = self._newer, set()
            self.older_from, self.newer_from = self.newer_from, offset

    def seen(self, event_id: str) -> bool:
        """True when ``event_id`` was seen (recently); remember it either way."""
        hit = event_id in self._newer or event_id in self._older
        self._newer.add(event_id)
        return hit


@dataclass(slots=True)
class PartitionBatch:
    """What the sink holds for one partition between two commits."""

    topic: str
    partition: int
    kind: BatchKind
    start: int | None = None
    """The committed position: the batch covers offsets from here. None until known
    (no commit yet: the first record read sets it)."""
    cut_at: int | None = None
    """From an intent: the batch must end at exactly this offset."""
    last: int | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    """Event rows (contract-valid dicts, see :func:`decode_rows`)."""
    alerts: list[Alert] = field(default_factory=list)
    failures: list[DeliveryFailure] = field(default_factory=list)
    """Failed deliveries: each one an ``alerts`` row and a ``dead_letters`` row, as
    :meth:`~agentwatch.sinks.ClickHouseSink.add_delivery_failures` maps them."""
    dead_letters: list[DeadLetter] = field(default_factory=list)
    controls: list[ControlRecord] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)
    duplicates: int = 0
    opened_at: float | None = None  # monotonic time of the first record
    intent_committed: bool = False
    cut_reached: bool = False
    ids_at_start: IdSpan | None = None
    """The recent-id memory's :attr:`RecentIds.span` before the batch's first record (for
    its intent's metadata)."""

    @property
    def empty(self) -> bool:
        return self.last is None

    @property
    def rows(self) -> int:
        """Rows the batch will store (a failed delivery is two: alerts, dead_letters)."""
        return (len(self.events) + len(self.alerts) + 2 * len(self.failures)
                + len(self.dead_letters) + len(self.controls) + len(self.acks))

    @property
    def end(self) -> int | None:
        """The last offset the batch covers: an intent's cut, else the last record read."""
        return self.cut_at if self.cut_at is not None else self.last

    @property
    def complete(self) -> bool:
        """False while a batch re-formed from an intent has not reached its cut: it must
        not be stored before, or it would carry another token than the first attempt."""
        if self.cut_at is None:
            return True
        return self.cut_reached or (self.last is not None and self.last >= self.cut_at)

    @property
    def must_flush(self) -> bool:
        """A batch re-formed from an intent is complete: flush it before reading on."""
        return self.cut_at is not None and not self.empty and self.complete

    def token(self, group: str) -> str:
        end = self.end
        if self.start is None or self.last is None or end is None:
            raise ValueError("an empty batch has no token")
        return batch_token(group, self.topic, self.partition, self.start, end)

    def accepts(self, offset: int) -> bool:
        """False when ``offset`` belongs to the next batch (past an intent's cut)."""
        return self.cut_at is None or offset <= self.cut_at

    def passed_cut(self) -> None:
        """A record after the cut arrived: the re-formed batch holds all Kafka still has
        of its range (records can be gone: retention, compaction). With nothing left of
        the range, there is nothing to complete."""
        if self.empty:
            self.cut_at = None
        else:
            self.cut_reached = True

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
        if recent is not None and self.kind == "events":
            if self.last is None:
                self.ids_at_start = recent.span
            recent.at_record(offset)
        self.last = offset
        source = f"{self.topic}/{self.partition}/{offset}"
        if self.kind == "control":
            if value is not None:  # None: a tombstone (compaction's, after a resume)
                self._add_control(source, value)
            return
        if value is None:
            self.dead_letters.append(DeadLetter(source, "record has no value", b""))
            return
        if self.kind == "alerts":
            self._add_alert(source, value)
            return
        if self.kind == "alert_failures":
            self._add_failure(source, value)
            return
        if self.kind == "acks":
            self._add_ack(source, value)
            return
        rows, rejected = decode_rows(value)
        if rejected:
            self.dead_letters.extend(dead_letters_from_rejected(rejected, source))
        for row in rows:
            if recent is not None and recent.seen(row["event_id"]):
                self.duplicates += 1
                continue
            if prices is not None and row.get("cost_usd") is None:
                _fill_cost(row, prices)
            self.events.append(row)

    def _add_alert(self, source: str, value: bytes) -> None:
        try:
            self.alerts.append(Alert.model_validate_json(value))
        except ValidationError as exc:
            reason = describe_validation_error(exc)
            self.dead_letters.extend(dead_letters_from_rejected([Rejected(value, reason)], source))

    def _add_control(self, source: str, value: bytes) -> None:
        try:
            self.controls.append(decode_control(value))
        except ValueError as exc:
            self.dead_letters.extend(dead_letters_from_rejected([Rejected(value, str(exc))],
                                                                source))

    def _add_failure(self, source: str, value: bytes) -> None:
        try:
            failure = DeliveryFailure.decode(value)
        except ValidationError as exc:
            reason = describe_validation_error(exc)
            self.dead_letters.extend(dead_letters_from_rejected([Rejected(value, reason)], source))
            return
        self.failures.append(failure)

    def _add_ack(self, source: str, value: bytes) -> None:
        try:
            self.acks.append(Ack.decode(value))
        except ValueError as exc:
            self.dead_letters.append(DeadLetter(source, f"not an acknowledgement: {exc}", value))

    def committed(self) -> None:
        """The batch is stored and its end committed: start the next one after it."""
        end = self.end
        if end is not None and self.last is not None:
            self.start = end + 1
        self.cut_at = None
        self.cut_reached = False
        self.last = None
        self.events = []
        self.alerts = []
        self.failures = []
        self.dead_letters = []
        self.controls = []
        self.acks = []
        self.duplicates = 0
        self.opened_at = None
        self.intent_committed = False
        self.ids_at_start = None


def record_event_ids(value: bytes | None) -> list[str]:
    """The ids of a record's events, exactly as :meth:`PartitionBatch.add` takes them (for
    :meth:`RecentIds.prime`)."""
    if value is None:
        return []
    rows, _ = decode_rows(value)
    return [row["event_id"] for row in rows]


def _fill_cost(row: dict[str, Any], prices: PriceTable) -> None:
    """``PriceTable.fill_cost`` for an event row: priced from the model and tokens when
    it has tokens and a known model; left unpriced otherwise."""
    if row.get("input_tokens") is None and row.get("output_tokens") is None:
        return
    cost = prices.cost_usd(
        row.get("model"),
        row.get("input_tokens"),
        row.get("output_tokens"),
        row.get("cached_input_tokens"),
    )
    if cost is not None:
        row["cost_usd"] = cost
