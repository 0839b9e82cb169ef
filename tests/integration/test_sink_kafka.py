"""`agentwatch sink` on the real broker into chDB: every event stored exactly once, rollups
equal to a recomputation from the raw rows, alerts and dead letters present; a sink
SIGKILLed between an insert and its commit stores nothing twice; while ClickHouse
refuses inserts, the sink waits and loses nothing."""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sink_harness import SinkProcess, group_offsets, wait_caught_up
from worker_harness import create_topic, pack, produce

from agentwatch.schemas import Alert, default_price_table, encode_alert
from agentwatch.sinks import ChdbBackend, SchemaConfig, SinkSettings, migrate
from agentwatch.sinks.kafka import INTENT_PREFIX, KafkaSink

# Event times near now: the sink creates its tables with the default 30-day TTL, and
# ClickHouse drops rows already past it as they are inserted.
T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
KINDS = ("llm_call", "llm_call", "tool_call", "tool_call", "agent_step")


def make_events(n: int, *, seed: int, sessions: int = 60) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(n):
        s = rng.randrange(sessions)
        kind = rng.choice(KINDS)
        event: dict[str, Any] = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
            "ts": (T0 + timedelta(milliseconds=i * 37)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "tenant_id": f"t{s % 3}",
            "agent_id": f"agent-{s % 7}",
            "session_id": f"s{s}",
            "kind": kind,
            "status": "error" if rng.random() < 0.1 else "ok",
        }
        if kind == "llm_call":
            event |= {"model": rng.choice(["gpt-4o", "claude-sonnet-4"]),
                      "input_tokens": rng.randrange(2000), "output_tokens": rng.randrange(500),
                      "duration_ms": round(rng.uniform(50, 3000), 3)}
        elif kind == "tool_call":
            event |= {"name": rng.choice(["search", "crm.lookup"]),
                      "tool_args_hash": f"h{rng.randrange(5)}",
                      "duration_ms": round(rng.uniform(1, 200), 3)}
        out.append(event)
    return out


