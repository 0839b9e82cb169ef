"""Stage 2 of the worker, pure: agent- and tenant-scoped rules over the rekeyed topic.

Why re-key through a topic: an agent's sessions are spread over every input partition,
so an agent window needs all of them in one place; a Kafka topic keyed by agent (or
tenant) is how faust moves data between workers, and it keeps the at-least-once
guarantees of the rest of the pipeline. What keeps the result exact:

* Partitions are consumed at different speeds (a worker catching up reads partition 0
  for a while, then partition 1): an agent's events arrive here far out of event-time
  order. So this stage buffers them and releases them in ``(ts, event_id)`` order only
  once every input partition's watermark (the largest event time seen there, minus
  ``disorder_s``, announced by marks from the session stage) has passed them. The engine
  then sees the same ordered stream whatever the interleaving, and ``agentwatch replay``
  of a time-ordered file computes the same alerts.
* An input partition with nothing left to read is announced idle and stops holding the
  others back beyond the time its mark gives (``t``: the broker confirmed, at wall time
  ``t + idle_after_s``, that nothing more was there; see ``_Worker.announce_idle``), and
  never beyond the newest event time any input partition had announced when the mark
  came: when a producer's records are late (it is starting, stalled or cut off from the
  broker) every partition is quiet, and its events, newer than anything read, must not
  be released from the partition whose share happens to arrive first. With
  every partition idle, everything buffered up to the earliest such time is released. A
  partition whose idle mark is old (the broker was away since) holds the others at its
  ``t`` until it is confirmed idle again or its own events come. An event that
  arrives after its time was released (more disorder than ``disorder_s``, or from a
  partition that was idle) goes to the engine at once, out of order, which accepts it
  within its own disorder bound, like any runtime.
* Buffered events are not lost in a crash: the input offset of this stage is committed
  only up to the first message still holding unreleased events (:meth:`RekeyedStage.
  safe_offset`), so a restarted worker reads those messages again; every key's state
  records the last ``(ts, event_id)`` released to it, so a message read again feeds
  nothing twice. Key state is saved per checkpoint, like the session stage's.
* A malformed message on the topic (anything but the two forms ``_forward.py`` describes,
  with the types and ranges ``compact_event`` writes) is a dead letter with a reason, and
  skipped: one bad message must not stop the worker, nor stop it again after a restart
  (it would be read again). The hot path checks types and ranges only, with no reason
  text; :func:`problem` works the reason out when a check failed. Nothing of a message is
  applied before all of it passed.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any, Final

import orjson

from agentwatch.processors.core import ADVANCE_STEP_US, Engine, EventTimeDriver, RulesConfig
from agentwatch.processors.worker._forward import core_event, event_from_compact, table_key
from agentwatch.processors.worker._session_stage import DeadLetter, StageOutput, config_fingerprint
from agentwatch.schemas import (
    TS_MAX,
    TS_MIN,
    Alert,
    AlertScope,
    EventKind,
    EventStatus,
    PriceTable,
    to_us,
)

__all__ = ["RekeyedStage", "problem"]

_META: Final = "meta"
_NEVER: Final = -(1 << 62)
_ALWAYS: Final = 1 << 62
#: the release frontier of a key nothing was released to yet
_NO_FRONTIER: Final = (_NEVER, "")

# What a well-formed message holds (``_forward.py``); anything else is a dead letter.
_DATA_FIELDS: Final = frozenset({"s", "p", "e"})
_MARK_FIELDS: Final = frozenset({"p", "w", "idle", "t"})
_AGENT: Final = AlertScope.AGENT.value
_SCOPES: Final = frozenset({_AGENT, AlertScope.TENANT.value})
_KINDS: Final = frozenset(k.value for k in EventKind)
_STATUSES: Final = frozenset(s.value for s in EventStatus)
_NUMBER: Final[frozenset[type]] = frozenset({float, int, type(None)})
_TEXT: Final[frozenset[type]] = frozenset({str, type(None)})
_ATTRIBUTES: Final[frozenset[type]] = frozenset({dict, type(None)})
#: event time: the range of an event's ``ts`` (the session stage refuses others)
_TS_MIN_US: Final = to_us(TS_MIN)
_TS_MAX_US: Final = to_us(TS_MAX)
#: characters of the ids the stage keys state by (the event contract's limits): a longer
#: one would make changelog records past the broker's message size
_ID_MAX: Final = 256
_TENANT_MAX: Final = 128
#: the compact event's fields, as ``_forward.compact_event`` writes them (for reasons)
_COMPACT_FIELDS: Final = (
    "event_id", "ts_us", "tenant_id", "agent_id", "session_id", "kind", "status", "cost_usd",
    "name", "tool_args_hash", "duration_ms", "model", "attributes",
)


class _MalformedError(ValueError):
    """A check of the hot path failed; :func:`problem` says which."""

# A buffered run: the events of one data message not yet released, sorted by (ts_us,
# event_id), and a cursor in it. The heap holds one item per run, keyed by the run's next
# event: (ts_us, event_id, scope value, key tuple, message offset, the event's index in the
# run, a number unique to the run, the run). An item per event (a 7-tuple pushed and popped
# through the heap) cost ~45 % of this stage at the fleet's 530 events per message. The
# order is the same: within a run, events go in (ts_us, event_id) order, ties in the
# message's order (a stable sort); between runs the head's key decides, as it did for
# single events, and the unique number keeps the heap from ever comparing two runs.
_Item = tuple[int, str, str, tuple[str, str], int, int, int, list[list[Any]]]


def _order(compact: list[Any]) -> tuple[int, str]:
    return (compact[1], compact[0])


class _Partition:
    __slots__ = ("dirty", "drivers", "frontier", "heap", "last_offset", "late",
                 "messages", "released_us", "resume_offset", "runs", "sources")

    def __init__(self, drivers: dict[str, EventTimeDriver]) -> None:
        self.drivers = drivers
        #: input partition -> (max ts seen, release bound: no event of it before this will
        #: come; max ts - disorder while active, from its mark's ``t`` while idle)
        self.sources: dict[int, tuple[int, int]] = {}
        self.heap: list[_Item] = []
        self.runs = 0  # runs buffered so far (each run's unique number)
        self.frontier: dict[tuple[str, tuple[str, ...]], tuple[int, str]] = {}
        self.messages: dict[int, int] = {}  # message offset -> events not yet released
        self.dirty: set[tuple[str, tuple[str, ...]]] = set()  # changed since the checkpoint
        self.last_offset = -1
        #: event time released up to (the engines' watermark included): an event at or
        #: before it that comes now is late (counted, taken out of order)
        self.released_us = _NEVER
        self.late = 0
        #: the first offset the restored state has not seen all of (None: no state restored)
        self.resume_offset: int | None = None


class RekeyedStage:
    """Agent- and tenant-scoped rules; one engine per (rekeyed partition, scope)."""

    def __init__(self, config: RulesConfig, topic: str, input_partitions: int, *,
                 prices: PriceTable | None = None) -> None:
        self.config = config
        #: the rekeyed topic (named in dead letters)
        self.topic = topic
        self.input_partitions = input_partitions
        self._prices = prices
        self._disorder_us = config.disorder_us
        self._fingerprint = config_fingerprint(config)
        self.partitions: dict[int, _Partition] = {}

    def _new_partition(self) -> _Partition:
        drivers = {}
        for scope in (AlertScope.AGENT, AlertScope.TENANT):
            engine = Engine(self.config, scopes=[scope], track_sessions=False,
                            prices=self._prices)
            if engine.detectors:
                drivers[scope.value] = EventTimeDriver(engine)
        return _Partition(drivers)

    # -- partitions come and go with rebalances -----------------------------------------------
    def restore(self, partition: int, items: Iterable[tuple[bytes, bytes]]) -> None:
        part = self._new_partition()
        entries = [(orjson.loads(k), v) for k, v in items]
        meta = next((orjson.loads(v) for k, v in entries if k[1:] == [_META]), None)
        if meta is not None and meta["f"] == self._fingerprint:
            for scope, (watermark_us, next_us) in meta["d"].items():
                driver = part.drivers.get(scope)
                if driver is not None:
                    driver.engine.restore_watermark(watermark_us)
                    driver.next_advance_us = next_us
            part.resume_offset = meta.get("o")  # absent in state saved before it was kept
            for key, raw in entries:
                if len(key) == 4 and key[1] in part.drivers:
                    value = orjson.loads(raw)
                    skey = (key[2], key[3])
                    if value["f"] is not None:
                        part.frontier[(key[1], skey)] = (value["f"][0], value["f"][1])
                    if value.get("k") is not None:
                        part.drivers[key[1]].engine.load_key(skey, value["k"])
        self.partitions[partition] = part

    def drop(self, partition: int) -> None:
        self.partitions.pop(partition, None)

    def resume_offset(self, partition: int) -> int | None:
        """The first offset of ``partition`` whose events the restored state may lack (the
        safe offset of its last checkpoint); ``None`` when no state was restored."""
        part = self.partitions.get(partition)
        return None if part is None else part.resume_offset

    def buffered(self, partition: int) -> int:
        """Events of ``partition`` buffered, not released yet."""
        part = self.partitions.get(partition)
        return 0 if part is None else sum(len(item[7]) - item[5] for item in part.heap)

    # -- the hot path -------------------------------------------------------------------------
    def process(self, partition: int,
                messages: Iterable[tuple[int, bytes | None, bytes | None]],
                out: StageOutput) -> None:
        """Feed ``(offset, key, value)`` messages of one rekeyed partition, in order; a
        malformed one becomes a dead letter in ``out`` (see :func:`problem`)."""
        part = self.partitions[partition]
        for offset, key, value in messages:
            part.last_offset = max(part.last_offset, offset)
            try:
                message = orjson.loads(value)  # type: ignore[arg-type]  # None: a dead letter
                if type(message) is not dict:
                    raise _MalformedError
                if "e" in message:
                    self._buffer(part, offset, _scope_key(key), message)
                else:  # a mark: an input partition's progress
                    self._mark(part, message)
            except (ValueError, TypeError, KeyError, IndexError) as exc:
                # orjson's errors are ValueErrors; the others come from a value of the wrong
                # shape met before its check (e.g. an unhashable scope)
                reason = problem(key, value, self.input_partitions) or f"malformed: {exc!r}"
                out.dead_letters.append(DeadLetter(key, value or b"", reason, self.topic,
                                                   partition, offset, None))
        part.dirty |= self._release(part, out)

    def _mark(self, part: _Partition, message: dict[str, Any]) -> None:
        source, w = message["p"], message["w"]
        idle, until = message.get("idle", False), message.get("t", _ALWAYS)
        if (type(source) is not int or not 0 <= source < self.input_partitions
                or type(w) is not int or not (_TS_MIN_US <= w <= _TS_MAX_US or w == _NEVER)
                or type(idle) is not bool or type(until) is not int
                or not _NEVER <= until <= _ALWAYS or not message.keys() <= _MARK_FIELDS):
            raise _MalformedError
        sources = part.sources
        max_ts_us = max(w, sources.get(source, (_NEVER, _NEVER))[0])
        bound_us = max_ts_us - self._disorder_us
        if idle:
            # ``t`` (a mark without it, from a worker before marks had it: nothing more at
            # all), but no later than the newest event time any input partition has
            # announced: a producer whose records are late (starting, stalled, cut off)
            # leaves every partition quiet, and its events are newer than what was read
            # before; an idle mark must not release them from a partition read first
            latest_us = max(max_ts_us, _newest_us(sources))
            bound_us = max(bound_us, min(until, latest_us))
        sources[source] = (max_ts_us, bound_us)

    # -- checkpoints ----------------------------------------------------------------------
    def safe_offset(self, partition: int) -> int:
        """Messages below this offset hold no unreleased event: their offsets may be
        committed (a restart reads the others again)."""
        part = self.partitions.get(partition)
        if part is None:
            return 0
        return min(part.messages, default=part.last_offset + 1)

    def dirty(self, partition: int) -> int:
        part = self.partitions.get(partition)
        return 0 if part is None else len(part.dirty)

    def checkpoint(self, partition: int) -> list[tuple[int, bytes, bytes | None]]:
        """Table writes saving every key released to since the last checkpoint (its state
        and release frontier) and the engines' watermarks; the keys are clean afterwards."""
        part = self.partitions.get(partition)
        if part is None:
            return []
        for scope, driver in part.drivers.items():
            part.dirty.update((scope, k) for k in driver.engine.touched)
            driver.engine.touched.clear()
        writes: list[tuple[int, bytes, bytes | None]] = []
        for scope, skey in part.dirty:
            data = part.drivers[scope].engine.dump_key(skey)
            frontier = part.frontier.get((scope, skey))
            writes.append((partition, table_key(partition, scope, *skey), orjson.dumps(
                {"f": frontier, "k": data})))
        part.dirty = set()
        writes.append((partition, table_key(partition, _META), orjson.dumps({
            "f": self._fingerprint,
            "d": {s: [d.engine.watermark_us, d.next_advance_us]
                  for s, d in part.drivers.items()},
            "o": self.safe_offset(partition),
        })))
        return writes

    def _buffer(self, part: _Partition, offset: int, fkey: tuple[str, str],
                message: dict[str, Any]) -> bool:
        """Queue a data message's events; False when it brought nothing new. Raises
        :class:`_MalformedError` (or a ValueError, TypeError...) before queueing any when the
        message is not as the session stage writes it."""
        scope, source, compacts = message["s"], message["p"], message["e"]
        if (type(scope) is not str or scope not in _SCOPES or type(source) is not int
                or not 0 <= source < self.input_partitions or type(compacts) is not list
                or len(message) != len(_DATA_FIELDS)):
            raise _MalformedError
        ts_min, ts_max, id_max = _TS_MIN_US, _TS_MAX_US, _ID_MAX
        kinds, statuses, number, text = _KINDS, _STATUSES, _NUMBER, _TEXT
        # the events' scope key is the message's (checked for size once, in _scope_key)
        key_tenant, key_agent = fkey if scope == _AGENT else (fkey[0], None)
        for c in compacts:  # every event checked before any is queued
            # not a list: unpacking fails, or (a string, an object's keys) ts_us is no int
            if len(c) == 10:
                event_id, ts_us, tenant, agent, session, kind, status, cost, name, args = c
            else:  # a ValueError when it is not 13 either
                (event_id, ts_us, tenant, agent, session, kind, status, cost, name, args,
                 duration, model, attributes) = c
                if (type(duration) not in number or type(model) not in text
                        or type(attributes) not in _ATTRIBUTES):
                    raise _MalformedError
            if (type(ts_us) is not int or not ts_min <= ts_us <= ts_max
                    or type(event_id) is not str or len(event_id) > id_max
                    or tenant != key_tenant
                    or (agent != key_agent if key_agent is not None else type(agent) is not str)
                    or type(session) is not str or kind not in kinds or status not in statuses
                    or type(cost) not in number or type(name) not in text
                    or type(args) not in text):
                raise _MalformedError
        if scope not in part.drivers:
            return False
        frontier_ts, frontier_id = part.frontier.get((scope, fkey), _NO_FRONTIER)
        released_us = part.released_us
        run: list[list[Any]] = []
        late = 0
        in_order = True
        last_ts, last_id = _NEVER, ""
        for compact in compacts:
            ts_us, event_id = compact[1], compact[0]
            if ts_us <= frontier_ts and (ts_us < frontier_ts or event_id <= frontier_id):
                continue  # released before a restart
            if ts_us <= released_us:
                late += 1
            if ts_us < last_ts or (ts_us == last_ts and event_id < last_id):
                in_order = False
            last_ts, last_id = ts_us, event_id
            run.append(compact)
        part.late += late
        if not run:
            return False
        if not in_order:
            run.sort(key=_order)  # stable: ties keep the message's order
        head = run[0]
        part.runs += 1
        heapq.heappush(part.heap, (head[1], head[0], scope, fkey, offset, 0, part.runs, run))
        part.messages[offset] = part.messages.get(offset, 0) + len(run)
        return True

    def _release_run(self, part: _Partition, item: _Item, aligned_us: int,
                     alerts: list[Alert], touched: set[tuple[str, tuple[str, ...]]]) -> int:
        """Feed the run of ``item`` (popped: its next event comes first) while its events
        come before the next run's head and ``aligned_us``; then it goes back in the heap
        (unless it is through). The events fed (a copy forwarded twice is not)."""
        _, _, scope, fkey, offset, pos, number, run = item
        heap, disorder_us, step_us = part.heap, self._disorder_us, ADVANCE_STEP_US
        to_event = event_from_compact
        end = len(run)
        bound_ts = heap[0][0] if heap else _ALWAYS
        frontier_key = (scope, fkey)
        frontier_ts, frontier_id = part.frontier.get(frontier_key, _NO_FRONTIER)
        released_us = part.released_us
        driver = part.drivers[scope]
        engine = driver.engine
        start, fed = pos, 0
        while True:
            compact = run[pos]
            ts_us, event_id = compact[1], compact[0]
            # forwarded twice (the session stage read records again after a crash): the
            # copy comes right after the original (same time, id and key)
            if ts_us > frontier_ts or (ts_us == frontier_ts and event_id > frontier_id):
                frontier_ts, frontier_id = ts_us, event_id
                alerts += engine.process(core_event(to_event(compact)), ts_us)
                if ts_us >= driver.next_advance_us:
                    alerts += engine.advance(ts_us - disorder_us)
                    driver.next_advance_us = ts_us + step_us
                fed += 1
                if ts_us > released_us:  # noqa: PLR1730 (a compare, not a call of max)
                    released_us = ts_us
            pos += 1
            if pos == end:
                break
            following = run[pos]
            next_ts = following[1]
            if next_ts > aligned_us or next_ts > bound_ts or (
                    next_ts == bound_ts and _comes_after(
                        (next_ts, following[0], scope, fkey, offset, pos, number), heap[0])):
                heapq.heappush(heap, (next_ts, following[0], scope, fkey, offset, pos, number,
                                      run))
                break
        part.released_us = released_us
        left = part.messages[offset] - (pos - start)
        if left:
            part.messages[offset] = left
        else:
            del part.messages[offset]
        if fed:
            part.frontier[frontier_key] = (frontier_ts, frontier_id)
            touched.add(frontier_key)
        return fed

    def _aligned_us(self, part: _Partition) -> int:
        """Event time up to which every input partition has been seen (minus disorder)."""
        sources = part.sources
        if len(sources) < self.input_partitions:  # not heard from every partition yet
            return _NEVER
        return min(bound for _, bound in sources.values())

    def _release(self, part: _Partition, out: StageOutput) -> set[tuple[str, tuple[str, ...]]]:
        touched: set[tuple[str, tuple[str, ...]]] = set()
        aligned_us = self._aligned_us(part)
        heap, disorder_us, alerts = part.heap, self._disorder_us, out.alerts
        n = 0
        while heap and heap[0][0] <= aligned_us:
            n += self._release_run(part, heapq.heappop(heap), aligned_us, alerts, touched)
        out.events += n
        # event time has reached the aligned watermark everywhere: quiet keys resolve (with
        # every partition idle, at most the largest event time seen, like replay at the end
        # of a file)
        latest_us = _newest_us(part.sources)
        aligned_us = min(aligned_us, latest_us - disorder_us)
        # the engines' watermark: no event before it is expected any more
        part.released_us = max(part.released_us, aligned_us)
        for driver in part.drivers.values():
            if aligned_us > driver.engine.watermark_us:
                alerts += driver.engine.advance(aligned_us)
        for scope, driver in part.drivers.items():
            touched.update((scope, k) for k in driver.engine.touched)
            driver.engine.touched.clear()
        return touched


