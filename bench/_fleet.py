"""The fleet workload: what a production fleet of agents sends, and how the project's own
producer packs it into Kafka records (DESIGN.md, "Kafka records": benchmarks feed the worker
with records as the producer packs them for a stated fleet, never hand-packed).

:func:`fleet_events` — event dicts as an agent passes them to ``Agentwatch.emit()``:

* ``sessions`` open sessions (default 5,000) over ``agents`` agents (default 6) of
  ``tenants`` tenants (default 2; agent ``a`` belongs to tenant ``a % tenants``);
* Poisson arrivals: exponential inter-arrival times at ``rate_per_s`` events/s of event time
  (default 20,000), each event from an open session drawn uniformly, so a session emits
  ``rate_per_s / sessions`` events/s on average (4 by default) in irregular bursts;
* sessions turn over: each opens with ``session_start``, emits 10-80 calls (llm_call 45 %,
  tool_call 45 %, agent_step 10 %; 3 % of calls fail with an ``error_type``) and closes with
  ``session_end``; a fresh session takes its place, so the open count stays ``sessions``.
  llm_calls carry a model (4, priced by the producer's price table) and token counts;
  tool_calls a tool name (6) and a fresh ``tool_args_hash``. No normal session comes near a
  default rule (cost, error share or step count);
* every ``loop_every`` events (default 3,000) a runaway loop starts: an extra session
  ``loop-<seed>-<n>`` whose 6 rounds of (llm_call, the same tool with the same
  ``tool_args_hash``) take a few seconds of event time, which the default rule
  ``runaway loop: repeat`` (>= 5 in 120 s) fires on; then it ends;
* deterministic for a ``seed``: ids, timestamps (``start`` plus the arrivals; default
  2026-11-20T09:00:00Z) and every draw.

:func:`produce_fleet` — sends events through ``agentwatch.producer.Agentwatch`` with its
default settings (linger 50 ms, its record form: today's or partition batches, whichever the
producer writes), paced on the wall clock, then reads the topic back to learn its layout:
events per offset of each partition (a JSON object is 1 event, an array N), records, record
forms, events per record (:class:`ProducedLayout`, a :class:`bench._kafka.Loaded`).
"""

from __future__ import annotations

import asyncio
import math
import random
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson

# confluent-kafka ships neither stubs nor py.typed: its names are Any to mypy.
from confluent_kafka.admin import AdminClient  # type: ignore[import-untyped]

from bench._kafka import BenchError, Loaded

__all__ = [
    "LOOP_PREFIX",
    "LOOP_ROUNDS",
    "ProducedLayout",
    "fleet_events",
    "fleet_start",
    "is_loop_session",
    "produce_fleet",
    "read_layout",
]

#: session ids of injected runaway loops start with this
LOOP_PREFIX: Final = "loop-"
#: (llm_call, repeated tool_call) rounds of one injected loop: >= 5 fires the default rule
LOOP_ROUNDS: Final = 6
LOOP_TOOL: Final = "fetch_url"

DEFAULT_START: Final = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)
#: (model, provider, input tokens range, output tokens range, cumulative weight)
_MODELS: Final = (
    ("gpt-4o-mini", "openai", (200, 4000), (20, 600), 0.35),
    ("gpt-4o", "openai", (500, 6000), (50, 800), 0.55),
    ("claude-sonnet-4-5", "anthropic", (500, 8000), (50, 1000), 0.80),
    ("claude-haiku-4-5", "anthropic", (200, 4000), (20, 600), 1.00),
)
_TOOLS: Final = ("search", "lookup_order", "send_email", "run_sql", "fetch_url", "read_file")
_LLM_ERRORS: Final = ("RateLimitError", "APITimeoutError")
_TOOL_ERRORS: Final = ("TimeoutError", "ToolError", "PermissionError")
_CALLS_PER_SESSION: Final = (10, 80)  # calls between session_start and session_end
_ERROR_SHARE: Final = 0.03


def fleet_start(start_us: int | None) -> datetime:
    """The first event time of a fleet: ``start_us`` (unix µs) or the fixed default date."""
    return DEFAULT_START if start_us is None else datetime.fromtimestamp(start_us / 1e6, UTC)


def is_loop_session(session_id: str) -> bool:
    return session_id.startswith(LOOP_PREFIX)


