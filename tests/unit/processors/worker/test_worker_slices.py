"""How the worker cuts a batch into the slices a stage runs over (``_app._slices``)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from agentwatch.processors.worker._app import FEED_SLICE_BYTES, FEED_SLICE_RECORDS, _slices


def _records(partition: int, sizes: list[int]) -> list[Any]:
    return [SimpleNamespace(message=SimpleNamespace(partition=partition, offset=i,
                                                    value=b"x" * size if size else None))
            for i, size in enumerate(sizes)]


def test_every_record_is_in_one_slice_in_order() -> None:
    groups = {0: _records(0, [300] * 2500), 3: _records(3, [70_000] * 40)}
    slices = list(_slices(groups))
    for partition, records in groups.items():
        got = [r for p, chunk in slices if p == partition for r in chunk]
        assert got == records
    assert all(chunk for _, chunk in slices)


def test_small_records_are_cut_by_count_and_big_ones_by_bytes() -> None:
    small = list(_slices({0: _records(0, [300] * (2 * FEED_SLICE_RECORDS + 5))}))
    assert [len(chunk) for _, chunk in small] == [FEED_SLICE_RECORDS, FEED_SLICE_RECORDS, 5]
    per_slice = -(-FEED_SLICE_BYTES // 75_000)  # records of 75 KB until the bound is reached
    big = list(_slices({1: _records(1, [75_000] * 40)}))
    assert len(big[0][1]) == per_slice
    assert all(sum(len(r.message.value) for r in chunk) < FEED_SLICE_BYTES + 75_000
               for _, chunk in big)


def test_empty_values_count_no_bytes() -> None:
    assert [len(c) for _, c in _slices({0: _records(0, [0] * 10)})] == [10]
