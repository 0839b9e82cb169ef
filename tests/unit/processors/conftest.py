"""Fixtures for the detection-core tests.

Event time in these tests starts at the Unix epoch, so ``to_us(alert.ts)`` reads
directly as "microseconds since the test began".
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from agentwatch.schemas import Event, EventKind, EventStatus, from_us

US = 1_000_000

EventFactory = Callable[..., Event]


@pytest.fixture
def ev() -> EventFactory:
    """``ev(t_s, kind="llm_call", **fields)``: an event at ``t_s`` seconds of event time.

    Event ids are deterministic (UUIDs 1, 2, 3, ... per test) so two engines fed the
    same events see the same ids; ``agent_id``/``session_id`` default to agent-1/sess-1.
    """
    ids = itertools.count(1)

    def make(t_s: float, kind: str = "llm_call", **fields: Any) -> Event:
        fields.setdefault("agent_id", "agent-1")
        fields.setdefault("session_id", "sess-1")
        if "status" in fields:
            fields["status"] = EventStatus(fields["status"])
        return Event(
            event_id=str(uuid.UUID(int=next(ids))),
            ts=from_us(round(t_s * US)),
            kind=EventKind(kind),
            **fields,
        )

    return make


def random_stream(seed: int, n: int, *, sessions: int = 12, redelivered_p: float = 0.0,
                  short_gap_p: float | None = None) -> list[Event]:
    """``n`` events of ``sessions`` sessions over 3 agents: costs, errors, a repeated tool
    call, disorder within ``disorder_s``, a session end every 97 events. ``redelivered_p``:
    the share of events that are a recent one sent again (duplicates); ``short_gap_p``:
    the share of gaps under 0.4 s, the others 5-40 s (pauses long enough to pack or expire a
    session; None: every gap is short). The same seed gives the same stream (frozen state
    dumps rely on it)."""
    rng = random.Random(seed)
    events: list[Event] = []
    t_us = 0
    for i in range(n):
        if redelivered_p and events and rng.random() < redelivered_p:
            events.append(rng.choice(events[-50:]))
            continue
        if short_gap_p is None or rng.random() < short_gap_p:
            t_us += rng.randrange(0, 400_000)
        else:
            t_us += rng.randrange(5, 40) * US
        session = f"s{rng.randrange(sessions)}"
        jitter = rng.randrange(0, 3 * US) if rng.random() < 0.2 else 0  # within disorder
        fields: dict[str, Any] = {}
        kind = rng.choice((EventKind.LLM_CALL, EventKind.TOOL_CALL, EventKind.TOOL_CALL))
        if i % 97 == 96:
            kind = EventKind.SESSION_END
        elif kind is EventKind.LLM_CALL:
            fields["cost_usd"] = rng.choice((0.01, 0.2, 0.45))
        else:
            fields["name"] = rng.choice(("search", "lookup"))
            fields["tool_args_hash"] = rng.choice(("same", f"{rng.getrandbits(32):x}"))
        if rng.random() < 0.3:
            fields["status"] = EventStatus.ERROR
        events.append(Event(
            event_id=str(uuid.UUID(int=rng.getrandbits(128))),
            ts=from_us(max(0, t_us - jitter)),
            agent_id=f"agent-{hash(session) % 3}",
            session_id=session,
            kind=kind,
            **fields,
        ))
    return events
