"""views: query latency of each BI view (migration 3) on synthetic events in chDB, against
a baseline that computes the same answer from the raw tables without rollups_1m, in the
same run on the same data (goal: every view under 1 s at 10 million events).

Workload, generated inside chDB (``INSERT ... SELECT FROM numbers(N)``, deterministic
cityHash64 columns; the materialized view fills rollups_1m during that insert): N events
(default 10,000,000) of 200,000 sessions over 200 agents and 10 tenants, 30 days of event
time ending at the current hour, each session's events within 30 minutes of its start;
45 % llm_call (4 models, tokens, cost), 40 % tool_call (5 tools), the rest other kinds;
5 % errors; durations on calls. Plus 4,000 alert episodes (half runaway loops, 60 %
resolved). The tables are then merged (OPTIMIZE FINAL: the state background merges
reach), and the events table keeps every row (no TTL).

Timed, best of ``--runs``: each saved query (``SAVED_QUERIES[name].sql``, limit 100) and
a Grafana-style query per view (one tenant, last 24 h / 7 days), each against its raw
baseline (the "peer"). Output per query: ``view <name>: s ours=… peer=… ratio=peer/ours``,
then one summary line with the slowest view query and whether each is under 1 s.

    .venv/bin/python bench/bench_views.py [--events N] [--data-dir DIR] [--runs 3]
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agentwatch.sinks import SAVED_QUERIES, ChdbBackend, QueryResult, SchemaConfig, migrate

DB = "agentwatch"
GOAL_S = 1.0
SESSIONS = 200_000
AGENTS = 200
TENANTS = 10
DAYS = 30
SESSION_SPAN_US = 30 * 60 * 1_000_000
ALERTS = 4_000

# Deterministic pseudo-random columns: cityHash64(number, k) for the event's own draws,
# cityHash64(session, ...) for what a session fixes (its agent, tenant and start).
EVENTS_SQL = """
INSERT INTO agentwatch.events
    (event_id, ts, tenant_id, agent_id, session_id, kind, schema_version, name, status,
     error_type, model, provider, input_tokens, output_tokens, cost_usd, priced, duration_ms)
WITH
    cityHash64(number, 1) % {sessions:UInt64} AS s,
    cityHash64(s, 'agent') % {agents:UInt64} AS a,
    cityHash64(number, 3) % 100 AS k,
    cityHash64(number, 9) % 4 AS m,
    cityHash64(number, 6) % 4000 AS tin,
    cityHash64(number, 7) % 800 AS tout
SELECT
    UUIDNumToString(toFixedString(concat(reinterpretAsString(cityHash64(number, 11)),
                                         reinterpretAsString(cityHash64(number, 12))), 16)),
    addMicroseconds({start:DateTime64(6, 'UTC')},
        cityHash64(s, 'start') % {session_starts_us:UInt64}
        + cityHash64(number, 2) % {session_span_us:UInt64}),
    concat('tenant-', toString(a % {tenants:UInt64})),
    concat('agent-', toString(a)),
    concat('session-', toString(s)),
    multiIf(k < 45, 'llm_call', k < 85, 'tool_call', k < 93, 'agent_step',
            k < 96, 'session_start', k < 99, 'session_end', 'handoff') AS kind_,
    1,
    multiIf(kind_ = 'tool_call',
            ['search', 'lookup_order', 'send_email', 'run_sql', 'fetch_url']
                [cityHash64(number, 4) % 5 + 1],
            kind_ = 'agent_step', 'plan', NULL),
    if(cityHash64(number, 5) % 100 < 5, 'error', 'ok') AS status_,
    if(status_ = 'error', 'TimeoutError', NULL),
    if(kind_ = 'llm_call', ['gpt-4o', 'gpt-4o-mini', 'claude-sonnet', 'claude-haiku'][m + 1], NULL),
    if(kind_ = 'llm_call', if(m < 2, 'openai', 'anthropic'), NULL),
    if(kind_ = 'llm_call', tin, NULL),
    if(kind_ = 'llm_call', tout, NULL),
    if(kind_ = 'llm_call',
       (tin * [2.5, 0.15, 3.0, 0.8][m + 1] + tout * [10.0, 0.6, 15.0, 4.0][m + 1]) / 1e6, 0),
    kind_ = 'llm_call',
    if(kind_ IN ('llm_call', 'tool_call'), 20 + (cityHash64(number, 8) % 200000) / 20.0, NULL)