def _comes_after(key: tuple[int, str, str, tuple[str, str], int, int, int], item: _Item) -> bool:
    """Whether a run's next event (its heap key) comes after the head of another run."""
    return key > item[:7]


def _newest_us(sources: dict[int, tuple[int, int]]) -> int:
    """The newest event time any input partition has announced (``_NEVER``: none yet)."""
    return max((ts for ts, _ in sources.values()), default=_NEVER)


def _scope_key(key: bytes | None) -> tuple[str, str]:
    """A data message's key, ``[tenant_id, agent_id]`` (or ``[tenant_id, tenant_id]``)."""
    fkey = orjson.loads(key)  # type: ignore[arg-type]  # None: a TypeError, a dead letter
    if type(fkey) is not list or len(fkey) != 2:
        raise _MalformedError
    tenant, other = fkey
    if (type(tenant) is not str or not 0 < len(tenant) <= _TENANT_MAX
            or type(other) is not str or not 0 < len(other) <= _ID_MAX):
        raise _MalformedError
    return (tenant, other)


# -- reasons: worked out only for a message the hot path refused -----------------------------
def problem(key: bytes | None, value: bytes | None, input_partitions: int) -> str | None:
    """Why ``(key, value)`` is no message of the rekeyed topic (``_forward.py`` describes
    the two forms), in one line naming the field; ``None`` when it is well formed. The
    same checks as :meth:`RekeyedStage.process`, spelled out."""
    if value is None:
        return "empty record (no value)"
    try:
        message = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return f"malformed JSON: {exc}"
    if type(message) is not dict:
        return f"not a JSON object: {_show(message)}"
    if "e" in message:
        return _data_problem(key, message, input_partitions)
    if "w" not in message:
        names = ", ".join(_show(name) for name in sorted(message)[:5])
        return ('neither a data message (no field "e") nor a mark (no field "w"): fields '
                f"{names or 'none'}")
    return _mark_problem(message, input_partitions)


