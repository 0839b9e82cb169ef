"""An outbox on disk: records not yet confirmed delivered survive an agent restart.

``DiskSpool`` keeps every record in append-only segment files inside one
directory, and a small ``ack`` file with the sequence number of the first record
not yet acknowledged. A process that opens the same directory later (after a
clean exit, a crash or a SIGKILL) finds the unacknowledged records and sends them
again, in their original order.

Durability: each ``append`` is flushed to the operating system before it
returns, so the records survive the death of the process. They are *not* fsynced
unless ``fsync=True``: a power loss or kernel crash may lose the last seconds,
or leave a torn tail, which the next open cuts off.

On-disk layout::

    lock                          flock'ed by the owning process; holds its pid
    ack                           decimal seq of the first unacknowledged record
    00000000000000000000.seg      records from seq 0, appended in order
    00000000000000001234.seg      records from seq 1234 (the name is its first seq)

    entry = header (16 bytes, little-endian: crc32, key length, value length,
            events) + key + value; the crc covers the last three header fields,
            the key and the value.

Only the last segment is ever written. A segment is deleted once every record in
it is acknowledged. One thread uses a spool: there is no locking inside.

Partitions: an entry keeps a record's key, value and event count, not the partition
count a partition batch was packed for. Its key (``~batch:<p>``) names the partition;
records read back from disk come out with ``partitions=0`` ("not known"), and the
sender checks them against the topic's partition count before sending: a batch whose
events all still belong to ``p`` goes as it is, one whose sessions moved (the topic
grew while the records waited) is split into one record per partition, in order. A
one-session record (key ``<tenant_id>/<session_id>``: written while the count was not
known, or by a producer from before partition batches: the format is unchanged) gets
the batch key of its session's partition. Records still in memory keep their count.
"""

from __future__ import annotations

import bisect
import logging
import os
import struct
import sys
import zlib
from collections import deque
from io import BufferedReader, BufferedWriter
from pathlib import Path
from typing import Final, NamedTuple

from agentwatch.producer.packing import PackedRecord
from agentwatch.schemas import ConfigError

if sys.platform != "win32":  # no fcntl on Windows: the spool is not locked there
    import fcntl

__all__ = ["DiskSpool"]

logger: Final = logging.getLogger("agentwatch.producer")

_HEADER: Final = struct.Struct("<IIII")  # crc32, key length, value length, events
_LENGTHS: Final = struct.Struct("<III")  # the part of the header the crc covers
_SUFFIX: Final = ".seg"
# Recently appended records are also kept in memory (up to this many bytes), so
# that sending them while Kafka keeps up never reads them back from disk.
_CACHE_BYTES = 8 << 20


class _Entry(NamedTuple):
    seq: int
    segment: int  # first seq of the segment file that holds it
    end: int  # offset just past the entry in that file
    size: int  # header + key + value, in bytes
    record: PackedRecord


def _encode(record: PackedRecord) -> bytes:
    lengths = _LENGTHS.pack(len(record.key), len(record.value), record.events)
    crc = zlib.crc32(record.value, zlib.crc32(record.key, zlib.crc32(lengths)))
    return b"".join((crc.to_bytes(4, "little"), lengths, record.key, record.value))


def _check(data: memoryview, offset: int) -> tuple[int, int] | None:
    """``(events, end offset)`` of the entry at ``offset``, or None if torn or corrupt."""
    if offset + _HEADER.size > len(data):
        return None
    crc, key_len, value_len, events = _HEADER.unpack_from(data, offset)
    end = offset + _HEADER.size + key_len + value_len
    if end > len(data) or zlib.crc32(data[offset + 4 : end]) != crc:
        return None
    return events, end


