"""Event-time sliding windows over integer buckets.

Time is integer microseconds. A window of ``window_us`` slides in steps of
``step_us``: an event at ``ts_us`` falls in bucket ``ts_us // step_us`` and the
window *at* time ``t`` holds the buckets ``(t // step_us - n, t // step_us]``
where ``n = window_us // step_us``. With ``step_us = 1`` this is the exact
window ``(t - window_us, t]``; the default step of one second bounds memory to
``n + d`` buckets per key whatever the event rate (``d`` = disorder in steps).

Each bucket carries two integer channels ``a`` and ``b`` (cost in nano-USD; or
errors and events), so sums are exact: no float drift, no fudge factors.

Disorder: the key's high-water mark ``max_ts_us`` is the largest event time
seen. An event with ``ts_us >= max_ts_us - disorder_us`` is accepted wherever it
falls (in place, never counted twice); an older one is refused (late) and the
caller counts it. Because buckets up to ``disorder`` behind the window start are
retained, the sums of every window that a late event changed can be recomputed
exactly (:meth:`SlidingWindow.windows_from`), so whether a threshold was crossed
does not depend on arrival order within the disorder bound.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Final

__all__ = ["ADDED", "LATE", "REORDERED", "SlidingWindow"]

#: :meth:`SlidingWindow.add` results
ADDED: Final = 0  # at or after the high-water mark: the current window changed
REORDERED: Final = 1  # accepted out of order: windows from its bucket on changed
LATE: Final = 2  # older than max_ts_us - disorder_us: refused

# a bucket is a small mutable list: [bucket_index, a, b, max_ts_us]
_B: Final = 0
_A: Final = 1
_C: Final = 2
_T: Final = 3

Predicate = Callable[[int, int], bool]


class SlidingWindow:
    """Two integer sums over a sliding event-time window, bounded memory, exact."""

    __slots__ = ("_d", "_n", "_old", "_step_us", "_win", "disorder_us", "max_ts_us", "sum_a",
                 "sum_b")

    def __init__(self, window_us: int, step_us: int, disorder_us: int) -> None:
        if step_us <= 0 or window_us <= 0 or window_us % step_us:
            raise ValueError("window_us must be a positive multiple of step_us")
        self._step_us = step_us
        self._n = window_us // step_us
        self._d = -(-disorder_us // step_us)  # ceil: every accepted late event lands in _win
        if self._d >= self._n:
            raise ValueError("disorder must be shorter than the window")
        self.disorder_us = disorder_us
        # lists, not deques: an empty deque takes 624 bytes, and a window holds few buckets
        self._win: list[list[int]] = []  # buckets in (head - n, head], ascending
        self._old: list[list[int]] = []  # buckets in (head - n - d, head - n], ascending
        self.max_ts_us = -(1 << 62)
        self.sum_a = 0
        self.sum_b = 0

    # -- reading ---------------------------------------------------------------------------
    @property
    def head(self) -> int:
        """Bucket index of the high-water mark."""
        return self.max_ts_us // self._step_us

    @property
    def step_us(self) -> int:
        return self._step_us

    @property
    def window_buckets(self) -> int:
        return self._n

    def is_empty(self) -> bool:
        return not self._win

    def empty_at_us(self) -> int:
        """Event time from which the window holds nothing (given no new events)."""
        return (self.head + self._n) * self._step_us

    def buckets(self) -> list[tuple[int, int, int, int]]:
        """Retained buckets (older ones first): (index, a, b, max_ts_us). For tests/snapshots."""
        return [(b[_B], b[_A], b[_C], b[_T]) for b in (*self._old, *self._win)]

    def dump(self) -> list[int]:
        """``[max_ts_us, number of old buckets, then 4 ints a bucket, old ones first]``, a
        bucket as ``(head - index, a, b, max_ts_us - its max_ts_us)``: small numbers (a
        state dump's bytes), not absolute 16-digit µs times."""
        max_ts_us, head = self.max_ts_us, self.head
        out = [max_ts_us, len(self._old)]
        for cell in (*self._old, *self._win):
            out += (head - cell[_B], cell[_A], cell[_C], max_ts_us - cell[_T])
        return out

    def load(self, data: list[Any]) -> None:
        """Replace the contents with :meth:`dump` data (same window, step and disorder), or
        the first format's ``[max_ts_us, old buckets, window buckets]`` (absolute)."""
        self.max_ts_us = max_ts_us = data[0]
        if isinstance(data[1], list):  # the first format
            old, win = data[1], data[2]
            self._old = [old[i:i + 4] for i in range(0, len(old), 4)]
            self._win = [win[i:i + 4] for i in range(0, len(win), 4)]
        else:
            head = self.head
            flat = data[2:]
            if len(flat) % 4 or not 0 <= data[1] <= len(flat) // 4:
                raise ValueError(f"a window in a state dump has {len(flat)} numbers for "
                                 f"{data[1]} old buckets")
            cells = [[head - flat[i], flat[i + 1], flat[i + 2], max_ts_us - flat[i + 3]]
                     for i in range(0, len(flat), 4)]
            self._old = cells[:data[1]]
            self._win = cells[data[1]:]
        self.sum_a = sum(cell[_A] for cell in self._win)
        self.sum_b = sum(cell[_C] for cell in self._win)

    # -- writing ---------------------------------------------------------------------------
    def add(self, ts_us: int, a: int, b: int) -> int:
        """Add ``(a, b)`` at ``ts_us``; returns ADDED, REORDERED or LATE (refused)."""
        bucket = ts_us // self._step_us
        if ts_us >= self.max_ts_us:
            win = self._win
            if win and win[-1][_B] == bucket:
                last = win[-1]
                last[_A] += a
                last[_C] += b
                last[_T] = ts_us
            else:
                self._slide(bucket)
                win.append([bucket, a, b, ts_us])
            self.max_ts_us = ts_us
            self.sum_a += a
            self.sum_b += b
            return ADDED
        if ts_us < self.max_ts_us - self.disorder_us:
            return LATE
        win = self._win
        i = len(win) - 1
        while i >= 0 and win[i][_B] > bucket:
            i -= 1
        if i >= 0 and win[i][_B] == bucket:
            cell = win[i]
            cell[_A] += a
            cell[_C] += b
            cell[_T] = max(cell[_T], ts_us)
        else:
            win.insert(i + 1, [bucket, a, b, ts_us])
        self.sum_a += a
        self.sum_b += b
        return REORDERED

    def _slide(self, bucket: int) -> None:
        """Move the window's end to ``bucket`` (> head): buckets leave, old ones are dropped."""
        win, old = self._win, self._old
        start = bucket - self._n  # buckets <= start leave the window
        k = 0
        while k < len(win) and win[k][_B] <= start:
            cell = win[k]
            self.sum_a -= cell[_A]
            self.sum_b -= cell[_C]
            k += 1
        if k:
            old += win[:k]
            del win[:k]
        floor = start - self._d  # buckets <= floor can no longer matter to a late event
        j = 0
        while j < len(old) and old[j][_B] <= floor:
            j += 1
        if j:
            del old[:j]

    # -- windows other than the current one --------------------------------------------------
    def windows_from(self, ts_us: int) -> Iterator[tuple[int, int, int]]:
        """For each retained bucket ``c`` from the one holding ``ts_us`` up to the head
        (ascending), yield ``(max_ts_us of c, sum_a, sum_b)`` of the window ending at ``c``.
        After a REORDERED add these are exactly the windows the event changed."""
        n = self._n
        bucket = ts_us // self._step_us
        win = [cell for cell in self._win if cell[_B] >= bucket]
        tail_a = sum(cell[_A] for cell in win[1:])
        tail_b = sum(cell[_C] for cell in win[1:])
        old = list(self._old)
        lo = bucket - n  # window ending at c holds old buckets > c - n
        k = 0
        while k < len(old) and old[k][_B] <= lo:
            k += 1
        old_a = sum(cell[_A] for cell in old[k:])
        old_b = sum(cell[_C] for cell in old[k:])
        for j, cell in enumerate(win):
            c = cell[_B]
            if j:
                tail_a -= cell[_A]
                tail_b -= cell[_C]
            while k < len(old) and old[k][_B] <= c - n:
                old_a -= old[k][_A]
                old_b -= old[k][_C]
                k += 1
            yield cell[_T], self.sum_a - tail_a + old_a, self.sum_b - tail_b + old_b

    def changes_after(
        self, end_us: int, sum_a: int, sum_b: int
    ) -> Iterator[tuple[int, int, int]]:
        """From the window ending at ``end_us`` (its sums given), walking event time forward
        to the head: ``(t, sum_a, sum_b)`` at each time the sums change (buckets leave at
        ``(bucket + n) * step``, later buckets join at ``bucket * step``), ascending."""
        n, step = self._n, self._step_us
        c = end_us // step
        cells = [*self._old, *self._win]
        leaving = [cell for cell in cells if c - n < cell[_B] <= c]
        joining = [cell for cell in cells if cell[_B] > c]
        a, b = sum_a, sum_b
        i = j = 0
        head = self.head
        while i < len(leaving) or j < len(joining):
            t = min(leaving[i][_B] + n if i < len(leaving) else 1 << 62,
                    joining[j][_B] if j < len(joining) else 1 << 62)
            if t > head:
                return
            while i < len(leaving) and leaving[i][_B] + n == t:
                a -= leaving[i][_A]
                b -= leaving[i][_C]
                i += 1
            while j < len(joining) and joining[j][_B] == t:
                a += joining[j][_A]
                b += joining[j][_C]
                j += 1
            yield t * step, a, b

    def changes_ahead(self) -> Iterator[tuple[int, int, int]]:
        """Assuming no new events: ``(t, sum_a, sum_b)`` at each event time after the high-water
        mark at which a bucket leaves the window, ascending; the last one is the empty window."""
        a, b = self.sum_a, self.sum_b
        n, step = self._n, self._step_us
        for cell in self._win:
            a -= cell[_A]
            b -= cell[_C]
            yield (cell[_B] + n) * step, a, b

    def first_false_after(
        self, end_us: int, sum_a: int, sum_b: int, holds: Predicate
    ) -> tuple[int, int, int] | None:
        """The window ending at ``end_us`` held (sums given); walking event time forward to
        the head, ``(t, sum_a, sum_b)`` at the first time ``holds`` is false. None if it
        holds all the way to the head."""
        for t, a, b in self.changes_after(end_us, sum_a, sum_b):
            if not holds(a, b):
                return t, a, b
        return None

    def first_false_us(
        self, holds: Predicate, *, until_us: int | None = None
    ) -> tuple[int, int, int] | None:
        """Assuming no new events, ``(t, sum_a, sum_b)`` at the earliest event time ``t`` at
        which ``holds(sum_a, sum_b)`` is false as buckets leave the window. With
        ``until_us``, only times <= until_us count. None: it holds throughout."""
        for t, a, b in self.changes_ahead():
            if until_us is not None and t > until_us:
                return None
            if not holds(a, b):
                return t, a, b
        return None
