"""The ClickHouse schema on a real chDB, no mocks: the views match their documented
columns, rollups_1m equals a recomputation from the raw events, a retried batch does
not double the rollups, the views give hand-checked answers, the cluster DDL parses,
and a database created by an older release upgrades."""

from __future__ import annotations

import math
import random
import re
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agentwatch.schemas import (
    Alert,
    AlertScope,
    AlertState,
    AlertType,
    DeliveryFailure,
    Event,
    EventKind,
    EventStatus,
)
from agentwatch.sinks import (
    MIGRATIONS,
    SAVED_QUERIES,
    VIEWS,
    ChdbBackend,
    ClickHouseSink,
    SchemaConfig,
    applied_versions,
    events_to_arrow,
    migrate,
    schema_statements,
)

EventFactory = Callable[..., Event]
AlertFactory = Callable[..., Alert]

#: Tables that hold data: on a cluster each has a Distributed ``<name>_all`` twin.
DATA_TABLES = ("events", "rollups_1m", "alerts", "dead_letters", "control_log", "alert_acks")
QUANTILES = (0.5, 0.9, 0.95, 0.99)
# Day 0 of the generated workload. The test databases keep events forever
# (ttl_days=None), so a fixed date in the past is safe whatever today is.
DAY0 = datetime(2026, 10, 30, tzinfo=UTC)  # the days run over a month boundary


@pytest.fixture
def database(backend: ChdbBackend) -> Iterator[str]:
    """A fresh, fully migrated database without TTL (the tests see only their rows)."""
    name = f"aw_schema_{uuid.uuid4().hex[:12]}"
    migrate(backend, SchemaConfig(database=name, ttl_days=None))
    yield name
    backend.command(f"DROP DATABASE IF EXISTS {name} SYNC")


def _event(ts: datetime, **fields: Any) -> Event:
    base: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "ts": ts,
        "agent_id": "agent-a",
        "session_id": "s-1",
        "kind": EventKind.LLM_CALL,
    }
    return Event(**(base | fields))


def _write_events(backend: ChdbBackend, database: str, events: list[Event], prefix: str) -> None:
    sink = ClickHouseSink(backend, database=database)
    sink.add_events(events)
    assert sink.flush(dedup_token_prefix=prefix).inserted.events == len(events)


def _write_alerts(backend: ChdbBackend, database: str, alerts: list[Alert], prefix: str) -> None:
    sink = ClickHouseSink(backend, database=database)
    sink.add_alerts(alerts)
    assert sink.flush(dedup_token_prefix=prefix).inserted.alerts == len(alerts)


# --- the views and their documentation --------------------------------------------------


def test_the_saved_queries_cover_every_view() -> None:
    assert sorted(q.view for q in SAVED_QUERIES.values()) == sorted(VIEWS)


@pytest.mark.parametrize("name", sorted(SAVED_QUERIES))
def test_view_columns_are_the_documented_ones_in_order(backend: ChdbBackend, name: str) -> None:
    saved = SAVED_QUERIES[name]
    described = backend.query(f"DESCRIBE TABLE agentwatch.{saved.view}").rows
    assert [row[0] for row in described] == [column for column, _ in saved.columns]
    in_system = backend.query(
        "SELECT name FROM system.columns WHERE database = 'agentwatch' AND table = {t:String} "
        "ORDER BY position",
        {"t": saved.view},
    ).rows
    assert [row[0] for row in in_system] == [column for column, _ in saved.columns]


@pytest.mark.parametrize("name", sorted(SAVED_QUERIES))
def test_every_saved_query_runs(
    backend: ChdbBackend,
    database: str,
    make_event: EventFactory,
    make_alert: AlertFactory,
    name: str,
) -> None:
    # Some rows behind every view, so ORDER BY and the aggregates really run.
    _write_events(backend, database, [make_event(i, full=i % 2 == 0) for i in range(20)], "e")
    scores = [make_event(i, kind=EventKind.SCORE, name="helpfulness",
                         attributes={"gen_ai.evaluation.score.value": i / 4}) for i in range(4)]
    _write_events(backend, database, scores, "s")
    loop = make_alert(type=AlertType.RUNAWAY_LOOP, rule="loop_repeat")
    _write_alerts(backend, database, [make_alert(), loop], "a")
    saved = SAVED_QUERIES[name]
    result = backend.query(saved.sql(database), {"limit": 10})
    assert result.column_names == tuple(column for column, _ in saved.columns)
    assert 1 <= len(result.rows) <= 10


# --- rollups_1m against a recomputation from the raw events ---------------------------


