"""Fixtures for the detection-core tests.

Event time in these tests starts at the Unix epoch, so ``to_us(alert.ts)`` reads
directly as "microseconds since the test began".
"""

from __future__ import annotations

import itertools
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
