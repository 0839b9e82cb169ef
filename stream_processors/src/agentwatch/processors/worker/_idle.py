"""When an input partition is idle, as the broker confirmed it (pure; the worker's
``announce_idle`` and ``sample_fetches`` feed it the consumer's observations).

An idle partition stops holding back the agent/tenant stage up to an event time ``t``
(DESIGN.md, "Agent- and tenant-scoped windows"). Calling a partition idle too early lets
the other partitions' events run ahead of its own late ones: the fault matrix's misses of
2026-12-04 (README, "What survives what") came from marks issued while producers were
late, and from the first fetch answer after an outage, judged before the gap was seen.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

__all__ = ["FETCH_GAP_S", "QUIET_AFTER_GAP_S", "FetchGaps", "PartitionView", "idle_until_us"]

#: no fetch answer for a partition for this long: the broker was away (stopped, frozen,
#: unreachable) or the consumer was paused
FETCH_GAP_S = 2.0
#: after such a gap a partition is called idle only once it has stayed quiet this long
#: since fetches came back: producers send what they buffered meanwhile after their next
#: retry, and the producer library retries at most 5 s apart (x1.2 jitter)
QUIET_AFTER_GAP_S = 10.0


class FetchGaps:
    """The last fetch answer seen per partition, and since when answers are back after a
    gap. Both the 0.5 s sampler and the idle check note every answer they look at: with
    only the sampler, the first answer after an outage could be judged (and the partition
    called idle) before the sampler had seen the gap."""

    def __init__(self) -> None:
        self._seen: dict[Hashable, tuple[float, float | None]] = {}

    def note(self, partition: Hashable, fetched_s: float | None) -> float | None:
        """Note ``fetched_s`` (the partition's last fetch answer, wall s; None: none yet)
        and return since when answers are back after a gap (None: no gap seen)."""
        seen, back = self._seen.get(partition, (None, None))
        if fetched_s is None:
            return back
        if seen is not None and fetched_s - seen > FETCH_GAP_S:
            back = fetched_s
        self._seen[partition] = (fetched_s, back)
        return back


@dataclass(frozen=True, slots=True)
class PartitionView:
    """What the worker knows of one input partition when it judges it."""

    caught_up: bool  # nothing between its next offset and the highwater
    quiet_s: float  # since its last record (or the assignment), monotonic s
    fetched_s: float | None  # the broker's last fetch answer, wall s
    back_s: float | None  # since when answers are back after a gap (FetchGaps.note)


def idle_until_us(view: PartitionView, *, wall_s: float, idle_after_s: float) -> int | None:
    """The event time (us) up to which the partition holds no more events, if it is idle
    now; None if it is not. Idle: caught up, quiet for ``idle_after_s``, with a fetch
    answer that came after that whole quiet period (when the broker is away nothing is
    confirmed, so nothing turns idle, whatever the wall clock says), and, after a gap in
    answers, quiet for QUIET_AFTER_GAP_S since they came back. ``t`` is that answer's time
    minus ``idle_after_s`` (event time runs with the wall clock: WorkerSettings)."""
    fetched_s = view.fetched_s
    if not view.caught_up or view.quiet_s < idle_after_s or fetched_s is None:
        return None
    if fetched_s - (wall_s - view.quiet_s) < idle_after_s:  # answered before the quiet ended
        return None
    if view.back_s is not None and fetched_s - view.back_s < QUIET_AFTER_GAP_S:
        return None
    return int((fetched_s - idle_after_s) * 1_000_000)
