"""The bounded hand-off between ``emit()`` and the background thread, and quiet logging.

``put`` never blocks: when the queue is full the new item is dropped and counted
(the oldest are kept, so what is delivered of a session is a gap-free prefix of
the overflow). The worker is woken when the queue holds ``wake_at`` items;
otherwise it wakes on its linger timer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar

__all__ = ["BoundedQueue", "RateLimitedLog", "logger"]

logger: Final = logging.getLogger("agentwatch.producer")

T = TypeVar("T")

_NS_PER_S: Final = 1_000_000_000


class BoundedQueue(Generic[T]):
    """A bounded FIFO for many producer threads and one consumer thread."""

    __slots__ = ("_items", "_lock", "_maxsize", "_wake", "_wake_at", "accepted", "dropped")

    def __init__(self, maxsize: int, wake: threading.Event, wake_at: int) -> None:
        self._items: deque[T] = deque()
        self._lock = threading.Lock()
        self._maxsize = maxsize
        self._wake = wake
        self._wake_at = wake_at
        self.accepted = 0  # items ever put (also the sequence number of the last one)
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Enqueue ``item``; False (and counted as dropped) when the queue is full."""
        with self._lock:
            items = self._items
            if len(items) >= self._maxsize:
                self.dropped += 1
                return False
            items.append(item)
            self.accepted += 1
            depth = len(items)
        if depth >= self._wake_at and not self._wake.is_set():
            self._wake.set()
        return True

    def drop(self, count: int = 1) -> None:
        """Count items refused before reaching the queue (e.g. emit after close)."""
        with self._lock:
            self.dropped += count

    def drain(self, max_items: int | None = None) -> tuple[list[T], int]:
        """Take what is queued, oldest first, at most ``max_items`` (default: everything):
        ``(items, sequence number of the last item taken)``."""
        with self._lock:
            if max_items is None or max_items >= len(self._items):
                items, self._items = self._items, deque()
                return list(items), self.accepted
            popleft = self._items.popleft
            taken = [popleft() for _ in range(max(0, max_items))]
            return taken, self.accepted - len(self._items)

    def __len__(self) -> int:
        return len(self._items)


class RateLimitedLog:
    """Log a warning per topic at most once per interval, saying how many were held back."""

    def __init__(
        self,
        interval_s: float = 10.0,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        log: logging.Logger = logger,
    ) -> None:
        self._interval_ns = int(interval_s * _NS_PER_S)
        self._clock_ns = clock_ns
        self._log = log
        self._lock = threading.Lock()
        self._last: dict[str, int] = {}
        self._held: dict[str, int] = {}

    def warn_limited(self, topic: str, msg: str, *args: Any, exc_info: bool = False) -> bool:
        """Log ``msg % args`` unless ``topic`` was logged less than an interval ago."""
        now = self._clock_ns()
        last = self._last.get(topic)
        if last is not None and now - last < self._interval_ns:
            self._held[topic] = self._held.get(topic, 0) + 1  # racy count: a hint only
            return False
        with self._lock:
            last = self._last.get(topic)
            if last is not None and now - last < self._interval_ns:
                self._held[topic] = self._held.get(topic, 0) + 1
                return False
            self._last[topic] = now
            held = self._held.pop(topic, 0)
        if held:
            msg += " (%d similar messages suppressed)"
            args = (*args, held)
        self._log.warning(msg, *args, exc_info=exc_info)
        return True
