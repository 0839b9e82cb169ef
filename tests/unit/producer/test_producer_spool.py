from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agentwatch.producer._outbox import MemoryOutbox, Outbox
from agentwatch.producer._spool import DiskSpool
from agentwatch.producer.packing import PackedRecord
from agentwatch.schemas import ConfigError

HEADER_BYTES = 16


def _record(i: int, pad: int = 0) -> PackedRecord:
    return PackedRecord(b"t/s%d" % (i % 3), b'[{"i":%d}]' % i + b" " * pad, 1 + i % 4)


def _records(first: int, count: int, pad: int = 0) -> list[PackedRecord]:
    return [_record(i, pad) for i in range(first, first + count)]


def _entry_bytes(record: PackedRecord) -> int:
    return HEADER_BYTES + len(record.key) + len(record.value)


def _segments(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.seg"))


def _drain(spool: DiskSpool) -> list[PackedRecord]:
    return spool.take_unsent(1_000_000)


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_is_an_outbox(tmp_path: Path) -> None:
    outbox: Outbox = DiskSpool(tmp_path / "spool")
    outbox.close()


@pytest.mark.parametrize("cache_bytes", [0, 300, 1 << 20])
@pytest.mark.parametrize("seed", range(8))
def test_random_operations_match_memory_outbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int, cache_bytes: int
) -> None:
    # cache 0 reads every record back from disk; 300 mixes disk and cache.
    monkeypatch.setattr("agentwatch.producer._spool._CACHE_BYTES", cache_bytes)
    rng = random.Random(seed)
    memory = MemoryOutbox(capacity_events=1 << 40)
    disk = DiskSpool(tmp_path, segment_bytes=200)
    appended = 0
    for _ in range(400):
        op = rng.choices(["append", "take", "ack", "rewind", "reopen"], [5, 4, 3, 1, 1])[0]
        if op == "append":
            batch = _records(appended, rng.randint(0, 5), pad=rng.randint(0, 60))
            appended += len(batch)
            memory.append(batch)
            disk.append(batch)
        elif op == "take":
            n = rng.randint(0, 6)
            assert disk.take_unsent(n) == memory.take_unsent(n)
        elif op == "ack":
            n = rng.randint(0, 6)
            assert disk.acknowledge(n) == memory.acknowledge(n)
        elif op == "rewind":
            memory.rewind()
            disk.rewind()
        else:  # a restart: what was in flight is unsent again, in order, like a rewind
            disk.close()
            disk = DiskSpool(tmp_path, segment_bytes=200)
            memory.rewind()
            assert disk.recovered_records == memory.unsent
            assert disk.recovered_events == memory.events
        assert (disk.events, disk.in_flight, disk.unsent) == (
            memory.events,
            memory.in_flight,
            memory.unsent,
        )
    memory.rewind()
    disk.rewind()
    assert _drain(disk) == memory.take_unsent(1_000_000)
    assert disk.lost_records == 0
    disk.close()


