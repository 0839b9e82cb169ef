"""``agentwatch replay``: recorded events through the detection core, offline.

Reads JSON lines (one event per line; a packed array per line also works), runs
them through the same :class:`~agentwatch.processors.core.Engine` as the worker,
in the order given, and reports every alert state change. Event time drives
everything: after each event the watermark is the largest event time seen minus
``disorder_s``, so quiet keys resolve exactly as they would on the stream.
Invalid lines are reported with their line number and skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pydantic import ValidationError

from agentwatch.processors.core import Engine
from agentwatch.schemas import Alert, Event, decode_record, to_us

__all__ = ["ADVANCE_STEP_US", "ReplayStats", "replay_lines"]

#: how far event time moves before timers run again (resolution times stay exact; only when
#: a quiet key's resolution is reported moves, by at most this much event time)
ADVANCE_STEP_US = 100_000


@dataclass(slots=True)
class ReplayStats:
    lines: int = 0
    events: int = 0
    invalid: int = 0
    alerts: int = 0
    first_invalid: list[tuple[int, str]] = field(default_factory=list)


def replay_lines(
    lines: Iterable[bytes],
    engine: Engine,
    on_alert: Callable[[Alert], None],
    on_invalid: Callable[[int, str], None] | None = None,
) -> ReplayStats:
    """Feed ``lines`` (bytes, newline optional) through ``engine``; call ``on_alert`` for
    every state change and ``on_invalid(line_no, reason)`` for every bad line."""
    stats = ReplayStats()
    disorder_us = engine.config.disorder_us
    next_advance_us = -(1 << 62)
    process, advance = engine.process, engine.advance
    validate = Event.__pydantic_validator__.validate_json  # model_validate_json minus a layer
    n_events = n_alerts = line_no = 0

    def feed(event: Event) -> None:  # the slow path's way in; the fast path inlines it
        nonlocal next_advance_us, n_events, n_alerts
        n_events += 1
        ts_us = to_us(event.ts)
        alerts = process(event, ts_us)
        if ts_us >= next_advance_us:
            alerts += advance(ts_us - disorder_us)
            next_advance_us = ts_us + ADVANCE_STEP_US
        for alert in alerts:
            n_alerts += 1
            on_alert(alert)

    for line_no, line in enumerate(lines, start=1):
        if line[:1] == b"{":  # the common case: one event per line, validated in one call
            try:
                event = validate(line)
            except ValidationError:
                pass  # the slow path below says why
            else:
                n_events += 1
                ts_us = to_us(event.ts)
                alerts = process(event, ts_us)
                if ts_us >= next_advance_us:  # timers run on the watermark, in 100 ms steps
                    alerts += advance(ts_us - disorder_us)
                    next_advance_us = ts_us + ADVANCE_STEP_US
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
        for event in decoded.events:
            feed(event)
    stats.lines, stats.events, stats.alerts = line_no, n_events, n_alerts
    return stats