FROM numbers({n:UInt64})
SETTINGS throw_on_max_partitions_per_insert_block = 0
"""

# One row per state change: every episode fires, 60 % also resolve 5 minutes later.
ALERTS_SQL = """
INSERT INTO agentwatch.alerts
    (alert_id, rule, type, state, severity, scope, key, tenant_id, agent_id, session_id,
     value, threshold, window_s, ts, reason, event_ids)
WITH
    cityHash64(number, 'rule') % 4 AS r,
    cityHash64(number, 'session') % {sessions:UInt64} AS s,
    cityHash64(s, 'agent') % {agents:UInt64} AS a
SELECT
    concat('alert-', toString(number)),
    ['session_cost', 'agent_error_rate', 'loop_repeat', 'loop_steps'][r + 1],
    ['cost', 'error_rate', 'runaway_loop', 'runaway_loop'][r + 1],
    arrayJoin(if(cityHash64(number, 'resolved') % 100 < 60,
                 ['firing', 'resolved'], ['firing'])) AS state_,
    'warning',
    if(r = 1, 'agent', 'session'),
    if(r = 1, concat('agent-', toString(a)), concat('session-', toString(s))),
    concat('tenant-', toString(a % {tenants:UInt64})),
    concat('agent-', toString(a)),
    if(r = 1, NULL, concat('session-', toString(s))),
    toFloat64(5 + cityHash64(number, 'value') % 20),
    5.0,
    if(r = 3, NULL, 60),
    addSeconds({start:DateTime64(6, 'UTC')},
               cityHash64(number, 'ts') % {span_s:UInt64} + if(state_ = 'resolved', 300, 0)),
    'synthetic alert',
    ['e1', 'e2']
