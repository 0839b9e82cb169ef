"""The rows of the fault matrix, how each is run, and how it is counted.

Per row, on a fresh pipeline (:class:`bench.faults._pipeline.Pipeline`): the agent process
emits a paced fleet (``--pace`` events/s for ``--fleet-s`` s; sessions, runaway loops
every ``loop_every`` events); the fault is injected at a fixed or seeded-random time of
the fleet's run; then:

* **recovery time**: from the end of the fault (the broker ready again, the process
  restarted, the endpoint or the data dir back) until the worker and the sink have
  committed everything that was on the events topic at that moment, and the dispatcher
  everything that was on the alerts topic when the worker got there (for the producer row:
  from the restart until the spool was delivered and then the same);
* then the fleet runs to its end and everything drains (every group at the end of its
  input, the alerts topic unchanged for 5 s); the services stop (SIGTERM);
* **events produced**: ids ``emit()`` accepted (the agent logs each index after ``emit()``
  returns). A producer killed with SIGKILL loses what it still held in memory (events of
  the last ``linger_ms``, not yet packed into the spool, as the README says): those are
  counted apart (``in memory at SIGKILL``: neither in the spool files just after the kill
  nor ever on the topic), not as produced;
* **events in ClickHouse**: distinct produced ids in ``agentwatch.events`` (read with
  ``agentwatch query``); **lost** = produced ids not there; **duplicate rows** = rows -
  distinct ids;
* **alerts expected**: ``replay`` (the same core, :func:`worker_harness.replay_alerts`) of
  the distinct events on the topic, in the fleet's order; **alerts delivered**: distinct
  ``(alert_id, state)`` the receiver answered 2xx for that replay also has; missing and
  extra ones are listed; a delivered body that differs from replay's alert counts as a
  mismatch; **duplicate deliveries**: 2xx deliveries beyond the first of an
  ``(alert_id, state)``, and whether every copy carried the same ``X-Agentwatch-Delivery``.
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import time
import traceback
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from agentwatch.processors.core import load_rules
from agentwatch.sinks.kafka import parse_intent
from bench._fleet import fleet_events, fleet_start
from bench.faults._pipeline import RULES, Pipeline, signal_broker, spool_event_ids

RECOVERY_TIMEOUT_S = 150.0
DRAIN_TIMEOUT_S = 150.0
STABLE_S = 5.0
POLL_S = 0.5


@dataclass
class Result:
    key: str
    fault: str
    produced: int = 0
    in_clickhouse: int = 0
    lost: int = 0
    duplicate_rows: int = 0
    producer_copies: int = 0  # re-sent copies on the events topic
    late_events: int = 0  # the worker's agent stage took this many out of order
    in_memory_at_kill: int = 0
    alerts_expected: int = 0
    alerts_delivered: int = 0
    alerts_missing: int = 0
    alerts_extra: int = 0
    alerts_mismatched: int = 0
    duplicate_deliveries: int = 0
    same_delivery_ids: bool = True
    unverified: int = 0
    recovery_s: float | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def failures(self) -> list[str]:
        out = []
        if self.error:
            out.append(f"error: {self.error.splitlines()[-1]}")
        if self.lost:
            out.append(f"{self.lost} events lost")
        if self.duplicate_rows:
            out.append(f"{self.duplicate_rows} duplicate rows")
        if self.alerts_missing or self.alerts_extra:
            out.append(f"alerts: {self.alerts_missing} missing, {self.alerts_extra} extra")
        if self.alerts_mismatched:
            out.append(f"{self.alerts_mismatched} delivered alerts differ from replay's")
        if not self.same_delivery_ids:
            out.append("a duplicate delivery with another delivery id")
        if self.unverified:
            out.append(f"{self.unverified} deliveries with a bad signature")
        if self.recovery_s is None and not self.error:
            out.append("did not catch up")
        return out


@dataclass(frozen=True)
class Fleet:
    pace: float
    seconds: float
    sessions: int = 100
    loop_every: int = 300
    seed: int = 7
    #: the first event time (unix µs): a row's fleet starts at the wall clock, as agents
    #: stamp their events (None: bench/_fleet.py's fixed date)
    start_us: int | None = None

    @property
    def events(self) -> int:
        return int(self.pace * self.seconds)

    def args(self) -> dict[str, Any]:
        return {"events": self.events, "pace": self.pace, "sessions": self.sessions,
                "loop_every": self.loop_every, "seed": self.seed, "start_us": self.start_us}


class Ctx:
    """What a fault function gets: the pipeline, the fleet's start (monotonic), a seeded
    random source and the row's notes."""

    def __init__(self, pipeline: Pipeline, fleet: Fleet, rng: random.Random,
                 result: Result) -> None:
        self.p = pipeline
        self.fleet = fleet
        self.rng = rng
        self.result = result
        self.t0 = time.monotonic()
        self.spool_ids: set[str] = set()
        self.wait_spool = False

    def at(self, offset_s: float) -> None:
        """Sleep until ``offset_s`` into the fleet's run."""
        time.sleep(max(0.0, self.t0 + offset_s - time.monotonic()))

    def note(self, text: str) -> None:
        self.result.notes.append(f"{time.monotonic() - self.t0:5.1f} s: {text}")