def _random_events(rng: random.Random, n: int) -> list[Event]:
    """Several tenants, agents, models, tools and every kind; NULL tokens, costs and
    durations; timestamps over 5 days (across a month end) and 3 hours a day, plus
    events on both sides of minute boundaries."""
    agents = [(t, a) for t in ("acme", "globex", "initech") for a in ("planner", "coder", "qa")]
    agents.append(("acme", "untimed"))  # never reports a duration: its latency is NaN
    models = ["gpt-4o", "gpt-4o-mini", "claude-sonnet", None]
    tools = ["search", "lookup_order", "send_email", None]
    kinds = list(EventKind)
    events: list[Event] = []
    for i in range(n):
        tenant, agent = rng.choice(agents)
        if i % 50 == 0:  # the last and the first microsecond of a minute
            minute = DAY0 + timedelta(days=rng.randrange(5), hours=9, minutes=rng.randrange(180))
            ts = minute - timedelta(microseconds=1) if i % 100 == 0 else minute
        else:
            ts = DAY0 + timedelta(
                days=rng.randrange(5),
                hours=9 + rng.randrange(3),
                seconds=rng.randrange(3600),
                microseconds=rng.randrange(1_000_000),
            )
        kind = rng.choice(kinds)
        duration = None if agent == "untimed" or rng.random() < 0.3 else rng.lognormvariate(6, 1)
        cost = rng.choice([None, 0.0, round(rng.uniform(0, 0.05), 6), rng.uniform(0, 2)])
        events.append(
            _event(
                ts,
                tenant_id=tenant,
                agent_id=agent,
                session_id=f"{tenant}-{agent}-{rng.randrange(20)}",
                kind=kind,
                # a name on every kind: only tool_call's becomes the rollup's tool
                name=rng.choice(tools),
                status=EventStatus.ERROR if rng.random() < 0.1 else EventStatus.OK,
                model=rng.choice(models),
                input_tokens=None if rng.random() < 0.3 else rng.randrange(5000),
                output_tokens=None if rng.random() < 0.3 else rng.randrange(2000),
                cost_usd=cost,
                duration_ms=duration,
            )
        )
    return events


@dataclass
class _Minute:
    events: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    costs: list[float] = field(default_factory=list)
    unpriced: int = 0
    durations: list[float] = field(default_factory=list)


RollupKey = tuple[datetime, str, str, str, str, str]


def _expected_rollups(events: list[Event]) -> dict[RollupKey, _Minute]:
    """rollups_1m by its definition, computed in Python from the events written."""
    minutes: dict[RollupKey, _Minute] = defaultdict(_Minute)
    for e in events:
        minute = e.ts.astimezone(UTC).replace(second=0, microsecond=0)
        tool = (e.name or "") if e.kind is EventKind.TOOL_CALL else ""
        m = minutes[(minute, e.tenant_id, e.agent_id, e.model or "", tool, e.kind.value)]
        m.events += 1
        m.errors += e.status is EventStatus.ERROR
        m.input_tokens += e.input_tokens or 0
        m.output_tokens += e.output_tokens or 0
        m.costs.append(e.cost_usd or 0.0)
        m.unpriced += e.cost_usd is None
        if e.duration_ms is not None:
            m.durations.append(e.duration_ms)
    return minutes


_ROLLUP_SQL = """
SELECT minute, tenant_id, agent_id, model, tool, kind,
       sum(events), sum(errors), sum(input_tokens), sum(output_tokens), sum(cost_usd),
       sum(unpriced), sum(duration_ms_sum), sum(timed)
FROM {db}.rollups_1m
GROUP BY minute, tenant_id, agent_id, model, tool, kind
"""


def _assert_rollups_match(backend: ChdbBackend, database: str, events: list[Event]) -> None:
    expected = _expected_rollups(events)
    rows = backend.query(_ROLLUP_SQL.format(db=database)).rows
    stored = {(row[0], *row[1:6]): row[6:] for row in rows}
    assert len(stored) == len(rows)
    assert set(stored) == set(expected)
    for key, m in expected.items():
        n, errors, tokens_in, tokens_out, cost, unpriced, duration_sum, timed = stored[key]
        assert (n, errors, tokens_in, tokens_out, unpriced, timed) == (
            m.events,
            m.errors,
            m.input_tokens,
            m.output_tokens,
            m.unpriced,
            len(m.durations),
        ), key
        assert math.isclose(cost, math.fsum(m.costs), rel_tol=1e-9, abs_tol=1e-12), key
        assert math.isclose(duration_sum, math.fsum(m.durations), rel_tol=1e-9), key


