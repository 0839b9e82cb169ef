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
``delivery_status = ''`` (one alerts insert per flush, so one token per table).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

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
    events_to_arrow,
)
from agentwatch.sinks.backends.base import Backend, Parameters, QueryResult

if TYPE_CHECKING:
    import pyarrow as pa

    from agentwatch.schemas import Ack, DeliveryFailure

__all__ = ["ClickHouseSink", "FlushStats", "RowCounts"]

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


@dataclass(slots=True)
class _Batch:
    data: pa.Table
    token: str | None


class _AlertRow(NamedTuple):
    """An alert and its ``delivery_status`` (``''``, or ``failed:<endpoint>``)."""

    alert: Alert
    delivery_status: str


def _alert_rows_to_arrow(rows: Sequence[_AlertRow]) -> pa.Table:
    return alerts_to_arrow(
        [r.alert for r in rows], delivery_status=[r.delivery_status for r in rows]
    )


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
        self._events = _TableBuffer[Event](schema.table(EVENTS_TABLE), events_to_arrow)
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

    def add_alerts(self, alerts: Iterable[Alert]) -> None:
        rows = [_AlertRow(alert, "") for alert in alerts]
        with self._lock:
            self._alerts.items.extend(rows)

    def add_delivery_failures(self, failures: Iterable[DeliveryFailure]) -> None:
        """Webhook deliveries that finally failed: per failure, an ``alerts`` row (its
        alert, ``delivery_status = 'failed:<endpoint>'``) and a ``dead_letters`` row
        (source ``webhook/<endpoint>``, the failure's reason, the failure as JSON).

        Both rows of every failure are buffered under one lock: safe to call from a
        webhook thread while another flushes. (A flush running meanwhile may write the
        alert row now and the dead letter at the next flush: both are kept.)
        """
        now = datetime.now(UTC)
        rows: list[_AlertRow] = []
        letters: list[DeadLetter] = []
        for failure in failures:
            rows.append(_AlertRow(failure.alert, failure.delivery_status))
            letters.append(
                DeadLetter(f"webhook/{failure.endpoint}", failure.reason, failure.encode(), now)
            )
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

    def flush(self, dedup_token_prefix: str | None = None) -> FlushStats:
        """Insert everything buffered: per table, failed batches first, then one
        Arrow insert of what was added since (token ``f"{prefix}:{table name}"``).

        Raises :class:`SinkError` / :class:`BackpressureError`; nothing is lost then.
        """
        started = time.perf_counter()
        with self._flush_lock:
            inserted = [
                self._flush_table(buffer, dedup_token_prefix)
                for buffer in (self._events, self._alerts, self._dead_letters, self._acks)
            ]
            self._flush_table(self._control, dedup_token_prefix)
        return FlushStats(RowCounts(*inserted), time.perf_counter() - started)

    def _flush_table(self, buffer: _TableBuffer[Any], prefix: str | None) -> int:
        token = None if prefix is None else f"{prefix}:{buffer.table.partition('.')[2]}"
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
                data = buffer.to_arrow(items)
            except Exception as exc:
                with self._lock:
                    buffer.items = items + buffer.items
                what = f"building the Arrow batch for {buffer.table}"
                raise SinkError(f"{what} failed: {exc}") from exc
            with self._lock:
                buffer.pending.append(_Batch(data, token))
        written = 0
        while True:
            with self._lock:
                if not buffer.pending:
                    return written
                batch = buffer.pending[0]
            self._insert(buffer.table, batch)
            with self._lock:
                buffer.pending.pop(0)
            written += batch.data.num_rows

    def _insert(self, table: str, batch: _Batch) -> None:
        try:
            self._backend.insert_arrow(table, batch.data, dedup_token=batch.token)
        except SinkError:
            raise
        except Exception as exc:
            raise SinkError(f"insert into {table} failed: {exc}") from exc

    def query(self, sql: str, params: Parameters | None = None) -> QueryResult:
        """Run a read query on the sink's backend (values as ``{name:Type}`` parameters)."""
        return self._backend.query(sql, params)


def _dead_letter(item: DeadLetter | tuple[str, str, bytes | str], now: datetime) -> DeadLetter:
    if isinstance(item, DeadLetter):
        return item if item.received_at is not None else item._replace(received_at=now)
    source, reason, raw = item
    return DeadLetter(source, reason, raw.encode() if isinstance(raw, str) else raw, now)