class _Session:
    """One open session: who it is, and what it has left to emit."""

    __slots__ = ("agent_id", "calls_left", "loop_hash", "session_id", "started", "tenant_id")

    def __init__(self, session_id: str, tenant_id: str, agent_id: str, calls: int,
                 loop_hash: str | None = None) -> None:
        self.session_id = session_id
        self.tenant_id = tenant_id
        self.agent_id = agent_id
        self.calls_left = calls
        self.started = False
        self.loop_hash = loop_hash  # set for an injected runaway loop


class _Clock:
    """Event time in integer microseconds, formatted as the producer formats ``ts``."""

    __slots__ = ("_second", "_text", "us")

    def __init__(self, start: datetime) -> None:
        self.us = (start - _EPOCH) // _ONE_US
        self._second = -1
        self._text = ""

    def ts(self) -> str:
        second, micro = divmod(self.us, 1_000_000)
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._text}.{micro:06d}Z"


def fleet_events(
    n_events: int,
    *,
    sessions: int = 5000,
    agents: int = 6,
    tenants: int = 2,
    rate_per_s: float = 20000,
    loop_every: int = 3000,
    seed: int = 0,
    start: datetime | None = None,
    calls_per_session: tuple[int, int] = _CALLS_PER_SESSION,
) -> Iterator[dict[str, Any]]:
    """``n_events`` event dicts of the fleet described in the module doc, in event-time
    order (each with ``event_id`` and ``ts``; ``cost_usd`` is left to the producer).
    ``calls_per_session``: the range of a session's calls (default 10-80).
    About 10 µs per event here: fast enough to feed a paced producer live."""
    if sessions < 1 or agents < 1 or tenants < 1 or rate_per_s <= 0 or loop_every < 1:
        raise ValueError("sessions, agents, tenants, rate_per_s and loop_every must be > 0")
    rng = random.Random(seed)
    draw = rng.random  # uniform draws scaled by hand: randrange() costs 3x more
    clock = _Clock(start or DEFAULT_START)
    mean_gap_us = 1e6 / rate_per_s
    lo, hi = calls_per_session
    counter = 0

    def new_session() -> _Session:
        nonlocal counter
        counter += 1
        agent = int(draw() * agents)
        return _Session(f"s{seed}-{counter:07d}", f"tenant-{agent % tenants}",
                        f"agent-{agent}", lo + int(draw() * (hi - lo + 1)))

    open_sessions = [new_session() for _ in range(sessions)]
    loops = 0
    for i in range(n_events):
        if i and i % loop_every == 0:  # a runaway loop joins the fleet
            loops += 1
            agent = int(draw() * agents)
            open_sessions.append(_Session(
                f"{LOOP_PREFIX}{seed}-{loops:05d}", f"tenant-{agent % tenants}",
                f"agent-{agent}", 2 * LOOP_ROUNDS, loop_hash=f"{rng.getrandbits(128):032x}"))
        clock.us += int(-math.log(1.0 - draw()) * mean_gap_us)  # exponential gap
        slot = int(draw() * len(open_sessions))
        session = open_sessions[slot]
        event: dict[str, Any] = {
            "event_id": _uuid4(rng),
            "ts": clock.ts(),
            "tenant_id": session.tenant_id,
            "agent_id": session.agent_id,
            "session_id": session.session_id,
        }
        if not session.started:
            session.started = True
            event["kind"] = "session_start"
        elif session.calls_left == 0:
            event["kind"] = "session_end"
            if session.loop_hash is None:
                open_sessions[slot] = new_session()
            else:  # the loop leaves; the fleet keeps its `sessions` open ones
                open_sessions[slot] = open_sessions[-1]
                open_sessions.pop()
        else:
            session.calls_left -= 1
            if session.loop_hash is not None:
                _loop_call(event, rng, session)
            else:
                _call(event, rng)
        yield event


def _call(event: dict[str, Any], rng: random.Random) -> None:
    draw = rng.random()
    if draw < 0.45:
        _llm_call(event, rng)
    elif draw < 0.90:
        event["kind"] = "tool_call"
        event["name"] = _TOOLS[int((draw - 0.45) / 0.45 * len(_TOOLS))]
        event["tool_args_hash"] = f"{rng.getrandbits(128):032x}"
        event["duration_ms"] = 5 + int(rng.random() * 795)
    else:
        event["kind"] = "agent_step"
        event["name"] = "plan"
        return
    if rng.random() < _ERROR_SHARE:
        errors = _LLM_ERRORS if event["kind"] == "llm_call" else _TOOL_ERRORS
        event["status"] = "error"
        event["error_type"] = errors[int(rng.random() * len(errors))]