def _partition_problem(what: str, source: Any, input_partitions: int) -> str | None:
    if type(source) is not int or not 0 <= source < input_partitions:
        return (f'{what}: field "p" must be an input partition, an integer 0..'
                f"{input_partitions - 1}, got {_show(source)}")
    return None


def _mark_problem(message: dict[str, Any], input_partitions: int  # noqa: PLR0911 (one flat list of checks, on purpose)
                  ) -> str | None:
    unknown = sorted(message.keys() - _MARK_FIELDS)
    if unknown:
        return f"mark: unknown field {_show(unknown[0])}"
    if "p" not in message:
        return 'mark: missing field "p"'
    why = _partition_problem("mark", message["p"], input_partitions)
    if why is not None:
        return why
    w = message["w"]
    if type(w) is not int or not (_TS_MIN_US <= w <= _TS_MAX_US or w == _NEVER):
        return (f'mark: field "w" must be an event time in microseconds, an integer '
                f"{_TS_MIN_US}..{_TS_MAX_US} (or {_NEVER}: none yet), got {_show(w)}")
    if type(message.get("idle", False)) is not bool:
        return f'mark: field "idle" must be true or false, got {_show(message["idle"])}'
    until = message.get("t", _ALWAYS)
    if type(until) is not int or not _NEVER <= until <= _ALWAYS:
        return (f'mark: field "t" must be an event time in microseconds, an integer '
                f"{_NEVER}..{_ALWAYS}, got {_show(until)}")
    return None


