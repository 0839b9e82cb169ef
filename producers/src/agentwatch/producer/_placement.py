"""Which record an event goes into, and how a record packed earlier is sent now.

DESIGN.md, "Kafka records". With the topic's partition count known, every event goes into
the open record of its session's partition, keyed ``~batch:<p>`` (``PartitionCache``:
Kafka's default partitioner, murmur2 of ``<tenant_id>/<session_id>``); without it, into
its session's own record, keyed ``<tenant_id>/<session_id>``. :class:`Placement` is that
choice for one partition count (or none), remembered per session.

A record remembers the count it was packed for (``PackedRecord.partitions``: 0 when none,
or when it was read back from a spool file, which keeps only its key). When the sender
hands it to the transport under another count, :meth:`Placement.wire` places it again: a
one-session record gets the batch key of its session's partition (same bytes); a
partition batch is decoded and checked, and split into one record per partition when its
sessions no longer all belong to ``p`` (each session's events in order). The outbox still
holds it as one record, so :class:`Parts` turns the transport's confirmations, which
count transport records, into whole records of the outbox.
"""

from __future__ import annotations

from collections import deque
from typing import Final

import orjson

from agentwatch.producer._transport import Record
from agentwatch.producer.packing import PackedRecord
from agentwatch.schemas import (
    PARTITION_BATCH_PREFIX,
    PartitionCache,
    partition_batch_key,
    session_key,
)

__all__ = ["Parts", "Placement"]

_PREFIX_LEN: Final = len(PARTITION_BATCH_PREFIX)
#: sessions whose record key is remembered before the memo starts over
_KEYS_MAX: Final = 200_000


class Placement:
    """The record key of each session's events under ``partitions`` (0: none, per session).

    ``keys`` is the memo ``tenant_id -> session_id -> key``, read directly by the sender's
    hot loop; :meth:`key_of` fills it. (Two levels, not one dict keyed by the pair: no
    tuple made and hashed per event.)"""

    __slots__ = ("_batch_keys", "_owner", "_remembered", "keys", "partitions")

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self._owner = PartitionCache(partitions) if partitions else None
        self._batch_keys = [partition_batch_key(p) for p in range(partitions)]
        self.keys: dict[str, dict[str, bytes]] = {}
        self._remembered = 0  # sessions in ``keys``

    def key_of(self, tenant_id: str, session_id: str) -> bytes:
        owner = self._owner
        key = (self._batch_keys[owner.get(tenant_id, session_id)] if owner is not None
               else session_key(tenant_id, session_id))
        if self._remembered >= _KEYS_MAX:
            self.keys.clear()
            self._remembered = 0
        sessions = self.keys.get(tenant_id)
        if sessions is None:
            sessions = self.keys[tenant_id] = {}
        if session_id not in sessions:
            self._remembered += 1
        sessions[session_id] = key
        return key

    def wire(self, record: PackedRecord) -> list[Record]:
        """The transport records for ``record``, its events in order."""
        owner = self._owner
        if owner is None or record.partitions == self.partitions:
            return [(record.key, record.value)]
        key, value = record.key, record.value
        try:
            if not key.startswith(PARTITION_BATCH_PREFIX):  # one session's events
                tenant_id, _, session_id = key.decode().partition("/")
                return [(self.key_of(tenant_id, session_id), value)]
            partition = int(key[_PREFIX_LEN:])
            events = orjson.loads(value)
            homes = [owner.get(e["tenant_id"], e["session_id"]) for e in events]
        except Exception:  # noqa: BLE001 -- not a record this client packed: send it as it is
            return [(key, value)]
        if all(home == partition for home in homes):
            return [(key, value)]
        by_partition: dict[int, list[bytes]] = {}
        for home, event in zip(homes, events, strict=True):
            by_partition.setdefault(home, []).append(orjson.dumps(event))
        return [(self._batch_keys[home], b"[" + b",".join(parts) + b"]")
                for home, parts in by_partition.items()]


class Parts:
    """How many transport records each outbox record in flight was sent as (oldest first),
    how many of the oldest one's are confirmed, and how many still to come belong to a
    record already refused."""

    __slots__ = ("_credit", "_flight", "_skip")

    def __init__(self) -> None:
        self._flight: deque[int] = deque()
        self._credit = 0
        self._skip = 0

    def sent(self, parts: int) -> None:
        self._flight.append(parts)

    def confirmed(self, parts: int) -> int:
        """How many outbox records (oldest first) ``parts`` more confirmed transport records
        complete."""
        if self._skip:  # first come the rest of a record refused (already counted)
            skipped = min(self._skip, parts)
            self._skip -= skipped
            parts -= skipped
        credit, flight, done = self._credit + parts, self._flight, 0
        while flight and credit >= flight[0]:
            credit -= flight.popleft()
            done += 1
        self._credit = credit
        return done

    def refused(self) -> bool:
        """The transport refused the part after the confirmed ones: True when it is the
        oldest outbox record's (which then fails whole, its other parts ignored), False
        when it is one more part of a record refused already."""
        if self._skip:
            self._skip -= 1
            return False
        if self._flight:
            self._skip = self._flight.popleft() - self._credit - 1
            self._credit = 0
        return True

    def clear(self) -> None:
        """Nothing is in flight any more (delivered, or to be sent again)."""
        self._flight.clear()
        self._credit = self._skip = 0
