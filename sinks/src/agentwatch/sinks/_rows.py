"""Contracts -> Arrow tables whose columns match the DDL (``ddl/001_core_tables.sql``)
in order and type, so a batch goes to ClickHouse in one columnar insert.

Columns are built directly, one Python list per column read from the models'
field dicts, then one Arrow array per column. Timestamps are
``timestamp('us', tz='UTC')``; attributes a ``map<string, string>``.

pyarrow is imported inside the functions: importing :mod:`agentwatch.sinks`
stays cheap for code that only needs, say, the webhooks.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from agentwatch.schemas import Alert, ControlRecord, Event, Rejected

if TYPE_CHECKING:
    import pyarrow as pa

    from agentwatch.schemas import Ack

__all__ = [
    "ACK_COLUMNS",
    "ALERT_COLUMNS",
    "DEAD_LETTER_COLUMNS",
    "DELIVERY_STATUS_COLUMN",
    "EVENT_COLUMNS",
    "DeadLetter",
    "acks_schema",
    "acks_to_arrow",
    "alerts_schema",
    "alerts_to_arrow",
    "attribute_text",
    "control_to_arrow",
    "dead_letters_from_rejected",
    "dead_letters_schema",
    "dead_letters_to_arrow",
    "event_row",
    "event_rows_to_arrow",
    "events_schema",
    "events_to_arrow",
]

UINT32_MAX: Final = 2**32 - 1
UINT64_MAX: Final = 2**64 - 1
#: Unsigned columns whose Python ints are unbounded above in the contracts.
_UINT_BOUNDS: Final = {
    "input_tokens": UINT64_MAX,
    "output_tokens": UINT64_MAX,
    "cached_input_tokens": UINT64_MAX,
    "reasoning_tokens": UINT64_MAX,
    "window_s": UINT32_MAX,
}

#: The Event fields read per event, in the order of the events table.
_EVENT_FIELDS: Final = (
    "event_id",
    "ts",
    "tenant_id",
    "agent_id",
    "session_id",
    "kind",
    "schema_version",
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "status",
    "error_type",
    "model",
    "provider",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "cost_usd",
    "duration_ms",
    "tool_args_hash",
    "attributes",
)
#: Columns of the events table that the sink writes (``ingested_at`` is a DEFAULT).
EVENT_COLUMNS: Final = (
    *_EVENT_FIELDS[: _EVENT_FIELDS.index("cost_usd") + 1],
    "priced",
    *_EVENT_FIELDS[_EVENT_FIELDS.index("cost_usd") + 1 :],
)
ALERT_COLUMNS: Final = (
    "alert_id",
    "rule",
    "type",
    "state",
    "severity",
    "scope",
    "key",
    "tenant_id",
    "agent_id",
    "session_id",
    "value",
    "threshold",
    "window_s",
    "ts",
    "reason",
    "event_ids",
)
#: The alerts column that records the webhook delivery outcome; not an Alert field. Left
#: to its DEFAULT ('') unless :func:`alerts_to_arrow` is given the values.
DELIVERY_STATUS_COLUMN: Final = "delivery_status"
DEAD_LETTER_COLUMNS: Final = ("received_at", "source", "reason", "raw")
#: The alert_acks columns the sink writes (``ingested_at`` is a DEFAULT).
ACK_COLUMNS: Final = ("alert_id", "acked_by", "acked_at", "via")


class DeadLetter(NamedTuple):
    """Input that could not be used: where it came from, why, and its bytes."""

    source: str
    reason: str
    raw: bytes
    received_at: datetime | None = None  # None: stamped when added to a sink


@functools.cache
def events_schema() -> pa.Schema:
    import pyarrow as pa  # noqa: PLC0415 (see module docstring)

    text, ts = pa.string(), pa.timestamp("us", tz="UTC")
    types = {
        "ts": ts,
        "schema_version": pa.uint8(),
        "input_tokens": pa.uint64(),
        "output_tokens": pa.uint64(),
        "cached_input_tokens": pa.uint64(),
        "reasoning_tokens": pa.uint64(),
        "cost_usd": pa.float64(),
        "priced": pa.uint8(),
        "duration_ms": pa.float64(),
        "attributes": pa.map_(text, text),
    }
    return pa.schema([(name, types.get(name, text)) for name in EVENT_COLUMNS])


@functools.cache
def alerts_schema(*, delivery_status: bool = False) -> pa.Schema:
    """:data:`ALERT_COLUMNS`, then :data:`DELIVERY_STATUS_COLUMN` when asked for."""
    import pyarrow as pa  # noqa: PLC0415 (see module docstring)

    text = pa.string()
    types = {
        "value": pa.float64(),
        "threshold": pa.float64(),
        "window_s": pa.uint32(),
        "ts": pa.timestamp("us", tz="UTC"),
        "event_ids": pa.list_(text),
    }
    names = (*ALERT_COLUMNS, DELIVERY_STATUS_COLUMN) if delivery_status else ALERT_COLUMNS
    return pa.schema([(name, types.get(name, text)) for name in names])


@functools.cache
def dead_letters_schema() -> pa.Schema:
    import pyarrow as pa  # noqa: PLC0415 (see module docstring)

    return pa.schema(
        [
            ("received_at", pa.timestamp("us", tz="UTC")),
            ("source", pa.string()),
            ("reason", pa.string()),
            ("raw", pa.binary()),
        ]
    )


def attribute_text(value: str | bool | float) -> str:
    """How an attribute value is stored in ``Map(String, String)``: strings as they
    are, booleans ``true``/``false``, numbers in their shortest round-trip form."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _array(values: Sequence[Any], type_: pa.DataType, *, max_value: int | None = None) -> pa.Array:
    import pyarrow as pa  # noqa: PLC0415 (see module docstring)

    try:
        return pa.array(values, type=type_)
    except (OverflowError, pa.ArrowInvalid):
        if max_value is None:
            raise
    # The contract bounds these ints below only; an absurd count is stored saturated
    # rather than failing every retry of the batch that carries it.
    clamped = [None if v is None else min(max(v, 0), max_value) for v in values]
    return pa.array(clamped, type=type_)