def _spread(rng: random.Random, n: int, lo: float, hi: float) -> list[float]:
    """``n`` random times in ``[lo, hi]``, one in each of ``n`` equal slices."""
    width = (hi - lo) / n
    return [lo + i * width + rng.uniform(0.5, width - 0.5) for i in range(n)]


# -- the faults: each returns when its fault is over (the monotonic time it ended) -------------

def no_fault(c: Ctx) -> float:
    c.at(15)
    return time.monotonic()


def broker_stopped(c: Ctx) -> float:
    assert c.p.broker is not None
    c.at(15)
    c.note("broker SIGTERM")
    c.p.broker.pause()  # SIGTERM, waits for the process to end
    c.note("broker process exited; restart in 10 s")
    time.sleep(10)
    c.p.broker.resume()  # same ports, same data dir; returns once it serves
    c.note("broker started again and ready")
    return time.monotonic()


def broker_paused(c: Ctx) -> float:
    assert c.p.broker is not None
    c.at(15)
    signal_broker(c.p.broker, signal.SIGSTOP)
    c.note("broker SIGSTOP")
    time.sleep(10)
    signal_broker(c.p.broker, signal.SIGCONT)
    c.note("broker SIGCONT")
    return time.monotonic()


def _kill_restart(c: Ctx, what: str, times: list[float]) -> float:
    for t in times:
        c.at(t)
        service = {"worker": c.p.worker, "sink": c.p.sink, "webhooks": c.p.dispatcher}[what]
        assert service is not None
        service.kill()
        c.note(f"{what} SIGKILL")
        time.sleep(1)
        {"worker": c.p.start_worker, "sink": c.p.start_sink,
         "webhooks": c.p.start_dispatcher}[what]()
        c.note(f"{what} started again")
    return time.monotonic()


def worker_killed(c: Ctx) -> float:
    return _kill_restart(c, "worker", _spread(c.rng, 3, 5, c.fleet.seconds - 3))


def sink_killed(c: Ctx) -> float:
    return _kill_restart(c, "sink", _spread(c.rng, 3, 5, c.fleet.seconds - 3))


def dispatcher_killed(c: Ctx) -> float:
    return _kill_restart(c, "webhooks", _spread(c.rng, 1, 10, c.fleet.seconds - 5))


def endpoint_down(c: Ctx) -> float:
    c.at(10)
    c.p.stop_receiver()
    c.note(f"webhook endpoint down (port {c.p.receiver_port} closed)")
    time.sleep(60)
    c.p.start_receiver()
    c.note("webhook endpoint back on the same port")
    return time.monotonic()


def clickhouse_unwritable(c: Ctx) -> float:
    c.at(15)
    modes: dict[Path, int] = {}
    for dirpath, _dirnames, filenames in os.walk(c.p.chdb_dir):  # each dir once, as "."
        for name in [".", *filenames]:
            path = Path(dirpath) / name if name != "." else Path(dirpath)
            try:
                mode = path.lstat().st_mode
            except FileNotFoundError:
                continue
            if path.is_symlink():
                continue
            modes[path] = mode
            path.chmod(mode & ~0o222)
    c.note(f"chDB data dir read-only ({len(modes)} paths made a-w)")
    time.sleep(30)
    for path, mode in modes.items():
        try:
            path.chmod(mode & 0o7777)
        except FileNotFoundError:
            continue
    c.note("chDB data dir writable again")
    return time.monotonic()


