"""The one interface every ClickHouse backend implements, and what a query returns.

Backends run the same SQL on chDB (in-process) and on a ClickHouse server. Values
never go into SQL text: they travel as query parameters written ``{name:Type}`` in
the statement and passed in ``parameters`` (or as Arrow data for inserts)::

    backend.query(
        "SELECT count() FROM agentwatch.events WHERE tenant_id = {tenant:String}",
        {"tenant": "acme"},
    )

Failures surface as :class:`~agentwatch.schemas.errors.SinkError`, or as its
subclass :class:`~agentwatch.schemas.errors.BackpressureError` when the store is
down, overloaded or slow and the same call may succeed later.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["INSERT_SETTINGS", "Backend", "Parameters", "QueryResult"]

#: Query parameters: ``{name:Type}`` placeholder name -> Python value.
Parameters = Mapping[str, Any]

#: Settings every backend applies to ``insert_arrow``. A batch of old events (a
#: replay) may span more than 100 days, i.e. partitions; by default ClickHouse
#: refuses such a block, and every retry of it, which would wedge the sink. A
#: retried batch must also be dropped by the materialized views' targets
#: (rollups_1m), not only by the table inserted into: older servers default the
#: second setting to 0.
INSERT_SETTINGS: Final[Mapping[str, int]] = {
    "throw_on_max_partitions_per_insert_block": 0,
    "deduplicate_blocks_in_dependent_materialized_views": 1,
}


@dataclass(frozen=True, slots=True)
class QueryResult:
    """Column names and rows (tuples of Python values, in column order).

    Both backends read results through ClickHouse's Arrow output format, so a
    value has the same Python type on both: ``DateTime64`` -> aware ``datetime``
    (UTC), ``Map`` -> ``dict``, ``Array`` -> ``list``, ``Nullable`` NULL -> ``None``.
    A ``String`` that is not valid UTF-8 (say ``dead_letters.raw``) comes back with
    U+FFFD in place of the bad bytes; select ``hex(raw)`` for the exact bytes.
    """

    column_names: tuple[str, ...]
    rows: list[tuple[Any, ...]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def dicts(self) -> list[dict[str, Any]]:
        """Rows as ``{column: value}`` dicts (handy in tests and for JSON output)."""
        return [dict(zip(self.column_names, row, strict=True)) for row in self.rows]


class Backend(abc.ABC):
    """A connection to one ClickHouse engine (embedded chDB or a server).

    Usable as a context manager (``with open_backend(url) as backend: ...``);
    :meth:`close` is idempotent, and any call after it raises ``SinkError``.
    """

    @abc.abstractmethod
    def command(self, sql: str, parameters: Parameters | None = None) -> None:
        """Run a statement that returns no rows (DDL, ``INSERT ... SELECT``, ``SET``)."""

    @abc.abstractmethod
    def query(self, sql: str, parameters: Parameters | None = None) -> QueryResult:
        """Run a ``SELECT`` (or ``SHOW``/``DESCRIBE``) and return all its rows."""

    @abc.abstractmethod
    def insert_arrow(self, table: str, data: pa.Table, *, dedup_token: str | None = None) -> None:
        """Insert ``data`` into ``table`` (``db.table``), columns matched by name.

        Columns of ``table`` missing from ``data`` take their ``DEFAULT``. With
        ``dedup_token``, a second insert carrying the same token is dropped by
        ClickHouse (the table needs ``non_replicated_deduplication_window`` > 0 or a
        Replicated engine), also across restarts: a retried batch is stored once.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection (idempotent)."""

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """True after :meth:`close`."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
