"""Group encoded events by key and pack each group into bounded JSON-array records.

The key is what the sender groups by: ``~batch:<p>`` for a partition batch (every
session of partition ``p``), ``<tenant_id>/<session_id>`` without a partition count.
Events are appended to that key's open chunk in order. A chunk is closed (ready to
send) when it holds ``max_events`` events, or when the next event would push the
record past ``max_bytes`` (a single event larger than ``max_bytes`` still goes alone,
as a one-element array). ``take(all_open=True)`` closes every open chunk: the sender
does that once per linger interval, so a key's events of one interval become one
record unless a bound splits them. Ready records keep the order in which they were
closed, so the records of one key are in event order.

A chunk is one growing ``bytearray``, not a list of the events' ``bytes``: holding
thousands of small ``orjson`` outputs at once costs ~2 µs each (the allocator keeps
returning and re-taking their memory), appending them to a buffer ~0.1 µs.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["PackedRecord", "Packer"]

_OPEN = b"["
_CLOSE = ord("]")


class PackedRecord(NamedTuple):
    key: bytes
    value: bytes
    events: int  # how many events the record holds
    #: the partition count a partition batch was packed for (0: none, or not known: a
    #: record packed per session, or read back from a spool file)
    partitions: int = 0


class _Chunk:
    __slots__ = ("buf", "events")

    def __init__(self) -> None:
        # "[" then every event followed by ",": the last "," becomes the "]", so
        # len(buf) is the record's length
        self.buf = bytearray(_OPEN)
        self.events = 0


class Packer:
    """Open chunks by key; ``partitions`` is stamped on the records it closes."""

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._open: dict[bytes, _Chunk] = {}
        self._ready: list[PackedRecord] = []
        self.pending = 0  # events in open chunks
        #: the partition count the keys are for (set by the sender; 0: per session)
        self.partitions = 0

    def add(self, key: bytes, event_json: bytes) -> None:
        chunk = self._open.get(key)
        if chunk is None:
            chunk = self._open[key] = _Chunk()
        elif len(chunk.buf) + len(event_json) >= self._max_bytes:  # the "," counts too
            self._close(key, chunk)
            chunk = self._open[key] = _Chunk()
        buf = chunk.buf
        buf += event_json
        buf += b","
        self.pending += 1
        chunk.events = events = chunk.events + 1
        if events >= self._max_events:
            self._close(key, chunk)

    def take(self, *, all_open: bool) -> list[PackedRecord]:
        """The records ready to send; with ``all_open`` also every open chunk."""
        if all_open:
            for key, chunk in list(self._open.items()):
                self._close(key, chunk)
        ready, self._ready = self._ready, []
        return ready

    def _close(self, key: bytes, chunk: _Chunk) -> None:
        del self._open[key]
        self.pending -= chunk.events
        buf = chunk.buf
        buf[-1] = _CLOSE
        self._ready.append(PackedRecord(key, bytes(buf), chunk.events, self.partitions))