def _quantile(values: list[float], q: float) -> float:
    """numpy's default (linear interpolation between closest ranks)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@pytest.fixture
def random_workload(backend: ChdbBackend, database: str) -> list[Event]:
    events = _random_events(random.Random(20261130), 4_000)
    for i, start in enumerate(range(0, len(events), 700)):  # 6 flushes, 6 sets of parts
        _write_events(backend, database, events[start : start + 700], f"random/{i}")
    return events


def test_rollups_equal_a_recomputation_from_the_events(
    backend: ChdbBackend, database: str, random_workload: list[Event]
) -> None:
    events = random_workload
    assert backend.query(f"SELECT count() FROM {database}.events").rows == [(len(events),)]
    _assert_rollups_match(backend, database, events)
    # Merging the partial rows (what ClickHouse does in the background) changes nothing.
    backend.command(f"OPTIMIZE TABLE {database}.rollups_1m FINAL")
    _assert_rollups_match(backend, database, events)
    merged = backend.query(
        f"SELECT count() FROM {database}.rollups_1m FINAL"  # one row per key after FINAL
    ).rows[0][0]
    assert merged == len(_expected_rollups(events))


def test_rollup_latency_digests_approximate_the_true_quantiles(
    backend: ChdbBackend, database: str, random_workload: list[Event]
) -> None:
    """quantilesTDigest is approximate: ClickHouse keeps at most a few thousand Float32
    centroids and interpolates between them, so it does not return numpy's linear
    interpolation. What it promises is a small *rank* error, so each returned value
    must lie between the true quantiles at q - 0.01 and q + 0.01 (with a 1e-6
    relative slack for the Float32 centroids). Measured on this data: rank error
    <= 0.004, while the *value* error at p99 reaches ~20 % (the tail of ~250 samples is
    sparse), so a value tolerance would have to be loose to mean nothing. A group
    without any duration gives NaN for every quantile (not NULL, not 0)."""
    durations: dict[tuple[str, str], list[float]] = defaultdict(list)
    for e in random_workload:
        durations[(e.tenant_id, e.agent_id)].extend(
            [] if e.duration_ms is None else [e.duration_ms]
        )
    rows = backend.query(
        "SELECT tenant_id, agent_id, quantilesTDigestMerge(0.5, 0.9, 0.95, 0.99)(latency_ms), "
        f"sum(timed) FROM {database}.rollups_1m GROUP BY tenant_id, agent_id"
    ).rows
    assert {(t, a) for t, a, _, _ in rows} == set(durations)
    checked = 0
    for tenant, agent, digest, timed in rows:
        values = durations[(tenant, agent)]
        assert timed == len(values)
        assert len(digest) == len(QUANTILES)
        if not values:
            assert (tenant, agent) == ("acme", "untimed")
            assert all(isinstance(v, float) and math.isnan(v) for v in digest)
            continue
        assert len(values) > 200  # enough for the rank tolerance to mean something
        for q, got in zip(QUANTILES, digest, strict=True):
            low = _quantile(values, max(0.0, q - 0.01))
            high = _quantile(values, min(1.0, q + 0.01))
            assert low * (1 - 1e-6) <= got <= high * (1 + 1e-6), (tenant, agent, q, got)
            checked += 1
    assert checked == 9 * len(QUANTILES)


#: Event times outside DateTime's 1970 to 2106-02-07 (a DateTime minute clamped them to
#: 1970-01-01 00:00:00 or 2106-02-07 06:28:15), down to the ends of DateTime64's range.
#: Before 1970 the epoch offsets are negative: a minute, hour or bucket must round
#: down (23:58:59.5 is in minute 23:58, not 23:59).
OUTSIDE_DATETIME = (
    datetime(1900, 1, 1, tzinfo=UTC),
    datetime(1900, 1, 1, 0, 0, 59, 999_999, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 58, 59, 500_000, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 59, 30, tzinfo=UTC),
    datetime(2106, 2, 7, 6, 28, 16, tzinfo=UTC),
    datetime(2150, 1, 1, 0, 0, 30, tzinfo=UTC),
    datetime(2299, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
)


def _floor(ts: datetime, seconds: int) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + timedelta(seconds=(ts - epoch) // timedelta(seconds=seconds) * seconds)


def test_an_event_time_outside_1970_to_2106_keeps_its_minute_hour_and_bucket(
    backend: ChdbBackend, database: str
) -> None:
    events = [
        _event(ts, agent_id=f"agent-{i}", kind=EventKind.TOOL_CALL, name="search", cost_usd=1.0)
        for i, ts in enumerate(OUTSIDE_DATETIME)
    ]
    _write_events(backend, database, events, "clock-skew")
    assert backend.query(f"SELECT count() FROM {database}.events").rows == [(len(events),)]
    _assert_rollups_match(backend, database, events)
    hourly = backend.query(
        f"SELECT agent_id, hour, events FROM {database}.cost_per_agent_hourly ORDER BY agent_id"
    ).rows
    assert hourly == [(e.agent_id, _floor(e.ts, 3600), 1) for e in events]
    buckets = backend.query(
        f"SELECT agent_id, bucket, calls FROM {database}.error_rate_per_agent_5m ORDER BY agent_id"
    ).rows
    assert buckets == [(e.agent_id, _floor(e.ts, 300), 1) for e in events]


def test_minute_hour_and_bucket_are_datetime64_and_read_as_aware_datetimes(
    backend: ChdbBackend, database: str
) -> None:
    """A plain DateTime comes out of ClickHouse's Arrow output as bare seconds (an int):
    these columns are DateTime64(0, 'UTC') so every reader gets a datetime in UTC."""
    at = datetime(2026, 11, 2, 10, 7, 30, tzinfo=UTC)
    _write_events(backend, database, [_event(at)], "types")
    columns = {
        "rollups_1m": "minute",
        "cost_per_agent_hourly": "hour",
        "error_rate_per_agent_5m": "bucket",
    }
    expected = {"minute": _floor(at, 60), "hour": _floor(at, 3600), "bucket": _floor(at, 300)}
    for table, column in columns.items():
        result = backend.query(f"SELECT {column}, toTypeName({column}) FROM {database}.{table}")
        ((value, type_name),) = result.rows
        assert type_name == "DateTime64(0, 'UTC')", table
        assert isinstance(value, datetime), (table, value)
        assert value.utcoffset() == timedelta(0), table
        assert value == expected[column], table


def test_filters_on_hour_and_bucket_still_use_the_rollups_indexes(
    backend: ChdbBackend, database: str
) -> None:
    """The time columns are computed from rollups_1m.minute by a monotonic function, so a
    filter on them prunes rollups_1m's partitions and primary key ranges; ClickHouse
    refuses the query (INDEX_NOT_USED) under these settings when it would not."""
    _write_events(backend, database, [_event(H), _event(H + timedelta(days=40))], "months")
    force = "SETTINGS force_index_by_date = 1, force_primary_key = 1"
    since = {"t": H + timedelta(days=1)}
    for view, column, total in [
        ("cost_per_agent_hourly", "hour", "sum(events)"),
        ("error_rate_per_agent_5m", "bucket", "sum(calls)"),
    ]:
        rows = backend.query(
            f"SELECT {total} FROM {database}.{view} WHERE {column} >= {{t:DateTime('UTC')}} "
            f"{force}",
            since,
        ).rows
        assert rows == [(1,)], view


# --- a retried batch ------------------------------------------------------------------


def test_a_batch_inserted_twice_with_one_token_counts_once_in_events_and_rollups(
    backend: ChdbBackend, database: str
) -> None:
    rng = random.Random(7)
    batch = _random_events(rng, 300)  # spans 5 days and 2 months: several parts per insert
    table = f"{database}.events"

    def totals() -> tuple[int, int, int, float]:
        events = backend.query(f"SELECT count() FROM {table}").rows[0][0]
        rollup = backend.query(
            f"SELECT sum(events), sum(input_tokens), sum(cost_usd) FROM {database}.rollups_1m"
        ).rows[0]
        return events, rollup[0], rollup[1], rollup[2]

    first, other = "t1", "t2"
    backend.insert_arrow(table, events_to_arrow(batch), dedup_token=first)
    once = totals()
    assert once[:2] == (300, 300)
    backend.insert_arrow(table, events_to_arrow(batch), dedup_token=first)  # the retry
    again = totals()
    assert again[:3] == once[:3]
    assert math.isclose(again[3], once[3], rel_tol=1e-12)  # a float sum, in any order
    _assert_rollups_match(backend, database, batch)
    backend.insert_arrow(table, events_to_arrow(batch), dedup_token=other)  # another batch
    twice = totals()
    assert twice[:3] == (600, 600, 2 * once[2])
    assert math.isclose(twice[3], 2 * once[3], rel_tol=1e-9)
    _assert_rollups_match(backend, database, batch + batch)


def test_a_retry_with_one_token_and_rows_of_another_day_stores_those_rows(
    backend: ChdbBackend, database: str
) -> None:
    # ClickHouse deduplicates per token *and table partition* (here: per day). So a
    # re-formed batch must hold exactly its first attempt's rows (the sink's recent-id
    # memory is rebuilt from the log for that): more rows, of a day the first attempt
    # did not touch, are stored under the same token.
    batch = _random_events(random.Random(8), 300)
    last_day = max(e.ts.date() for e in batch)
    first = [e for e in batch if e.ts.date() != last_day]
    assert 0 < len(first) < len(batch)
    table, token = f"{database}.events", "g/events/0/10-19:events"
    backend.insert_arrow(table, events_to_arrow(first), dedup_token=token)
    backend.insert_arrow(table, events_to_arrow(batch), dedup_token=token)
    assert backend.query(f"SELECT count(), uniqExact(event_id) FROM {table}").rows == [
        (len(batch), len(batch))
    ]


def test_a_pending_batch_leaves_out_the_events_clickhouse_has(
    backend: ChdbBackend, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the Kafka sink inserts for a batch completed from an intent: whatever its
    # token, events the table holds already are left out (in slices of ids).
    from agentwatch.sinks import ClickHouseSink, _sink  # noqa: PLC0415 (only here)

    monkeypatch.setattr(_sink, "_RECHECK_IDS_PER_QUERY", 70)
    batch = _random_events(random.Random(9), 300)
    stored = set(random.Random(10).sample(range(300), 120))
    table = f"{database}.events"
    backend.insert_arrow(table, events_to_arrow([batch[i] for i in sorted(stored)]))
    sink = ClickHouseSink(backend, database=database)
    inserted: list[tuple[str, int]] = []
    sink.add_events(batch)
    staged = sink.stage("g/t/0/0-299", maybe_stored=True)
    sink.write(staged, on_insert=lambda name, rows, _s: inserted.append((name, rows)))
    assert inserted == [(table, 300 - len(stored))]
    ids = {row[0] for row in backend.query(f"SELECT event_id FROM {table}").rows}
    assert backend.query(f"SELECT count() FROM {table}").rows == [(300,)]
    assert ids == {e.event_id for e in batch}
    sink.add_events(batch)  # once all are stored, nothing is left to insert
    staged = sink.stage("g/t/0/0-299-again", maybe_stored=True)
    sink.write(staged, on_insert=lambda name, rows, _s: inserted.append((name, rows)))
    assert inserted[1:] == [(table, 0)]
    assert backend.query(f"SELECT count() FROM {table}").rows == [(300,)]


# --- the views on hand-made data --------------------------------------------------------


H = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)  # an hour with known contents


def test_cost_per_agent_hourly_sums_the_minutes_of_each_hour(
    backend: ChdbBackend, database: str
) -> None:
    events = [
        _event(H, cost_usd=0.5, input_tokens=100, output_tokens=10),
        _event(
            H + timedelta(minutes=15),
            kind=EventKind.TOOL_CALL,
            name="search",
            cost_usd=0.25,
            status=EventStatus.ERROR,
        ),
        _event(H + timedelta(minutes=30), input_tokens=50),  # unpriced, no output tokens
        _event(
            H + timedelta(minutes=59, seconds=59, microseconds=999_999),
            cost_usd=1.0,
            output_tokens=5,
        ),
        _event(H + timedelta(hours=1), cost_usd=2.0),  # the next hour
        _event(H + timedelta(minutes=1), agent_id="agent-b", cost_usd=4.0),
        _event(H + timedelta(minutes=2), tenant_id="other", cost_usd=8.0),  # same agent id
    ]
    _write_events(backend, database, events[:3], "a")  # two inserts: partial rows to sum
    _write_events(backend, database, events[3:], "b")
    rows = backend.query(
        "SELECT hour, tenant_id, agent_id, events, llm_calls, errors, input_tokens, "
        f"output_tokens, cost_usd, unpriced_events FROM {database}.cost_per_agent_hourly "
        "ORDER BY hour, tenant_id, agent_id"
    ).rows
    assert rows == [
        (H, "default", "agent-a", 4, 3, 1, 150, 15, 1.75, 1),
        (H, "default", "agent-b", 1, 1, 0, 0, 0, 4.0, 0),
        (H, "other", "agent-a", 1, 1, 0, 0, 0, 8.0, 0),
        (H + timedelta(hours=1), "default", "agent-a", 1, 1, 0, 0, 0, 2.0, 0),
    ]
    # A Grafana-style filter on the view's time and id columns gives the same rows.
    filtered = backend.query(
        f"SELECT events, cost_usd FROM {database}.cost_per_agent_hourly "
        "WHERE tenant_id = 'default' AND agent_id = 'agent-a' AND hour >= {h:DateTime('UTC')}",
        {"h": H + timedelta(hours=1)},
    ).rows
    assert filtered == [(1, 2.0)]


def test_error_rate_counts_only_calls_and_skips_buckets_without_calls(
    backend: ChdbBackend, database: str
) -> None:
    b0, b1, b2 = H, H + timedelta(minutes=5), H + timedelta(minutes=10)
    err = EventStatus.ERROR
    events = [
        _event(b0, kind=EventKind.LLM_CALL),
        _event(b0 + timedelta(minutes=1), kind=EventKind.LLM_CALL, status=err),
        _event(b0 + timedelta(minutes=2), kind=EventKind.TOOL_CALL, name="search"),
        _event(
            b0 + timedelta(minutes=4, seconds=59, microseconds=999_999),
            kind=EventKind.TOOL_CALL,
            status=err,
        ),
        # errors of other kinds do not count, in a bucket with calls ...
        _event(b0 + timedelta(minutes=3), kind=EventKind.AGENT_STEP, status=err),
        _event(b0 + timedelta(minutes=3), kind=EventKind.GUARDRAIL, status=err),
        # ... nor make a bucket of their own
        _event(b1, kind=EventKind.AGENT_STEP, status=err),
        _event(b1 + timedelta(minutes=1), kind=EventKind.SESSION_START),
        _event(b1 + timedelta(minutes=2), kind=EventKind.CUSTOM, status=err),
        _event(b2, kind=EventKind.TOOL_CALL, name="search"),  # calls, no errors
        _event(b2, kind=EventKind.LLM_CALL, agent_id="agent-b", status=err),
    ]
    _write_events(backend, database, events, "e")
    rows = backend.query(
        f"SELECT * FROM {database}.error_rate_per_agent_5m ORDER BY bucket, agent_id"
    ).rows
    assert rows == [
        (b0, "default", "agent-a", 4, 2, 0.5),
        (b2, "default", "agent-a", 1, 0, 0.0),
        (b2, "default", "agent-b", 1, 1, 1.0),
    ]


def test_top_sessions_by_cost_orders_sessions_by_their_total(
    backend: ChdbBackend, database: str
) -> None:
    t = H
    events = [
        _event(t, session_id="cheap", cost_usd=0.1, input_tokens=10),
        _event(
            t + timedelta(seconds=5),
            session_id="cheap",
            kind=EventKind.TOOL_CALL,
            cost_usd=0.2,
            status=EventStatus.ERROR,
        ),
        _event(t + timedelta(seconds=1), session_id="pricey", cost_usd=1.5, output_tokens=7),
        _event(t + timedelta(seconds=2), session_id="pricey", cost_usd=1.5, input_tokens=3),
        _event(t + timedelta(seconds=3), session_id="free", kind=EventKind.SESSION_START),
        _event(t + timedelta(seconds=4), session_id="middle", agent_id="agent-b", cost_usd=0.9),
        _event(
            t + timedelta(hours=30),
            session_id="middle",
            agent_id="agent-b",
            kind=EventKind.TOOL_CALL,
        ),
    ]
    _write_events(backend, database, events[:4], "a")
    _write_events(backend, database, events[4:], "b")
    result = backend.query(SAVED_QUERIES["top-sessions"].sql(database), {"limit": 10})
    assert [(r["session_id"], r["cost_usd"]) for r in result.dicts()] == [
        ("pricey", 3.0),
        ("middle", 0.9),
        ("cheap", pytest.approx(0.3)),
        ("free", 0.0),
    ]
    by_session = {r["session_id"]: r for r in result.dicts()}
    assert by_session["cheap"] | {"cost_usd": 0} == {
        "tenant_id": "default",
        "agent_id": "agent-a",
        "session_id": "cheap",
        "started_at": t,
        "last_event_at": t + timedelta(seconds=5),
        "events": 2,
        "llm_calls": 1,
        "tool_calls": 1,
        "errors": 1,
        "input_tokens": 10,
        "output_tokens": 0,
        "cost_usd": 0,
    }
    middle = by_session["middle"]
    assert (middle["agent_id"], middle["started_at"], middle["last_event_at"]) == (
        "agent-b",
        t + timedelta(seconds=4),
        t + timedelta(hours=30),
    )
    limited = backend.query(SAVED_QUERIES["top-sessions"].sql(database), {"limit": 2}).rows
    assert [r[2] for r in limited] == ["pricey", "middle"]


def test_top_sessions_by_cost_gives_a_handed_off_session_one_row_per_agent(
    backend: ChdbBackend, database: str
) -> None:
    t = H
    events = [
        _event(t, session_id="handoff", agent_id="triage", cost_usd=0.25),
        _event(
            t + timedelta(seconds=1),
            session_id="handoff",
            kind=EventKind.HANDOFF,
            agent_id="triage",
        ),
        _event(t + timedelta(seconds=2), session_id="handoff", agent_id="billing", cost_usd=1.0),
        _event(t + timedelta(seconds=3), session_id="handoff", agent_id="billing", cost_usd=0.5),
    ]
    _write_events(backend, database, events, "handoff")
    result = backend.query(SAVED_QUERIES["top-sessions"].sql(database), {"limit": 10})
    rows = [
        (r["session_id"], r["agent_id"], r["events"], r["cost_usd"], r["started_at"])
        for r in result.dicts()
    ]
    assert rows == [
        ("handoff", "billing", 2, 1.5, t + timedelta(seconds=2)),
        ("handoff", "triage", 2, 0.25, t),
    ]
    # ... and the documentation says so (the view's SQL comment and the saved query)
    assert "one row per session and agent" in SAVED_QUERIES["top-sessions"].description
    ddl = "\n".join(schema_statements(SchemaConfig()))
    assert "-- One row per session and agent, most expensive first" in ddl
    assert "One row per session," not in ddl


def test_open_alerts_shows_only_alerts_whose_latest_change_is_firing(
    backend: ChdbBackend, database: str, make_alert: AlertFactory
) -> None:
    t = H
    firing = make_alert(alert_id="a-firing", ts=t, value=2.0)
    resolved_later = [
        make_alert(alert_id="a-resolved", ts=t),
        make_alert(alert_id="a-resolved", ts=t + timedelta(minutes=5), state=AlertState.RESOLVED),
    ]
    resolved_same_ts = [
        make_alert(alert_id="a-same-ts", ts=t),
        make_alert(alert_id="a-same-ts", ts=t, state=AlertState.RESOLVED),
    ]
    # the resolution arrives first, in an earlier insert, the firing afterwards
    out_of_order = [
        make_alert(alert_id="a-late", ts=t + timedelta(minutes=9), state=AlertState.RESOLVED),
        make_alert(alert_id="a-late", ts=t + timedelta(minutes=1)),
    ]
    loop = make_alert(
        alert_id="a-loop",
        ts=t + timedelta(minutes=2),
        type=AlertType.RUNAWAY_LOOP,
        rule="loop_repeat",
        agent_id=None,
        session_id=None,
        window_s=None,
        event_ids=[],
    )
    _write_alerts(backend, database, [firing, *resolved_later, out_of_order[0]], "a")
    _write_alerts(
        backend, database, [*resolved_same_ts, out_of_order[1], loop, firing.model_copy()], "b"
    )  # the firing of a-firing delivered twice (at least once): still one row
    rows = backend.query(SAVED_QUERIES["open-alerts"].sql(database), {"limit": 10}).dicts()
    assert [r["alert_id"] for r in rows] == ["a-loop", "a-firing"]  # fired_at DESC
    assert rows[1] == {
        "alert_id": "a-firing",
        "rule": firing.rule,
        "type": "cost",
        "severity": firing.severity.value,
        "scope": firing.scope.value,
        "key": firing.key,
        "tenant_id": firing.tenant_id,
        "agent_id": firing.agent_id,
        "session_id": firing.session_id,
        "value": 2.0,
        "threshold": firing.threshold,
        "window_s": firing.window_s,
        "fired_at": t,
        "reason": firing.reason,
        "event_ids": firing.event_ids,
    }
    assert (rows[0]["agent_id"], rows[0]["session_id"], rows[0]["window_s"]) == (None, None, None)


def test_loop_incidents_lists_runaway_loops_open_or_resolved(
    backend: ChdbBackend, database: str, make_alert: AlertFactory
) -> None:
    t = H
    loop: dict[str, Any] = {"type": AlertType.RUNAWAY_LOOP, "rule": "loop_repeat"}
    open_firing = make_alert(alert_id="l-open", ts=t + timedelta(minutes=3), value=6.0, **loop)
    closed_firing = make_alert(
        alert_id="l-closed", ts=t, value=5.0, reason="Tool search repeated 5 times.", **loop
    )
    closed = make_alert(
        alert_id="l-closed",
        ts=t + timedelta(minutes=2),
        state=AlertState.RESOLVED,
        value=9.0,
        reason="Resolved.",
        event_ids=[],
        **loop,
    )
    same_ts = [
        make_alert(alert_id="l-same", ts=t + timedelta(minutes=1), **loop),
        make_alert(
            alert_id="l-same", ts=t + timedelta(minutes=1), state=AlertState.RESOLVED, **loop
        ),
    ]
    # only the resolution was stored (its firing never reached the table)
    orphan = make_alert(
        alert_id="l-orphan",
        ts=t + timedelta(minutes=8),
        state=AlertState.RESOLVED,
        value=7.0,
        reason="Session session-1 ended.",
        **loop,
    )
    others = [
        make_alert(alert_id="c-1", ts=t + timedelta(minutes=4)),  # a cost alert
        make_alert(
            alert_id="e-1",
            ts=t + timedelta(minutes=4),
            type=AlertType.ERROR_RATE,
            rule="agent_error_rate",
            scope=AlertScope.AGENT,
            session_id=None,
        ),
    ]
    _write_alerts(backend, database, [closed, open_firing, *others], "a")
    _write_alerts(backend, database, [closed_firing, *same_ts, orphan], "b")
    rows = backend.query(SAVED_QUERIES["loop-incidents"].sql(database), {"limit": 10}).dicts()
    assert [(r["alert_id"], r["status"], r["resolved_at"]) for r in rows] == [
        ("l-open", "open", None),
        ("l-same", "resolved", t + timedelta(minutes=1)),
        ("l-closed", "resolved", t + timedelta(minutes=2)),
        ("l-orphan", "resolved", t + timedelta(minutes=8)),  # fired_at NULL: sorted last
    ]
    orphan_row = rows[3]
    assert orphan_row["fired_at"] is None  # not 1970-01-01
    assert (orphan_row["reason"], orphan_row["event_ids"]) == (orphan.reason, orphan.event_ids)
    assert orphan_row["value"] == 7.0
    assert rows[0]["fired_at"] == t + timedelta(minutes=3)
    closed_row = rows[2]
    assert closed_row["fired_at"] == t
    assert closed_row["value"] == 9  # the highest measured value, resolution included
    assert closed_row["reason"] == "Tool search repeated 5 times."  # the firing's
    assert closed_row["event_ids"] == closed_firing.event_ids
    assert (closed_row["rule"], closed_row["tenant_id"], closed_row["session_id"]) == (
        "loop_repeat",
        "acme",
        "session-1",
    )


def test_failed_delivery_rows_change_no_answer_of_the_alert_views(
    backend: ChdbBackend, database: str, make_alert: AlertFactory
) -> None:
    """A failed webhook delivery adds a second ``alerts`` row for the same state change
    (same alert, ``delivery_status = 'failed:<endpoint>'``): open_alerts and
    loop_incidents still give one row per alert, with the same values."""
    t = H
    loop: dict[str, Any] = {"type": AlertType.RUNAWAY_LOOP, "rule": "loop_repeat"}
    open_loop = make_alert(alert_id="l-open", ts=t, value=5.0, **loop)
    closed_loop = [
        make_alert(alert_id="l-closed", ts=t, value=5.0, **loop),
        make_alert(
            alert_id="l-closed",
            ts=t + timedelta(minutes=2),
            state=AlertState.RESOLVED,
            value=6.0,
            reason="Resolved.",
            **loop,
        ),
    ]
    cost = make_alert(alert_id="c-open", ts=t + timedelta(minutes=1))
    alerts = [open_loop, *closed_loop, cost]
    _write_alerts(backend, database, alerts, "a")

    def views() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        def run(name: str) -> list[dict[str, Any]]:
            rows = backend.query(SAVED_QUERIES[name].sql(database), {"limit": 10}).dicts()
            return sorted(rows, key=lambda r: str(r["alert_id"]))  # ties in fired_at


        return run("open-alerts"), run("loop-incidents")

    before = views()
    assert [r["alert_id"] for r in before[0]] == ["c-open", "l-open"]
    assert [(r["alert_id"], r["status"]) for r in before[1]] == [
        ("l-closed", "resolved"),
        ("l-open", "open"),
    ]
    sink = ClickHouseSink(backend, database=database)
    sink.add_delivery_failures(
        DeliveryFailure(
            alert=alert,
            endpoint=endpoint,
            delivery_id=f"{alert.alert_id}-{alert.state.value}-{endpoint}",
            attempts=8,
            status_code=503,
            error="HTTP 503",
        )
        for alert in alerts
        for endpoint in ("team-slack", "pager")
    )
    assert sink.flush("failures").inserted.alerts == 2 * len(alerts)
    stored = backend.query(
        f"SELECT alert_id, count(), countIf(delivery_status = '') FROM {database}.alerts"
        " WHERE alert_id = 'l-open' GROUP BY alert_id"
    ).rows
    assert stored == [("l-open", 3, 1)]  # the alert and its two failed deliveries
    assert views() == before


# --- the cluster form of the DDL -------------------------------------------------------


CLUSTER_STATEMENTS = schema_statements(SchemaConfig(cluster="prod"))


@pytest.mark.parametrize("statement", CLUSTER_STATEMENTS, ids=lambda s: s.split("(")[0][-60:])
def test_every_cluster_statement_parses(backend: ChdbBackend, statement: str) -> None:
    formatted = backend.query("SELECT formatQuery({q:String})", {"q": statement}).rows[0][0]
    assert " ON CLUSTER prod" in formatted


@pytest.fixture(scope="module")
def cluster_ddl(backend: ChdbBackend) -> list[str]:
    """Every cluster statement as ClickHouse's parser formats it, on one line."""
    query = "SELECT formatQuerySingleLine({q:String})"
    return [str(backend.query(query, {"q": s}).rows[0][0]) for s in CLUSTER_STATEMENTS]