def make_alerts(n: int) -> list[Alert]:
    alerts = []
    for i in range(n):
        state = "resolved" if i % 4 == 3 else "firing"
        alerts.append(Alert.model_validate_json(orjson.dumps({
            "alert_id": f"al-{i // 2}", "rule": "runaway_loop_repeat" if i % 2 else "session_cost",
            "type": "runaway_loop" if i % 2 else "cost", "state": state, "severity": "warning",
            "scope": "session", "key": f"s{i}", "tenant_id": "t0", "agent_id": "agent-0",
            "session_id": f"s{i}", "value": float(i), "threshold": 1.0, "window_s": 60,
            "ts": (T0 + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "reason": f"alert {i}", "event_ids": [f"e{i}"]})))
    return alerts


BAD_EVENT_RECORDS = [
    (b"t0/s1", b"{not json"),
    (b"t0/s1", b'[{"event_id": "x", "ts": "2026-11-20T09:00:00Z", "agent_id": "a",'
               b' "session_id": "s1", "kind": "llm_call", "input_tokens": -5}]'),
    (b"t0/s1", b"[42]"),
]


@pytest.fixture
def topics(kafka_bootstrap: str, topic_name: str) -> dict[str, str]:
    names = {"events": f"{topic_name}.events", "alerts": f"{topic_name}.alerts"}
    create_topic(kafka_bootstrap, names["events"], PARTITIONS["events"])
    create_topic(kafka_bootstrap, names["alerts"], PARTITIONS["alerts"])
    return names


PARTITIONS = {"events": 4, "alerts": 2}


def both(topics: dict[str, str]) -> dict[str, int]:
    return {topics[k]: PARTITIONS[k] for k in ("events", "alerts")}


def events_only(topics: dict[str, str]) -> dict[str, int]:
    return {topics["events"]: PARTITIONS["events"]}


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with ChdbBackend(path) as backend:
        return backend.query(sql).rows


def _check_store(path: Path, events: list[dict[str, Any]]) -> None:
    """Every event once; rollups equal a recomputation from the stored rows."""
    with ChdbBackend(path) as db:
        assert db.query("SELECT count(), uniqExact(event_id) FROM agentwatch.events").rows == [
            (len(events), len(events))]
        stored = {r[0] for r in db.query("SELECT event_id FROM agentwatch.events").rows}
        assert stored == {e["event_id"] for e in events}
        dims = "minute, tenant_id, agent_id, model, tool, kind"
        # minute as text: the same on both sides whatever its exact DateTime type
        rollups = db.query(
            f"SELECT toString(minute) AS minute, tenant_id, agent_id, model, tool, kind,"
            f" sum(events), sum(errors), sum(input_tokens), sum(output_tokens),"
            f" round(sum(cost_usd), 9), sum(timed) FROM agentwatch.rollups_1m GROUP BY {dims}"
            f" ORDER BY {dims}").rows
        recomputed = db.query(
            "SELECT toString(toStartOfMinute(ts)) AS minute, tenant_id, agent_id,"
            " ifNull(model, '') AS model, if(kind = 'tool_call', ifNull(name, ''), '') AS tool,"
            " kind, count(),"
            " countIf(status = 'error'), sum(ifNull(input_tokens, 0)),"
            " sum(ifNull(output_tokens, 0)), round(sum(cost_usd), 9), count(duration_ms)"
            f" FROM agentwatch.events GROUP BY {dims} ORDER BY {dims}").rows
        assert rollups == recomputed
        assert sum(r[6] for r in rollups) == len(events)


def test_sink_stores_every_event_once_with_rollups_alerts_and_dead_letters(
    kafka_bootstrap: str, topics: dict[str, str], topic_name: str, tmp_path: Path
) -> None:
    events = make_events(3000, seed=1)
    records = pack(events, flush_every=100)
    # A producer's re-send after a lost acknowledgement: the same records again, later.
    resent = records[10:25]
    produce(kafka_bootstrap, topics["events"], records + resent + BAD_EVENT_RECORDS)
    alerts = make_alerts(20)
    produce(kafka_bootstrap, topics["alerts"],
            [(a.alert_id.encode(), encode_alert(a)) for a in alerts] + [(b"x", b'{"rule": 1}')])
    group = f"{topic_name}-sink"
    sink = SinkProcess(kafka_bootstrap, events_topic=topics["events"],
                       alerts_topic=topics["alerts"], group=group, chdb_path=tmp_path / "ch",
                       log_path=tmp_path / "sink.log").start()
    try:
        wait_caught_up(kafka_bootstrap, group, both(topics), timeout_s=90, sink=sink)
    finally:
        assert sink.stop() == 0, sink.log()[-3000:]
    _check_store(tmp_path / "ch", events)
    prices = default_price_table()
    expected_cost = sum(
        prices.cost_usd(e["model"], e["input_tokens"], e["output_tokens"], None) or 0.0
        for e in events if e["kind"] == "llm_call")
    assert expected_cost > 0
    with ChdbBackend(tmp_path / "ch") as db:
        # Events sent without cost_usd are priced as the detection core prices them.
        cost = db.query("SELECT sum(cost_usd), min(priced) FROM agentwatch.events"
                        " WHERE kind = 'llm_call'").rows[0]
        assert cost[0] == pytest.approx(expected_cost, rel=1e-9)
        assert cost[1] == 1
        stored_alerts = db.query(
            "SELECT alert_id, state, value FROM agentwatch.alerts ORDER BY value").rows
        assert stored_alerts == [(a.alert_id, a.state.value, a.value) for a in alerts]
        letters = db.query(
            "SELECT source, reason FROM agentwatch.dead_letters ORDER BY reason").rows
    assert len(letters) == 4
    reasons = " | ".join(r[1] for r in letters)
    assert "malformed JSON" in reasons
    assert "input_tokens" in reasons
    assert "not an object" in reasons
    assert any(s.startswith(f"{topics['alerts']}/") for s, _ in letters)
    assert any(s.startswith(f"{topics['events']}/") and s.endswith("#0") for s, _ in letters)


def test_sink_killed_between_insert_and_commit_stores_nothing_twice(
    kafka_bootstrap: str, topics: dict[str, str], topic_name: str, tmp_path: Path
) -> None:
    events = make_events(2000, seed=2)
    produce(kafka_bootstrap, topics["events"], pack(events, flush_every=50))
    group = f"{topic_name}-sink"
    chdb = tmp_path / "ch"
    common: dict[str, Any] = {"events_topic": topics["events"], "alerts_topic": topics["alerts"],
                              "group": group, "chdb_path": chdb, "batch_max_events": 300}
    doomed = SinkProcess(kafka_bootstrap, log_path=tmp_path / "doomed.log", kill_after_inserts=3,
                         **common).start()
    assert doomed.wait(timeout_s=90) == -9, doomed.log()[-3000:]
    # The crash left at least one batch stored in ClickHouse but not committed in Kafka.
    pending = {tp: meta for tp, (_, meta) in group_offsets(kafka_bootstrap, group).items()
               if meta.startswith(INTENT_PREFIX)}
    assert pending, group_offsets(kafka_bootstrap, group)
    stored_before = _rows(chdb, "SELECT count() FROM agentwatch.events")[0][0]
    assert 0 < stored_before < len(events)

    sink = SinkProcess(kafka_bootstrap, log_path=tmp_path / "sink.log", **common).start()
    try:
        wait_caught_up(kafka_bootstrap, group, events_only(topics), timeout_s=90, sink=sink)
    finally:
        assert sink.stop() == 0, sink.log()[-3000:]
    assert "completing a batch that may be stored" in sink.log()
    _check_store(chdb, events)


#: Where the sink kills itself (``AGENTWATCH_TEST_CRASH_AT``, ``<point>:<n>``): mid-batch
#: (records taken, nothing of them committed), after a round's intents (no insert yet),
#: after an insert (its end not committed), after a round's final commit.
CRASH_POINTS = ("taken:700", "intent:4", "insert:4", "commit:4")


@pytest.mark.parametrize("crash_at", CRASH_POINTS)
def test_a_sink_killed_at_any_point_and_restarted_stores_every_event_once(
    kafka_bootstrap: str, topics: dict[str, str], topic_name: str, tmp_path: Path, crash_at: str
) -> None:
    _crash_and_restart(kafka_bootstrap, topics, topic_name, tmp_path, crash_at)


def test_a_pending_batch_is_stored_once_after_clickhouse_forgot_its_token(
    kafka_bootstrap: str, topics: dict[str, str], topic_name: str, tmp_path: Path
) -> None:
    def forget_tokens(chdb: Path) -> None:
        # As when more than 1,000 other inserts came meanwhile: no deduplication log.
        with ChdbBackend(chdb) as db:
            db.command("ALTER TABLE agentwatch.events"
                       " MODIFY SETTING non_replicated_deduplication_window = 0")

    log = _crash_and_restart(kafka_bootstrap, topics, topic_name, tmp_path, "insert:4",
                             before_restart=forget_tokens)
    assert "of a pending batch were stored already" in log


def _crash_and_restart(kafka_bootstrap: str, topics: dict[str, str], topic_name: str,
                       tmp_path: Path, crash_at: str,
                       before_restart: Callable[[Path], None] | None = None) -> str:
    """A sink killed at ``crash_at`` while events with re-sent copies flow, then a new
    one: every event stored once (and the rollups agree). Returns the new sink's log."""
    events = make_events(3000, seed=7)
    records = pack(events, flush_every=50)
    # A producer's re-sends after lost acknowledgements: records 40-59 again right after
    # themselves (the same batch), and records 0-29 again at the end, long after their
    # first copy was stored (by the sink that is about to die).
    resent = [r for i, r in enumerate(records) for _ in range(2 if 40 <= i < 60 else 1)]
    produce(kafka_bootstrap, topics["events"], resent + records[:30])
    group = f"{topic_name}-sink"
    chdb = tmp_path / "ch"
    common: dict[str, Any] = {"events_topic": topics["events"], "alerts_topic": topics["alerts"],
                              "group": group, "chdb_path": chdb, "batch_max_events": 300}
    doomed = SinkProcess(kafka_bootstrap, log_path=tmp_path / "doomed.log", crash_at=crash_at,
                         **common).start()
    assert doomed.wait(timeout_s=90) == -9, doomed.log()[-3000:]
    pending = [m for _, m in group_offsets(kafka_bootstrap, group).values()
               if m.startswith(INTENT_PREFIX)]
    if crash_at.startswith(("intent", "insert")):
        assert pending, "the crash left no batch pending"
    stored_before = _rows(chdb, "SELECT count() FROM agentwatch.events")[0][0]
    assert stored_before < len(events)
    if before_restart is not None:
        before_restart(chdb)

    sink = SinkProcess(kafka_bootstrap, log_path=tmp_path / "sink.log", **common).start()
    try:
        wait_caught_up(kafka_bootstrap, group, events_only(topics), timeout_s=90, sink=sink)
    finally:
        assert sink.stop() == 0, sink.log()[-3000:]
    _check_store(chdb, events)
    if stored_before:
        assert "recent-id memory rebuilt" in sink.log()
    return sink.log()


class _InProcessSink:
    """A :class:`KafkaSink` on a thread of this process, sharing its chDB backend."""

    def __init__(self, settings: SinkSettings, backend: ChdbBackend) -> None:
        self.sink: KafkaSink | None = None
        self._settings, self._backend = settings, backend
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.sink = KafkaSink(self._settings, self._backend, SchemaConfig())
        await self.sink.run()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())  # closes the loop and its executor at the end
        except BaseException as exc:  # noqa: BLE001 (handed to the test, which asserts on it)
            self.error = exc

    def __enter__(self) -> _InProcessSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.sink is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self.sink.stop)
        self._thread.join(timeout=30)


