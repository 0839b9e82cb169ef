"""Packed sessions kept in a file instead of the process's memory (a worker's engines).

A quiet session's packed state (``Engine._pack``, ~0.8 KB) is most of what an open
session costs a worker (bench_worker_memory), and most open sessions of a deployment are
quiet. With a :class:`SpillFile` the engine keeps only a handle (an int) per packed
session and the bytes go to the file: the kernel's page cache holds them (not the
worker's resident memory; under memory pressure they go to disk and come back on the next
read). They are read back when the session has an event, a due timer or a checkpoint.

The file is a cache of what the changelog already saves: it is unlinked as soon as it is
created (nothing is left behind, whatever happens to the process), never read after a
restart, and the state it holds is the same whether a session is spilled or kept in
memory (the engine's results do not change).

Space: each put appends; a session read back for good (``take``) or dropped leaves its
bytes as garbage, and when the garbage passes both the live bytes and
``compact_min_bytes`` the engine has the live values copied to a new file
(:meth:`SpillFile.compact`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Final

__all__ = ["SpillFile"]

_LENGTH_BITS: Final = 24  # a handle: the value's position << 24 | its length
_LENGTH_MASK: Final = (1 << _LENGTH_BITS) - 1
#: the largest value a handle can give back (16 MiB - 1)
VALUE_MAX_BYTES: Final = _LENGTH_MASK
#: garbage below this is never compacted (a small deployment's file stays as it is)
COMPACT_MIN_BYTES: Final = 64 * 1024 * 1024


class SpillFile:
    """Values appended to an unlinked file, each read back by its handle."""

    def __init__(self, directory: Path, name: str,
                 compact_min_bytes: int = COMPACT_MIN_BYTES,
                 max_value_bytes: int = VALUE_MAX_BYTES) -> None:
        self._fd = -1  # (what close sees if the checks below refuse)
        if not 0 < max_value_bytes <= VALUE_MAX_BYTES:
            raise ValueError(f"max_value_bytes must be 1..{VALUE_MAX_BYTES}")
        directory.mkdir(parents=True, exist_ok=True)
        self._directory = directory
        self._name = name
        self._fd = self._open()
        self._end = 0
        self.live_bytes = 0
        self.garbage_bytes = 0
        self.compact_min_bytes = compact_min_bytes
        #: a longer value is refused by put (the caller keeps it)
        self.max_value_bytes = max_value_bytes

    def _open(self) -> int:
        fd, path = tempfile.mkstemp(prefix=f"{self._name}-", suffix=".spill",
                                    dir=self._directory)
        Path(path).unlink()
        return fd

    def put(self, value: bytes) -> int:
        """Append ``value``; its handle."""
        n = len(value)
        if n > self.max_value_bytes:
            raise ValueError(f"a spilled value of {n} bytes (at most {self.max_value_bytes})")
        at = self._end
        written = os.pwrite(self._fd, value, at)
        if written != n:  # a full disk writes short (or raises)
            raise OSError(f"spill file: wrote {written} of {n} bytes")
        self._end = at + n
        self.live_bytes += n
        return at << _LENGTH_BITS | n

    def read(self, handle: int, size: int | None = None) -> bytes:
        """The value of ``handle`` (its first ``size`` bytes when given)."""
        n = handle & _LENGTH_MASK
        value = os.pread(self._fd, n if size is None else min(size, n),
                         handle >> _LENGTH_BITS)
        if size is None and len(value) != n:
            raise OSError(f"spill file: read {len(value)} of {n} bytes")
        return value

    def free(self, handle: int) -> None:
        """``handle``'s value is no longer needed (its bytes are garbage)."""
        n = handle & _LENGTH_MASK
        self.live_bytes -= n
        self.garbage_bytes += n

    def take(self, handle: int) -> bytes:
        """:meth:`read` then :meth:`free`."""
        value = self.read(handle)
        self.free(handle)
        return value

    @property
    def wants_compaction(self) -> bool:
        return self.garbage_bytes > max(self.live_bytes, self.compact_min_bytes)

    def compact(self, handles: list[int]) -> list[int]:
        """Copy the values of ``handles`` (every live one) to a new file, one at a time;
        their new handles, in the same order. The old file's space is freed."""
        old_fd, new_fd = self._fd, self._open()
        try:
            moved = _copy(old_fd, new_fd, handles)
        except BaseException:
            os.close(new_fd)
            raise
        os.close(old_fd)
        self._fd = new_fd
        self._end = self.live_bytes = sum(h & _LENGTH_MASK for h in moved)
        self.garbage_bytes = 0
        return moved

    @property
    def file_bytes(self) -> int:
        return self._end

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()


def _copy(old_fd: int, new_fd: int, handles: list[int]) -> list[int]:
    moved: list[int] = []
    end = 0
    for handle in handles:
        n = handle & _LENGTH_MASK
        value = os.pread(old_fd, n, handle >> _LENGTH_BITS)
        if len(value) != n or os.pwrite(new_fd, value, end) != n:
            raise OSError(f"spill file: a value of {n} bytes copied short")
        moved.append(end << _LENGTH_BITS | n)
        end += n
    return moved
