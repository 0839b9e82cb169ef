"""One backoff for every retry loop: a delay schedule and waits that a stop event ends.

:class:`Backoff` is the schedule: ``initial_s`` after the first failure, doubled after
each further one, never more than ``max_s``; with ``jitter`` the delay is drawn
uniformly from ``[0, that ceiling]`` ("full jitter", which spreads the retries of many
clients that failed together). A loop keeps one instance, asks :meth:`Backoff.next_s`
after each failure and calls :meth:`Backoff.reset` once things work again; a loop that
keeps its own count (a delivery scheduled on a heap) asks :meth:`Backoff.delay_s`.

:func:`sleep` (a thread, ``threading.Event``) and :func:`sleep_async` (an asyncio task,
``asyncio.Event``) wait for a delay and return early, with True, as soon as the stop
event is set: a service asked to stop never sits out the rest of a retry delay.

Why not tenacity (the kept retry library, evaluated first): it fits the simple shape
"call ``f`` until it works", and has both a sync and an asyncio controller, but

- after a failed attempt it checks its stop condition *before* sleeping, never after:
  a stop event set during the sleep (``sleep_using_event`` for threads, a custom
  coroutine for asyncio) is seen only after one more attempt, so a stopping sink would
  still start a Kafka client or insert once more. Working around it means a sleep
  function that raises, caught at every call site;
- most loops here are not "call until it works": the Kafka followers reconnect for as
  long as the service runs and start the schedule over once they are caught up again,
  the sink pauses its consumer before the first wait and takes a server's
  ``retry_after_s`` as a floor, ``start_with_retry`` explains refused credentials
  instead of retrying, and the webhook dispatcher only needs the delay (its retries wait
  on a heap, not in a sleep), which tenacity computes only from a ``RetryCallState``;
- it would be a dependency of ``agentwatch-schemas``, which every agent installs with
  the producer, for some forty lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import Callable
from typing import Final

__all__ = ["Backoff", "sleep", "sleep_async"]

#: 2**_MAX_EXPONENT times any useful initial delay is past any cap (and floats stay finite)
_MAX_EXPONENT: Final = 60


class Backoff:
    """Exponential backoff: ``initial_s``, doubled per failure, capped at ``max_s``;
    ``jitter``: a uniform draw from ``[0, delay]`` (``rng`` gives floats in ``[0, 1)``).

    ValueError unless ``0 <= initial_s <= max_s``."""

    __slots__ = ("failures", "initial_s", "jitter", "max_s", "rng")

    def __init__(
        self,
        initial_s: float,
        max_s: float,
        *,
        jitter: bool = False,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not 0 <= initial_s <= max_s:
            raise ValueError(
                f"backoff: need 0 <= initial_s <= max_s (got initial_s={initial_s}, "
                f"max_s={max_s})"
            )
        self.initial_s = initial_s
        self.max_s = max_s
        self.jitter = jitter
        self.rng = rng
        #: failures since the last :meth:`reset`
        self.failures = 0

    def ceiling_s(self, failures: int) -> float:
        """The delay after ``failures`` consecutive failures (>= 1) before any jitter."""
        exponent = min(max(failures - 1, 0), _MAX_EXPONENT)
        return min(self.max_s, self.initial_s * 2.0**exponent)

    def delay_s(self, failures: int) -> float:
        """The delay after ``failures`` consecutive failures (>= 1): the ceiling, or a
        draw below it with jitter."""
        ceiling_s = self.ceiling_s(failures)
        return self.rng() * ceiling_s if self.jitter else ceiling_s

    def next_s(self, *, at_least_s: float = 0.0) -> float:
        """Count one more failure and return the delay to wait before the next attempt;
        ``at_least_s`` (a server's ``Retry-After``) raises it, still within ``max_s``."""
        self.failures += 1
        return min(max(self.delay_s(self.failures), at_least_s), self.max_s)

    def reset(self) -> None:
        """It worked: the next failure waits ``initial_s`` again."""
        self.failures = 0


def sleep(delay_s: float, stop: threading.Event) -> bool:
    """Wait ``delay_s`` seconds in this thread; True, at once, when ``stop`` is (or
    becomes) set."""
    return stop.wait(max(0.0, delay_s))


async def sleep_async(delay_s: float, stop: asyncio.Event) -> bool:
    """Wait ``delay_s`` seconds in this task; True, at once, when ``stop`` is (or
    becomes) set."""
    if not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, delay_s))
    return stop.is_set()
