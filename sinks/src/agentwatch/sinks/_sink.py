"""``ClickHouseSink``: buffer contracts, write each table in one Arrow insert.

The sink contract (as in quixstreams): ``add_*`` only buffers; the runtime calls
:meth:`ClickHouseSink.flush` **before** it commits its input offsets, and passes a
token prefix that names the input batch (e.g. ``"events-sink/p3/1200-1499"``).
Each table's insert then carries ``insert_deduplication_token = f"{prefix}:{table}"``,
so a batch inserted, then retried after a crash before the commit, is stored once.

When the backend fails, :meth:`flush` raises :class:`SinkError` (or
:class:`BackpressureError` with ``retry_after_s`` when the store is down or
overloaded) and loses nothing: a batch that failed is kept, with its token, and is
retried first by the next :meth:`flush`, before anything added since. A prefix
must name exactly one set of input rows; never reuse it for other rows.

A webhook delivery that finally failed (:meth:`ClickHouseSink.add_delivery_failures`)
is stored as the ``agentwatch.sinks.kafka`` sink stores the records of the dead-letter
topic: an ``alerts`` row with ``delivery_status = 'failed:<endpoint>'`` and a
``dead_letters`` row with the reason. Plain alerts go into the same insert with
``delivery_status = ''`` (one alerts insert per flush, so one token per table). That
mapping exists only here: the dead letter's ``source`` is ``webhook/<endpoint>`` (where the
delivery failed, what a user querying ``dead_letters`` looks for), whichever runtime
(the embedded pipeline, or ``agentwatch sink`` reading the webhooks' dead-letter topic)
adds the failure.

A runtime that orders its own writes against its commits (``agentwatch sink``: intent,
inserts, commit) splits :meth:`ClickHouseSink.flush` in two: :meth:`ClickHouseSink.stage`
turns what is buffered into Arrow batches with their tokens (CPU work it may overlap with
the previous write), :meth:`ClickHouseSink.write` inserts them, and may be called again
with the same :class:`StagedFlush` after a failure (what was written is not written
twice). Do not mix the two styles on one sink.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Generic, NamedTuple, TypeVar

from agentwatch.schemas import Alert, ControlRecord, Event, Rejected
from agentwatch.schemas.errors import SinkError
from agentwatch.sinks._ddl import (
    ACKS_TABLE,
    ALERTS_TABLE,
    CONTROL_LOG_TABLE,
    DEAD_LETTERS_TABLE,
    DEFAULT_DATABASE,
    EVENTS_TABLE,
    SchemaConfig,
)
from agentwatch.sinks._rows import (
    DeadLetter,
    acks_to_arrow,
    alerts_to_arrow,
    control_to_arrow,
    dead_letters_from_rejected,
    dead_letters_to_arrow,
    event_rows_to_arrow,
    events_to_arrow,
)
from agentwatch.sinks.backends.base import Backend, Parameters, QueryResult

if TYPE_CHECKING:
    import pyarrow as pa

    from agentwatch.schemas import Ack, DeliveryFailure

__all__ = ["ClickHouseSink", "FlushStats", "RowCounts", "StagedFlush"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RowCounts:
    events: int = 0
    alerts: int = 0
    dead_letters: int = 0
    acks: int = 0

    @property
    def total(self) -> int:
        return self.events + self.alerts + self.dead_letters + self.acks


@dataclass(frozen=True, slots=True)
class FlushStats:
    """What one :meth:`ClickHouseSink.flush` wrote, and how long it took."""

    inserted: RowCounts
    duration_s: float


#: Event ids per query when a batch that may be stored already is checked against
#: ClickHouse (a parameter travels in the URL of an HTTP request: ~40 bytes per id).
_RECHECK_IDS_PER_QUERY: Final = 5_000

_log = logging.getLogger("agentwatch.sink")

#: ``dead_letters.source`` of a failed webhook delivery: this prefix, then the endpoint.
WEBHOOK_SOURCE_PREFIX: Final = "webhook/"


@dataclass(slots=True)
class _Batch:
    data: pa.Table
    token: str | None
    table: str = ""  # database.table
    maybe_stored: bool = False  # events a first attempt may have stored (see stage())


@dataclass(slots=True)
class StagedFlush:
    """What :meth:`ClickHouseSink.stage` took from the buffers: one Arrow batch per table,
    each with its token, in insert order. :meth:`ClickHouseSink.write` removes each batch
    once it is inserted: an empty :attr:`batches` means all is written."""

    batches: list[_Batch]
    rows: RowCounts

    @property
    def written(self) -> bool:
        return not self.batches


#: Called after each insert of :meth:`ClickHouseSink.write`: table (``database.table``),
#: rows, seconds the insert took.
InsertHook = Callable[[str, int, float], None]


class _AlertRow(NamedTuple):
    """An alert and its ``delivery_status`` (``''``, or ``failed:<endpoint>``)."""

    alert: Alert
    delivery_status: str


def _alert_rows_to_arrow(rows: Sequence[_AlertRow]) -> pa.Table:
    """One ``delivery_status`` value per row when a failed delivery is among them, else
    none (the column keeps its DEFAULT, ``''``)."""
    alerts = [r.alert for r in rows]
    if all(not r.delivery_status for r in rows):
        return alerts_to_arrow(alerts)
    return alerts_to_arrow(alerts, delivery_status=[r.delivery_status for r in rows])


EventRow = Event | Mapping[str, Any]
"""An :class:`Event`, or an event row as decoded from JSON (see
:func:`agentwatch.sinks._rows.event_rows_to_arrow`)."""


def _event_rows_to_arrow(items: Sequence[EventRow]) -> pa.Table:
    # type() checks: isinstance() against a pydantic model class costs ~1 µs per dict
    # (its metaclass's __instancecheck__), and a batch holds 100,000 rows.
    if all(type(item) is not dict for item in items):
        return events_to_arrow(items)  # type: ignore[arg-type]  # no rows: all Events
    if any(type(item) is not dict for item in items):
        items = [i if type(i) is dict else vars(i) for i in items]
    return event_rows_to_arrow(items)  # type: ignore[arg-type]  # all rows now


def delivery_failure_rows(
    failure: DeliveryFailure, received_at: datetime | None = None
) -> tuple[_AlertRow | None, DeadLetter]:
    """The one mapping of a failed webhook delivery to rows: its alert with
    ``delivery_status = 'failed:<endpoint>'`` (none for a failed PagerDuty
    ``acknowledge``: the alert did reach the endpoint), and a dead letter from
    ``webhook/<endpoint>`` with the failure's reason and the failure as JSON."""
    letter = DeadLetter(
        f"{WEBHOOK_SOURCE_PREFIX}{failure.endpoint}", failure.reason, failure.encode(),
        received_at,
    )
    if failure.delivery == "acknowledge":
        return None, letter
    return _AlertRow(failure.alert, failure.delivery_status), letter


