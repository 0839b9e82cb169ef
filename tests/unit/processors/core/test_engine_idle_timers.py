"""Sessions' idle timers wait in buckets of event time (``Engine._schedule_idle``), not in
the timer heap: a session still expires at the first watermark at or past its last event
+ ``session_idle_timeout_s``, whether it is packed or not, however the watermark moves;
and a packed session is not unpacked (nor written again) before it is due."""

from __future__ import annotations

import random

from conftest import US, EventFactory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentwatch.processors.core import Engine, rules_from_mapping
from agentwatch.processors.core._engine import _WHEEL_US
from agentwatch.schemas import AlertScope


def _engine(idle_s: int, pack_s: float | None) -> Engine:
    """A worker's session stage's engine (session rules only)."""
    return Engine(rules_from_mapping({"session_idle_timeout_s": idle_s,
                                      "pack_idle_sessions_s": pack_s}),
                  scopes=[AlertScope.SESSION])


def _open(engine: Engine) -> set[str]:
    return {k[1] for k in engine._sessions} | {k[1] for k in engine._packed}


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # ids only count up
@given(seed=st.integers(0, 10**6), idle_s=st.sampled_from([30, 90, 1800]),
       pack_s=st.sampled_from([None, 0.0, 20.0]))
def test_sessions_expire_exactly_at_their_last_event_plus_the_idle_timeout(
        ev: EventFactory, seed: int, idle_s: int, pack_s: float | None) -> None:
    """Sessions whose events spread over several buckets (gaps up to 0.9 x the idle
    timeout: none expires mid-stream), then the watermark moves on in random steps,
    small and large; after each step the open sessions are those whose last event is
    less than the idle timeout behind it. (Buckets are 60 s of event time.)"""
    rng = random.Random(seed)
    engine = _engine(idle_s, pack_s)
    last_us: dict[str, int] = {}
    events = []
    for i in range(12):
        t_us = rng.randrange(0, 3 * _WHEEL_US)
        for _ in range(rng.randrange(1, 6)):
            events.append((t_us, f"s{i}"))
            t_us += rng.randrange(1, int(0.9 * idle_s * US))
    events.sort()
    for t_us, session in events:
        engine.process(ev(t_us / US, session_id=session))
        last_us[session] = t_us
        engine.advance(t_us - 5 * US)  # as EventTimeDriver does (5 s of disorder)
    watermark_us = events[-1][0] - 5 * US
    # (a session's own events are closer than its timeout: none expired between two)
    assert _open(engine) == {s for s, t in last_us.items() if t + idle_s * US > watermark_us}
    while _open(engine):
        watermark_us += rng.choice([1, US, _WHEEL_US // 3, _WHEEL_US, 7 * _WHEEL_US,
                                    rng.randrange(idle_s * US)])
        engine.advance(watermark_us)
        assert _open(engine) == {s for s, t in last_us.items() if t + idle_s * US > watermark_us}


def test_idle_timers_far_from_due_are_not_in_the_heap(ev: EventFactory) -> None:
    engine = _engine(1800, 60.0)
    for i in range(1000):
        engine.process(ev(i / 100, session_id=f"s{i}"))
    engine.advance(200 * US)  # every session is packed now, none is near its expiry
    assert len(engine._packed) == 1000
    assert len(engine._timers) < 50  # the heap held a timer per session before
    engine.advance(1809 * US)
    assert engine.open_sessions == 1000 - 901  # 1800 s after s0 .. s900 (0 .. 9.00 s): closed


def test_a_packed_session_is_not_unpacked_before_its_idle_timeout(ev: EventFactory) -> None:
    """Its first idle timer (set at its first event) finds it had events since: it waits
    again, read from the packed header, and the session stays packed and clean."""
    engine = _engine(300, 10.0)
    engine.process(ev(0, session_id="s"))
    engine.process(ev(250, session_id="s"))
    engine.advance(270 * US)
    assert ("default", "s") in engine._packed
    engine.touched.clear()
    engine.advance(540 * US)  # past the first event + 300 s, before the last + 300 s
    assert ("default", "s") in engine._packed
    assert not engine.touched
    engine.advance(550 * US)  # the last event + 300 s
    assert engine.open_sessions == 0
    assert ("default", "s") in engine.touched  # its end is written (a marker)