def _create_name(formatted: str) -> str:
    match = re.match(
        r"CREATE (?:DATABASE|TABLE|VIEW|MATERIALIZED VIEW) IF NOT EXISTS (\S+) ON CLUSTER prod\b",
        formatted,
    )
    assert match is not None, formatted
    return match.group(1)


def test_the_cluster_ddl_creates_every_object_on_the_cluster_in_order(
    cluster_ddl: list[str],
) -> None:
    names = [_create_name(s) for s in cluster_ddl]
    expected = [
        "agentwatch",
        "agentwatch.schema_migrations",
        "agentwatch.events",
        "agentwatch.events_all",
        "agentwatch.alerts",
        "agentwatch.alerts_all",
        "agentwatch.dead_letters",
        "agentwatch.dead_letters_all",
        "agentwatch.rollups_1m",
        "agentwatch.rollups_1m_all",
        "agentwatch.rollups_1m_mv",
        *(f"agentwatch.{view}" for view in VIEWS[:5]),  # migration 3
        "agentwatch.control_log",  # 4
        "agentwatch.control_log_all",
        "agentwatch.alert_acks",  # 5
        "agentwatch.alert_acks_all",
        "agentwatch.alert_status",
        *(f"agentwatch.{view}" for view in VIEWS[5:]),  # 6 and later
    ]
    assert names == expected


