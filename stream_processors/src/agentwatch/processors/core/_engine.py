"""The engine: routes events through every detector, keeps sessions, runs timers.

``Engine.process(event)`` returns the alert state changes that event caused;
``Engine.advance(watermark_us)`` tells the engine that event time has reached
``watermark_us`` everywhere (no event older than that is expected), which lets
quiet keys resolve and idle sessions expire. Both are pure and deterministic:
the faust worker, the embedded pipeline and ``agentwatch replay`` are thin shells
around this class, so they agree by construction.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import logging
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import count, islice
from operator import attrgetter
from typing import Any, Final

import orjson

from agentwatch.processors.core._alerting import LOAD_IDS, ScopeKey, SessionCodec
from agentwatch.processors.core._detectors import Detector, build_detectors
from agentwatch.processors.core._rules import RulesConfig
from agentwatch.processors.core._spill import SpillFile
from agentwatch.schemas import (
    Alert,
    AlertScope,
    AlertState,
    Event,
    EventKind,
    PriceTable,
    default_price_table,
    to_us,
)

__all__ = ["STATE_FORMAT", "Engine", "EngineStats"]

#: the format of a session's state written by :meth:`Engine.dump_key` (its first item)
STATE_FORMAT: Final = 2
_log = logging.getLogger("agentwatch.processors.core")

_SESSION_TIMER = -1
_PACK_TIMER = -2
#: sessions' idle timers wait in buckets of this much event time (see _schedule_idle)
_WHEEL_US: Final = 60_000_000
#: a session's idle timer in the heap: its sequence number (timers due at the same
#: microsecond run in sequence order; see _schedule_idle)
_IDLE_SEQ: Final = -1
#: a new session's older generation of ids: one shared empty dict (64 bytes a session)
_NO_IDS: Final[dict[str, None]] = {}
#: a canonical UUID: 8-4-4-4-12 lowercase hex digits (Final: compiled, a constant; a
#: plain global is a lookup in the module's dict, once an id in uuid_bytes)
_UUID_CHARS: Final = 36
#: a packed session (_pack): its dump's ids field when the ids are the raw 16-byte prefix
_RAW_IDS: Final = 0
#: raw deflate of a packed session's dump: a 2 KiB window (a dump is ~1 KB), level 6 and
#: memLevel 4 (a smaller state to set up per value: the cost of a ~1 KB value is its setup)
_Z_WBITS: Final = -11
_Z_LEVEL: Final = 6
_Z_MEM: Final = 4
_ZDICT_MAX: Final = 2048  # the window: a longer preset dictionary is cut to it anyway
_session_key: Callable[[Event], ScopeKey] = attrgetter("tenant_id", "session_id")


@dataclass(frozen=True, slots=True)
class EngineStats:
    events: int
    duplicates: int
    unpriced: int
    late: int
    alerts_fired: int
    alerts_resolved: int
    active_sessions: int
    active_keys: int
    firing: int


class _Session:
    __slots__ = ("key", "last_ts_us", "older", "seen")

    def __init__(self, ts_us: int, key: ScopeKey) -> None:
        #: the session's key as first seen: every detector's state of the session is kept
        #: under this one tuple (each event's decoder makes a new tuple and new strings)
        self.key = key
        self.last_ts_us = ts_us
        # recent event ids in two generations: between limit and 2 x limit ids are kept
        # (dicts as insertion-ordered sets: a snapshot can take the most recent ones)
        self.seen: dict[str, None] = {}
        self.older: dict[str, None] = _NO_IDS  # replaced, never changed in place


class Engine:
    """Detection core over a stream of events (any number of tenants, agents, sessions)."""

    def __init__(
        self,
        config: RulesConfig | None = None,
        *,
        prices: PriceTable | None = None,
        scopes: Iterable[AlertScope] | None = None,
        track_sessions: bool = True,
        spill: SpillFile | None = None,
    ) -> None:
        self.config = config or RulesConfig.default()
        self._prices = prices if prices is not None else default_price_table()
        self._timers: list[tuple[int, int, int, ScopeKey]] = []
        self._seq = count()
        #: sessions' idle timers not yet near due: bucket (due // _WHEEL_US) -> keys
        self._wheel: dict[int, list[ScopeKey]] = {}
        self._wheel_buckets: list[int] = []  # the buckets of _wheel, a heap
        self._wheel_done = -(1 << 62)  # buckets up to this one have moved to the heap
        self.detectors: list[Detector[Any]] = build_detectors(
            self.config, self._schedule, None if scopes is None else frozenset(scopes)
        )
        self._session_detectors = [d for d in self.detectors if d.scope is AlertScope.SESSION]
        self._by_kind = {
            kind: [d for d in self.detectors if d.kinds is None or kind in d.kinds]
            for kind in EventKind
        }
        self._sessions: dict[ScopeKey, _Session] = {}
        #: idle sessions kept as their state dump, compact (all ids): see _pack; with a
        #: spill file, the handle of that dump in the file
        self._packed: dict[ScopeKey, bytes | int] = {}
        self._spill = spill
        self._spill_failed = False  # logged once
        #: the preset dictionary of the packed dumps' deflate: the first dump packed (the
        #: next ones share its structure, rule names, agent and tool names)
        self._zdict = b""
        pack_s = self.config.pack_idle_sessions_s
        self._pack_us = -1 if pack_s is None or not track_sessions else int(pack_s * 1_000_000)
        self._idle_us = self.config.session_idle_timeout_s * 1_000_000
        self._dedup = self.config.dedup_ids_per_session
        #: without session detectors and dedup (a worker's agent/tenant stage) nothing needs
        #: per-session state: it is not kept
        self._track = track_sessions
        self.watermark_us = -(1 << 62)
        #: keys whose state a timer may have changed since the runtime last cleared this
        #: (a worker writes them to its changelog table with the keys of the events it fed)
        self.touched: set[ScopeKey] = set()
        self._events = self._duplicates = self._unpriced = 0
        self._fired = self._resolved = 0

    # -- the two entry points ----------------------------------------------------------------
    def process(self, event: Event, ts_us: int | None = None,
                key: ScopeKey | None = None) -> list[Alert]:
        """Feed one event; returns the alert state changes it caused (usually none).
        ``ts_us`` is ``to_us(event.ts)`` when the caller already has it; ``key`` its
        ``(tenant_id, session_id)`` when the caller keeps one (a new session's state is
        kept under that tuple then: one per session, not one here and one there)."""
        out: list[Alert] = []
        if ts_us is None:
            ts_us = to_us(event.ts)
        skey = _session_key(event) if key is None else key
        if not self._track:
            return self._observe(event, ts_us, skey, out)
        session = self._sessions.get(skey)
        if session is None and self._packed:
            session = self._unpack(skey)
        if session is None:
            session = self._sessions[skey] = _Session(ts_us, skey)
            self._schedule_idle(ts_us + self._idle_us, skey)
            if self._pack_us >= 0:
                self._schedule(ts_us + self._pack_us, _PACK_TIMER, skey)
        else:
            skey = session.key
            session.last_ts_us = max(session.last_ts_us, ts_us)
        if self._dedup:
            seen, event_id = session.seen, event.event_id
            if event_id in seen or event_id in session.older:
                self._duplicates += 1
                return out
            seen[event_id] = None
            if len(seen) >= self._dedup:
                session.older = seen
                session.seen = {}
        return self._observe(event, ts_us, skey, out)

    def _observe(self, event: Event, ts_us: int, skey: ScopeKey, out: list[Alert]) -> list[Alert]:
        self._events += 1
        if (
            event.cost_usd is None
            and (event.input_tokens is not None or event.output_tokens is not None)
            and not self._prices.fill_cost(event)
        ):
            self._unpriced += 1
        kind = event.kind
        for detector in self._by_kind[kind]:
            detector.observe(event, ts_us, skey, out)
        if kind is EventKind.SESSION_END:
            self._close_session(skey, ts_us, "the session ended", out)
        if out:
            self._count(out)
        return out

    def advance(self, watermark_us: int) -> list[Alert]:
        """Event time has reached ``watermark_us``: resolve quiet keys, expire idle sessions."""
        out: list[Alert] = []
        if watermark_us <= self.watermark_us:
            return out
        self.watermark_us = watermark_us
        if self._wheel_buckets and self._wheel_buckets[0] <= watermark_us // _WHEEL_US:
            self._drain_wheel(watermark_us)
        timers = self._timers
        while timers and timers[0][0] <= watermark_us:
            _, _, index, key = heapq.heappop(timers)
            if index == _PACK_TIMER:
                self._on_pack_timer(key, watermark_us)
                continue
            if key in self._packed:
                self._unpack(key)
            self.touched.add(key)
            if index == _SESSION_TIMER:
                self._on_session_timer(key, watermark_us, out)
            else:
                self.detectors[index].on_due(key, watermark_us, out)
        if out:
            self._count(out)
        return out

    def process_many(self, events: Iterable[Event]) -> list[Alert]:
        out: list[Alert] = []
        for event in events:
            out.extend(self.process(event))
        return out

    # -- state as plain data, one key at a time (a worker's changelog tables) ----------------
    def dump_key(self, key: ScopeKey, *, max_ids: int | None = None) -> Any:
        """Everything the engine keeps for ``key`` (a session key, or an agent/tenant key)
        as JSON-able data; None when it keeps nothing (the key is gone). ``max_ids``: keep
        only that many of the session's most recent event ids for deduplication (a worker
        writes a session's state every checkpoint; all 1,024-2,048 ids would dominate it).

        A session's state is format 2 (:data:`STATE_FORMAT`), written for every dirty
        session at every checkpoint, so its bytes and its CPU both count:
        ``[2, last_ts_us, agent_id, ids, n_recent, n_rest, {rule: state}]``. ``ids`` is the
        session's one table of event ids (:func:`pack_ids`): its ``n_recent`` newest and
        ``n_rest`` older ids kept for deduplication, then the ids the alert samples refer
        to (by position) that are not among them. The detectors' states share the session's
        agent (a tracker says so only when its own differs) and write times as
        ``last_ts_us`` minus them (see :class:`SessionCodec`). Agent and tenant keys (no
        session) keep the dict form ``{"d": {rule: state}}``."""
        session = self._sessions.get(key)
        if session is None:
            packed = self._packed.get(key)
            if packed is None:
                return self._dump_scoped(key)
            if max_ids is None:
                data, ids = self._unpacked_dump(self._packed_bytes(packed))
                data[3] = pack_ids(ids)
                return data
            unpacked = self._unpack(key)
            if unpacked is None:
                return self._dump_scoped(key)
            session = unpacked
        data = self._dump_session(key, session, max_ids)
        data[3] = pack_ids(data[3])
        return data

    def _dump_session(self, key: ScopeKey, session: _Session, max_ids: int | None
                      ) -> list[Any]:
        """:meth:`dump_key` of a session, its ids as the list of them (not packed)."""
        seen, older = session.seen, session.older
        if max_ids is None:
            recent, rest = list(seen), list(older)
        else:
            recent = list(islice(reversed(seen), max_ids))
            recent.reverse()
            rest = list(islice(reversed(older), max(0, max_ids - len(recent))))
            rest.reverse()
        agent_id: str | None = None
        for detector in self._session_detectors:
            tracker = detector.tracker(key)
            if tracker is not None:
                agent_id = tracker.agent_id
                break
        ids = recent + rest
        index = {event_id: i for i, event_id in enumerate(ids)}
        codec = SessionCodec(session.last_ts_us, agent_id, ids, index)
        states: dict[str, Any] = {}
        for detector in self._session_detectors:
            data = detector.dump_session(key, codec)
            if data is not None:
                states[detector.name] = data
        return [STATE_FORMAT, session.last_ts_us, agent_id, codec.ids, len(recent), len(rest),
                states]

    def _dump_scoped(self, key: ScopeKey) -> dict[str, Any] | None:
        states = {}
        for detector in self.detectors:
            data = detector.dump(key)
            if data is not None:
                states[detector.name] = data
        return {"d": states} if states else None

    def load_key(self, key: ScopeKey, data: Any) -> bool:
        """Install :meth:`dump_key` data for ``key`` (format 2, or the dict form of earlier
        versions); its timers run at the next advance. State of rules that no longer exist
        is dropped. Returns False, and logs why, when ``data`` is in a format this version
        cannot read (a newer one) or is damaged: the key then starts fresh (as a new
        session would) instead of stopping the worker."""
        self._drop_packed(key)
        try:
            if isinstance(data, list) and data and data[0] == STATE_FORMAT:
                self._load_session(key, data)
            elif isinstance(data, dict):
                self._load_dict(key, data)
            else:
                version = data[0] if isinstance(data, list) and data else type(data).__name__
                _log.warning("state of %s/%s is in format %r, which this version cannot "
                             "read (it reads %d and the earlier dict form): the key starts "
                             "fresh", key[0], key[1], version, STATE_FORMAT)
                return False
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            self._forget(key)
            _log.warning("state of %s/%s could not be read (%s: %s): the key starts fresh",
                         key[0], key[1], type(exc).__name__, exc)
            return False
        return True

    def _load_session(self, key: ScopeKey, data: list[Any], schedule: bool = True,
                      ids: list[str] | None = None) -> _Session | None:
        """Install format-2 ``data``; ``schedule``: also schedule the key's timers (a
        restore; an unpacked session's timers are still in the heap). ``ids``: the ids
        of ``data[3]`` when the caller has them already (an unpacked session)."""
        last_ts_us, agent_id, n_recent, n_rest = data[1], data[2], data[4], data[5]
        if ids is None:
            ids = unpack_ids(data[3])
        if min(n_recent, n_rest) < 0 or n_recent + n_rest > len(ids):
            raise ValueError(f"{n_recent} + {n_rest} dedup ids of {len(ids)}")
        session: _Session | None = None
        if self._track:
            session = self._sessions[key] = _Session(last_ts_us, key)
            session.seen = dict.fromkeys(ids[:n_recent])
            session.older = dict.fromkeys(ids[n_recent:n_recent + n_rest]) if n_rest else _NO_IDS
            if schedule:
                self._schedule_idle(last_ts_us + self._idle_us, key)
                if self._pack_us >= 0:
                    self._schedule(last_ts_us + self._pack_us, _PACK_TIMER, key)
        codec = SessionCodec(last_ts_us, agent_id, ids, {})
        states = data[6]
        for detector in self.detectors:
            state = states.get(detector.name)
            if state is not None:
                detector.load_session(key, state, codec)
                if schedule:
                    self._schedule(self.watermark_us, detector.index, key)
        return session

    # -- idle sessions packed -----------------------------------------------------------------
    def _on_pack_timer(self, key: ScopeKey, now_us: int) -> None:
        """Pack ``key``'s session when it has been idle for ``pack_idle_sessions_s`` of
        event time and no alert of it fires (one that fires waits for its resolution);
        otherwise come back later. Packing changes no state: the key is not touched."""
        session = self._sessions.get(key)
        if session is None:
            return  # closed, or already packed (its unpacking scheduled a new timer)
        due_us = session.last_ts_us + self._pack_us
        if due_us <= now_us:
            for detector in self._session_detectors:
                tracker = detector.tracker(key)
                if tracker is not None and tracker.firing is not None:
                    due_us = now_us + max(self._pack_us, 1_000_000)
                    break
            else:
                self._pack(key)
                return
        self._schedule(due_us, _PACK_TIMER, key)

    def _pack(self, key: ScopeKey) -> None:
        """Keep ``key``'s session as its state dump (all ids) instead of its objects; its
        timers stay in the heap (its idle timer in the wheel) and unpack it when due.

        The packed value (in memory only, never written): the session's last event time
        (8 bytes, little-endian, signed: its idle timer reads it, see _drain_wheel), 4
        bytes (little-endian) giving the length of the raw ids that follow, those ids (16
        bytes each: canonical UUIDs, the ids field of the dump then :data:`_RAW_IDS`; none
        otherwise, the dump keeps its list), then the format-2 dump as orjson, raw
        deflate with the engine's preset dictionary (:attr:`_zdict`): ~0.8 KB where the
        dump's orjson bytes took ~1.5 KB (a session of ~26 events)."""
        session = self._sessions.get(key)
        if session is None:
            return
        data = self._dump_session(key, session, None)
        raw = uuid_bytes(data[3])
        if raw is None:
            raw = b""
        else:
            data[3] = _RAW_IDS
        body = orjson.dumps(data)
        zdict = self._zdict
        if not zdict:
            zdict = self._zdict = bytes(body[-_ZDICT_MAX:])
        deflate = zlib.compressobj(_Z_LEVEL, zlib.DEFLATED, _Z_WBITS, _Z_MEM,
                                   zlib.Z_DEFAULT_STRATEGY, zdict)
        self._sessions.pop(key, None)
        for detector in self.detectors:
            detector.states.pop(key, None)
        packed = b"".join((session.last_ts_us.to_bytes(8, "little", signed=True),
                           len(raw).to_bytes(4, "little"), raw,
                           deflate.compress(body), deflate.flush()))
        spill = self._spill
        if spill is None or len(packed) > spill.max_value_bytes:
            # (a session of over 16 MiB packed, if any: its handle could not say its
            # length; it stays in memory)
            self._packed[key] = packed
            return
        try:
            self._packed[key] = spill.put(packed)
        except OSError as exc:  # a full disk: this session stays in memory
            self._packed[key] = packed
            if not self._spill_failed:
                self._spill_failed = True
                _log.warning("quiet sessions stay in memory: the spill file refused one "
                             "(%s); later failures are not logged", exc)
            return
        if spill.wants_compaction:
            keys = [k for k, v in self._packed.items() if isinstance(v, int)]
            handles = spill.compact([h for h in self._packed.values() if isinstance(h, int)])
            self._packed.update(zip(keys, handles, strict=True))

    def _packed_bytes(self, packed: bytes | int) -> bytes:
        """A packed session's bytes (read from the spill file when ``packed`` is a handle)."""
        if isinstance(packed, bytes):
            return packed
        return self._spill_file().read(packed)

    def _drop_packed(self, key: ScopeKey) -> bytes | None:
        """Remove ``key``'s packed session; its bytes (None when it was not packed)."""
        packed = self._packed.pop(key, None)
        if packed is None or isinstance(packed, bytes):
            return packed
        return self._spill_file().take(packed)

    def _spill_file(self) -> SpillFile:
        if self._spill is None:  # handles come from it
            raise RuntimeError("a packed session's handle, and no spill file")
        return self._spill

    def close(self) -> None:
        """Release the spill file (the engine's packed sessions are gone with it)."""
        if self._spill is not None:
            self._spill.close()

    def _unpacked_dump(self, packed: bytes) -> tuple[list[Any], list[str]]:
        """A :meth:`_pack` value's format-2 dump and its ids (the dump's ids field left as
        packed)."""
        n_raw = int.from_bytes(packed[8:12], "little")
        inflate = zlib.decompressobj(_Z_WBITS, self._zdict)
        data: list[Any] = orjson.loads(inflate.decompress(packed[12 + n_raw:]) + inflate.flush())
        ids = (ids_from_bytes(packed[12:12 + n_raw]) if data[3] == _RAW_IDS
               else unpack_ids(data[3]))
        return data, ids

    def _unpack(self, key: ScopeKey) -> _Session | None:
        """Install ``key``'s packed session (None when it is not packed) and schedule its
        next packing."""
        packed = self._drop_packed(key)
        if packed is None:
            return None
        data, ids = self._unpacked_dump(packed)
        session = self._load_session(key, data, False, ids)
        if session is not None:
            self._schedule(max(session.last_ts_us + self._pack_us, self.watermark_us + 1),
                           _PACK_TIMER, key)
        return session

    def _load_dict(self, key: ScopeKey, data: dict[str, Any]) -> None:
        """The dict form: ``{"s": [last_ts_us, recent ids, older ids], "d": {rule: state}}``
        (what every version wrote before format 2; agent and tenant keys still do)."""
        session_data = data.get("s")
        try:
            if session_data is not None:
                recent, rest = unpack_ids(session_data[1]), unpack_ids(session_data[2])
                LOAD_IDS.extend(recent)  # what the trackers' samples refer to by position
                LOAD_IDS.extend(rest)
                if self._track:
                    session = self._sessions[key] = _Session(session_data[0], key)
                    session.seen = dict.fromkeys(recent)
                    session.older = dict.fromkeys(rest)
                    self._schedule_idle(session.last_ts_us + self._idle_us, key)
                    if self._pack_us >= 0:
                        self._schedule(session.last_ts_us + self._pack_us, _PACK_TIMER, key)
            states = data.get("d") or {}
            for detector in self.detectors:
                state = states.get(detector.name)
                if state is not None:
                    detector.load(key, state)
                    # on_due re-derives what it waits for (resolution, cleanup) from the state
                    self._schedule(self.watermark_us, detector.index, key)
        finally:
            LOAD_IDS.clear()

    def _forget(self, key: ScopeKey) -> None:
        """Drop what a failed load installed for ``key`` (its timers find nothing)."""
        self._sessions.pop(key, None)
        self._drop_packed(key)
        for detector in self.detectors:
            detector.states.pop(key, None)

    def restore_watermark(self, watermark_us: int) -> None:
        """Set the watermark of a restored engine (no timers run)."""
        self.watermark_us = max(self.watermark_us, watermark_us)

    def is_new(self, event: Event) -> bool:
        """False when ``event`` is a duplicate :meth:`process` already dropped or would drop
        (its id is among its session's recent ids). Call it before ``process``."""
        skey = _session_key(event)
        session = self._sessions.get(skey)
        if session is None and self._packed:
            session = self._unpack(skey)
        if session is None or not self._dedup:
            return True
        event_id = event.event_id
        return event_id not in session.seen and event_id not in session.older

    # -- reading -----------------------------------------------------------------------------
    @property
    def duplicates(self) -> int:
        """Events :meth:`process` dropped so far as duplicates (a worker compares it around
        each call instead of asking :meth:`is_new` first: one session lookup, not two)."""
        return self._duplicates

    @property
    def open_sessions(self) -> int:
        """Sessions open now: ``stats.active_sessions`` without its walk over every key
        of every detector (the worker's stats line and ``/metrics`` read it per partition;
        the walk was 3.7 % of a worker logging once a second)."""
        return len(self._sessions) + len(self._packed)

    @property
    def stats(self) -> EngineStats:
        keys = sum(len(d.states) for d in self.detectors)
        firing = sum(
            1 for d in self.detectors for k in d.states
            if (t := d.tracker(k)) is not None and t.firing is not None
        )
        return EngineStats(
            events=self._events,
            duplicates=self._duplicates,
            unpriced=self._unpriced,
            late=sum(d.late for d in self.detectors),
            alerts_fired=self._fired,
            alerts_resolved=self._resolved,
            active_sessions=self.open_sessions,
            active_keys=keys,
            firing=firing,
        )

    # -- internals ---------------------------------------------------------------------------
    def _schedule(self, due_us: int, index: int, key: ScopeKey) -> None:
        heapq.heappush(self._timers, (due_us, next(self._seq), index, key))

    def _schedule_idle(self, due_us: int, key: ScopeKey) -> None:
        """The idle timer of session ``key``, due at ``due_us`` (or later: it is checked
        against the session's last event when it runs). Every open session has one, most
        of them far from due (30 minutes by default), so it waits in a bucket of
        :data:`_WHEEL_US` (a list slot, 8 bytes a session) and moves to the heap (a tuple
        and two ints, ~140 bytes) only when the watermark reaches its bucket
        (:meth:`_drain_wheel`). In the heap its sequence number is :data:`_IDLE_SEQ`: at
        the same microsecond it runs before the detectors' timers, whenever it moved,
        so that the order does not depend on how the watermark advanced."""
        bucket = due_us // _WHEEL_US
        if bucket <= self._wheel_done:
            heapq.heappush(self._timers, (due_us, _IDLE_SEQ, _SESSION_TIMER, key))
            return
        keys = self._wheel.get(bucket)
        if keys is None:
            self._wheel[bucket] = [key]
            heapq.heappush(self._wheel_buckets, bucket)
        else:
            keys.append(key)

    def _drain_wheel(self, watermark_us: int) -> None:
        """Move the idle timers of the buckets the watermark has reached to the heap, each
        due at its session's last event + the idle timeout (a packed session's from its
        header, without unpacking it); a session that had events since goes to its new
        bucket instead, a closed one is dropped."""
        done = self._wheel_done = watermark_us // _WHEEL_US
        buckets = self._wheel_buckets
        while buckets and buckets[0] <= done:
            for key in self._wheel.pop(heapq.heappop(buckets)):
                session = self._sessions.get(key)
                if session is not None:
                    last_ts_us = session.last_ts_us
                else:
                    packed = self._packed.get(key)
                    if packed is None:
                        continue  # closed (an ended session's timer)
                    # its header only (SpillFile.read's size: not the whole value)
                    head = (packed[:8] if isinstance(packed, bytes)
                            else self._spill_file().read(packed, 8))
                    last_ts_us = int.from_bytes(head, "little", signed=True)
                self._schedule_idle(last_ts_us + self._idle_us, key)

    def _on_session_timer(self, skey: ScopeKey, now_us: int, out: list[Alert]) -> None:
        session = self._sessions.get(skey)
        if session is None:
            return
        due_us = session.last_ts_us + self._idle_us
        if due_us > now_us:
            self._schedule_idle(due_us, skey)
            return
        self._close_session(
            skey, due_us,
            f"the session expired after {self.config.session_idle_timeout_s} s without events",
            out,
        )

    def _close_session(self, skey: ScopeKey, ts_us: int, reason: str, out: list[Alert]) -> None:
        self._sessions.pop(skey, None)
        for detector in self._session_detectors:
            detector.close_key(skey, ts_us, reason, out)

    def _count(self, alerts: list[Alert]) -> None:
        for alert in alerts:
            if alert.state is AlertState.FIRING:
                self._fired += 1
            else:
                self._resolved += 1