@pytest.fixture
def chdb_backend(tmp_path: Path) -> Iterator[ChdbBackend]:
    with ChdbBackend(tmp_path / "ch") as backend:
        migrate(backend)
        yield backend


def test_sink_waits_while_clickhouse_refuses_inserts_and_loses_nothing(
    kafka_bootstrap: str, topics: dict[str, str], topic_name: str, chdb_backend: ChdbBackend
) -> None:
    group = f"{topic_name}-sink"
    settings = SinkSettings(bootstrap_servers=kafka_bootstrap, events_topic=topics["events"],
                            alerts_topic=topics["alerts"], group_id=group,
                            batch_max_events=200, batch_max_ms=200, max_backoff_s=0.5)
    first, second = make_events(1000, seed=3), make_events(1000, seed=4)
    produce(kafka_bootstrap, topics["events"], pack(first, flush_every=50))
    with _InProcessSink(settings, chdb_backend) as running:
        wait_caught_up(kafka_bootstrap, group, events_only(topics), timeout_s=60)
        # ClickHouse now refuses every insert into events (as when it is down).
        chdb_backend.command("RENAME TABLE agentwatch.events TO agentwatch.events_away")
        produce(kafka_bootstrap, topics["events"], pack(second, flush_every=50))
        deadline = time.monotonic() + 30
        while running.sink is None or running.sink.stats.retries < 3:
            assert time.monotonic() < deadline, "the sink never retried"
            time.sleep(0.1)
        committed = group_offsets(kafka_bootstrap, group)
        assert any(meta.startswith(INTENT_PREFIX) for _, meta in committed.values())
        chdb_backend.command("RENAME TABLE agentwatch.events_away TO agentwatch.events")
        wait_caught_up(kafka_bootstrap, group, events_only(topics), timeout_s=60)
    assert running.error is None, running.error
    stored = chdb_backend.query("SELECT count(), uniqExact(event_id) FROM agentwatch.events")
    assert stored.rows == [(2000, 2000)]
    rollup = chdb_backend.query("SELECT sum(events) FROM agentwatch.rollups_1m").rows
    assert rollup == [(2000,)]