def test_cluster_tables_are_replicated_with_shard_and_replica_macros(
    cluster_ddl: list[str],
) -> None:
    engines = {}
    for statement in cluster_ddl:
        table = _create_name(statement).partition(".")[2]
        engine = re.search(r"ENGINE = (\w+)\((.*?)\)", statement)
        if statement.startswith("CREATE TABLE") and not table.endswith("_all"):
            assert engine is not None, statement
            engines[table] = engine.groups()
    assert engines == {
        table: (engine, f"'/clickhouse/tables/{{shard}}/agentwatch/{table}', '{{replica}}'")
        for table, engine in [
            ("schema_migrations", "ReplicatedMergeTree"),
            ("events", "ReplicatedMergeTree"),
            ("alerts", "ReplicatedMergeTree"),
            ("dead_letters", "ReplicatedMergeTree"),
            ("rollups_1m", "ReplicatedAggregatingMergeTree"),
            ("control_log", "ReplicatedMergeTree"),
            ("alert_acks", "ReplicatedMergeTree"),
        ]
    }


def test_each_data_table_has_a_distributed_all_table(cluster_ddl: list[str]) -> None:
    distributed = {_create_name(s): s for s in cluster_ddl if "ENGINE = Distributed" in s}
    assert sorted(distributed) == sorted(f"agentwatch.{t}_all" for t in DATA_TABLES)
    for table in DATA_TABLES:
        statement = distributed[f"agentwatch.{table}_all"]
        assert f" AS agentwatch.{table} " in statement
        assert f"ENGINE = Distributed('prod', 'agentwatch', '{table}', rand())" in statement