def producer_killed(c: Ctx) -> float:
    (t,) = _spread(c.rng, 1, 10, c.fleet.seconds - 5)
    c.at(t)
    assert c.p.agent is not None
    c.p.agent.send_signal(signal.SIGKILL)
    c.p.agent.wait(10)
    emitted = c.p.emitted_indices()
    c.spool_ids = spool_event_ids(c.p.spool_dir)
    c.note(f"producer SIGKILL after {len(emitted)} events emitted; "
           f"{len(c.spool_ids)} events in its spool files")
    time.sleep(1)
    c.p.start_agent(c.fleet.args(), spool=True, start=max(emitted, default=-1) + 1)
    c.note("producer started again on the same spool dir")
    c.wait_spool = True
    return time.monotonic()


@dataclass(frozen=True)
class Row:
    key: str
    fault: str
    inject: Callable[[Ctx], float]
    spool: bool = False


ROWS: tuple[Row, ...] = (
    Row("baseline", "none (baseline)", no_fault),
    Row("broker-stop", "broker stopped 10 s", broker_stopped),
    Row("broker-pause", "broker paused (SIGSTOP) 10 s", broker_paused),
    Row("worker-kill", "worker SIGKILL x3", worker_killed),
    Row("sink-kill", "sink SIGKILL x3", sink_killed),
    Row("dispatcher-kill", "dispatcher SIGKILL", dispatcher_killed),
    Row("endpoint-down", "webhook endpoint down 60 s", endpoint_down),
    Row("clickhouse-ro", "chDB data dir read-only 30 s", clickhouse_unwritable),
    Row("producer-kill", "producer SIGKILL (spool) + restart", producer_killed, spool=True),
)


# -- running a row -------------------------------------------------------------------------

def _caught_up(committed: dict[tuple[str, int], tuple[int, str]],
               ends: dict[tuple[str, int], int], *, no_intent: bool = False) -> bool:
    """Every partition committed to its end; with ``no_intent``, no sink intent pending
    (the sink's commits carry other metadata too: its recent-id ranges)."""
    for tp, end in ends.items():
        if end <= 0:
            continue
        offset, metadata = committed.get(tp, (-1, ""))
        if offset < end or (no_intent and parse_intent(metadata) is not None):
            return False
    return True


def _recovery(c: Ctx, fault_end: float) -> float | None:
    p = c.p
    if c.wait_spool:  # the restarted producer first sends what its spool kept
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = p.agent_output()
            if "spool-delivered" in out or "started recovered=0" in out:
                break
            time.sleep(0.1)
        c.note("restarted producer: " + ", ".join(p.agent_output().strip().splitlines()[:2]))
    deadline = fault_end + RECOVERY_TIMEOUT_S
    events_end: dict[tuple[str, int], int] | None = None
    alerts_end: dict[tuple[str, int], int] | None = None
    done: dict[str, float] = {}
    while time.monotonic() < deadline:
        try:
            if events_end is None:
                events_end = p.end_offsets([p.topics["events"]])
            if "worker" not in done and _caught_up(p.committed(p.groups["worker"]), events_end):
                done["worker"] = time.monotonic()
                alerts_end = p.end_offsets([p.topics["alerts"]])
            if "sink" not in done and _caught_up(p.committed(p.groups["sink"]), events_end,
                                                 no_intent=True):
                done["sink"] = time.monotonic()
            if alerts_end is not None and "webhooks" not in done and _caught_up(
                    p.committed(p.groups["webhooks"]), alerts_end):
                done["webhooks"] = time.monotonic()
        except Exception as exc:  # noqa: BLE001 -- the broker may not answer yet: poll again
            c.note(f"(recovery poll: {type(exc).__name__})") if not done else None
        if len(done) == 3:
            c.note("caught up: " + ", ".join(f"{k} +{v - fault_end:.1f} s"
                                             for k, v in sorted(done.items(),
                                                                key=lambda kv: kv[1])))
            return max(done.values()) - fault_end
        time.sleep(POLL_S)
    c.note(f"not caught up {RECOVERY_TIMEOUT_S:.0f} s after the fault: done {sorted(done)}")
    return None


