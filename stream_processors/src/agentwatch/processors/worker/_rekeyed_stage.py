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
  ``t + idle_after_s``, that nothing more was there; see ``_Worker.announce_idle``). With
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
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any, Final

import orjson

from agentwatch.processors.core import ADVANCE_STEP_US, Engine, EventTimeDriver, RulesConfig
from agentwatch.processors.worker._forward import event_from_compact, table_key
from agentwatch.processors.worker._session_stage import StageOutput, config_fingerprint
from agentwatch.schemas import AlertScope, PriceTable

__all__ = ["RekeyedStage"]

_META: Final = "meta"
_NEVER: Final = -(1 << 62)
_ALWAYS: Final = 1 << 62

# a buffered event: (ts_us, event_id, scope value, key tuple, compact event, message offset)
_Item = tuple[int, str, str, tuple[str, str], list[Any], int]


class _Partition:
    __slots__ = ("dirty", "drivers", "frontier", "heap", "last_offset", "late",
                 "messages", "released_us", "resume_offset", "sources")

    def __init__(self, drivers: dict[str, EventTimeDriver]) -> None:
        self.drivers = drivers
        #: input partition -> (max ts seen, release bound: no event of it before this will
        #: come; max ts - disorder while active, from its mark's ``t`` while idle)
        self.sources: dict[int, tuple[int, int]] = {}
        self.heap: list[_Item] = []
        self.frontier: dict[tuple[str, tuple[str, ...]], tuple[int, str]] = {}
        self.messages: dict[int, int] = {}  # message offset -> events not yet released
        self.dirty: set[tuple[str, tuple[str, ...]]] = set()  # changed since the checkpoint
        self.last_offset = -1
        self.released_us = _NEVER
        self.late = 0
        #: the first offset the restored state has not seen all of (None: no state restored)
        self.resume_offset: int | None = None


class RekeyedStage:
    """Agent- and tenant-scoped rules; one engine per (rekeyed partition, scope)."""

    def __init__(self, config: RulesConfig, input_partitions: int, *,
                 prices: PriceTable | None = None) -> None:
        self.config = config
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
        part = self.partitions.get(partition)
        return 0 if part is None else len(part.heap)

    # -- the hot path -------------------------------------------------------------------------
    def process(self, partition: int,
                messages: Iterable[tuple[int, bytes | None, bytes | None]],
                out: StageOutput) -> None:
        """Feed ``(offset, key, value)`` messages of one rekeyed partition, in order."""
        part = self.partitions[partition]
        for offset, key, value in messages:
            part.last_offset = max(part.last_offset, offset)
            if value is None or key is None:
                continue
            message = orjson.loads(value)
            if "e" not in message:  # a mark: an input partition's progress
                source = message["p"]
                max_ts_us = max(message["w"], part.sources.get(source, (_NEVER, _NEVER))[0])
                bound_us = max_ts_us - self._disorder_us
                if message.get("idle"):
                    # a mark without "t" (a worker before marks had it): nothing more at all
                    bound_us = max(bound_us, message.get("t", _ALWAYS))
                part.sources[source] = (max_ts_us, bound_us)
                continue
            fkey = orjson.loads(key)
            self._buffer(part, offset, (fkey[0], fkey[1]), message)
        part.dirty |= self._release(part, out)

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
        """Queue a data message's events; False when it brought nothing new."""
        scope = message["s"]
        if scope not in part.drivers:
            return False
        frontier = part.frontier.get((scope, fkey), (_NEVER, ""))
        n = 0
        for compact in message["e"]:
            ts_us, event_id = compact[1], compact[0]
            if (ts_us, event_id) <= frontier:
                continue  # released before a restart
            if ts_us <= part.released_us:
                part.late += 1
            heapq.heappush(part.heap, (ts_us, event_id, scope, fkey, compact, offset))
            n += 1
        if n:
            part.messages[offset] = part.messages.get(offset, 0) + n
        return n > 0

    def _aligned_us(self, part: _Partition) -> int:
        """Event time up to which every input partition has been seen (minus disorder)."""
        sources = part.sources
        if len(sources) < self.input_partitions:  # not heard from every partition yet
            return _NEVER
        return min(bound for _, bound in sources.values())

    def _release(self, part: _Partition, out: StageOutput) -> set[tuple[str, tuple[str, ...]]]:
        touched: set[tuple[str, tuple[str, ...]]] = set()
        aligned_us = self._aligned_us(part)
        heap, disorder_us, step_us = part.heap, self._disorder_us, ADVANCE_STEP_US
        alerts = out.alerts
        n = 0
        while heap and heap[0][0] <= aligned_us:
            ts_us, event_id, scope, fkey, compact, offset = heapq.heappop(heap)
            left = part.messages[offset] - 1
            if left:
                part.messages[offset] = left
            else:
                del part.messages[offset]
            frontier_key = (scope, fkey)
            released = (ts_us, event_id)
            previous = part.frontier.get(frontier_key)
            if previous is not None and released <= previous:
                # forwarded twice (the session stage read records again after a crash): the
                # heap pops the copy right after the original (same time and id)
                continue
            part.frontier[frontier_key] = released
            driver = part.drivers[scope]
            engine = driver.engine
            alerts += engine.process(event_from_compact(compact), ts_us)
            if ts_us >= driver.next_advance_us:
                alerts += engine.advance(ts_us - disorder_us)
                driver.next_advance_us = ts_us + step_us
            touched.add(frontier_key)
            n += 1
            part.released_us = max(part.released_us, ts_us)
        out.events += n
        # event time has reached the aligned watermark everywhere: quiet keys resolve (with
        # every partition idle, at most the largest event time seen, like replay at the end
        # of a file)
        latest_us = max((ts for ts, _ in part.sources.values()), default=_NEVER)
        aligned_us = min(aligned_us, latest_us - disorder_us)
        for driver in part.drivers.values():
            if aligned_us > driver.engine.watermark_us:
                alerts += driver.engine.advance(aligned_us)
        for scope, driver in part.drivers.items():
            touched.update((scope, k) for k in driver.engine.touched)
            driver.engine.touched.clear()
        return touched