def _llm_call(event: dict[str, Any], rng: random.Random) -> None:
    draw = rng.random()
    model, provider, tin, tout, _ = next(m for m in _MODELS if draw < m[4])
    event["kind"] = "llm_call"
    event["model"] = model
    event["provider"] = provider
    event["input_tokens"] = tin[0] + int(rng.random() * (tin[1] - tin[0]))
    event["output_tokens"] = tout[0] + int(rng.random() * (tout[1] - tout[0]))
    event["duration_ms"] = 200 + int(rng.random() * 5800)


def _loop_call(event: dict[str, Any], rng: random.Random, session: _Session) -> None:
    """Odd calls left: the LLM asks for the tool again; even: the same tool, same args."""
    if session.calls_left % 2:
        _llm_call(event, rng)
    else:
        event["kind"] = "tool_call"
        event["name"] = LOOP_TOOL
        event["tool_args_hash"] = session.loop_hash
        event["duration_ms"] = 5 + int(rng.random() * 795)


_UUID4_CLEAR: Final = ~((0xF << 76) | (0x3 << 62))
_UUID4_SET: Final = (0x4 << 76) | (0x2 << 62)


def _uuid4(rng: random.Random) -> str:
    h = f"{(rng.getrandbits(128) & _UUID4_CLEAR) | _UUID4_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# --- producing through the project's producer, then reading the layout back ------------------


@dataclass(frozen=True)
class ProducedLayout(Loaded):
    """A topic the project's producer wrote: :class:`Loaded` (events per offset) plus what
    the producer did and which record forms it wrote."""

    emitted: int = 0
    sent: int = 0  # events the producer confirmed
    dropped: int = 0  # queue full (the pace outran the producer) or otherwise not sent
    produce_s: float = 0.0  # the first event delivered, from the next emit() to the final flush
    pace_per_s: float | None = None  # the asked pace (None: the events' own timestamps)
    #: record form -> records: ``batch`` (key ``~batch:<p>``), ``array`` (one session's
    #: events, session key), ``object`` (one event)
    forms: dict[str, int] = field(default_factory=dict)
    max_events_per_record: int = 0
    value_bytes: int = 0  # sum of the record values as read (after decompression)

    @property
    def events_per_record(self) -> float:
        return self.events / self.records if self.records else 0.0

    @property
    def achieved_per_s(self) -> float:
        return self.emitted / self.produce_s if self.produce_s else 0.0

    def describe(self) -> str:
        forms = ", ".join(f"{n:,} {form}" for form, n in sorted(self.forms.items()))
        per_partition = ", ".join(
            f"p{p}: {cum[-1]:,} events in {len(cum) - 1:,} records"
            for p, cum in sorted(self.before.items())
        )
        pace = "at the events' timestamps" if self.pace_per_s is None else (
            f"paced at {self.pace_per_s:,.0f}/s")
        return (
            f"{self.events:,} events in {self.records:,} records = "
            f"{self.events_per_record:.1f} events/record (max {self.max_events_per_record:,}, "
            f"mean {self.value_bytes / max(1, self.records):,.0f} B/record; forms: {forms}); "
            f"{per_partition}; produced {pace}: {self.emitted:,} emitted in "
            f"{self.produce_s:.1f} s ({self.achieved_per_s:,.0f}/s), {self.sent:,} sent, "
            f"{self.dropped:,} dropped"
        )