#: the worker's _QUIET_AFTER_GAP_S (processors/worker/_app.py)
_WORKER_QUIET_AFTER_GAP_S = 10.0


def _drain(c: Ctx) -> bool:
    """Until every group is at the end of its input and the alerts topic stays unchanged
    for ``STABLE_S``, or longer than the worker takes to call its partitions idle (its
    last agent windows are released then): its idle time, and after a gap in fetch answers
    (a broker outage) 10 s of quiet since they came back, plus 5 s."""
    p = c.p
    idle_after_s = 1.0 if p.idle_after_s is None else p.idle_after_s
    stable_s = max(STABLE_S, idle_after_s + _WORKER_QUIET_AFTER_GAP_S + 5.0)
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    stable_since: float | None = None
    last_alerts: dict[tuple[str, int], int] | None = None
    while time.monotonic() < deadline:
        try:
            # the worker on the events topic only: its committed offsets on its own rekeyed
            # topic stay a few records short of the end even at rest (seen: 8 per partition)
            events_end = p.end_offsets([p.topics["events"]])
            alerts_end = p.end_offsets([p.topics["alerts"]])
            ok = (_caught_up(p.committed(p.groups["worker"]), events_end)
                  and _caught_up(p.committed(p.groups["sink"]), {**events_end, **alerts_end},
                                 no_intent=True)
                  and _caught_up(p.committed(p.groups["webhooks"]), alerts_end))
        except Exception:  # noqa: BLE001 -- poll again
            ok = False
            alerts_end = {}
        if ok and alerts_end == last_alerts:
            stable_since = stable_since or time.monotonic()
            if time.monotonic() - stable_since >= stable_s:
                return True
        else:
            stable_since = None
        last_alerts = alerts_end
        time.sleep(POLL_S)
    return False