def test_two_sinks_in_one_group_share_partitions_and_a_rebalance_stores_each_row_once(
    kafka_bootstrap: str, topics: dict[str, str], topic_name: str, chdb_backend: ChdbBackend
) -> None:
    group = f"{topic_name}-sink"
    settings = SinkSettings(bootstrap_servers=kafka_bootstrap, events_topic=topics["events"],
                            alerts_topic=topics["alerts"], group_id=group,
                            batch_max_events=150, batch_max_ms=100)
    events = make_events(6000, seed=5)
    records = pack(events, flush_every=40)
    third = len(records) // 3
    produce(kafka_bootstrap, topics["events"], records[:third])
    with _InProcessSink(settings, chdb_backend) as first:
        wait_caught_up(kafka_bootstrap, group, events_only(topics), timeout_s=60)
        with _InProcessSink(settings, chdb_backend) as second:
            # The second joins while records flow: a rebalance in the middle of rounds.
            producer = threading.Thread(target=produce, args=(
                kafka_bootstrap, topics["events"], records[third:2 * third]),
                kwargs={"pace_s": 0.002})
            producer.start()
            producer.join()
            wait_caught_up(kafka_bootstrap, group, events_only(topics), timeout_s=60)
            assert second.sink is not None
            assert first.sink is not None
            assert second.sink.ready.is_set()
            assert first.sink.stats.events > 0
        # The second leaves: its partitions go back to the first (another rebalance).
        produce(kafka_bootstrap, topics["events"], records[2 * third:])
        wait_caught_up(kafka_bootstrap, group, events_only(topics), timeout_s=60)
    assert first.error is None, first.error
    assert second.error is None, second.error
    assert second.sink.stats.events > 0  # it really took a share
    stored = chdb_backend.query("SELECT count(), uniqExact(event_id) FROM agentwatch.events")
    assert stored.rows == [(len(events), len(events))]
    assert chdb_backend.query("SELECT sum(events) FROM agentwatch.rollups_1m").rows == [
        (len(events),)]