def _map_array(attributes: Sequence[Mapping[str, str | bool | float] | None]) -> pa.Array:
    """Attribute dicts -> ``map<string, string>``, built from flat keys and values."""
    import pyarrow as pa  # noqa: PLC0415 (see module docstring)

    offsets = [0]
    keys: list[str] = []
    values: list[str] = []
    for attrs in attributes:
        if attrs:
            keys.extend(attrs)
            values.extend(v if type(v) is str else attribute_text(v) for v in attrs.values())
        offsets.append(len(keys))
    return pa.MapArray.from_arrays(
        pa.array(offsets, type=pa.int32()),
        pa.array(keys, type=pa.string()),
        pa.array(values, type=pa.string()),
    )


def _table(schema: pa.Schema, columns: Mapping[str, Sequence[Any]]) -> pa.Table:
    import pyarrow as pa  # noqa: PLC0415 (see module docstring)

    arrays = [
        _map_array(columns[field.name])
        if isinstance(field.type, pa.MapType)
        else _array(columns[field.name], field.type, max_value=_UINT_BOUNDS.get(field.name))
        for field in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def _columns(models: Sequence[Event] | Sequence[Alert], names: Iterable[str]) -> dict[str, Any]:
    # Column by column over the models' field dicts: no per-model tuple is built,
    # so a big batch does not set off the cyclic GC over every model it holds.
    fields = [vars(m) for m in models]
    return {name: [f[name] for f in fields] for name in names}


def events_to_arrow(events: Sequence[Event]) -> pa.Table:
    """Events -> a table with :data:`EVENT_COLUMNS` (the events table minus ``ingested_at``).

    ``cost_usd`` None becomes ``cost_usd = 0, priced = 0``; attributes become text.
    """
    if not events:
        return events_schema().empty_table()
    columns = _columns(events, _EVENT_FIELDS)
    costs = columns["cost_usd"]
    columns["priced"] = [0 if c is None else 1 for c in costs]
    columns["cost_usd"] = [0.0 if c is None else c for c in costs]
    return _table(events_schema(), columns)


#: What the contract fills in when a field is absent (the rest default to NULL).
_EVENT_DEFAULTS: Final = {"tenant_id": "default", "status": "ok", "schema_version": 1}


def event_row(event: Event) -> dict[str, Any]:
    """An :class:`Event` as the plain dict :func:`event_rows_to_arrow` takes (``ts``
    stays a datetime: whatever pydantic accepted, not only the producers' form)."""
    return dict(vars(event))


def event_rows_to_arrow(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Event dicts as decoded from JSON -> the same table as :func:`events_to_arrow`.

    Every row must satisfy the contract already (the sink checks it, cheaply or with
    pydantic) with ``ts`` in the producers' form, ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``:
    Arrow parses that column in C. Absent fields take the contract's defaults.
    """
    import pyarrow as pa  # noqa: PLC0415 (see module docstring)

    if not rows:
        return events_schema().empty_table()
    columns: dict[str, Any] = {}
    for name in _EVENT_FIELDS:
        column = [r.get(name) for r in rows]
        default = _EVENT_DEFAULTS.get(name)
        if default is not None and None in column:
            column = [default if v is None else v for v in column]
        columns[name] = column
    costs = columns["cost_usd"]
    columns["priced"] = [0 if c is None else 1 for c in costs]
    columns["cost_usd"] = [0.0 if c is None else c for c in costs]
    ts = columns.pop("ts")
    table = _table(events_schema().remove(1), columns)
    ts_type = pa.timestamp("us", tz="UTC")
    try:
        stamps = pa.array(ts, type=pa.string()).cast(ts_type)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # Some rows came through pydantic (datetimes), or a string Arrow cannot parse
        # that pydantic accepted: parse in Python, slower but exact.
        stamps = pa.array([_as_datetime(v) for v in ts], type=ts_type)
    return table.add_column(1, events_schema().field(1), stamps)


def _as_datetime(value: str | datetime) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def alerts_to_arrow(
    alerts: Sequence[Alert], *, delivery_status: Sequence[str] | None = None
) -> pa.Table:
    """Alerts -> a table with :data:`ALERT_COLUMNS` (the alerts table minus its defaults).

    With ``delivery_status`` (one value per alert: ``''`` for an alert as raised,
    ``failed:<endpoint>`` for a delivery that finally failed) the table also has
    :data:`DELIVERY_STATUS_COLUMN`.
    """
    if delivery_status is not None and len(delivery_status) != len(alerts):
        raise ValueError(f"{len(delivery_status)} delivery_status values for {len(alerts)} alerts")
    schema = alerts_schema(delivery_status=delivery_status is not None)
    if not alerts:
        return schema.empty_table()
    columns = _columns(alerts, ALERT_COLUMNS)
    if delivery_status is not None:
        columns[DELIVERY_STATUS_COLUMN] = delivery_status
    return _table(schema, columns)


@functools.cache
def acks_schema() -> pa.Schema:
    import pyarrow as pa  # noqa: PLC0415 (see module docstring)

    text = pa.string()
    types = {"acked_at": pa.timestamp("us", tz="UTC")}
    return pa.schema([(name, types.get(name, text)) for name in ACK_COLUMNS])


def acks_to_arrow(acks: Sequence[Ack]) -> pa.Table:
    """Acknowledgements -> a table with :data:`ACK_COLUMNS`."""
    if not acks:
        return acks_schema().empty_table()
    columns: dict[str, Sequence[Any]] = {
        "alert_id": [a.alert_id for a in acks],
        "acked_by": [a.by for a in acks],
        "acked_at": [a.at for a in acks],
        "via": [a.via for a in acks],
    }
    return _table(acks_schema(), columns)


def dead_letters_to_arrow(
    items: Sequence[DeadLetter | tuple[str, str, bytes | str]],
    *,
    received_at: datetime | None = None,
) -> pa.Table:
    """``(source, reason, raw)`` tuples or :class:`DeadLetter` s -> the dead_letters table.

    An item without its own ``received_at`` gets ``received_at`` (default: now).
    """
    if not items:
        return dead_letters_schema().empty_table()
    now = received_at or datetime.now(UTC)
    stamps: list[datetime] = []
    sources: list[str] = []
    reasons: list[str] = []
    raws: list[bytes] = []
    for item in items:
        stamp: datetime | None = None
        if isinstance(item, DeadLetter):
            source, reason, raw, stamp = item
        else:
            source, reason, text_or_raw = item
            raw = text_or_raw.encode() if isinstance(text_or_raw, str) else text_or_raw
        stamps.append(stamp or now)
        sources.append(source)
        reasons.append(reason)
        raws.append(raw)
    columns: dict[str, Sequence[Any]] = {
        "received_at": stamps,
        "source": sources,
        "reason": reasons,
        "raw": raws,
    }
    return _table(dead_letters_schema(), columns)


def dead_letters_from_rejected(
    rejected: Iterable[Rejected], source: str, *, received_at: datetime | None = None
) -> list[DeadLetter]:
    """Decoder rejects -> dead letters; an item of a packed record gets ``source#index``."""
    return [
        DeadLetter(
            source if r.index is None else f"{source}#{r.index}", r.reason, r.raw, received_at
        )
        for r in rejected
    ]


#: The control_log columns the sink writes (the table minus ingested_at), in order.
CONTROL_COLUMNS: Final = ("ts", "action", "scope", "key", "tenant_id", "agent_id",
                          "session_id", "alert_id", "reason", "by")


@functools.cache
def control_schema() -> pa.Schema:
    import pyarrow as pa  # noqa: PLC0415 (see module docstring)

    return pa.schema([(name, pa.timestamp("us", tz="UTC") if name == "ts" else pa.string())
                      for name in CONTROL_COLUMNS])


def control_to_arrow(records: Sequence[ControlRecord]) -> pa.Table:
    """Control records (halts and resumes) -> the control_log table."""
    if not records:
        return control_schema().empty_table()
    columns: dict[str, list[Any]] = {name: [] for name in CONTROL_COLUMNS}
    for record in records:
        columns["ts"].append(record.ts)
        columns["action"].append(record.action.value)
        columns["scope"].append(record.scope.value)
        columns["key"].append(record.key)
        for name in ("tenant_id", "agent_id", "session_id", "alert_id", "reason", "by"):
            columns[name].append(getattr(record, name))
    return _table(control_schema(), columns)
