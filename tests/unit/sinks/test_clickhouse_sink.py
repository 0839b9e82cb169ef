"""ClickHouseSink on a real chDB: rows in == rows stored, dedup tokens, failures keep rows,
failed webhook deliveries stored as alert rows and dead letters."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from agentwatch.schemas import Alert, DeliveryFailure, Event, Rejected
from agentwatch.schemas.errors import BackpressureError, SinkError
from agentwatch.sinks import (
    ChdbBackend,
    ClickHouseSink,
    DeadLetter,
    RowCounts,
    SchemaConfig,
    attribute_text,
    events_to_arrow,
    migrate,
)

EventFactory = Callable[..., Event]
AlertFactory = Callable[..., Alert]


@pytest.fixture
def sink(backend: ChdbBackend) -> Iterator[ClickHouseSink]:
    """A sink on a fresh database of the module's backend, so tests do not see each other
    (no TTL: the events have fixed times, see conftest)."""
    database = f"aw_{uuid.uuid4().hex[:12]}"
    migrate(backend, SchemaConfig(database=database, ttl_days=None))
    yield ClickHouseSink(backend, database=database)
    backend.command(f"DROP DATABASE IF EXISTS {database} SYNC")


def _db(sink: ClickHouseSink) -> str:
    return sink.database


def _count(sink: ClickHouseSink, table: str) -> int:
    return int(sink.query(f"SELECT count() FROM {_db(sink)}.{table}").rows[0][0])


def _expected_row(event: Event) -> dict[str, Any]:
    row = event.model_dump()
    row["ts"] = event.ts  # model_dump() gives the RFC 3339 text
    row["kind"] = event.kind.value
    row["status"] = event.status.value
    row["priced"] = 0 if event.cost_usd is None else 1
    row["cost_usd"] = event.cost_usd or 0.0
    row["attributes"] = {k: attribute_text(v) for k, v in (event.attributes or {}).items()}
    return row


def test_every_event_field_round_trips(sink: ClickHouseSink, make_event: EventFactory) -> None:
    events = [make_event(0, full=True), make_event(1), make_event(2, cost_usd=0.0)]
    sink.add_events(events)
    stats = sink.flush()
    assert stats.inserted.events == 3
    rows = sink.query(
        f"SELECT * EXCEPT ingested_at FROM {_db(sink)}.events "
        "WHERE event_id IN {ids:Array(String)} ORDER BY ts",
        {"ids": [e.event_id for e in events]},
    ).dicts()
    assert rows == [_expected_row(e) for e in events]


def test_the_test_databases_keep_events_older_than_any_ttl(
    sink: ClickHouseSink, make_event: EventFactory
) -> None:
    """The events have fixed times (conftest T0): under the default 30-day TTL,
    ClickHouse drops such rows as they are inserted once T0 is 30 days old."""
    sink.add_events([make_event(ts=datetime.now(UTC) - timedelta(days=400))])
    assert sink.flush().inserted.events == 1
    assert _count(sink, "events") == 1


def test_timestamps_keep_their_microseconds(sink: ClickHouseSink, make_event: EventFactory) -> None:
    events = [make_event(i) for i in range(5)]
    sink.add_events(events)
    sink.flush()
    stored = sink.query(f"SELECT ts FROM {_db(sink)}.events ORDER BY ts").rows
    assert [r[0] for r in stored] == [e.ts for e in events]
    assert {r[0].microsecond for r in stored} == {e.ts.microsecond for e in events}


def test_n_events_in_are_n_rows_out(sink: ClickHouseSink, make_event: EventFactory) -> None:
    events = [make_event(i, full=i % 2 == 0) for i in range(2_000)]
    sink.add_events(events[:1_500])
    sink.add_events(events[1_500:])
    assert sink.buffered.events == 2_000
    stats = sink.flush()
    assert stats.inserted.events == 2_000
    assert sink.buffered.total == 0
    rows = sink.query(
        "SELECT count(), uniqExact(event_id), sum(input_tokens), sum(priced) "
        f"FROM {_db(sink)}.events"
    ).rows
    assert rows == [(2_000, 2_000, 1_000 * 1_200, 1_000)]


def test_alerts_round_trip(sink: ClickHouseSink, make_alert: AlertFactory) -> None:
    alerts = [
        make_alert(),
        make_alert(agent_id=None, session_id=None, window_s=None, event_ids=[], key="acme"),
    ]
    sink.add_alerts(alerts)
    assert sink.flush().inserted.alerts == 2
    rows = sink.query(
        f"SELECT * EXCEPT (delivery_status, ingested_at) FROM {_db(sink)}.alerts ORDER BY key DESC"
    ).dicts()
    expected = [a.model_dump() | {"ts": a.ts} for a in alerts]
    for row in expected:
        for name in ("type", "state", "severity", "scope"):
            row[name] = row[name].value
    assert rows == expected
    assert sink.query(f"SELECT DISTINCT delivery_status FROM {_db(sink)}.alerts").rows == [("",)]


def test_dead_letters_are_stored_with_source_and_reason(sink: ClickHouseSink) -> None:
    sink.add_dead_letters([("agentwatch.events/0/17", "malformed JSON", b"\xff{not json")])
    sink.add_dead_letters([DeadLetter("replay.jsonl:3", "field `ts`: missing", b'{"a":1}')])
    sink.add_rejected([Rejected(b"[]", "empty array", None)], "agentwatch.events/2/5")
    assert sink.flush().inserted.dead_letters == 3
    rows = sink.query(
        "SELECT source, reason, hex(raw), received_at "
        f"FROM {_db(sink)}.dead_letters ORDER BY source"
    ).rows
    assert [r[:3] for r in rows] == [
        ("agentwatch.events/0/17", "malformed JSON", b"\xff{not json".hex().upper()),
        ("agentwatch.events/2/5", "empty array", b"[]".hex().upper()),
        ("replay.jsonl:3", "field `ts`: missing", b'{"a":1}'.hex().upper()),
    ]
    assert all(r[3] is not None for r in rows)


def test_same_token_prefix_twice_stores_once(
    sink: ClickHouseSink, make_event: EventFactory, make_alert: AlertFactory
) -> None:
    events, alerts = [make_event(i) for i in range(10)], [make_alert()]
    for _ in range(2):  # a batch, then its retry after a crash before the offset commit
        sink.add_events(events)
        sink.add_alerts(alerts)
        sink.flush("p0/0-9")
    assert (_count(sink, "events"), _count(sink, "alerts")) == (10, 1)


def test_a_different_token_prefix_inserts(sink: ClickHouseSink, make_event: EventFactory) -> None:
    events = [make_event(i) for i in range(10)]
    for prefix in ("p0/0-9", "p0/10-19"):
        sink.add_events(events)
        sink.flush(dedup_token_prefix=prefix)
    assert _count(sink, "events") == 20


def test_each_table_uses_prefix_colon_table_as_its_token(
    sink: ClickHouseSink, make_event: EventFactory
) -> None:
    events = [make_event(i) for i in range(3)]
    sink.add_events(events)
    sink.flush("batch-7")
    table = f"{_db(sink)}.events"
    same, other = "batch-7:events", "batch-7:alerts"
    sink.backend.insert_arrow(table, events_to_arrow(events), dedup_token=same)
    assert _count(sink, "events") == 3
    sink.backend.insert_arrow(table, events_to_arrow(events), dedup_token=other)
    assert _count(sink, "events") == 6


def test_without_a_prefix_nothing_is_deduplicated(
    sink: ClickHouseSink, make_event: EventFactory
) -> None:
    events = [make_event(i) for i in range(4)]
    for _ in range(2):
        sink.add_events(events)
        sink.flush()
    assert _count(sink, "events") == 8


def test_flush_with_nothing_buffered_writes_nothing(sink: ClickHouseSink) -> None:
    stats = sink.flush("empty")
    assert stats.inserted.total == 0
    assert stats.duration_s >= 0


def test_a_missing_table_raises_sink_error_and_keeps_the_rows(
    backend: ChdbBackend, make_event: EventFactory, make_alert: AlertFactory
) -> None:
    database = f"aw_late_{uuid.uuid4().hex[:8]}"
    sink = ClickHouseSink(backend, database=database)  # not migrated yet
    sink.add_events([make_event(i) for i in range(5)])
    sink.add_alerts([make_alert()])
    with pytest.raises(SinkError, match=f"insert into {database}.events failed"):
        sink.flush("p1/0-4")
    assert (sink.buffered.events, sink.buffered.alerts) == (5, 1)
    migrate(backend, SchemaConfig(database=database, ttl_days=None))
    stats = sink.flush("p1/0-4")
    assert (stats.inserted.events, stats.inserted.alerts) == (5, 1)
    assert sink.buffered.total == 0
    assert (_count(sink, "events"), _count(sink, "alerts")) == (5, 1)
    backend.command(f"DROP DATABASE {database} SYNC")


def test_an_overloaded_store_raises_backpressure_and_keeps_the_rows(
    sink: ClickHouseSink, make_event: EventFactory
) -> None:
    sink.add_events([make_event(i) for i in range(5)])
    sink.backend.command("SET max_execution_time = 0.000001")  # every statement times out
    try:
        with pytest.raises(BackpressureError) as info:
            sink.flush("p2/0-4")
    finally:
        sink.backend.command("SET max_execution_time = 0")
    assert info.value.retry_after_s > 0
    assert sink.buffered.events == 5
    assert sink.flush("p2/0-4").inserted.events == 5
    assert _count(sink, "events") == 5


def test_rows_added_after_a_failure_are_written_after_the_failed_batch(
    backend: ChdbBackend, make_event: EventFactory
) -> None:
    database = f"aw_late_{uuid.uuid4().hex[:8]}"
    sink = ClickHouseSink(backend, database=database)
    sink.add_events([make_event(i) for i in range(3)])
    with pytest.raises(SinkError):
        sink.flush("a")
    sink.add_events([make_event(i) for i in range(3, 7)])
    assert sink.buffered.events == 7
    migrate(backend, SchemaConfig(database=database, ttl_days=None))
    assert sink.flush("b").inserted.events == 7
    assert _count(sink, "events") == 7
    backend.command(f"DROP DATABASE {database} SYNC")


def test_reusing_the_prefix_of_a_failed_batch_for_new_rows_is_refused(
    backend: ChdbBackend, make_event: EventFactory
) -> None:
    sink = ClickHouseSink(backend, database=f"aw_never_{uuid.uuid4().hex[:8]}")
    sink.add_events([make_event(0)])
    with pytest.raises(SinkError):
        sink.flush("same")
    sink.add_events([make_event(1)])
    with pytest.raises(ValueError, match="already names a failed batch"):
        sink.flush("same")
    assert sink.buffered.events == 2


def test_query_passes_values_as_parameters(sink: ClickHouseSink, make_event: EventFactory) -> None:
    sink.add_events([make_event(0, agent_id="O'Brien"), make_event(1, agent_id="x")])
    sink.flush()
    rows = sink.query(
        f"SELECT count() FROM {_db(sink)}.events WHERE agent_id = {{agent:String}}",
        {"agent": "O'Brien"},
    ).rows
    assert rows == [(1,)]
    injected = sink.query(
        f"SELECT count() FROM {_db(sink)}.events WHERE agent_id = {{agent:String}}",
        {"agent": "x' OR '1'='1"},
    ).rows
    assert injected == [(0,)]


# --- webhook deliveries that finally failed ---------------------------------------------


def _failure(alert: Alert, endpoint: str = "team-slack", delivery: str = "d-1") -> DeliveryFailure:
    return DeliveryFailure(
        alert=alert,
        endpoint=endpoint,
        delivery_id=delivery,
        attempts=8,
        status_code=503,
        error="HTTP 503: upstream unavailable",
    )


def test_a_delivery_failure_is_an_alert_row_with_its_status_and_a_dead_letter(
    sink: ClickHouseSink, make_alert: AlertFactory
) -> None:
    alert = make_alert()
    failure = _failure(alert)
    sink.add_alerts([alert])
    sink.add_delivery_failures([failure])
    assert sink.buffered == RowCounts(alerts=2, dead_letters=1)
    stats = sink.flush("p0/0-1")
    assert (stats.inserted.alerts, stats.inserted.dead_letters) == (2, 1)
    rows = sink.query(
        f"SELECT * EXCEPT ingested_at FROM {_db(sink)}.alerts ORDER BY delivery_status"
    ).dicts()
    expected = alert.model_dump() | {"ts": alert.ts}
    for name in ("type", "state", "severity", "scope"):
        expected[name] = expected[name].value
    assert rows == [
        expected | {"delivery_status": ""},
        expected | {"delivery_status": "failed:team-slack"},
    ]
    letters = sink.query(f"SELECT source, reason, raw FROM {_db(sink)}.dead_letters").rows
    assert letters == [("webhook/team-slack", failure.reason, failure.encode().decode())]
    assert DeliveryFailure.decode(letters[0][2]) == failure


def test_a_failed_pagerduty_acknowledge_is_a_dead_letter_saying_so_and_no_alert_row(
    sink: ClickHouseSink, make_alert: AlertFactory
) -> None:
    """The alert reached PagerDuty; only its acknowledge failed: no ``failed:`` row."""
    failure = _failure(make_alert(), "pd").model_copy(update={"delivery": "acknowledge"})
    sink.add_delivery_failures([failure])
    assert sink.buffered == RowCounts(dead_letters=1)
    sink.flush("p9/0-0")
    assert _count(sink, "alerts") == 0
    reasons = sink.query(f"SELECT reason FROM {_db(sink)}.dead_letters").rows
    assert reasons == [(failure.reason,)]
    assert "of the acknowledge of alert" in failure.reason
    assert DeliveryFailure.decode(failure.encode()).delivery == "acknowledge"


def test_delivery_failures_retried_with_one_token_prefix_are_stored_once(
    sink: ClickHouseSink, make_alert: AlertFactory
) -> None:
    alert = make_alert()
    failures = [_failure(alert, "team-slack"), _failure(alert, "pager", "d-2")]
    for _ in range(2):  # a flush, then its retry after a crash before the offset commit
        sink.add_alerts([alert])
        sink.add_delivery_failures(failures)
        sink.flush("p3/0-2")
    statuses = sink.query(
        f"SELECT delivery_status FROM {_db(sink)}.alerts ORDER BY delivery_status"
    ).rows
    assert statuses == [("",), ("failed:pager",), ("failed:team-slack",)]
    assert _count(sink, "dead_letters") == 2


def test_a_failed_flush_keeps_the_delivery_failures(
    backend: ChdbBackend, make_alert: AlertFactory
) -> None:
    database = f"aw_late_{uuid.uuid4().hex[:8]}"
    sink = ClickHouseSink(backend, database=database)  # not migrated yet
    sink.add_delivery_failures([_failure(make_alert())])
    with pytest.raises(SinkError):
        sink.flush("p4/0-0")
    assert sink.buffered == RowCounts(alerts=1, dead_letters=1)
    migrate(backend, SchemaConfig(database=database, ttl_days=None))
    assert sink.flush("p4/0-0").inserted == RowCounts(alerts=1, dead_letters=1)
    assert sink.query(f"SELECT delivery_status FROM {database}.alerts").rows == [
        ("failed:team-slack",)
    ]
    backend.command(f"DROP DATABASE {database} SYNC")


def test_delivery_failures_added_while_another_thread_flushes_are_all_stored_once(
    sink: ClickHouseSink, make_alert: AlertFactory
) -> None:
    """The embedded pipeline adds failures from a webhook thread while its writer
    thread flushes: no row is lost or written twice, whatever the interleaving."""
    per_thread, threads = 150, 3
    started = threading.Barrier(threads + 1)
    done = threading.Event()

    def add(lane: int) -> None:
        started.wait()
        for i in range(per_thread):
            alert = make_alert(alert_id=f"a-{lane}-{i}")
            sink.add_delivery_failures([_failure(alert, f"lane-{lane}", f"d-{lane}-{i}")])
            sink.add_alerts([alert])

    def flush_until_done() -> None:
        started.wait()
        while not done.is_set():
            sink.flush()
            time.sleep(0.001)

    adders = [threading.Thread(target=add, args=(lane,)) for lane in range(threads)]
    flusher = threading.Thread(target=flush_until_done)
    for thread in (*adders, flusher):
        thread.start()
    for thread in adders:
        thread.join()
    done.set()
    flusher.join()
    sink.flush()
    assert sink.buffered.total == 0
    total = per_thread * threads
    rows = sink.query(
        "SELECT countIf(delivery_status = ''), countIf(delivery_status LIKE 'failed:lane-%'),"
        f" uniqExact(alert_id, delivery_status) FROM {_db(sink)}.alerts"
    ).rows
    assert rows == [(total, total, 2 * total)]
    letters = sink.query(
        f"SELECT count(), uniqExact(raw) FROM {_db(sink)}.dead_letters"
        " WHERE source LIKE 'webhook/lane-%'"
    ).rows
    assert letters == [(total, total)]


# --- stage / write: the split flush of a runtime that orders its own commits ------------


def test_a_staged_flush_is_written_once_with_the_flush_tokens(
    sink: ClickHouseSink, make_event: EventFactory, make_alert: AlertFactory
) -> None:
    events = [make_event(i) for i in range(3)]
    for _ in range(2):  # a write, then its retry after a crash before the offset commit
        sink.add_events(events)
        sink.add_alerts([make_alert(alert_id="al-1")])
        staged = sink.stage("p0/0-3")
        assert staged.rows == RowCounts(events=3, alerts=1)
        assert sink.buffered.total == 0
        sink.write(staged)
        assert staged.written
    assert (_count(sink, "events"), _count(sink, "alerts")) == (3, 1)
    sink.add_events(events)
    sink.flush("p0/0-3")  # flush makes the same tokens
    assert _count(sink, "events") == 3


def test_a_staged_flush_that_failed_writes_only_the_rest_when_written_again(
    sink: ClickHouseSink, make_event: EventFactory, make_alert: AlertFactory
) -> None:
    database = _db(sink)
    sink.backend.command(f"RENAME TABLE {database}.alerts TO {database}.alerts_away")
    sink.add_events([make_event(i) for i in range(4)])
    sink.add_alerts([make_alert()])
    sink.add_dead_letters([("t/0/9", "broken", b"{")])
    staged = sink.stage("p1/0-9")
    inserted: list[tuple[str, int]] = []

    def hook(table: str, rows: int, seconds: float) -> None:
        assert seconds >= 0
        inserted.append((table, rows))

    with pytest.raises(SinkError, match=f"insert into {database}.alerts failed"):
        sink.write(staged, on_insert=hook)
    assert inserted == [(f"{database}.events", 4)]
    assert not staged.written
    sink.backend.command(f"RENAME TABLE {database}.alerts_away TO {database}.alerts")
    sink.write(staged, on_insert=hook)
    assert inserted[1:] == [(f"{database}.alerts", 1), (f"{database}.dead_letters", 1)]
    assert [_count(sink, t) for t in ("events", "alerts", "dead_letters")] == [4, 1, 1]


def test_event_rows_as_decoded_from_json_store_as_their_events(
    backend: ChdbBackend, make_event: EventFactory
) -> None:
    # What the Kafka sink adds (rows decoded from records) and what the embedded
    # pipeline adds (Events) become the same rows.
    events = [make_event(i, full=True) for i in range(3)] + [make_event(3)]
    rows = [orjson.loads(e.model_dump_json(exclude_none=True)) for e in events]
    stored = []
    for add in ("add_events", "add_event_rows"):
        database = f"aw_{uuid.uuid4().hex[:12]}"
        migrate(backend, SchemaConfig(database=database, ttl_days=None))
        sink = ClickHouseSink(backend, database=database)
        getattr(sink, add)(events if add == "add_events" else rows)
        sink.flush("p")
        stored.append(sink.query(
            f"SELECT * EXCEPT ingested_at FROM {database}.events ORDER BY event_id").dicts())
        backend.command(f"DROP DATABASE {database} SYNC")
    assert len(stored[0]) == 4
    assert stored[0] == stored[1]
