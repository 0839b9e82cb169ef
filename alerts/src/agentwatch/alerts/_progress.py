"""Which alerts of one partition are done, and what to commit (pure, no I/O).

The dispatcher finishes alerts out of order (endpoints differ in speed, retries take
time), while Kafka keeps one committed offset per partition. :class:`PartitionProgress`
commits the first offset not yet done, and its **metadata** lists the endpoints that
are finished (delivered or dead-lettered) with alerts past that offset::

    agentwatch-webhooks/1 3:1f2e3d4c,9a8b7c6d;7:1f2e3d4c

(offset minus the committed offset, then 8-hex tags of endpoint names). After a restart
or a rebalance, the next owner reads the alerts from the committed offset again and
skips the endpoints the metadata names, so a healthy endpoint does not get duplicates
while a dead one holds the offset back. Kafka limits commit metadata (4096 bytes by
default, ``offset.metadata.max.bytes``): past :data:`MAX_METADATA_CHARS` the entries of
the latest offsets are left out, and those alerts may reach their endpoints twice (with
the same ``X-Agentwatch-Delivery`` id, for receivers to deduplicate).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Final

__all__ = [
    "MAX_METADATA_CHARS",
    "METADATA_PREFIX",
    "PartitionProgress",
    "endpoint_tag",
    "parse_progress",
]

METADATA_PREFIX: Final = "agentwatch-webhooks/1 "
MAX_METADATA_CHARS: Final = 3000


def endpoint_tag(name: str) -> str:
    """A short, stable tag of an endpoint name for commit metadata."""
    return hashlib.sha256(name.encode()).hexdigest()[:8]


def parse_progress(metadata: str | None, committed: int) -> dict[int, frozenset[str]]:
    """Commit metadata -> {offset: endpoint tags that already have that alert}.
    Anything unreadable (another writer, an older format) reads as nothing done."""
    if not metadata or not metadata.startswith(METADATA_PREFIX):
        return {}
    out: dict[int, frozenset[str]] = {}
    for entry in metadata[len(METADATA_PREFIX) :].split(";"):
        delta, sep, tags = entry.partition(":")
        if not sep or not delta.isdigit():
            return {}
        out[committed + int(delta)] = frozenset(t for t in tags.split(",") if t)
    return out


class PartitionProgress:
    """Offsets read from one partition and not yet committed."""

    def __init__(
        self, committed: int, done_before: Mapping[int, Iterable[str]] | None = None
    ) -> None:
        self.committed = committed
        """The offset to commit: every alert before it is done."""
        self._carried = {o: frozenset(t) for o, t in (done_before or {}).items() if o >= committed}
        self._pending: deque[int] = deque()
        self._done: set[int] = set()
        self._finished_by: dict[int, set[str]] = {}
        self._next = committed

    @property
    def next_offset(self) -> int:
        """The offset after the last one read."""
        return self._next

    @property
    def open(self) -> int:
        """Alerts read and not done."""
        return len(self._pending) - len(self._done)

    def read(self, offset: int) -> frozenset[str]:
        """Record that ``offset`` was read; returns the endpoint tags that already have
        it (from the metadata of the commit this run started from)."""
        if offset < self._next:
            raise ValueError(f"offset {offset} read twice (next expected {self._next})")
        if not self._pending:
            self.committed = offset  # offsets before it are gone (retention, compaction)
        self._next = offset + 1
        self._pending.append(offset)
        carried = self._carried.pop(offset, frozenset())
        self._finished_by[offset] = set(carried)
        return carried

    def finished(self, offset: int, tag: str) -> None:
        """One endpoint is finished with the alert at ``offset``: delivered, or
        dead-lettered (either way it must not get it again)."""
        tags = self._finished_by.get(offset)
        if tags is not None:
            tags.add(tag)

    def done(self, offset: int) -> None:
        """Every endpoint has finished with the alert at ``offset``."""
        if offset not in self._finished_by:
            return
        self._done.add(offset)
        pending = self._pending
        while pending and pending[0] in self._done:
            finished = pending.popleft()
            self._done.discard(finished)
            del self._finished_by[finished]
            self.committed = finished + 1

    def metadata(self) -> str:
        """The commit metadata: endpoints that have alerts past :attr:`committed`."""
        parts: list[str] = []
        size = len(METADATA_PREFIX)
        for offset in self._pending:
            tags = self._finished_by.get(offset)
            if not tags:
                continue
            part = f"{offset - self.committed}:{','.join(sorted(tags))}"
            if size + len(part) + 1 > MAX_METADATA_CHARS:
                break
            parts.append(part)
            size += len(part) + 1
        return METADATA_PREFIX + ";".join(parts) if parts else ""