def uuid_bytes(ids: list[str]) -> bytes | None:
    """The 16-byte forms of ``ids``, one after another, when every one is a canonical
    lowercase UUID (what the producer makes); None otherwise (or when there are none).
    :func:`ids_from_bytes` gives them back."""
    n = len(ids)
    for event_id in ids:  # each one: ids of 35 and 37 characters would line up joined
        if len(event_id) != _UUID_CHARS:
            return None
    joined = "".join(ids)
    # the dashes of every id in place (four tests written out: compiled, any() over a
    # generator builds a generator object each call)
    if (n == 0 or joined[8::_UUID_CHARS].count("-") != n
            or joined[13::_UUID_CHARS].count("-") != n
            or joined[18::_UUID_CHARS].count("-") != n
            or joined[23::_UUID_CHARS].count("-") != n):
        return None
    digits = joined.replace("-", "")
    try:
        raw = bytes.fromhex(digits)
    except ValueError:
        return None
    if len(raw) != 16 * n:  # fromhex skips whitespace
        return None
    # ``joined`` is now 4 dashes and 32 hex digits an id: it is lowercase (``islower()``:
    # no capital and at least one cased letter) when its digits are what hex() writes
    # (lowercase) and not all decimal. str.islower() looks every character up in the
    # Unicode tables: it was ~1/8 of a checkpoint's dump of a session.
    return raw if raw.hex() == digits and not digits.isdigit() else None


