"""What the dispatcher commits: the first unfinished offset, and which endpoints are
finished with the alerts past it."""

from __future__ import annotations

import pytest

from agentwatch.alerts._progress import (
    MAX_METADATA_CHARS,
    METADATA_PREFIX,
    PartitionProgress,
    endpoint_tag,
    parse_progress,
)

A, B = endpoint_tag("pager"), endpoint_tag("chat")


def test_the_commit_waits_for_the_first_unfinished_alert() -> None:
    p = PartitionProgress(10)
    for offset in (10, 11, 12, 13):
        assert p.read(offset) == frozenset()
    p.done(12)
    p.done(11)
    assert p.committed == 10
    p.done(10)
    assert p.committed == 13  # 10, 11, 12 done; 13 open
    assert p.open == 1
    p.done(13)
    assert p.committed == 14
    assert p.metadata() == ""


def test_metadata_names_the_endpoints_finished_past_the_commit() -> None:
    p = PartitionProgress(100)
    for offset in (100, 101, 102):
        p.read(offset)
    p.finished(100, A)  # pager has 100; chat is still retrying it
    p.finished(101, A)
    p.finished(101, B)
    p.done(101)  # 101 done, but 100 holds the commit
    p.finished(102, B)
    assert p.committed == 100
    meta = p.metadata()
    assert meta == f"{METADATA_PREFIX}0:{A};1:{','.join(sorted([A, B]))};2:{B}"
    assert parse_progress(meta, p.committed) == {
        100: frozenset({A}),
        101: frozenset({A, B}),
        102: frozenset({B}),
    }


def test_a_restart_skips_the_endpoints_that_already_have_an_alert() -> None:
    before = PartitionProgress(7)
    for offset in (7, 8):
        before.read(offset)
    before.finished(7, A)
    before.finished(8, A)
    before.finished(8, B)
    before.done(8)
    committed, meta = before.committed, before.metadata()

    after = PartitionProgress(committed, parse_progress(meta, committed))
    assert after.read(7) == frozenset({A})
    assert after.read(8) == frozenset({A, B})
    after.finished(7, B)
    after.done(7)
    after.done(8)
    assert after.committed == 9
    assert after.metadata() == ""


def test_metadata_stays_under_kafkas_limit() -> None:
    p = PartitionProgress(0)
    p.read(0)  # never finishes: holds the commit
    for offset in range(1, 2000):
        p.read(offset)
        p.finished(offset, A)
        p.finished(offset, B)
    meta = p.metadata()
    assert len(meta) <= MAX_METADATA_CHARS
    kept = parse_progress(meta, 0)
    assert kept
    assert min(kept) == 1  # the oldest are kept; the latest may be sent twice
    assert all(tags == {A, B} for tags in kept.values())


@pytest.mark.parametrize(
    "metadata",
    ["", "agentwatch-sink/1 pending 5", f"{METADATA_PREFIX}x:{A}", f"{METADATA_PREFIX}3"],
)
def test_foreign_or_broken_metadata_reads_as_nothing_done(metadata: str) -> None:
    assert parse_progress(metadata, 0) == {}


def test_offsets_skipped_by_retention_move_the_commit() -> None:
    p = PartitionProgress(5)
    p.read(9)  # 5..8 are gone
    assert p.committed == 9
    p.done(9)
    assert p.committed == 10


def test_an_offset_read_twice_is_refused() -> None:
    p = PartitionProgress(0)
    p.read(0)
    with pytest.raises(ValueError, match="read twice"):
        p.read(0)


def test_tags_are_short_and_stable() -> None:
    assert endpoint_tag("pager") == endpoint_tag("pager") != endpoint_tag("chat")
    assert len(endpoint_tag("pager")) == 8