def produce_fleet(
    bootstrap: str,
    topic: str,
    events: Iterable[dict[str, Any]],
    *,
    pace_per_s: float | None = None,
    timeout_s: float = 300.0,
) -> ProducedLayout:
    """Emit ``events`` through ``agentwatch.producer.Agentwatch`` (default settings but
    where the records go), paced on the wall clock: at ``pace_per_s`` events/s, or, with
    None, at the events' own timestamps (their rate, bursts included). Then flush, close,
    and read the whole topic back (:func:`read_layout`)."""
    from agentwatch.producer import Agentwatch  # noqa: PLC0415 -- the measured client

    client = Agentwatch(bootstrap_servers=bootstrap, topic=topic)
    emitted = 0
    first_us = 0
    iterator = iter(events)
    try:
        # the first event alone, delivered before the clock starts: the client connects and
        # learns the topic's metadata meanwhile (a paced fleet would fill its queue first)
        first = next(iterator, None)
        if first is not None:
            client.emit(first)
            emitted = 1
            if not client.flush(timeout_s=60):
                raise BenchError(f"producing to {topic}: the first event took over 60 s "
                                 f"({client.stats})")
            first_us = _ts_us(first["ts"])
        t0 = time.perf_counter()
        for event in iterator:
            if pace_per_s is not None:
                due = t0 + (emitted - 1) / pace_per_s
            else:
                due = t0 + (_ts_us(event["ts"]) - first_us) / 1e6
            ahead = due - time.perf_counter()
            if ahead > 0.001:  # sleep in steps of >= 1 ms; 1 ms early is below the linger
                time.sleep(ahead)
            client.emit(event)
            emitted += 1
        flushed = client.flush(timeout_s=timeout_s)
        produce_s = time.perf_counter() - t0
    finally:
        client.close()
    stats = client.stats
    if stats.dropped:
        print(f"fleet: the producer dropped {stats.dropped:,} events (queue full: the pace "
              f"outran it)", file=sys.stderr, flush=True)
    if not flushed:
        print(f"fleet: the producer's flush timed out after {timeout_s:.0f} s ({stats})",
              file=sys.stderr, flush=True)
    if stats.sent == 0:
        raise BenchError(f"producing to {topic}: the producer sent nothing ({stats})")
    layout = read_layout(bootstrap, topic)
    return ProducedLayout(
        topic=layout.topic,
        records=layout.records,
        events=layout.events,
        before=layout.before,
        emitted=emitted,
        sent=stats.sent,
        dropped=stats.dropped + stats.failed + stats.invalid,
        produce_s=produce_s,
        pace_per_s=pace_per_s,
        forms=layout.forms,
        max_events_per_record=layout.max_events_per_record,
        value_bytes=layout.value_bytes,
    )


def _ts_us(ts: str) -> int:
    return (datetime.fromisoformat(ts) - _EPOCH) // _ONE_US


def read_layout(bootstrap: str, topic: str, *, timeout_s: float = 120.0) -> ProducedLayout:
    """Read ``topic`` from its start to its end (aiokafka, no group) and count, per
    partition and offset, the events each record holds; whatever form the records take."""
    return asyncio.run(_read_layout(bootstrap, topic, timeout_s))


async def _read_layout(bootstrap: str, topic: str, timeout_s: float) -> ProducedLayout:
    from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: PLC0415

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=8 << 20)
    await consumer.start()
    try:
        partitions = topic_partitions(bootstrap, topic)
        if not partitions:
            raise BenchError(f"reading {topic} back: no such topic")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends: dict[Any, int] = await consumer.end_offsets(tps)
        counts = {tp.partition: [0] * ends[tp] for tp in tps}
        forms: dict[str, int] = {}
        max_events = value_bytes = records = 0
        left = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + timeout_s
        while left:
            if time.monotonic() > deadline:
                raise BenchError(f"reading {topic} back: timed out after {timeout_s:.0f} s")
            batches = await consumer.getmany(*left, timeout_ms=500, max_records=20_000)
            for tp, messages in batches.items():
                row = counts[tp.partition]
                for message in messages:
                    if message.offset >= len(row):
                        continue
                    value = message.value or b""
                    n, form = _events_in(message.key, value)
                    row[message.offset] = n
                    forms[form] = forms.get(form, 0) + 1
                    records += 1
                    value_bytes += len(value)
                    max_events = max(max_events, n)
            for tp in list(left):
                if await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
    finally:
        await consumer.stop()
    before: dict[int, list[int]] = {}
    for partition, row in counts.items():
        cum = [0]
        for n in row:
            cum.append(cum[-1] + n)
        before[partition] = cum
    return ProducedLayout(
        topic=topic,
        records=records,
        events=sum(cum[-1] for cum in before.values()),
        before=before,
        forms=forms,
        max_events_per_record=max_events,
        value_bytes=value_bytes,
    )


def topic_partitions(bootstrap: str, topic: str) -> list[int]:
    """The partitions of ``topic`` from a metadata request (empty when it does not exist)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    found = admin.list_topics(topic, timeout=30).topics.get(topic)
    if found is None or found.error is not None:
        return []
    return sorted(found.partitions)


def _events_in(key: bytes | None, value: bytes) -> tuple[int, str]:
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError:
        return 0, "undecodable"
    if isinstance(decoded, list):
        return len(decoded), "batch" if key is not None and key.startswith(b"~batch:") else (
            "array")
    return (1, "object") if isinstance(decoded, dict) else (0, "other")
