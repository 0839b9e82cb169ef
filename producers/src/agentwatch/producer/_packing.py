"""Group encoded events by key and pack each group into bounded JSON-array records.

A session's events are appended to that key's open chunk in order. A chunk is
closed (ready to send) when it holds ``max_events`` events, or when the next
event would push the record past ``max_bytes`` (a single event larger than
``max_bytes`` still goes alone, as a one-element array). ``take(all_open=True)``
closes every open chunk: the worker does that once per linger interval, so a
session's events of one interval become one record unless a bound splits them.
Ready records keep the order in which they were closed, so the records of one key
are in event order.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["PackedRecord", "Packer"]


class PackedRecord(NamedTuple):
    key: bytes
    value: bytes
    events: int  # how many events the record holds


class _Chunk:
    __slots__ = ("nbytes", "parts")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.nbytes = 1  # the "[" (the "]" takes the place of the last ",")


class Packer:
    def __init__(self, max_events: int, max_bytes: int) -> None:
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._open: dict[bytes, _Chunk] = {}
        self._ready: list[PackedRecord] = []
        self.pending = 0  # events in open chunks

    def add(self, key: bytes, event_json: bytes) -> None:
        chunk = self._open.get(key)
        if chunk is None:
            chunk = self._open[key] = _Chunk()
        elif chunk.nbytes + len(event_json) + 1 > self._max_bytes:
            self._close(key, chunk)
            chunk = self._open[key] = _Chunk()
        chunk.parts.append(event_json)
        chunk.nbytes += len(event_json) + 1
        self.pending += 1
        if len(chunk.parts) >= self._max_events:
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
        self.pending -= len(chunk.parts)
        self._ready.append(
            PackedRecord(key, b"[" + b",".join(chunk.parts) + b"]", len(chunk.parts))
        )