def ids_from_bytes(raw: bytes) -> list[str]:
    """The canonical UUIDs of :func:`uuid_bytes`' bytes."""
    if len(raw) % 16:
        raise ValueError(f"{len(raw)} bytes of event ids are not 16 bytes each")
    h = raw.hex()
    return [f"{h[i:i + 8]}-{h[i + 8:i + 12]}-{h[i + 12:i + 16]}-{h[i + 16:i + 20]}-"
            f"{h[i + 20:i + 32]}" for i in range(0, len(h), 32)]


def pack_ids(ids: list[str]) -> str | list[str]:
    """Event ids for a state dump: when every one is a canonical lowercase UUID (what the
    producer makes), one base64 string of their 16-byte forms (~21 characters an id
    instead of 38 in a JSON list: a session's dedup ids were 9/10 of its checkpointed
    state); otherwise the list as it is. Lossless: :func:`unpack_ids` gives them back."""
    raw = uuid_bytes(ids)
    # binascii's base64 directly: base64.b64encode is a Python function around it (a
    # Python frame per call, here once per dumped session)
    return ids if raw is None else binascii.b2a_base64(raw, newline=False).decode("ascii")


def unpack_ids(data: str | list[str]) -> list[str]:
    """The ids :func:`pack_ids` packed (a list passes through)."""
    if not isinstance(data, str):
        return list(data)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"bad packed event ids in a state dump: {exc}") from exc
    return ids_from_bytes(raw)