def test_reopen_after_close_returns_unacknowledged_in_order(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    spool.append(_records(0, 10))
    spool.take_unsent(6)
    spool.acknowledge(4)
    spool.close()

    spool = DiskSpool(tmp_path)
    expected = _records(4, 6)
    assert spool.recovered_records == spool.unsent == 6
    assert spool.recovered_events == spool.events == sum(r.events for r in expected)
    assert _drain(spool) == expected
    spool.close()


def test_close_is_idempotent_and_keeps_records(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    spool.append(_records(0, 3))
    spool.close()
    spool.close()
    reopened = DiskSpool(tmp_path)
    assert _drain(reopened) == _records(0, 3)
    reopened.close()


def test_sigkill_after_append_loses_nothing(tmp_path: Path) -> None:
    result = _run(
        """
        import os, signal, sys
        from agentwatch.producer.packing import PackedRecord
        from agentwatch.producer._spool import DiskSpool
        spool = DiskSpool(sys.argv[1], segment_bytes=300)
        for i in range(50):
            spool.append([PackedRecord(b"k", b"v%d" % i, 1)])
        spool.take_unsent(10)
        spool.acknowledge(7)
        os.kill(os.getpid(), signal.SIGKILL)
        """,
        str(tmp_path),
    )
    assert result.returncode == -signal.SIGKILL, result.stderr

    spool = DiskSpool(tmp_path)
    assert spool.recovered_records == 43
    assert _drain(spool) == [PackedRecord(b"k", b"v%d" % i, 1) for i in range(7, 50)]
    assert spool.lost_records == 0
    spool.close()


def test_exit_in_the_middle_of_a_write_recovers_what_was_appended(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    result = _run(
        """
        import os, sys
        from agentwatch.producer.packing import PackedRecord
        from agentwatch.producer._spool import DiskSpool
        spool = DiskSpool(sys.argv[1])
        spool.append([PackedRecord(b"k", b"v%d" % i, 2) for i in range(20)])
        spool._writer.write(b"\\x07" * 9)  # the first bytes of an entry, then death
        spool._writer.flush()
        os._exit(1)
        """,
        str(tmp_path),
    )
    assert result.returncode == 1, result.stderr

    with caplog.at_level(logging.WARNING, logger="agentwatch.producer"):
        spool = DiskSpool(tmp_path)
    assert "cut 9 bytes" in caplog.text
    assert (spool.recovered_records, spool.recovered_events) == (20, 40)
    spool.append([PackedRecord(b"k", b"after", 1)])
    spool.close()
    spool = DiskSpool(tmp_path)
    expected = [PackedRecord(b"k", b"v%d" % i, 2) for i in range(20)]
    assert _drain(spool) == [*expected, PackedRecord(b"k", b"after", 1)]
    spool.close()


def test_torn_tail_is_cut_and_appends_continue(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = DiskSpool(tmp_path)
    spool.append(_records(0, 10))
    spool.close()
    (segment,) = tmp_path.glob("*.seg")
    full_size = segment.stat().st_size
    with segment.open("r+b") as file:
        file.truncate(full_size - 5)  # a crash in the middle of writing the last entry

    with caplog.at_level(logging.WARNING, logger="agentwatch.producer"):
        spool = DiskSpool(tmp_path)
    cut = _entry_bytes(_record(9)) - 5
    assert f"cut {cut} bytes" in caplog.text
    assert segment.stat().st_size == full_size - _entry_bytes(_record(9))
    assert spool.recovered_records == 9
    spool.append(_records(100, 2))
    spool.close()

    spool = DiskSpool(tmp_path)
    assert _drain(spool) == _records(0, 9) + _records(100, 2)
    spool.close()


def test_corrupt_entry_in_earlier_segment_counts_lost_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = DiskSpool(tmp_path, segment_bytes=1)  # every append after the first rotates
    for first in (0, 3, 6):
        spool.append(_records(first, 3))
    spool.close()
    assert _segments(tmp_path) == [f"{n:020d}.seg" for n in (0, 3, 6)]
    middle = tmp_path / f"{3:020d}.seg"
    data = bytearray(middle.read_bytes())
    data[_entry_bytes(_record(3)) + HEADER_BYTES + 2] ^= 0xFF  # inside record 4
    middle.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING, logger="agentwatch.producer"):
        spool = DiskSpool(tmp_path, segment_bytes=1)
    assert "2 unacknowledged records lost" in caplog.text
    assert spool.lost_records == 2
    expected = [_record(i) for i in (0, 1, 2, 3, 6, 7, 8)]
    assert spool.recovered_records == len(expected)
    assert spool.take_unsent(100) == expected
    spool.acknowledge(100)
    assert _segments(tmp_path) == [f"{6:020d}.seg"]
    spool.close()


def test_segments_rotate_and_acknowledged_ones_are_deleted(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, segment_bytes=1)
    for first in (0, 2, 4, 6):
        spool.append(_records(first, 2))
    assert _segments(tmp_path) == [f"{n:020d}.seg" for n in (0, 2, 4, 6)]

    spool.take_unsent(3)
    spool.acknowledge(3)  # records 0-2: segment 0 is done, segment 2 is not
    assert _segments(tmp_path) == [f"{n:020d}.seg" for n in (2, 4, 6)]
    assert (tmp_path / "ack").read_text().strip() == "3"
    assert not (tmp_path / "ack.tmp").exists()

    spool.take_unsent(5)
    spool.acknowledge(5)  # all: the segment being written stays
    assert _segments(tmp_path) == [f"{6:020d}.seg"]
    spool.append(_records(8, 1))
    assert _segments(tmp_path) == [f"{n:020d}.seg" for n in (6, 8)]
    spool.close()

    spool = DiskSpool(tmp_path, segment_bytes=1)
    assert _drain(spool) == _records(8, 1)
    spool.close()


def test_segments_stay_when_records_are_only_in_flight(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, segment_bytes=1)
    for first in (0, 2, 4):
        spool.append(_records(first, 2))
    spool.take_unsent(6)
    spool.acknowledge(1)
    assert len(_segments(tmp_path)) == 3
    spool.rewind()
    assert spool.take_unsent(6) == _records(1, 5)
    spool.close()


def test_room_is_zero_past_max_bytes_and_back_after_acknowledge(tmp_path: Path) -> None:
    records = _records(0, 3)
    spool = DiskSpool(tmp_path, max_bytes=sum(_entry_bytes(r) for r in records))
    spool.append(records[:2])
    assert spool.room_events(7) == 7
    spool.append(records[2:])
    assert spool.room_events(7) == 0
    spool.take_unsent(1)
    assert spool.room_events(7) == 0  # in flight still counts
    spool.acknowledge(1)
    assert spool.room_events(7) == 7
    spool.close()


def test_acknowledge_beyond_in_flight_forgets_only_in_flight(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    spool.append(_records(0, 4))
    spool.take_unsent(2)
    assert spool.acknowledge(0) == 0
    assert spool.in_flight == 2
    assert spool.acknowledge(10) == sum(r.events for r in _records(0, 2))
    assert (spool.in_flight, spool.unsent) == (0, 2)
    assert spool.events == sum(r.events for r in _records(2, 2))
    spool.close()


def test_ack_file_ahead_of_segments_numbers_new_records_after_it(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    spool.append(_records(0, 3))
    spool.close()
    (tmp_path / "ack").write_text("10\n")  # e.g. the tail was lost in a power cut

    spool = DiskSpool(tmp_path)
    assert spool.recovered_records == 0
    spool.append(_records(50, 2))
    spool.close()
    spool = DiskSpool(tmp_path)
    assert _drain(spool) == _records(50, 2)
    spool.close()


def test_fsync_mode_round_trips(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, fsync=True, segment_bytes=1)
    spool.append(_records(0, 2))
    spool.append(_records(2, 2))
    spool.take_unsent(1)
    spool.acknowledge(1)
    spool.close()
    spool = DiskSpool(tmp_path, fsync=True)
    assert _drain(spool) == _records(1, 3)
    spool.close()


def test_directory_is_created(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b" / "lock").read_text().strip() == str(os.getpid())
    spool.close()


def test_second_open_in_same_process_fails_until_closed(tmp_path: Path) -> None:
    first = DiskSpool(tmp_path)
    with pytest.raises(ConfigError, match=r"^spool_dir .*in use") as info:
        DiskSpool(tmp_path)
    assert str(tmp_path) in str(info.value)
    first.close()
    DiskSpool(tmp_path).close()


def test_other_process_cannot_open_while_held(tmp_path: Path) -> None:
    script = """
        import sys
        from agentwatch.producer._spool import DiskSpool
        from agentwatch.schemas import ConfigError
        try:
            DiskSpool(sys.argv[1]).close()
        except ConfigError as exc:
            print(exc)
            sys.exit(3)
        """
    spool = DiskSpool(tmp_path)
    refused = _run(script, str(tmp_path))
    assert refused.returncode == 3, refused.stderr
    assert refused.stdout.startswith(f"spool_dir {tmp_path} ")
    assert f"pid {os.getpid()}" in refused.stdout
    spool.close()
    accepted = _run(script, str(tmp_path))
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr


def test_path_that_is_a_file_is_config_error(tmp_path: Path) -> None:
    path = tmp_path / "spool"
    path.write_text("")
    with pytest.raises(ConfigError, match=r"^spool_dir .*not a directory") as info:
        DiskSpool(path)
    assert str(path) in str(info.value)


def test_path_under_a_file_is_config_error(tmp_path: Path) -> None:
    path = tmp_path / "file" / "spool"
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"^spool_dir ") as info:
        DiskSpool(path)
    assert str(path) in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_directory_is_config_error(tmp_path: Path) -> None:
    path = tmp_path / "spool"
    path.mkdir()
    (path / "lock").touch()
    path.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match=r"^spool_dir .*not writable") as info:
            DiskSpool(path)
        assert str(path) in str(info.value)
    finally:
        path.chmod(0o700)
