"""Contracts -> Arrow: column order and types follow the DDL; values are kept."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from agentwatch.schemas import Alert, Event, EventKind, Rejected
from agentwatch.sinks import (
    ALERT_COLUMNS,
    DEAD_LETTER_COLUMNS,
    DELIVERY_STATUS_COLUMN,
    EVENT_COLUMNS,
    DeadLetter,
    alerts_to_arrow,
    attribute_text,
    dead_letters_from_rejected,
    dead_letters_to_arrow,
    events_to_arrow,
)
from agentwatch.sinks._rows import UINT32_MAX, UINT64_MAX

EventFactory = Callable[..., Event]
AlertFactory = Callable[..., Alert]
UTC_US = pa.timestamp("us", tz="UTC")


def test_events_table_has_the_event_columns_in_order(make_event: EventFactory) -> None:
    table = events_to_arrow([make_event(full=True)])
    assert tuple(table.column_names) == EVENT_COLUMNS
    assert table.schema.field("ts").type == UTC_US


def test_every_event_field_is_a_column(make_event: EventFactory) -> None:
    fields = set(type(make_event()).model_fields)
    assert fields <= set(EVENT_COLUMNS)
    assert set(EVENT_COLUMNS) - fields == {"priced"}


def test_event_values_are_kept(make_event: EventFactory) -> None:
    event = make_event(full=True)
    row = events_to_arrow([event]).to_pylist()[0]
    assert row["event_id"] == event.event_id
    assert row["ts"] == event.ts
    assert row["ts"].microsecond == event.ts.microsecond
    assert row["kind"] == "tool_call"
    assert row["status"] == "error"
    assert row["input_tokens"] == 1200
    assert row["cost_usd"] == 0.0123
    assert row["priced"] == 1


def test_unknown_cost_is_zero_and_unpriced(make_event: EventFactory) -> None:
    row = events_to_arrow([make_event(cost_usd=None)]).to_pylist()[0]
    assert (row["cost_usd"], row["priced"]) == (0.0, 0)


def test_optional_fields_stay_null(make_event: EventFactory) -> None:
    row = events_to_arrow([make_event()]).to_pylist()[0]
    for name in ("trace_id", "name", "model", "input_tokens", "duration_ms", "tool_args_hash"):
        assert row[name] is None, name


def test_attribute_values_are_stored_as_text(make_event: EventFactory) -> None:
    event = make_event(attributes={"s": "x", "i": 3, "f": 0.1, "t": True, "no": False})
    column = events_to_arrow([event, make_event()]).column("attributes")
    assert column.to_pylist(maps_as_pydicts="strict") == [
        {"s": "x", "i": "3", "f": "0.1", "t": "true", "no": "false"},
        {},
    ]


def test_attribute_text_is_the_shortest_round_trip_form() -> None:
    assert [attribute_text(v) for v in ("a", 1, 1.5, 1e20, True)] == [
        "a",
        "1",
        "1.5",
        "1e+20",
        "true",
    ]


def test_huge_token_counts_saturate_instead_of_failing_the_batch(
    make_event: EventFactory,
) -> None:
    # the contract bounds tokens to int64 now; an Event built without validation still
    # must not fail the batch
    event = make_event().model_copy(update={"input_tokens": 2**70})
    row = events_to_arrow([event]).to_pylist()[0]
    assert row["input_tokens"] == UINT64_MAX


def test_no_events_give_an_empty_table_with_the_schema() -> None:
    table = events_to_arrow([])
    assert table.num_rows == 0
    assert tuple(table.column_names) == EVENT_COLUMNS


def test_many_events_keep_their_order(make_event: EventFactory) -> None:
    events = [make_event(i, kind=EventKind.LLM_CALL) for i in range(1000)]
    table = events_to_arrow(events)
    assert table.column("event_id").to_pylist() == [e.event_id for e in events]


def test_alerts_table_has_the_alert_columns_in_order(make_alert: AlertFactory) -> None:
    alert = make_alert()
    table = alerts_to_arrow([alert])
    assert tuple(table.column_names) == ALERT_COLUMNS
    assert set(ALERT_COLUMNS) == set(type(alert).model_fields)
    row = table.to_pylist()[0]
    assert row["event_ids"] == alert.event_ids
    assert row["type"] == "cost"
    assert row["ts"] == alert.ts


def test_alerts_with_delivery_status_get_that_column_last(make_alert: AlertFactory) -> None:
    alerts = [make_alert(), make_alert()]
    table = alerts_to_arrow(alerts, delivery_status=["", "failed:team-slack"])
    assert tuple(table.column_names) == (*ALERT_COLUMNS, DELIVERY_STATUS_COLUMN)
    assert table.schema.field(DELIVERY_STATUS_COLUMN).type == pa.string()
    assert table.column(DELIVERY_STATUS_COLUMN).to_pylist() == ["", "failed:team-slack"]
    assert table.drop_columns([DELIVERY_STATUS_COLUMN]).equals(alerts_to_arrow(alerts))


def test_no_alerts_with_delivery_status_give_an_empty_table_with_that_column() -> None:
    table = alerts_to_arrow([], delivery_status=[])
    assert (table.num_rows, tuple(table.column_names)) == (
        0,
        (*ALERT_COLUMNS, DELIVERY_STATUS_COLUMN),
    )


def test_one_delivery_status_per_alert_is_required(make_alert: AlertFactory) -> None:
    with pytest.raises(ValueError, match="1 delivery_status values for 2 alerts"):
        alerts_to_arrow([make_alert(), make_alert()], delivery_status=["failed:x"])


def test_alert_window_is_null_for_whole_session_rules(make_alert: AlertFactory) -> None:
    row = alerts_to_arrow([make_alert(window_s=None)]).to_pylist()[0]
    assert row["window_s"] is None


def test_alert_window_out_of_range_saturates(make_alert: AlertFactory) -> None:
    row = alerts_to_arrow([make_alert(window_s=2**40)]).to_pylist()[0]
    assert row["window_s"] == UINT32_MAX


def test_dead_letters_accept_tuples_and_keep_raw_bytes() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    table = dead_letters_to_arrow(
        [("topic/0/12", "malformed JSON", b"\xff{"), ("file.jsonl:3", "bad", "text")],
        received_at=at,
    )
    assert tuple(table.column_names) == DEAD_LETTER_COLUMNS
    assert table.to_pylist() == [
        {"received_at": at, "source": "topic/0/12", "reason": "malformed JSON", "raw": b"\xff{"},
        {"received_at": at, "source": "file.jsonl:3", "reason": "bad", "raw": b"text"},
    ]


def test_dead_letters_from_rejected_name_the_item_of_a_packed_record() -> None:
    letters = dead_letters_from_rejected(
        [Rejected(b"{}", "field `ts`: required field is missing", 2), Rejected(b"x", "nope")],
        "agentwatch.events/1/99",
    )
    assert [(d.source, d.raw) for d in letters] == [
        ("agentwatch.events/1/99#2", b"{}"),
        ("agentwatch.events/1/99", b"x"),
    ]
    assert all(isinstance(d, DeadLetter) for d in letters)