class DiskSpool:
    """An outbox in ``directory``, bounded by ``max_bytes`` of unacknowledged entries.

    ``recovered_records`` / ``recovered_events`` say what was found unsent at
    open; ``lost_records`` counts unacknowledged records that were unreadable
    (a corrupt entry in an earlier segment makes the rest of that segment lost).
    A batch is never split across segments, so one may exceed ``segment_bytes``.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 16 << 20,
        fsync: bool = False,
    ) -> None:
        if max_bytes <= 0 or segment_bytes <= 0:
            raise ConfigError(f"spool_dir {directory}: max_bytes and segment_bytes must be > 0")
        self._dir = Path(directory)
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._fsync = fsync
        self._lock_fd: int | None = _lock(self._dir)
        self._flight: deque[_Entry] = deque()
        self._replay: deque[_Entry] = deque()  # rewound: unsent, before the disk cursor
        self._cache: deque[_Entry] = deque()  # the newest unread records, contiguous
        self._cache_bytes = 0
        self._disk_unread = 0  # unsent records at or after the disk cursor
        self._events = 0
        self._held_bytes = 0  # entries not yet acknowledged, in bytes
        self._segments: list[int] = []  # first seq of each segment file, ascending
        self._limits: dict[int, int] = {}  # segment -> bytes of good entries in it
        self._reader: BufferedReader | None = None
        self._reader_segment = -1
        self._writer: BufferedWriter  # opened by _recover, on the last segment
        self._write_start = self._write_size = self._next_seq = 0
        self._cursor = (0, 0, 0)  # disk position of the first unread: segment, offset, seq
        self.lost_records = 0
        try:
            self._acked = self._saved_ack = self._read_ack()
            self._recover()
        except BaseException:
            self._unlock()
            raise
        self.recovered_records = self._disk_unread
        self.recovered_events = self._events

    @property
    def events(self) -> int:
        return self._events

    @property
    def in_flight(self) -> int:
        return len(self._flight)

    @property
    def unsent(self) -> int:
        return len(self._replay) + self._disk_unread

    def room_events(self, wanted: int) -> int:
        return wanted if self._held_bytes < self._max_bytes else 0

    def append(self, records: list[PackedRecord]) -> None:
        if not records:
            return
        if self._write_size >= self._segment_bytes:
            self._rotate()
        blob = bytearray()
        start, offset = self._write_start, self._write_size
        for record in records:
            data = _encode(record)
            blob += data
            offset += len(data)
            self._cache.append(_Entry(self._next_seq, start, offset, len(data), record))
            self._next_seq += 1
        self._writer.write(blob)
        self._writer.flush()  # from here on, a SIGKILL loses nothing of this batch
        if self._fsync:
            os.fsync(self._writer.fileno())
        self._write_size = self._limits[start] = offset
        self._disk_unread += len(records)
        self._held_bytes += len(blob)
        self._events += sum(r.events for r in records)
        self._cache_bytes += len(blob)
        while self._cache_bytes > _CACHE_BYTES:
            self._cache_bytes -= self._cache.popleft().size

    def take_unsent(self, max_records: int) -> list[PackedRecord]:
        taken: list[_Entry] = []
        while self._replay and len(taken) < max_records:
            taken.append(self._replay.popleft())
        while self._disk_unread and len(taken) < max_records:
            taken.append(self._next_unread())
        self._flight.extend(taken)
        return [entry.record for entry in taken]

    def acknowledge(self, count: int) -> int:
        flight, events = self._flight, 0
        if count <= 0 or not flight:
            return 0
        for _ in range(min(count, len(flight))):
            entry = flight.popleft()
            events += entry.record.events
            self._held_bytes -= entry.size
        self._events -= events
        self._acked = entry.seq + 1
        self._save_ack()
        self._drop_acked_segments()
        return events

    def rewind(self) -> None:
        self._flight.extend(self._replay)
        self._flight, self._replay = deque(), self._flight

    def close(self) -> None:
        if self._lock_fd is None:
            return
        try:
            self._save_ack()
            if self._fsync:
                os.fsync(self._writer.fileno())
        finally:
            self._writer.close()
            if self._reader is not None:
                self._reader.close()
            self._unlock()

    # -- on disk ------------------------------------------------------------------

    def _path(self, segment: int) -> Path:
        return self._dir / f"{segment:020d}{_SUFFIX}"

    def _read_ack(self) -> int:
        try:
            return int((self._dir / "ack").read_text())
        except FileNotFoundError:
            return 0
        except ValueError:
            logger.warning("spool %s: unreadable ack file, re-sending every record", self._dir)
            return 0

    def _save_ack(self) -> None:
        """Write then rename: a crash leaves the old position or the new, never half."""
        if self._acked == self._saved_ack:
            return
        tmp = self._dir / "ack.tmp"
        with tmp.open("w") as file:
            file.write(f"{self._acked}\n")
            if self._fsync:
                file.flush()
                os.fsync(file.fileno())
        tmp.replace(self._dir / "ack")
        self._saved_ack = self._acked

    def _recover(self) -> None:
        """Find the unacknowledged entries; cut a torn tail off the last segment."""
        names = (p.name.removesuffix(_SUFFIX) for p in self._dir.glob("*" + _SUFFIX))
        starts = sorted(int(name) for name in names if name.isdigit())
        cursor: tuple[int, int, int] | None = None  # segment, offset, seq of the first unsent
        next_seq = self._acked
        for i, start in enumerate(starts):
            following = starts[i + 1] if i + 1 < len(starts) else None
            if following is not None and following <= self._acked:
                self._path(start).unlink()  # every record in it was acknowledged
                continue
            data = memoryview(self._path(start).read_bytes())
            seq, offset = start, 0
            while (found := _check(data, offset)) is not None:
                if seq >= self._acked:
                    cursor = cursor or (start, offset, seq)
                    self._disk_unread += 1
                    self._events += found[0]
                    self._held_bytes += found[1] - offset
                seq, offset = seq + 1, found[1]
            if offset < len(data) and following is None:
                with self._path(start).open("r+b") as file:
                    file.truncate(offset)
                logger.warning(
                    "spool %s: cut %d bytes of torn or corrupt tail off segment %d",
                    self._dir, len(data) - offset, start,
                )  # fmt: skip
            elif offset < len(data) and following is not None:
                lost = max(0, following - max(seq, self._acked))
                self.lost_records += lost
                logger.warning(
                    "spool %s: corrupt entry in segment %d, %d unacknowledged records lost",
                    self._dir, start, lost,
                )  # fmt: skip
            self._segments.append(start)
            self._limits[start] = offset
            next_seq = seq
        if not self._segments or next_seq < self._acked:
            next_seq = self._acked  # never number new records below the ack position
            self._segments.append(next_seq)
            self._limits[next_seq] = 0
        self._write_start = self._segments[-1]
        self._write_size = self._limits[self._write_start]
        self._writer = self._path(self._write_start).open("ab")
        self._next_seq = next_seq
        self._cursor = cursor or (self._write_start, self._write_size, next_seq)
        self._drop_acked_segments()

    def _rotate(self) -> None:
        self._writer.close()
        self._write_start, self._write_size = self._next_seq, 0
        self._segments.append(self._write_start)
        self._limits[self._write_start] = 0
        self._writer = self._path(self._write_start).open("ab")

    def _next_unread(self) -> _Entry:
        """The entry at the disk cursor, from the cache when it holds it; cursor moves past it."""
        if len(self._cache) == self._disk_unread:  # the cache is a suffix of the unread
            entry = self._cache.popleft()
            self._cache_bytes -= entry.size
        else:
            entry = self._read_entry()
        self._cursor = (entry.segment, entry.end, entry.seq + 1)
        self._disk_unread -= 1
        return entry

    def _read_entry(self) -> _Entry:
        segment, offset, seq = self._cursor
        while offset >= self._limits[segment]:  # past the good entries: the next segment
            segment = self._segments[bisect.bisect_right(self._segments, segment)]
            offset, seq = 0, segment
        if self._reader is None or self._reader_segment != segment:
            if self._reader is not None:
                self._reader.close()
            self._reader, self._reader_segment = self._path(segment).open("rb"), segment
        self._reader.seek(offset)
        _crc, key_len, value_len, events = _HEADER.unpack(self._reader.read(_HEADER.size))
        key, value = self._reader.read(key_len), self._reader.read(value_len)
        if len(key) != key_len or len(value) != value_len:
            raise OSError(f"spool segment {self._path(segment)} shrank while open")
        size = _HEADER.size + key_len + value_len
        return _Entry(seq, segment, offset + size, size, PackedRecord(key, value, events))

    def _drop_acked_segments(self) -> None:
        """Delete the segments whose records are all acknowledged (never the last one)."""
        segments = self._segments
        while len(segments) > 1 and segments[1] <= self._acked:
            start = segments.pop(0)
            del self._limits[start]
            if self._reader is not None and self._reader_segment == start:
                self._reader.close()
                self._reader = None
            if self._cursor[0] == start:  # the cursor was at its end
                self._cursor = (segments[0], 0, segments[0])
            self._path(start).unlink(missing_ok=True)

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None


def _lock(directory: Path) -> int:
    """Create ``directory`` and lock it for this spool; ConfigError names why not."""
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"spool_dir {directory} exists and is not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(f"spool_dir {directory} cannot be created or written: {exc}") from exc
    if not os.access(directory, os.W_OK):
        os.close(fd)
        raise ConfigError(f"spool_dir {directory} is not writable")
    if sys.platform != "win32":
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if isinstance(exc, BlockingIOError):
                raise ConfigError(
                    f"spool_dir {directory} is in use by another process (pid {holder})"
                ) from exc
            raise ConfigError(f"spool_dir {directory} cannot be locked: {exc}") from exc
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd
