"""``agentwatch replay``: recorded events through the detection core, offline.

Reads JSON lines (one event per line; a packed array per line also works), runs
them through the same :class:`~agentwatch.processors.core.Engine` as the worker,
in the order given, and reports every alert state change. Event time drives
everything: after each event the watermark is the largest event time seen minus
``disorder_s``, so quiet keys resolve exactly as they would on the stream.
Invalid lines are reported with their line number and skipped; a line over the record
size limit (``MAX_RECORD_BYTES``) is one of them, and :func:`bounded_lines` reads a file
without ever holding more of such a line than the limit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import IO, Final

from pydantic import ValidationError

from agentwatch.processors.core import ADVANCE_STEP_US, Engine, EventTimeDriver
from agentwatch.schemas import MAX_RECORD_BYTES, Alert, Event, decode_record, to_us

__all__ = ["ReplayStats", "bounded_lines", "replay_lines"]


@dataclass(slots=True)
class ReplayStats:
    lines: int = 0
    events: int = 0
    invalid: int = 0
    alerts: int = 0
    first_invalid: list[tuple[int, str]] = field(default_factory=list)


_CHUNK_LINES: Final = 16
_validate_json: Final = Event.__pydantic_validator__.validate_json


def _fast_event(line: bytes) -> Event | None:
    """The common case, one valid event per line, in one validator call; None otherwise."""
    if line[:1] != b"{" or len(line) > MAX_RECORD_BYTES:
        return None
    try:
        return _validate_json(line)  # type: ignore[no-any-return]
    except ValidationError:
        return None


def bounded_lines(stream: IO[bytes], max_bytes: int = MAX_RECORD_BYTES) -> Iterator[bytes]:
    """The lines of ``stream``; of a line longer than ``max_bytes`` only its first
    ``max_bytes + 1`` bytes (enough for the decoder to reject it as too large), the rest
    read in pieces and dropped, so memory stays bounded whatever the file holds."""
    while line := stream.readline(max_bytes + 1):
        if len(line) > max_bytes and not line.endswith(b"\n"):
            while (rest := stream.readline(max_bytes)) and not rest.endswith(b"\n"):
                pass
        yield line


def replay_lines(
    lines: Iterable[bytes],
    engine: Engine,
    on_alert: Callable[[Alert], None],
    on_invalid: Callable[[int, str], None] | None = None,
) -> ReplayStats:
    """Feed ``lines`` (bytes, newline optional) through ``engine``; call ``on_alert`` for
    every state change and ``on_invalid(line_no, reason)`` for every bad line."""
    stats = ReplayStats()
    driver = EventTimeDriver(engine)
    disorder_us, step_us = engine.config.disorder_us, ADVANCE_STEP_US
    process, advance = engine.process, engine.advance
    numbered = enumerate(lines, start=1)
    n_events = n_alerts = line_no = 0
    while chunk := list(islice(numbered, _CHUNK_LINES)):
        # Validate a few lines, then run the core over them: keeping each phase's working
        # set warm measured ~10 % faster than alternating line by line.
        for line_no, line, event in [(no, line, _fast_event(line)) for no, line in chunk]:
            if event is not None:
                # EventTimeDriver.feed, inlined: this loop is the replay benchmark's hot path
                n_events += 1
                ts_us = to_us(event.ts)
                alerts = process(event, ts_us)
                if ts_us >= driver.next_advance_us:
                    alerts += advance(ts_us - disorder_us)
                    driver.next_advance_us = ts_us + step_us
                for alert in alerts:
                    n_alerts += 1
                    on_alert(alert)
                continue
            if not line.strip():
                continue
            decoded = decode_record(line)
            for rejected in decoded.rejected:
                stats.invalid += 1
                reason = rejected.reason if rejected.index is None else (
                    f"item {rejected.index}: {rejected.reason}")
                if on_invalid is not None:
                    on_invalid(line_no, reason)
            for decoded_event in decoded.events:
                n_events += 1
                for alert in driver.feed(decoded_event):
                    n_alerts += 1
                    on_alert(alert)
    stats.lines, stats.events, stats.alerts = line_no, n_events, n_alerts
    return stats
