"""Checkpoints take the partitions in turn (``_app._next_in_turn``), each saving the
records held for its own partition only (``_app._Held``)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from agentwatch.processors.worker._app import _Held, _next_in_turn


def _records(partition: int, offsets: range) -> list[Any]:
    return [SimpleNamespace(message=SimpleNamespace(partition=partition, offset=o))
            for o in offsets]


def test_the_turn_goes_to_the_next_touched_partition_and_wraps_around() -> None:
    assert _next_in_turn({0, 2, 3}, -1) == 0
    assert _next_in_turn({0, 2, 3}, 0) == 2
    assert _next_in_turn({0, 2, 3}, 2) == 3
    assert _next_in_turn({0, 2, 3}, 3) == 0
    assert _next_in_turn({1}, 1) == 1


def test_no_touched_partition_has_no_turn() -> None:
    assert _next_in_turn(set(), 2) is None


def test_taking_one_partition_leaves_the_others_touched_and_held() -> None:
    held = _Held()
    held.add("stream", _records(0, range(3)) + _records(1, range(10, 12)))
    assert held.take_touched([1]) == [1]
    assert held.touched == {0}
    assert [e.message.offset for e in held.events[0]] == [0, 1, 2]
    assert [e.message.offset for e in held.events[1]] == [10, 11]
    assert held.count() == 5
    assert held.take_touched(None) == [0]
    assert held.touched == set()


def test_a_partition_not_touched_is_not_taken() -> None:
    held = _Held()
    held.add("stream", _records(2, range(1)))
    assert held.take_touched([0, 1]) == []
    assert held.touched == {2}