def test_cluster_views_read_the_all_tables_and_the_mv_the_local_events(
    cluster_ddl: list[str],
) -> None:
    by_name = {_create_name(s): s for s in cluster_ddl}
    reads = {
        "cost_per_agent_hourly": "rollups_1m_all",
        "error_rate_per_agent_5m": "rollups_1m_all",
        "top_sessions_by_cost": "events_all",
        "open_alerts": "alerts_all",
        "loop_incidents": "alerts_all",
    }
    for view, source in reads.items():
        tables = set(re.findall(r"\bFROM (agentwatch\.\w+)", by_name[f"agentwatch.{view}"]))
        assert tables == {f"agentwatch.{source}"}, view
    mv = by_name["agentwatch.rollups_1m_mv"]
    assert " TO agentwatch.rollups_1m " in mv
    assert set(re.findall(r"\bFROM (agentwatch\.\w+)", mv)) == {"agentwatch.events"}


def test_rollups_ttl_is_applied_when_configured(backend: ChdbBackend) -> None:
    name = f"aw_ttl_{uuid.uuid4().hex[:12]}"
    try:
        migrate(backend, SchemaConfig(database=name, rollups_ttl_days=400))
        create = backend.query(f"SHOW CREATE TABLE {name}.rollups_1m").rows[0][0]
        assert "TTL minute + toIntervalDay(400)" in create
    finally:
        backend.command(f"DROP DATABASE IF EXISTS {name} SYNC")
    default = backend.query("SHOW CREATE TABLE agentwatch.rollups_1m").rows[0][0]
    assert "TTL" not in default  # kept by default


