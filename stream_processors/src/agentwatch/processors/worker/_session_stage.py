"""Stage 1 of the worker, pure: input records of one partition in, everything to send out.

One :class:`Engine` per input partition (sessions never cross partitions), fed in offset
order, its watermark that partition's own: results do not depend on how the consumer
interleaves partitions. A record is any of the three forms of ``agentwatch.schemas.
_records``; inside a partition batch an event whose session maps to another partition is
a dead letter (it would split that session's state).

Crash safety (DESIGN.md, "Worker state: checkpoints"): alerts, forwards and dead letters
of a batch are sent (and acknowledged) at once; key state stays in memory, and a key
touched since the last checkpoint is *dirty*. :meth:`SessionStage.checkpoint` returns
the dirty keys' state, which the shell writes to the changelog and waits for before it
lets the input offsets be committed. Each key's state carries the offset of the last
record applied to it, so after a crash the records re-read from the committed offset are
skipped for keys whose state already has them: no event is counted twice, no alert is
lost. An alert sent after the last checkpoint is sent again after a crash, identical
(same ``alert_id``, state and values): at-least-once, with the id as the idempotency key.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from agentwatch.processors.core import ADVANCE_STEP_US, Engine, RulesConfig, SpillFile
from agentwatch.processors.worker._forward import (
    StageEvent,
    compact_event,
    core_event,
    event_from_item,
    event_from_model,
    table_key,
)
from agentwatch.schemas import (
    MAX_RECORD_BYTES,
    Alert,
    AlertScope,
    EventKind,
    PriceTable,
    decode_record,
    encode_event,
    is_partition_batch,
    partition_for,
    session_key,
)
from agentwatch.schemas.fastcheck import plain_event_ts_us

__all__ = ["DeadLetter", "SessionStage", "StageOutput", "config_fingerprint"]

_META: Final = "meta"
#: event ids per session that survive a restart for deduplication. Records read again
#: after a crash are skipped by offset, not by id; ids catch a producer sending an event
#: twice, which happens close together (a retry re-sends what was in flight). In a running
#: worker the engine keeps its full 1,024-2,048 ids per session. Each id costs 39 bytes of
#: the session's checkpointed state (64 ids were 40 % of it on the fleet workload).
DEDUP_IDS_KEPT: Final = 16
#: sessions whose partition the stage remembers (then it forgets them all and starts over):
#: the running ones are what it needs (a deployment's worker has a few thousand at a time,
#: most open sessions being quiet); 65,536 kept ~50 B of each of the last 65,536 sessions
#: (bench_worker_memory), and a miss costs one murmur2 (~7 µs) per session and clearing
_OWNERS_MAX: Final = 1 << 14
_NON_SESSION: Final = (AlertScope.AGENT, AlertScope.TENANT)


def config_fingerprint(config: RulesConfig) -> str:
    """Changes when the rules change: state saved under other rules is not reloaded.
    The same in every process: sets (a rule's ``kinds``) iterate in an order that depends
    on string hashing, which differs per process, so they are sorted first. A rule's
    ``action`` (notify or halt) changes no state: it is left out, so turning halting on
    or off (or upgrading to a version that knows actions) keeps the state."""
    dumped = config.model_dump(mode="json", exclude={"rules": {"__all__": {"action"}}})
    return hashlib.sha256(orjson.dumps(_canonical(dumped),
                                       option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_canonical(v) for v in value]
        return sorted(items) if all(isinstance(v, str) for v in items) else items
    return value


#: bytes of a dead letter's ``raw`` sent to the dead-letter topic: a record may be as big
#: as the input topic allows and its JSON-escaped text up to 6x that, past any broker's
#: message size; what is cut is said by ``raw_bytes`` (the whole size)
DEAD_LETTER_RAW_MAX: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class DeadLetter:
    key: bytes | None
    raw: bytes
    reason: str
    topic: str
    partition: int
    offset: int
    index: int | None

    def to_json(self) -> bytes:
        raw = self.raw[:DEAD_LETTER_RAW_MAX]
        body = {
            "reason": self.reason,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "index": self.index,
            "key": None if self.key is None else self.key[:1024].decode("utf-8", "replace"),
            "raw": raw.decode("utf-8", "replace"),
        }
        if len(raw) < len(self.raw):
            body["raw_bytes"] = len(self.raw)
        return orjson.dumps(body)


@dataclass(slots=True)
class StageOutput:
    """What one batch produces. The shell sends ``alerts``, ``forwards`` and
    ``dead_letters`` first, then writes ``writes`` (partition, table key, value or None)."""

    alerts: list[Alert] = field(default_factory=list)
    forwards: list[tuple[bytes, bytes]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    writes: list[tuple[int, bytes, bytes | None]] = field(default_factory=list)
    events: int = 0
    duplicates: int = 0
    replayed: int = 0


class _Partition:
    __slots__ = ("applied", "closed", "dirty", "engine", "last_offset", "max_ts_us",
                 "next_advance_us", "resume_offset")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dirty: set[tuple[str, ...]] = set()  # keys changed since the last checkpoint
        self.applied: dict[tuple[str, ...], int] = {}  # session key -> last record offset
        self.closed: dict[tuple[str, ...], int] = {}  # ended sessions: markers in the table
        self.last_offset = -1
        self.max_ts_us = -(1 << 62)
        self.next_advance_us = -(1 << 62)
        #: the first offset the restored state has not seen (None: no state restored)
        self.resume_offset: int | None = None


class _Forwards:
    """The events of one call that the rekeyed stage needs, grouped per scope key: one
    message per agent (and tenant) and input partition (see ``_forward.py``)."""

    __slots__ = ("agents", "by_agent", "by_tenant", "tenants")

    def __init__(self, by_agent: bool, by_tenant: bool) -> None:
        self.by_agent = by_agent
        self.by_tenant = by_tenant
        self.agents: dict[tuple[str, str], list[list[Any]]] = {}  # (tenant, agent) -> events
        self.tenants: dict[tuple[str, str], list[list[Any]]] = {}  # (tenant, tenant) -> events

    def add(self, event: StageEvent) -> None:
        compact = compact_event(event)
        tenant = event.tenant_id
        if self.by_agent:
            _append(self.agents, (tenant, event.agent_id), compact)
        if self.by_tenant:
            _append(self.tenants, (tenant, tenant), compact)

    def messages(self, partition: int, out: list[tuple[bytes, bytes]]) -> None:
        """(key, value) of each message, as ``{"s": scope, "p": partition, "e": events}``."""
        for scope, groups in ((AlertScope.AGENT, self.agents),
                              (AlertScope.TENANT, self.tenants)):
            head = b'{"s":"%s","p":%d,"e":' % (scope.value.encode(), partition)
            out.extend((orjson.dumps(fkey), head + orjson.dumps(compacts) + b"}")
                       for fkey, compacts in groups.items())


def _append(groups: dict[tuple[str, str], list[list[Any]]], key: tuple[str, str],
            compact: list[Any]) -> None:
    group = groups.get(key)
    if group is None:
        groups[key] = [compact]
    else:
        group.append(compact)


def _plain_events(value: bytes) -> list[StageEvent] | None:
    """The events of a record (one event object or an array of them) when the contract's
    fast check accepts every one, each built straight from its JSON object; None when any
    part needs ``decode_record``'s reference path (pydantic, reasons for dead letters):
    malformed JSON, an empty array, an item the fast check does not vouch for, a record
    past the size limit. What ``decode_record`` returns for such a record, with no pydantic
    model per event."""
    if len(value) > MAX_RECORD_BYTES:
        return None
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    items: list[Any]
    if type(parsed) is dict:
        items = [parsed]
    elif type(parsed) is list and parsed:
        items = parsed
    else:
        return None
    events: list[StageEvent] = []
    for item in items:
        if type(item) is not dict:
            return None
        ts_us = plain_event_ts_us(item)
        if ts_us is None:
            return None
        events.append(event_from_item(item, ts_us))
    return events


class SessionStage:
    """Session-scoped rules over the input topic, per partition; forwards the rest."""

    def __init__(self, config: RulesConfig, topic: str, partitions: int, *,
                 prices: PriceTable | None = None, spill_dir: Path | None = None) -> None:
        self.config = config
        self.topic = topic
        #: where each partition's engine keeps its packed (quiet) sessions, in a file of
        #: its own (core/_spill.py); None: in memory
        self._spill_dir = spill_dir
        #: the input topic's partition count (partition batches: Kafka's default partitioner)
        self._partitions = partitions
        #: session -> partition as Kafka's default partitioner places it, for the running
        #: sessions (a dict of its own, read per session and record by this compiled class,
        #: not a PartitionCache: a call of its Python method cost ~0.15 µs, and its own
        #: 200,000 entries held a second key tuple of every session: ~110 B a session)
        self._owners: dict[tuple[str, ...], int] = {}
        self._prices = prices
        self._fingerprint = config_fingerprint(config)
        self._disorder_us = config.disorder_us
        probe = Engine(config, scopes=_NON_SESSION, track_sessions=False, prices=prices)
        #: scopes the rekeyed stage computes (empty: nothing is forwarded)
        self.forward_scopes = sorted({d.scope for d in probe.detectors}, key=str)
        kinds: set[EventKind] = set()
        every_kind = False
        for detector in probe.detectors:
            if detector.kinds is None:
                every_kind = True
            else:
                kinds |= detector.kinds
        self._forward_kinds: frozenset[EventKind] = (
            frozenset(EventKind) if every_kind else frozenset(kinds))
        self.partitions: dict[int, _Partition] = {}

    # -- partitions come and go with rebalances -----------------------------------------------
    def restore(self, partition: int, items: Iterable[tuple[bytes, bytes]]) -> None:
        """(Re)build ``partition`` from its table entries (key, value)."""
        self.drop(partition)
        spill = (None if self._spill_dir is None
                 else SpillFile(self._spill_dir, f"{self.topic}-{partition}"))
        part = _Partition(Engine(self.config, scopes=[AlertScope.SESSION], prices=self._prices,
                                 spill=spill))
        entries = [(orjson.loads(k), orjson.loads(v)) for k, v in items]
        meta = next((v for k, v in entries if k[1:] == [_META]), None)
        if meta is not None and meta["f"] == self._fingerprint:
            part.engine.restore_watermark(meta["w"])
            part.next_advance_us = meta["n"]
            part.max_ts_us = meta["m"]
            part.last_offset = meta["o"]
            part.resume_offset = meta["o"] + 1
            for key, value in entries:
                if len(key) != 3:
                    continue
                skey = (key[1], key[2])
                data = value.get("k")
                if data is None:
                    part.closed[skey] = value["o"]
                else:
                    part.applied[skey] = value["o"]
                    part.engine.load_key(skey, data)
        self.partitions[partition] = part

    def drop(self, partition: int) -> None:
        part = self.partitions.pop(partition, None)
        if part is not None:
            part.engine.close()

    def last_offset(self, partition: int) -> int:
        part = self.partitions.get(partition)
        return -1 if part is None else part.last_offset

    def resume_offset(self, partition: int) -> int | None:
        """The first offset of ``partition`` its restored state has not seen; ``None`` when
        no state was restored (see _offsets.OffsetGuard)."""
        part = self.partitions.get(partition)
        return None if part is None else part.resume_offset

    def max_ts_us(self, partition: int) -> int:
        part = self.partitions.get(partition)
        return -(1 << 62) if part is None else part.max_ts_us

    # -- the hot path: one call per partition per batch -----------------------------------------
    def process(self, partition: int,
                records: Iterable[tuple[int, bytes | None, bytes | None]],
                out: StageOutput) -> None:
        """Feed ``(offset, key, value)`` records of ``partition`` in offset order."""
        part = self.partitions[partition]
        # engine.process(...) and engine.advance(...) each time, not bound methods held in
        # locals: compiled, those are native calls, the bound ones Python calls that parse
        # their arguments (one per event)
        engine = part.engine
        applied, closed = part.applied, part.closed
        disorder_us, step_us = self._disorder_us, ADVANCE_STEP_US
        forward_kinds = self._forward_kinds if self.forward_scopes else frozenset()
        forwards = _Forwards(AlertScope.AGENT in self.forward_scopes,
                             AlertScope.TENANT in self.forward_scopes)
        alerts = out.alerts
        touched = part.dirty
        max_ts_us = part.max_ts_us
        next_advance_us = part.next_advance_us
        n_events = duplicates = replayed = 0
        for offset, key, value in records:
            part.last_offset = max(part.last_offset, offset)
            this_record: set[tuple[str, ...]] = set()
            events = self._decode(partition, offset, key, value, out)
            batch = is_partition_batch(key)
            for event in events:
                # a Python tuple (mypyc keeps a tuple[str, str] unboxed and makes a new
                # tuple object for every dict it goes in: no key could be shared)
                skey: tuple[str, ...] = (event.tenant_id, event.session_id)
                if skey not in this_record:
                    # inside a partition batch, a session of another partition is a dead
                    # letter (checked once per session and record)
                    if batch and self._home(skey) != partition:
                        self._wrong_partition(partition, offset, key, event, out)
                        continue
                    last = applied.get(skey)
                    if last is None:  # an ended session's marker counts too
                        last = closed.get(skey, -1)
                        # a session new to the stage: this tuple becomes the key of its
                        # state here and in the engine (process below), one per session,
                        # its tenant id the one string of its tenant (sys.intern)
                        skey = (sys.intern(skey[0]), skey[1])
                    if last >= offset:  # this key's state already has it
                        replayed += 1
                        continue
                    applied[skey] = offset
                    this_record.add(skey)
                    touched.add(skey)
                ts_us = event.ts_us
                dropped = engine.duplicates
                alerts += engine.process(core_event(event), ts_us, skey)  # (none for a dup.)
                if engine.duplicates != dropped:  # a duplicate: nothing else happens
                    duplicates += 1
                    continue
                n_events += 1
                max_ts_us = max(max_ts_us, ts_us)
                if ts_us >= next_advance_us:  # EventTimeDriver.feed, inlined
                    alerts += engine.advance(ts_us - disorder_us)
                    next_advance_us = ts_us + step_us
                if event.kind in forward_kinds:
                    forwards.add(event)
        part.max_ts_us = max_ts_us
        part.next_advance_us = next_advance_us
        out.events, out.duplicates = out.events + n_events, out.duplicates + duplicates
        out.replayed += replayed
        forwards.messages(partition, out.forwards)

    def _home(self, skey: tuple[str, ...]) -> int:
        """The partition of session ``skey`` (Kafka's default partitioner over its key)."""
        owners = self._owners
        home = owners.get(skey)
        if home is None:
            if len(owners) >= _OWNERS_MAX:
                owners.clear()
            home = owners[skey] = partition_for(session_key(skey[0], skey[1]),
                                                self._partitions)
        return home

    def _decode(self, partition: int, offset: int, key: bytes | None, value: bytes | None,
                out: StageOutput) -> list[StageEvent]:
        """The record's valid events; everything else becomes a dead letter."""
        if value is None:
            out.dead_letters.append(DeadLetter(
                key, b"", "empty record (no value)", self.topic, partition, offset, None))
            return []
        events = _plain_events(value)
        if events is not None:
            return events
        decoded = decode_record(value)
        out.dead_letters += [
            DeadLetter(key, r.raw, r.reason, self.topic, partition, offset, r.index)
            for r in decoded.rejected
        ]
        return [event_from_model(e) for e in decoded.events]

    def _wrong_partition(self, partition: int, offset: int, key: bytes | None,
                         event: StageEvent, out: StageOutput) -> None:
        """A partition batch's event whose session belongs on another partition: a dead
        letter (it would split that session's state)."""
        home = self._home((event.tenant_id, event.session_id))
        out.dead_letters.append(DeadLetter(
            key, encode_event(event.to_model()),
            f"wrong partition: session {event.tenant_id}/{event.session_id} belongs on "
            f"partition {home} of {self._partitions} (Kafka's default partitioner), "
            f"not {partition}; a partition batch may hold only its partition's sessions "
            "(was the producer's partition count stale?)",
            self.topic, partition, offset, None))

    # -- checkpoints ----------------------------------------------------------------------
    def dirty(self, partition: int) -> int:
        part = self.partitions.get(partition)
        return 0 if part is None else len(part.dirty) + len(part.engine.touched)

    def checkpoint(self, partition: int, committed_offset: int | None
                   ) -> list[tuple[int, bytes, bytes | None]]:
        """The table writes (partition, key, value or None: delete) that save every key
        changed since the last checkpoint, and the partition's progress; the keys are
        clean afterwards. ``committed_offset``: the partition's committed input offset
        (markers of ended sessions are kept until it passes their records)."""
        part = self.partitions.get(partition)
        if part is None:
            return []
        writes: list[tuple[int, bytes, bytes | None]] = []
        if committed_offset is not None:
            done = [k for k, off in part.closed.items() if off < committed_offset]
            for skey in done:
                del part.closed[skey]
                writes.append((partition, table_key(partition, *skey), None))
        engine = part.engine
        touched = part.dirty
        touched |= engine.touched
        engine.touched.clear()
        part.dirty = set()
        for skey in touched:
            data = engine.dump_key(skey, max_ids=DEDUP_IDS_KEPT)
            # a key touched again after its session ended keeps its end marker's offset
            offset = part.applied.get(skey, part.closed.get(skey, -1))
            if data is None:  # the session ended or expired: keep a marker with its offset
                part.applied.pop(skey, None)
                part.closed[skey] = offset
                value = orjson.dumps({"o": offset})
            else:
                part.closed.pop(skey, None)
                value = orjson.dumps({"o": offset, "k": data})
            writes.append((partition, table_key(partition, *skey), value))
        writes.append((partition, table_key(partition, _META), orjson.dumps({
            "f": self._fingerprint, "w": engine.watermark_us, "n": part.next_advance_us,
            "m": part.max_ts_us, "o": part.last_offset,
        })))
        return writes