def _data_problem(key: bytes | None, message: dict[str, Any],  # noqa: PLR0911 (one flat list of checks)
                  input_partitions: int) -> str | None:
    unknown = sorted(message.keys() - _DATA_FIELDS)
    if unknown:
        return f"data message: unknown field {_show(unknown[0])}"
    missing = sorted(_DATA_FIELDS.difference(message))  # (not `-`: a set, under mypyc)
    if missing:
        return f"data message: missing field {_show(missing[0])}"
    scope = message["s"]
    if type(scope) is not str or scope not in _SCOPES:
        return f'data message: field "s" must be "agent" or "tenant", got {_show(scope)}'
    why = _partition_problem("data message", message["p"], input_partitions)
    if why is not None:
        return why
    compacts = message["e"]
    if type(compacts) is not list:
        return f'data message: field "e" must be an array of events, got {_show(compacts)}'
    why = _key_problem(key)
    if why is not None:
        return why
    tenant, agent = orjson.loads(key)  # type: ignore[arg-type]  # checked by _key_problem
    for i, compact in enumerate(compacts):
        why = _compact_problem(compact, tenant, agent if scope == _AGENT else None)
        if why is not None:
            return f"data message: event {i}: {why}"
    return None


def _key_problem(key: bytes | None) -> str | None:
    expected = (f"the key must be a JSON array of 2 strings, [tenant_id, agent_id] (or "
                f"[tenant_id, tenant_id]) of 1..{_TENANT_MAX} and 1..{_ID_MAX} characters")
    if key is None:
        return f"data message without a key: {expected}"
    try:
        fkey = orjson.loads(key)
    except orjson.JSONDecodeError as exc:
        return f"data message: {expected}; malformed JSON: {exc}"
    if (type(fkey) is not list or len(fkey) != 2 or type(fkey[0]) is not str
            or not 0 < len(fkey[0]) <= _TENANT_MAX or type(fkey[1]) is not str
            or not 0 < len(fkey[1]) <= _ID_MAX):
        return f"data message: {expected}, got {_show(fkey)}"
    return None


