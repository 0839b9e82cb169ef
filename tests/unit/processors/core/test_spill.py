"""Packed sessions spilled to a file (``SpillFile``): values come back as they went in,
the file leaves nothing on disk, and an engine that spills gives the same alerts, stats
and state dumps as one that keeps its packed sessions in memory, compactions included."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import random_stream
from test_engine_packing import _engine, _run, _settle, _stats

from agentwatch.processors.core import Engine, EventTimeDriver, SpillFile


def test_values_come_back_by_handle_and_the_file_is_unlinked(tmp_path: Path) -> None:
    spill = SpillFile(tmp_path / "spill", "p3")
    assert list((tmp_path / "spill").iterdir()) == []  # unlinked once opened
    rng = random.Random(1)
    values = [rng.randbytes(rng.randrange(0, 3000)) for _ in range(200)]
    handles = [spill.put(v) for v in values]
    assert [spill.read(h) for h in handles] == values
    assert spill.read(handles[7], 8) == values[7][:8]
    assert spill.live_bytes == spill.file_bytes == sum(map(len, values))
    assert spill.take(handles[0]) == values[0]
    assert (spill.live_bytes, spill.garbage_bytes) == (
        sum(map(len, values[1:])), len(values[0]))
    spill.close()
    with pytest.raises(OSError, match="Bad file descriptor"):
        spill.read(handles[1])


def test_compaction_keeps_the_live_values_and_drops_the_garbage(tmp_path: Path) -> None:
    spill = SpillFile(tmp_path, "p0", compact_min_bytes=1000)
    values = {i: bytes([i]) * (100 + i) for i in range(100)}
    handles = {i: spill.put(v) for i, v in values.items()}
    for i in range(0, 100, 3):
        spill.free(handles.pop(i))
    assert not spill.wants_compaction  # garbage under the live bytes
    for i in [i for i in handles if i % 2]:
        spill.free(handles.pop(i))
    assert spill.wants_compaction
    keys = list(handles)
    moved = dict(zip(keys, spill.compact([handles[i] for i in keys]), strict=True))
    assert {i: spill.read(h) for i, h in moved.items()} == {i: values[i] for i in keys}
    assert spill.file_bytes == spill.live_bytes == sum(len(values[i]) for i in keys)
    assert spill.garbage_bytes == 0


def _spilling(tmp_path: Path, pack_s: float, dedup: int = 8,
              resolve_after_s: int | None = None) -> Engine:
    engine = _engine(pack_s, dedup, resolve_after_s)
    # compact as soon as the garbage passes the live bytes: many compactions
    return Engine(engine.config, spill=SpillFile(tmp_path, "t", compact_min_bytes=0))


@pytest.mark.parametrize(("seed", "pack_s", "dedup"), [(1, 0.0, 8), (2, 0.5, 0), (3, 3.0, 64)])
def test_a_spilling_engine_gives_what_an_engine_in_memory_gives(
        tmp_path: Path, seed: int, pack_s: float, dedup: int) -> None:
    events = random_stream(seed, 2000, sessions=14, redelivered_p=0.05, short_gap_p=0.97)
    memory, spilling = _engine(pack_s, dedup), _spilling(tmp_path, pack_s, dedup)
    plain = _engine(None, dedup)
    compactions = 0
    got: list[dict[str, Any]] = []
    driver = EventTimeDriver(spilling)
    spill = spilling._spill
    assert spill is not None
    for event in events:
        garbage = spill.garbage_bytes
        got += [a.model_dump(mode="json") for a in driver.feed(event)]
        compactions += spill.garbage_bytes < garbage
    assert got == _run(memory, events) == _run(plain, events)
    assert _stats(spilling) == _stats(memory)
    assert compactions > 3
    _settle(memory, spilling)
    assert spilling._packed
    assert all(isinstance(v, int) for v in spilling._packed.values())
    for key in sorted(set(memory._packed) | set(memory._sessions)):
        assert orjson.dumps(spilling.dump_key(key)) == orjson.dumps(memory.dump_key(key))
        assert orjson.dumps(spilling.dump_key(key, max_ids=16)) == orjson.dumps(
            memory.dump_key(key, max_ids=16))


def test_a_spill_file_that_refuses_leaves_sessions_in_memory(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    events = random_stream(6, 1500, sessions=14, redelivered_p=0.05, short_gap_p=0.97)
    spilling = _spilling(tmp_path, 0.0)
    assert spilling._spill is not None
    spilling._spill.close()  # every write fails now (EBADF), as on a full disk
    got = _run(spilling, events)
    assert got == _run(_engine(0.0), events)
    _settle(spilling)
    assert spilling._packed
    assert all(isinstance(v, bytes) for v in spilling._packed.values())
    [warning] = [r for r in caplog.records if "spill file refused" in r.getMessage()]
    assert "Bad file descriptor" in warning.getMessage()


def test_a_value_too_long_for_a_handle_stays_in_memory(tmp_path: Path) -> None:
    """A handle holds a length of at most 16 MiB - 1: a longer packed session (here: a
    file limited to the median packed size) stays in memory, the others spill; the
    alerts do not change."""
    events = random_stream(7, 1500, sessions=14, redelivered_p=0.05, short_gap_p=0.97)
    with pytest.raises(ValueError, match="max_value_bytes"):
        SpillFile(tmp_path, "t", max_value_bytes=1 << 24)
    memory = _engine(0.0)
    expected = _run(memory, events)
    _settle(memory)
    sizes = sorted(len(v) for v in memory._packed.values() if isinstance(v, bytes))
    limit = sizes[len(sizes) // 2]
    assert sizes[0] <= limit < sizes[-1]
    spilling = Engine(memory.config, spill=SpillFile(tmp_path, "t", max_value_bytes=limit))
    assert _run(spilling, events) == expected
    _settle(spilling)
    kept = [v for v in spilling._packed.values() if isinstance(v, bytes)]
    assert kept
    assert all(len(v) > limit for v in kept)
    assert any(isinstance(v, int) for v in spilling._packed.values())