def run_row(row: Row, fleet: Fleet, out_dir: Path, seed: int, *,
            idle_after_s: float | None = None) -> Result:
    result = Result(row.key, row.fault)
    started = time.monotonic()
    name = f"fm-{row.key}-{uuid.uuid4().hex[:8]}"
    p = Pipeline(out_dir / row.key, name, idle_after_s=idle_after_s)
    try:
        p.start()
        # event times from the clock, like the producer library's: the worker's idle marks
        # bound an idle partition by wall-clock time (README, "What survives what")
        fleet = dataclasses.replace(fleet, start_us=time.time_ns() // 1000)
        p.start_agent(fleet.args(), spool=row.spool)
        c = Ctx(p, fleet, random.Random(f"{seed}:{row.key}"), result)
        fault_end = row.inject(c)
        result.recovery_s = _recovery(c, fault_end)
        assert p.agent is not None
        code = p.agent.wait(timeout=fleet.seconds + 600)
        if code != 0:
            result.notes.append(f"agent exited {code}: {p.agent_output()[-500:]}")
        if not _drain(c):
            result.notes.append(f"did not drain within {DRAIN_TIMEOUT_S:.0f} s")
            result.recovery_s = None
        exited = p.exited()
        if exited:
            result.notes.append("unexpected: " + "; ".join(exited))
        for service in (p.dispatcher, p.sink):
            if service is not None and service.proc is not None and service.proc.poll() is None:
                service.stop(timeout_s=60)
        if p.worker is not None:
            p.worker.stop()
        _count(p, c, fleet, result)
    except Exception:  # noqa: BLE001 -- a row that breaks is reported, the others still run
        result.error = traceback.format_exc()
    finally:
        p.stop()
        result.seconds = time.monotonic() - started
        (p.root / "result.json").write_bytes(orjson.dumps(
            dict(vars(result)), option=orjson.OPT_INDENT_2))
    return result


def _count(p: Pipeline, c: Ctx, fleet: Fleet, result: Result) -> None:
    # tests/integration is on sys.path once _pipeline is imported
    from worker_harness import replay_alerts  # noqa: PLC0415

    ids = [e["event_id"] for e in fleet_events(
        fleet.events, sessions=fleet.sessions, rate_per_s=fleet.pace,
        loop_every=fleet.loop_every, seed=fleet.seed, start=fleet_start(fleet.start_us))]
    index = {event_id: i for i, event_id in enumerate(ids)}
    emitted = {ids[i] for i in p.emitted_indices()}
    topic_events, result.producer_copies, order = p.topic_events()
    result.notes.append(order.summary(load_rules(RULES).disorder_us))
    late = p.late_events()
    result.late_events = sum(late)
    result.notes.append(f"worker late_events per run: {late}")
    on_topic = {e["event_id"] for e in topic_events}
    if c.wait_spool:  # the producer row: what it still held in memory died with it
        in_memory = emitted - on_topic - c.spool_ids
        result.in_memory_at_kill = len(in_memory)
        emitted -= in_memory
    result.produced = len(emitted)
    rows = p.clickhouse_ids()
    result.in_clickhouse = len(emitted & rows.keys())
    result.lost = len(emitted - rows.keys())
    result.duplicate_rows = sum(n - 1 for n in rows.values())
    stray = len(rows.keys() - emitted)
    if stray:
        result.notes.append(f"{stray} ids in ClickHouse the producer did not accept")
    not_on_topic = len(emitted - on_topic)
    if not_on_topic:
        result.notes.append(f"{not_on_topic} accepted events never reached the topic")

    topic_events.sort(key=lambda e: index.get(e["event_id"], len(ids)))
    replayed = replay_alerts(topic_events, load_rules(RULES))
    expected = {(a["alert_id"], a["state"]): a for a in replayed}
    result.alerts_expected = len(expected)
    delivered: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for d in p.deliveries():
        if 200 <= d.response_status < 300:
            delivered[(d.json["alert_id"], d.json["state"])].append(d)
    result.unverified = sum(1 for ds in delivered.values() for d in ds if d.verified is not True)
    result.alerts_delivered = len(delivered.keys() & expected.keys())
    result.alerts_missing = len(expected.keys() - delivered.keys())
    result.alerts_extra = len(delivered.keys() - expected.keys())
    canon = lambda a: orjson.dumps(a, option=orjson.OPT_SORT_KEYS)  # noqa: E731
    result.alerts_mismatched = sum(
        1 for k in delivered.keys() & expected.keys()
        if any(canon(d.json) != canon(expected[k]) for d in delivered[k]))
    result.duplicate_deliveries = sum(len(ds) - 1 for ds in delivered.values())
    result.same_delivery_ids = all(len({d.delivery_id for d in ds}) == 1
                                   for ds in delivered.values())
    for k in sorted(expected.keys() - delivered.keys())[:5]:
        a = expected[k]
        result.notes.append(f"missing alert: {a['rule']} {a['state']} {a['key']} ts={a['ts']}")
    for k in sorted(delivered.keys() - expected.keys())[:5]:
        a = delivered[k][0].json
        result.notes.append(f"extra alert: {a['rule']} {a['state']} {a['key']} ts={a['ts']} "
                            f"value={a['value']}")
    (p.root / "deliveries.jsonl").write_bytes(b"".join(
        orjson.dumps({"delivery_id": d.delivery_id, "status": d.response_status,
                      "alert": d.json}) + b"\n" for d in p.deliveries()))
    (p.root / "expected.jsonl").write_bytes(b"".join(orjson.dumps(a) + b"\n" for a in replayed))


# -- the table -----------------------------------------------------------------------------

HEADER = ("fault", "events produced", "events in ClickHouse", "lost", "duplicate rows",
          "alerts expected (replay)", "alerts delivered", "duplicate deliveries",
          "recovery time", "goal")


def table_rows(results: list[Result]) -> list[tuple[str, ...]]:
    rows = []
    for r in results:
        produced = f"{r.produced:,}"
        if r.in_memory_at_kill:
            produced += f" (+{r.in_memory_at_kill} in memory at SIGKILL)"
        dups = f"{r.duplicate_deliveries}"
        if r.duplicate_deliveries:
            dups += " (same id)" if r.same_delivery_ids else " (DIFFERENT ids)"
        recovery = "-" if r.recovery_s is None else f"{r.recovery_s:.1f} s"
        rows.append((r.fault, produced, f"{r.in_clickhouse:,}", f"{r.lost:,}",
                     f"{r.duplicate_rows:,}", f"{r.alerts_expected}", f"{r.alerts_delivered}",
                     dups, recovery, "yes" if not r.failures else "NO"))
    return rows


def markdown(results: list[Result]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(results)]
    return "\n".join(lines)