def test_a_sink_stopped_while_clickhouse_refuses_exits_and_the_next_completes_its_batch(
    kafka_bootstrap: str, topics: dict[str, str], topic_name: str, chdb_backend: ChdbBackend
) -> None:
    group = f"{topic_name}-sink"
    settings = SinkSettings(bootstrap_servers=kafka_bootstrap, events_topic=topics["events"],
                            alerts_topic=topics["alerts"], group_id=group,
                            batch_max_events=10_000, batch_max_ms=200, max_backoff_s=0.5)
    events = make_events(800, seed=6)
    produce(kafka_bootstrap, topics["events"], pack(events, flush_every=50))
    chdb_backend.command("RENAME TABLE agentwatch.events TO agentwatch.events_away")
    with _InProcessSink(settings, chdb_backend) as refused:
        deadline = time.monotonic() + 30
        while refused.sink is None or refused.sink.stats.retries < 2:
            assert time.monotonic() < deadline, "the sink never retried"
            time.sleep(0.1)
        stopping_at = time.monotonic()
    assert not refused._thread.is_alive()  # stopped although ClickHouse still refused
    assert time.monotonic() - stopping_at < 15
    assert refused.error is None, refused.error
    pending = [m for _, m in group_offsets(kafka_bootstrap, group).values()]
    assert any(m.startswith(INTENT_PREFIX) for m in pending), pending
    chdb_backend.command("RENAME TABLE agentwatch.events_away TO agentwatch.events")
    with _InProcessSink(settings, chdb_backend) as running:
        wait_caught_up(kafka_bootstrap, group, events_only(topics), timeout_s=60)
    assert running.error is None, running.error
    stored = chdb_backend.query("SELECT count(), uniqExact(event_id) FROM agentwatch.events")
    assert stored.rows == [(len(events), len(events))]
