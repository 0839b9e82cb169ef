"""What the broker refused of the worker's sends (outputs and changelog writes).

The worker hands records to the producer without waiting for each one's ack, and waits for
all of them at the next checkpoint (``producer.flush()``) before it saves state and commits
offsets. A flush waits; it does not fail: a record the broker refused (the topic's
``max.message.bytes``, a missing ACL, a deleted topic) leaves only an exception on its
future. Unchecked, the checkpoint went on and committed offsets past an alert that never
reached the alerts topic, or past state the changelog does not hold (a restart on another
machine then lost it). :class:`SendFailures` watches every send's future and the
checkpoint asks it, after each flush, before anything is committed.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from agentwatch.schemas import TransportError

__all__ = ["SendFailures", "SendRefusedError"]

_KEPT: Final = 3  # distinct refusals (topic and error) named; the rest are counted


class SendRefusedError(TransportError):
    """The broker refused records the worker sent; nothing after them was committed."""


class SendFailures:
    """Failures of the sends watched since the worker started (they stay: once a record is
    lost, no later checkpoint may commit)."""

    __slots__ = ("count", "first")

    def __init__(self) -> None:
        self.count = 0
        #: "topic: error" -> how many records it refused (the first _KEPT distinct ones)
        self.first: dict[str, int] = {}

    def watch(self, future: Any, topic: str) -> None:
        """Note ``future`` (a send's) if it fails. Cancelled futures (the producer stopped
        with them unsent) are not failures: what they held is read again after a restart."""
        if future.done():
            self._note(future, topic)
        else:
            future.add_done_callback(lambda f: self._note(f, topic))

    def _note(self, future: asyncio.Future[Any], topic: str) -> None:
        if future.cancelled():
            return
        exc = future.exception()  # (retrieved: no "exception was never retrieved" later)
        if exc is None:
            return
        self.count += 1
        what = f"{topic}: {exc}" if type(exc).__name__ in str(exc) else (
            f"{topic}: {type(exc).__name__}: {exc}")
        if what in self.first or len(self.first) < _KEPT:
            self.first[what] = self.first.get(what, 0) + 1

    def check(self) -> None:
        """Raise :class:`SendRefusedError` if any watched send failed."""
        if self.count:
            named = sum(self.first.values())
            more = f"; {self.count - named} more" if self.count > named else ""
            refusals = "; ".join(f"{n} to {what}" for what, n in self.first.items())
            raise SendRefusedError(
                f"the broker refused {self.count} record(s) the worker sent ({refusals}"
                f"{more}). Nothing after them was committed: fix the "
                "cause (topic max.message.bytes, ACLs, the topic itself) and restart; the "
                "worker reads again from its last checkpoint")