# --- upgrading a database created before the rollups ----------------------------------


def test_a_version_1_database_upgrades_and_rollups_fill_from_new_inserts(
    backend: ChdbBackend,
) -> None:
    name = f"aw_upgrade_{uuid.uuid4().hex[:12]}"
    config = SchemaConfig(database=name, ttl_days=None)
    try:
        assert migrate(backend, config, migrations=MIGRATIONS[:1]) == [1]
        old = [_event(H + timedelta(minutes=i), cost_usd=1.0) for i in range(3)]
        _write_events(backend, name, old, "old")
        assert backend.query(f"EXISTS TABLE {name}.rollups_1m").rows == [(0,)]

        versions = [m.version for m in MIGRATIONS]
        assert migrate(backend, config) == versions[1:]
        assert applied_versions(backend, config) == versions
        assert migrate(backend, config) == []

        new = [_event(H + timedelta(minutes=i), cost_usd=0.5) for i in range(4)]
        _write_events(backend, name, new, "new")
        _assert_rollups_match(backend, name, new)  # only new inserts: no backfill of `old`
        hourly = backend.query(
            f"SELECT hour, events, cost_usd FROM {name}.cost_per_agent_hourly"
        ).rows
        assert hourly == [(H, 4, 2.0)]
        assert backend.query(f"SELECT count() FROM {name}.events").rows == [(7,)]
    finally:
        backend.command(f"DROP DATABASE IF EXISTS {name} SYNC")