#: per compact event field: (allowed types, what it must be); ranges checked below
_COMPACT_TYPES: Final[tuple[tuple[frozenset[type], str], ...]] = (
    (frozenset({str}), f"a string of at most {_ID_MAX} characters"),
    (frozenset({int}), f"an integer {_TS_MIN_US}..{_TS_MAX_US}"),
    (frozenset({str}), "the key's tenant_id"),
    (frozenset({str}), "a string"),  # in an agent-scoped message: the key's agent_id
    (frozenset({str}), "a string"),
    (frozenset({str}), f"one of {sorted(_KINDS)}"),
    (frozenset({str}), f"one of {sorted(_STATUSES)}"),
    (_NUMBER, "a number or null"),
    (_TEXT, "a string or null"),
    (_TEXT, "a string or null"),
    (_NUMBER, "a number or null"),
    (_TEXT, "a string or null"),
    (_ATTRIBUTES, "an object or null"),
)


def _compact_problem(compact: Any, tenant: str, agent: str | None) -> str | None:
    """``agent``: the key's agent id in an agent-scoped message, else None."""
    if type(compact) is not list:
        return f"not an array: {_show(compact)}"
    if len(compact) not in (10, 13):
        return f"{len(compact)} fields, not 10 or 13"
    for i, (field, (types, must)) in enumerate(zip(_COMPACT_FIELDS, _COMPACT_TYPES,
                                                   strict=False)):
        if i >= len(compact):
            break
        value = compact[i]
        bad = type(value) not in types or (
            (i == 0 and len(value) > _ID_MAX) or (i == 1 and not _TS_MIN_US <= value <= _TS_MAX_US)
            or (i == 2 and value != tenant) or (i == 3 and agent is not None and value != agent)
            or (i == 5 and value not in _KINDS) or (i == 6 and value not in _STATUSES))
        if bad:
            what = "the key's agent_id" if i == 3 and agent is not None else must
            return f"field {i} ({field}) must be {what}, got {_show(value)}"
    return None


def _show(value: Any) -> str:
    """A short view of a decoded JSON value for a reason (bounded, whatever its size)."""
    if isinstance(value, str):
        text = orjson.dumps(value[:60]).decode()
        return text if len(value) <= 60 else f"{text[:-1]}...\" ({len(value)} characters)"
    if isinstance(value, list):
        return f"an array of {len(value)} items" if value else "an empty array"
    if isinstance(value, dict):
        return f"an object of {len(value)} fields"
    return orjson.dumps(value).decode()
