"""Idle sessions packed into bytes (``pack_idle_sessions_s``) change nothing: the same
alerts, the same duplicates dropped, the same idle expiries and resolutions, the same
state dumps as an engine that keeps every session unpacked."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from typing import Any

import orjson
import pytest
from conftest import US, random_stream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentwatch.processors.core import Engine, EventTimeDriver, rules_from_mapping
from agentwatch.processors.core._engine import ids_from_bytes, pack_ids, unpack_ids, uuid_bytes
from agentwatch.schemas import Event


def _stream(seed: int, n: int, sessions: int) -> list[Event]:
    """Sessions with costs, errors, repeated tool calls, disorder, pauses long enough to
    pack and to expire a session, session ends, and redelivered (duplicate) events."""
    return random_stream(seed, n, sessions=sessions, redelivered_p=0.05, short_gap_p=0.97)


def _engine(pack_s: float | None, dedup: int = 8, resolve_after_s: int | None = None
            ) -> Engine:
    return Engine(rules_from_mapping({
        "rules": {"agent_error_rate": {"min_events": 10, "resolve_after_s": resolve_after_s},
                  "session_cost": {"cooldown_s": 5, "resolve_after_s": resolve_after_s},
                  "loop_repeat": {"min_repeats": 3}},
        "session_idle_timeout_s": 20,
        "dedup_ids_per_session": dedup,  # small: the two generations of ids turn over
        "pack_idle_sessions_s": pack_s,
    }))


def _run(engine: Engine, events: list[Event]) -> list[dict[str, Any]]:
    driver = EventTimeDriver(engine)
    return [a.model_dump(mode="json") for e in events for a in driver.feed(e)]


def _settle(*engines: Engine) -> None:
    """Event time moves on 6 s past the last event (its watermark, 5 s of disorder behind
    it, passes every session's last event; none expires)."""
    for engine in engines:
        engine.advance(max(s.last_ts_us for s in engine._sessions.values()) + 6 * US)


def _stats(engine: Engine) -> dict[str, Any]:
    stats = asdict(engine.stats)
    del stats["active_keys"]  # a packed session's detectors keep no key
    return stats


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), pack_s=st.sampled_from([0.0, 0.5, 3.0]),
       dedup=st.sampled_from([0, 4, 64]), resolve_after_s=st.sampled_from([None, 3]))
def test_packing_idle_sessions_changes_no_alert(seed: int, pack_s: float, dedup: int,
                                                resolve_after_s: int | None) -> None:
    events = _stream(seed, 600, 10)
    plain, packed = _engine(None, dedup, resolve_after_s), _engine(pack_s, dedup, resolve_after_s)
    assert _run(packed, events) == _run(plain, events)
    assert _stats(packed) == _stats(plain)
    assert packed.open_sessions == plain.open_sessions


def test_the_stream_exercises_packing_duplicates_expiry_and_resolution() -> None:
    events = _stream(1, 3000, 12)
    plain, packed = _engine(None), _engine(0.0)
    unpacks = 0
    driver = EventTimeDriver(packed)
    got: list[dict[str, Any]] = []
    for event in events:
        was_packed = (event.tenant_id, event.session_id) in packed._packed
        got += [a.model_dump(mode="json") for a in driver.feed(event)]
        unpacks += was_packed
    expected = _run(plain, events)
    assert got == expected
    assert unpacks > 100  # sessions were packed and came back by their events
    assert plain.stats.duplicates > 50
    assert any("expired" in a["reason"] for a in expected)
    assert any(a["state"] == "resolved" for a in expected)
    assert any(a["state"] == "firing" for a in expected)


@pytest.mark.parametrize("max_ids", [None, 16, 1])
def test_a_packed_session_dumps_as_it_would_unpacked(max_ids: int | None) -> None:
    events = _stream(2, 800, 10)
    plain, packed = _engine(None, 64), _engine(0.0, 64)
    _run(plain, events)
    _run(packed, events)
    _settle(plain, packed)
    keys = set(packed._packed)
    assert keys  # idle sessions are packed
    for key in sorted(keys | set(plain._sessions)):
        assert orjson.dumps(packed.dump_key(key, max_ids=max_ids)) == orjson.dumps(
            plain.dump_key(key, max_ids=max_ids))


def test_a_packed_session_is_unpacked_for_a_checkpoint_and_reports_duplicates() -> None:
    events = _stream(3, 300, 20)
    packed = _engine(0.0, 64)
    _run(packed, events)
    _settle(packed)
    key = next(iter(packed._packed))
    ids = [e for e in events if (e.tenant_id, e.session_id) == key]
    assert not packed.is_new(ids[-1])  # its dedup ids were packed with it
    assert key not in packed._packed  # ... and it is unpacked now
    packed.advance(packed.watermark_us + 1)
    assert key in packed._packed
    packed.dump_key(key, max_ids=16)  # a worker's checkpoint of a key a timer touched
    assert key in packed._sessions