FROM numbers({n:UInt64})
"""


@dataclass(frozen=True, slots=True)
class Case:
    """One question asked two ways: through the view, and from the raw tables."""

    name: str
    view_sql: str
    baseline_sql: str
    # The columns (view's, baseline's) that must agree row by row: the ORDER BY keys,
    # whose values are the same whatever order ties come in.
    ours_cols: tuple[int, ...]
    base_cols: tuple[int, ...]


def saved_cases() -> list[Case]:
    """The saved queries (limit 100) and the same answer computed without rollups_1m."""
    sql = {name: q.sql(DB) for name, q in SAVED_QUERIES.items()}
    return [
        Case(
            "cost_per_agent_hourly",
            sql["cost-by-agent"],
            """SELECT toStartOfHour(ts) AS hour, tenant_id, agent_id, count() AS events,
                      countIf(kind = 'llm_call') AS llm_calls, countIf(status = 'error') AS errors,
                      sum(ifNull(input_tokens, 0)) AS input_tokens,
                      sum(ifNull(output_tokens, 0)) AS output_tokens, sum(cost_usd) AS cost_usd,
                      countIf(priced = 0) AS unpriced_events
               FROM agentwatch.events GROUP BY hour, tenant_id, agent_id
               ORDER BY hour DESC, cost_usd DESC LIMIT {limit:UInt64}""",
            (0, 8),
            (0, 8),
        ),
        Case(
            "error_rate_per_agent_5m",
            sql["error-rate"],
            """SELECT toStartOfFiveMinutes(ts) AS bucket, tenant_id, agent_id, count() AS calls,
                      countIf(status = 'error') AS errors, errors / calls AS error_rate
               FROM agentwatch.events WHERE kind IN ('llm_call', 'tool_call')
               GROUP BY bucket, tenant_id, agent_id
               ORDER BY bucket DESC, error_rate DESC LIMIT {limit:UInt64}""",
            (0, 5),
            (0, 5),
        ),
        Case(
            # The view itself reads the raw events (there is no per-session rollup):
            # the baseline is the same GROUP BY written out, so the ratio is ~1.
            "top_sessions_by_cost",
            sql["top-sessions"],
            """SELECT tenant_id, agent_id, session_id, min(ts), max(ts), count() AS events,
                      countIf(kind = 'llm_call'), countIf(kind = 'tool_call'),
                      countIf(status = 'error'), sum(ifNull(input_tokens, 0)),
                      sum(ifNull(output_tokens, 0)), sum(cost_usd) AS cost_usd
               FROM agentwatch.events GROUP BY tenant_id, agent_id, session_id
               ORDER BY cost_usd DESC LIMIT {limit:UInt64}""",
            (11,),
            (11,),
        ),
        Case(
            # Baseline: the latest state per alert by argMax instead of LIMIT 1 BY.
            "open_alerts",
            sql["open-alerts"],
            """SELECT alert_id, any(rule), any(type),
                      argMax(ts, (ts, state = 'resolved')) AS fired_at
               FROM agentwatch.alerts GROUP BY alert_id
               HAVING argMax(state, (ts, state = 'resolved')) = 'firing'
               ORDER BY fired_at DESC, alert_id LIMIT {limit:UInt64}""",
            (12,),
            (3,),
        ),
        Case(
            # Baseline: firing rows LEFT JOIN resolution rows.
            "loop_incidents",
            sql["loop-incidents"],
            """SELECT f.alert_id, f.rule, f.tenant_id, f.agent_id, f.session_id, f.key,
                      f.ts AS fired_at, r.ts AS resolved_at
               FROM (SELECT * FROM agentwatch.alerts
                     WHERE type = 'runaway_loop' AND state = 'firing') AS f
               LEFT JOIN (SELECT alert_id, max(ts) AS ts FROM agentwatch.alerts
                          WHERE type = 'runaway_loop' AND state = 'resolved'
                          GROUP BY alert_id) AS r USING (alert_id)
               ORDER BY fired_at DESC, f.alert_id LIMIT {limit:UInt64}
               SETTINGS join_use_nulls = 1""",
            (6, 7),
            (6, 7),
        ),
    ]


def filtered_cases() -> list[Case]:
    """What a Grafana panel asks: one tenant, a recent time range."""
    return [
        Case(
            "cost_per_agent_hourly",
            """SELECT hour, agent_id, cost_usd, events FROM agentwatch.cost_per_agent_hourly
               WHERE tenant_id = {tenant:String} AND hour >= {since:DateTime('UTC')}
               ORDER BY hour, agent_id""",
            """SELECT toStartOfHour(ts) AS hour, agent_id, sum(cost_usd), count()
               FROM agentwatch.events
               WHERE tenant_id = {tenant:String} AND ts >= {since:DateTime('UTC')}
               GROUP BY hour, agent_id ORDER BY hour, agent_id""",
            (0, 1, 2, 3),
            (0, 1, 2, 3),
        ),
        Case(
            "error_rate_per_agent_5m",
            """SELECT bucket, agent_id, calls, errors FROM agentwatch.error_rate_per_agent_5m
               WHERE tenant_id = {tenant:String} AND bucket >= {since:DateTime('UTC')}
               ORDER BY bucket, agent_id""",
            """SELECT toStartOfFiveMinutes(ts) AS bucket, agent_id, count(),
                      countIf(status = 'error')
               FROM agentwatch.events
               WHERE tenant_id = {tenant:String} AND ts >= {since:DateTime('UTC')}
                 AND kind IN ('llm_call', 'tool_call')
               GROUP BY bucket, agent_id ORDER BY bucket, agent_id""",
            (0, 1, 2, 3),
            (0, 1, 2, 3),
        ),
        Case(
            "top_sessions_by_cost",
            """SELECT session_id, agent_id, cost_usd, events FROM agentwatch.top_sessions_by_cost
               WHERE tenant_id = {tenant:String} ORDER BY cost_usd DESC LIMIT 20""",
            """SELECT session_id, agent_id, sum(cost_usd) AS cost, count()
               FROM agentwatch.events WHERE tenant_id = {tenant:String}
               GROUP BY tenant_id, agent_id, session_id ORDER BY cost DESC LIMIT 20""",
            (2,),
            (2,),
        ),
        Case(
            "open_alerts",
            """SELECT alert_id, rule, key, fired_at FROM agentwatch.open_alerts
               WHERE tenant_id = {tenant:String} ORDER BY fired_at DESC, alert_id LIMIT 100""",
            """SELECT alert_id, any(rule), any(key), argMax(ts, (ts, state = 'resolved')) AS t
               FROM agentwatch.alerts WHERE tenant_id = {tenant:String} GROUP BY alert_id
               HAVING argMax(state, (ts, state = 'resolved')) = 'firing'
               ORDER BY t DESC, alert_id LIMIT 100""",
            (0, 1, 2, 3),
            (0, 1, 2, 3),
        ),
        Case(
            "loop_incidents",
            """SELECT alert_id, status, fired_at, resolved_at FROM agentwatch.loop_incidents
               WHERE tenant_id = {tenant:String} AND fired_at >= {since_week:DateTime('UTC')}
               ORDER BY fired_at DESC, alert_id""",
            """SELECT alert_id, if(countIf(state = 'resolved') > 0, 'resolved', 'open'),
                      minIf(ts, state = 'firing') AS f,
                      if(countIf(state = 'resolved') > 0, maxIf(ts, state = 'resolved'), NULL)
               FROM agentwatch.alerts
               WHERE tenant_id = {tenant:String} AND type = 'runaway_loop'
               GROUP BY alert_id HAVING f >= {since_week:DateTime('UTC')}
               ORDER BY f DESC, alert_id""",
            (0, 1, 2, 3),
            (0, 1, 2, 3),
        ),
    ]


def _timed(backend: ChdbBackend, sql: str, params: dict[str, Any]) -> tuple[float, QueryResult]:
    start = time.perf_counter()
    result = backend.query(sql, params)
    return time.perf_counter() - start, result


def best_of(
    backend: ChdbBackend, case: Case, params: dict[str, Any], runs: int
) -> tuple[float, float, QueryResult, QueryResult]:
    """Best time of the view and of the baseline, run alternately (the machine is shared:
    both sides see the same load)."""
    ours_s = base_s = math.inf
    ours = base = QueryResult(())
    for _ in range(runs):
        elapsed, ours = _timed(backend, case.view_sql, params)
        ours_s = min(ours_s, elapsed)
        elapsed, base = _timed(backend, case.baseline_sql, params)
        base_s = min(base_s, elapsed)
    return ours_s, base_s, ours, base


def _as_comparable(value: Any) -> Any:
    """A timestamp as epoch seconds, whichever type it came as: ClickHouse's Arrow output
    gives a ``DateTime`` of a view's column as a datetime and a computed one (e.g.
    ``toStartOfHour(ts)``) as its uint32 seconds; a naive datetime is UTC."""
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.timestamp()
    return value


def _same(a: Any, b: Any) -> bool:
    a, b = _as_comparable(a), _as_comparable(b)
    if isinstance(a, float | int) and isinstance(b, float | int) and float in (type(a), type(b)):
        # float sums: the order of summation varies with the parts read, so the last
        # bits do too; a relative tolerance far above that noise, far below any real error
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)


def check_same(label: str, case: Case, ours: QueryResult, baseline: QueryResult) -> None:
    """The view and the raw baseline must give the same answer."""
    if len(ours.rows) != len(baseline.rows):
        raise SystemExit(
            f"views: FAILED: {label}: {len(ours.rows)} rows from the view, "
            f"{len(baseline.rows)} from the baseline"
        )
    for i, (mine, theirs) in enumerate(zip(ours.rows, baseline.rows, strict=True)):
        a = [mine[c] for c in case.ours_cols]
        b = [theirs[c] for c in case.base_cols]
        if not all(_same(x, y) for x, y in zip(a, b, strict=True)):
            raise SystemExit(f"views: FAILED: {label}: row {i} differs: view {a}, baseline {b}")


def count(backend: ChdbBackend, sql: str) -> int:
    return int(backend.query(sql).rows[0][0])


def generate(backend: ChdbBackend, n_events: int, end: datetime) -> None:
    start = end - timedelta(days=DAYS)
    params = {
        "n": n_events,
        "sessions": SESSIONS,
        "agents": AGENTS,
        "tenants": TENANTS,
        "start": start,
        "session_starts_us": DAYS * 86_400 * 1_000_000 - SESSION_SPAN_US,
        "session_span_us": SESSION_SPAN_US,
    }
    t0 = time.perf_counter()
    backend.command(EVENTS_SQL, params)
    insert_s = time.perf_counter() - t0
    unmerged = count(backend, "SELECT count() FROM agentwatch.rollups_1m")
    print(
        f"views: inserted {n_events:,} events in {insert_s:.1f} s "
        f"({n_events / insert_s:,.0f}/s, materialized view included); "
        f"rollups_1m: {unmerged:,} rows as inserted",
        file=sys.stderr,
    )
    backend.command(
        ALERTS_SQL,
        {
            "n": ALERTS,
            "sessions": SESSIONS,
            "agents": AGENTS,
            "tenants": TENANTS,
            "start": start,
            "span_s": DAYS * 86_400 - 600,
        },
    )
    t0 = time.perf_counter()
    for table in ("events", "rollups_1m", "alerts"):
        backend.command(f"OPTIMIZE TABLE {DB}.{table} FINAL")
    print(
        f"views: OPTIMIZE FINAL of events, rollups_1m, alerts: {time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
    )


def prepare(backend: ChdbBackend, n_events: int) -> None:
    migrate(backend, SchemaConfig(ttl_days=None))
    have = count(backend, "SELECT count() FROM agentwatch.events")
    if have == n_events and count(backend, "SELECT count() FROM agentwatch.alerts") > 0:
        print(f"views: reusing the {have:,} events already in the data dir", file=sys.stderr)
        return
    for table in ("events", "rollups_1m", "alerts"):
        backend.command(f"TRUNCATE TABLE {DB}.{table}")
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    generate(backend, n_events, end)
    stored = count(backend, "SELECT count() FROM agentwatch.events")
    rolled = count(backend, "SELECT sum(events) FROM agentwatch.rollups_1m")
    if stored != n_events or rolled != n_events:
        raise SystemExit(
            f"views: FAILED: {stored:,} events stored, {rolled:,} counted by rollups_1m "
            f"(expected {n_events:,}): the materialized view did not fill the rollups"
        )


def describe(backend: ChdbBackend) -> None:
    sizes = backend.query(
        "SELECT table, sum(rows), sum(data_compressed_bytes), count() FROM system.parts "
        "WHERE database = {db:String} AND active GROUP BY table ORDER BY table",
        {"db": DB},
    ).rows
    for table, rows, size, parts in sizes:
        print(
            f"views: {table}: {rows:,} rows, {size / 1e6:.1f} MB compressed, {parts} parts",
            file=sys.stderr,
        )


def run(backend: ChdbBackend, runs: int) -> list[tuple[str, float]]:
    """Time every case; print one line each; return (label, view seconds)."""
    # Whole hours, as a dashboard's range: then `hour >= since` on the view and
    # `ts >= since` on the raw events select the same events.
    latest = backend.query("SELECT max(ts) FROM agentwatch.events").rows[0][0]
    end = latest.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    params: dict[str, Any] = {
        "limit": 100,
        "tenant": "tenant-3",
        "since": end - timedelta(hours=24),
        "since_week": end - timedelta(days=7),
    }
    timings: list[tuple[str, float]] = []
    for suffix, cases in (("", saved_cases()), (" filtered", filtered_cases())):
        for case in cases:
            label = f"{case.name}{suffix}"
            ours_s, base_s, ours, base = best_of(backend, case, params, runs)
            check_same(label, case, ours, base)
            print(
                f"view {label}: s ours={ours_s:.4f} peer={base_s:.4f} "
                f"ratio={base_s / ours_s:.2f}",
                flush=True,
            )
            print(f"views: {label}: {len(ours.rows)} rows", file=sys.stderr)
            timings.append((label, ours_s))
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="keep the chDB data here (reused when it already holds --events)",
    )
    parser.add_argument("--runs", type=int, default=3, help="best of this many runs per query")
    args = parser.parse_args()
    tmp: Path | None = None
    path: Path = args.data_dir
    if path is None:
        tmp = Path(tempfile.mkdtemp(prefix="bench_views_"))
        path = tmp / "db"
    try:
        with ChdbBackend(path) as backend:
            prepare(backend, args.events)
            describe(backend)
            timings = run(backend, args.runs)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    slowest_label, slowest = max(timings, key=lambda t: t[1])
    verdicts = " ".join(
        f"{label.replace(' ', ':')}={'ok' if s < GOAL_S else 'SLOW'}" for label, s in timings
    )
    met = all(s < GOAL_S for _, s in timings)
    print(
        f"views: max_s={slowest:.4f} ({slowest_label}) goal=<{GOAL_S:g}s "
        f"{'met' if met else 'MISSED'} on {args.events:,} events; {verdicts}",
        flush=True,
    )


if __name__ == "__main__":
    main()