@dataclass(slots=True)
class _TableBuffer(Generic[T]):
    table: str  # database.table
    to_arrow: Callable[[Sequence[T]], pa.Table]
    items: list[T] = field(default_factory=list)
    pending: list[_Batch] = field(default_factory=list)  # failed batches, oldest first

    def count(self) -> int:
        return len(self.items) + sum(int(b.data.num_rows) for b in self.pending)


class ClickHouseSink:
    """Writes events, alerts (and failed deliveries) and dead letters to ClickHouse
    through a :class:`Backend`.

    The tables must exist (run :func:`agentwatch.sinks.migrate` once). ``add_*``
    and :meth:`flush` may be called from different threads. The sink does not
    own the backend: close it yourself.
    """

    def __init__(self, backend: Backend, *, database: str = DEFAULT_DATABASE) -> None:
        schema = SchemaConfig(database=database)
        self._database = database
        self._backend = backend
        self._events = _TableBuffer[EventRow](schema.table(EVENTS_TABLE), _event_rows_to_arrow)
        self._alerts = _TableBuffer[_AlertRow](schema.table(ALERTS_TABLE), _alert_rows_to_arrow)
        self._dead_letters = _TableBuffer[DeadLetter](
            schema.table(DEAD_LETTERS_TABLE), dead_letters_to_arrow
        )
        self._control = _TableBuffer[ControlRecord](
            schema.table(CONTROL_LOG_TABLE), control_to_arrow)
        self._acks = _TableBuffer["Ack"](schema.table(ACKS_TABLE), acks_to_arrow)
        self._lock = threading.Lock()  # guards the buffers
        self._flush_lock = threading.Lock()  # one flush at a time, in order

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def database(self) -> str:
        return self._database

    def add_events(self, events: Iterable[Event]) -> None:
        with self._lock:
            self._events.items.extend(events)

    def add_event_rows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Event rows as decoded from JSON, each valid by the contract already, ``ts`` in
        the producers' form (``agentwatch sink``'s hot path: no pydantic model per event;
        see :func:`agentwatch.sinks._rows.event_rows_to_arrow`)."""
        with self._lock:
            self._events.items.extend(rows)

    def add_alerts(self, alerts: Iterable[Alert]) -> None:
        rows = [_AlertRow(alert, "") for alert in alerts]
        with self._lock:
            self._alerts.items.extend(rows)

    def add_delivery_failures(self, failures: Iterable[DeliveryFailure]) -> None:
        """Webhook deliveries that finally failed: per failure, an ``alerts`` row (its
        alert, ``delivery_status = 'failed:<endpoint>'``; not for a failed PagerDuty
        ``acknowledge``) and a ``dead_letters`` row (source ``webhook/<endpoint>``, the
        failure's reason, the failure as JSON).

        Both rows of every failure are buffered under one lock: safe to call from a
        webhook thread while another flushes. (A flush running meanwhile may write the
        alert row now and the dead letter at the next flush: both are kept.)
        """
        now = datetime.now(UTC)
        rows: list[_AlertRow] = []
        letters: list[DeadLetter] = []
        for failure in failures:
            row, letter = delivery_failure_rows(failure, now)
            if row is not None:
                rows.append(row)
            letters.append(letter)
        with self._lock:
            self._alerts.items.extend(rows)
            self._dead_letters.items.extend(letters)

    def add_control(self, records: Iterable[ControlRecord]) -> None:
        """Halts and resumes (the control topic's records) for the ``control_log`` audit."""
        with self._lock:
            self._control.items.extend(records)

    def add_acks(self, acks: Iterable[Ack]) -> None:
        """Acknowledgements (``alert_acks`` rows)."""
        with self._lock:
            self._acks.items.extend(acks)

    def add_dead_letters(self, items: Iterable[DeadLetter | tuple[str, str, bytes | str]]) -> None:
        """``(source, reason, raw)`` tuples or :class:`DeadLetter` s (stamped ``received_at``)."""
        now = datetime.now(UTC)
        letters = [_dead_letter(item, now) for item in items]
        with self._lock:
            self._dead_letters.items.extend(letters)

    def add_rejected(self, rejected: Iterable[Rejected], source: str) -> None:
        """Decoder rejects (:func:`agentwatch.schemas.decode_record`) from ``source``."""
        letters = dead_letters_from_rejected(rejected, source, received_at=datetime.now(UTC))
        with self._lock:
            self._dead_letters.items.extend(letters)

    @property
    def buffered(self) -> RowCounts:
        """Rows waiting for a flush, failed batches included."""
        with self._lock:
            return RowCounts(
                self._events.count(),
                self._alerts.count(),
                self._dead_letters.count(),
                self._acks.count(),
            )

    def _buffers(self) -> tuple[_TableBuffer[Any], ...]:
        """Every table's buffer, in insert order."""
        return (self._events, self._alerts, self._dead_letters, self._acks, self._control)

    def flush(self, dedup_token_prefix: str | None = None) -> FlushStats:
        """Insert everything buffered: per table, failed batches first, then one
        Arrow insert of what was added since (token ``f"{prefix}:{table name}"``).

        Raises :class:`SinkError` / :class:`BackpressureError`; nothing is lost then.
        """
        started = time.perf_counter()
        with self._flush_lock:
            inserted = [
                self._flush_table(buffer, dedup_token_prefix) for buffer in self._buffers()
            ]
        return FlushStats(RowCounts(*inserted[:4]), time.perf_counter() - started)

    def stage(self, dedup_token_prefix: str, *, maybe_stored: bool = False) -> StagedFlush:
        """Take everything buffered as one Arrow batch per table, each with its token
        (``f"{prefix}:{table name}"``), for :meth:`write`; the buffers are empty after.

        ``maybe_stored``: a first attempt of these very rows (same prefix) may be stored
        already, e.g. a batch re-formed after a crash between insert and commit. The
        events ClickHouse has already are then left out when :meth:`write` inserts them,
        should ClickHouse have forgotten the token meanwhile (see :meth:`_without_stored`).
        Raises :class:`SinkError` (the rows stay buffered) when a batch cannot be built.
        """
        with self._lock:
            taken = [(buffer, buffer.items) for buffer in self._buffers()]
            for buffer, _ in taken:
                buffer.items = []
        batches: list[_Batch] = []
        counts: list[int] = []
        try:
            for buffer, items in taken:
                counts.append(len(items))
                if items:
                    batch = self._build(buffer, items, dedup_token_prefix)
                    batch.maybe_stored = maybe_stored and buffer is self._events
                    batches.append(batch)
        except SinkError:
            with self._lock:
                for buffer, items in taken:
                    buffer.items = items + buffer.items
            raise
        return StagedFlush(batches, RowCounts(*counts[:4]))

    def write(self, staged: StagedFlush, *, on_insert: InsertHook | None = None) -> None:
        """Insert what :meth:`stage` took, table by table; each batch leaves ``staged``
        once inserted, so after a :class:`SinkError` / :class:`BackpressureError` calling
        this again with the same ``staged`` writes the rest, in order."""
        while staged.batches:
            batch = staged.batches[0]
            started = time.perf_counter()
            rows = self._insert(batch)
            if on_insert is not None:
                on_insert(batch.table, rows, time.perf_counter() - started)
            staged.batches.pop(0)

    @staticmethod
    def _token(prefix: str | None, table: str) -> str | None:
        """The one place a dedup token is made: ``f"{prefix}:{table name}"``."""
        return None if prefix is None else f"{prefix}:{table.partition('.')[2]}"

    @staticmethod
    def _build(buffer: _TableBuffer[Any], items: list[Any], prefix: str | None) -> _Batch:
        try:
            data = buffer.to_arrow(items)
        except Exception as exc:
            what = f"building the Arrow batch for {buffer.table}"
            raise SinkError(f"{what} failed: {exc}") from exc
        return _Batch(data, ClickHouseSink._token(prefix, buffer.table), buffer.table)

    def _flush_table(self, buffer: _TableBuffer[Any], prefix: str | None) -> int:
        token = self._token(prefix, buffer.table)
        with self._lock:
            items, buffer.items = buffer.items, []
            if items and token is not None and any(b.token == token for b in buffer.pending):
                buffer.items = items + buffer.items
                raise ValueError(
                    f"dedup token {token!r} already names a failed batch of {buffer.table} "
                    "that has not been written yet; a prefix must name one set of rows"
                )
        if items:
            try:
                batch = self._build(buffer, items, prefix)
            except SinkError:
                with self._lock:
                    buffer.items = items + buffer.items
                raise
            with self._lock:
                buffer.pending.append(batch)
        written = 0
        while True:
            with self._lock:
                if not buffer.pending:
                    return written
                batch = buffer.pending[0]
            self._insert(batch)
            with self._lock:
                buffer.pending.pop(0)
            written += batch.data.num_rows

    def _insert(self, batch: _Batch) -> int:
        """One insert with the batch's token; the rows inserted."""
        try:
            if batch.maybe_stored:
                batch.data = self._without_stored(batch.table, batch.data)
                batch.maybe_stored = False
                if batch.data.num_rows == 0:
                    return 0
            self._backend.insert_arrow(batch.table, batch.data, dedup_token=batch.token)
        except SinkError:
            raise
        except Exception as exc:
            raise SinkError(f"insert into {batch.table} failed: {exc}") from exc
        return int(batch.data.num_rows)

    def _without_stored(self, table: str, data: pa.Table) -> pa.Table:
        """``data`` (events) without the rows whose ``event_id`` ``table`` holds already.

        For a batch whose first attempt may be stored: its token makes ClickHouse drop a
        retry only while the table's deduplication log (``non_replicated_deduplication_window``:
        its last 1,000 inserts) still has the first attempt, which many sinks inserting
        during a long restart can push out. ClickHouse stores each part of an insert
        (one per day) whole or not at all, so what is left is what the first attempt did
        not store, and the token stays right for it. Looked up within the rows' time
        range (the table is partitioned by day), in slices of ids."""
        import pyarrow as pa  # noqa: PLC0415 (with the sink's dependencies)
        import pyarrow.compute as pc  # noqa: PLC0415

        ids = data.column("event_id")
        ts = data.column("ts")
        sql = (
            f"SELECT DISTINCT event_id FROM {table} "  # noqa: S608 (a checked table name)
            "WHERE ts >= {lo:DateTime64(6, 'UTC')} AND ts <= {hi:DateTime64(6, 'UTC')} "
            "AND event_id IN {ids:Array(String)}"
        )
        params: dict[str, Any] = {"lo": pc.min(ts).as_py(), "hi": pc.max(ts).as_py()}
        stored: list[str] = []
        values = ids.to_pylist()
        for first in range(0, len(values), _RECHECK_IDS_PER_QUERY):
            params["ids"] = values[first : first + _RECHECK_IDS_PER_QUERY]
            stored += [row[0] for row in self._backend.query(sql, params).rows]
        if not stored:
            return data
        _log.info("sink: %d events of a pending batch were stored already", len(stored))
        return data.filter(pc.invert(pc.is_in(ids, value_set=pa.array(stored, pa.string()))))

    def query(self, sql: str, params: Parameters | None = None) -> QueryResult:
        """Run a read query on the sink's backend (values as ``{name:Type}`` parameters)."""
        return self._backend.query(sql, params)


def _dead_letter(item: DeadLetter | tuple[str, str, bytes | str], now: datetime) -> DeadLetter:
    if isinstance(item, DeadLetter):
        return item if item.received_at is not None else item._replace(received_at=now)
    source, reason, raw = item
    return DeadLetter(source, reason, raw.encode() if isinstance(raw, str) else raw, now)