def test_a_loaded_key_replaces_its_packed_state() -> None:
    events = _stream(4, 300, 20)
    source, packed = _engine(None, 64), _engine(0.0, 64)
    _run(source, events)
    _run(packed, events)
    _settle(source, packed)
    key = next(iter(packed._packed))
    other = next(k for k in source._sessions if k != key)
    data = orjson.loads(orjson.dumps(source.dump_key(other)))
    assert packed.load_key(key, data)
    assert key not in packed._packed
    assert packed.dump_key(key) == data


def test_a_pack_delay_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="pack_idle_sessions_s"):
        _engine(-1.0)


# -- the compact packed value: raw 16-byte ids, the rest deflated ---------------------------
def _ids_as(events: list[Event], form: str) -> list[Event]:
    """``events`` with their ids rewritten (a redelivered event keeps its twin's id):
    ``uuid`` as they are (canonical UUIDs), ``plain`` none a UUID, ``mixed`` every third
    not a UUID, ``upper`` UUIDs in upper case (not canonical: kept as strings)."""
    if form == "uuid":
        return events
    out = []
    for event in events:
        event_id = event.event_id
        if form == "plain" or (form == "mixed" and int(event_id[-2:], 16) % 3 == 0):
            event_id = f"evt-{event_id[:13]}"
        elif form == "upper":
            event_id = event_id.upper()
        out.append(event.model_copy(update={"event_id": event_id}))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), form=st.sampled_from(["uuid", "plain", "mixed", "upper"]),
       pack_s=st.sampled_from([0.0, 3.0]), dedup=st.sampled_from([4, 64]))
def test_packing_changes_no_alert_nor_duplicate_whatever_the_event_ids(
        seed: int, form: str, pack_s: float, dedup: int) -> None:
    events = _ids_as(_stream(seed, 500, 8), form)
    plain, packed = _engine(None, dedup), _engine(pack_s, dedup)
    assert _run(packed, events) == _run(plain, events)
    assert _stats(packed) == _stats(plain)  # the same duplicates dropped, among the rest


@pytest.mark.parametrize("form", ["uuid", "plain", "mixed"])
def test_a_packed_session_with_any_ids_dumps_as_it_would_unpacked(form: str) -> None:
    events = _ids_as(_stream(5, 800, 10), form)
    plain, packed = _engine(None, 64), _engine(0.0, 64)
    _run(plain, events)
    _run(packed, events)
    _settle(plain, packed)
    assert packed._packed
    for key in sorted(set(packed._packed) | set(plain._sessions)):
        assert orjson.dumps(packed.dump_key(key)) == orjson.dumps(plain.dump_key(key))


def test_a_packed_session_takes_half_of_its_dump_or_less() -> None:
    events = _stream(6, 2000, 10)
    packed = _engine(0.0, 64)
    _run(packed, events)
    _settle(packed)
    packed_bytes = sum(len(v) for v in packed._packed.values())
    dumped = sum(len(orjson.dumps(packed.dump_key(k))) for k in list(packed._packed))
    assert packed_bytes * 2 <= dumped


@given(st.lists(st.uuids(), max_size=40))
def test_canonical_uuids_round_trip_through_their_bytes(ids: list[uuid.UUID]) -> None:
    text = [str(i) for i in ids]
    raw = uuid_bytes(text)
    if not text:
        assert raw is None
        return
    assert raw is not None
    assert len(raw) == 16 * len(text)
    assert ids_from_bytes(raw) == text


@pytest.mark.parametrize("ids", [
    ["4A1B2C3D-0000-4000-8000-000000000000"],  # upper case
    ["4a1b2c3d000040008000000000000000"],  # no dashes
    ["{4a1b2c3d-0000-4000-8000-000000000000}"],
    ["4a1b2c3d-0000-4000-8000-00000000000g"],  # not hex
    ["4a1b2c3d-0000-4000-8000-000000000000", "evt-1"],  # one of them is not
    ["4a1b2c3d-0000-4000-8000-00000000000", "04a1b2c3d-0000-4000-8000-000000000000"],
])
def test_ids_not_all_canonical_uuids_have_no_bytes_form(ids: list[str]) -> None:
    assert uuid_bytes(ids) is None


def test_bytes_of_ids_that_are_not_16_each_are_refused() -> None:
    with pytest.raises(ValueError, match="not 16 bytes each"):
        ids_from_bytes(b"\x00" * 17)


def test_ids_of_35_and_37_characters_come_back_from_a_state_dump_as_they_were() -> None:
    # joined, their dashes fall where two UUIDs' would: they were packed as two UUIDs
    ids = ["4a1b2c3d-0000-4000-8000-00000000000", "04a1b2c3d-0000-4000-8000-000000000000"]
    assert unpack_ids(pack_ids(ids)) == ids
