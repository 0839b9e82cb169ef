from __future__ import annotations

import hashlib
import subprocess
import sys
from collections import namedtuple
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum
from pathlib import PurePosixPath
from uuid import UUID

import pydantic

from agentwatch.producer import hash_tool_args
from agentwatch.producer._hashing import canonical_json

ARGS = {"query": "weather in Paris", "limit": 10, "filters": {"lang": "fr", "tags": ["a", "b"]}}


def test_hash_is_32_lowercase_hex_characters() -> None:
    digest = hash_tool_args(ARGS)
    assert len(digest) == 32
    assert digest == digest.lower()
    int(digest, 16)


def test_hash_is_truncated_sha256_of_the_canonical_json() -> None:
    expected = hashlib.sha256(b'{"a":[1,"x"],"b":true}').hexdigest()[:32]
    assert hash_tool_args({"b": True, "a": [1.0, "x"]}) == expected


def test_key_order_does_not_change_the_hash() -> None:
    reordered = {
        "filters": {"tags": ["a", "b"], "lang": "fr"},
        "limit": 10,
        "query": "weather in Paris",
    }
    assert hash_tool_args(reordered) == hash_tool_args(ARGS)


def test_different_arguments_hash_differently() -> None:
    assert hash_tool_args({"query": "a"}) != hash_tool_args({"query": "b"})


def test_list_order_matters() -> None:
    assert hash_tool_args([1, 2]) != hash_tool_args([2, 1])


def test_integral_float_hashes_like_the_integer() -> None:
    assert hash_tool_args({"n": 1.0}) == hash_tool_args({"n": 1})
    assert hash_tool_args({"n": -0.0}) == hash_tool_args({"n": 0})


def test_non_integral_float_keeps_its_shortest_form() -> None:
    assert canonical_json(0.1) == b"0.1"
    assert hash_tool_args(0.1) != hash_tool_args(0)


def test_bool_is_not_the_integer_one() -> None:
    assert hash_tool_args({"flag": True}) != hash_tool_args({"flag": 1})


def test_non_finite_floats_become_strings() -> None:
    assert canonical_json([float("nan"), float("inf"), float("-inf")]) == (
        b'["NaN","Infinity","-Infinity"]'
    )


def test_integers_beyond_64_bits_become_decimal_strings() -> None:
    assert canonical_json(2**70) == b'"1180591620717411303424"'


def test_tuple_hashes_like_list() -> None:
    assert hash_tool_args((1, "a")) == hash_tool_args([1, "a"])


def test_set_order_does_not_change_the_hash() -> None:
    assert canonical_json({"b", "a", "c"}) == b'["a","b","c"]'
    assert hash_tool_args(frozenset({3, 1, 2})) == hash_tool_args({2, 3, 1})


def test_non_string_keys_become_strings() -> None:
    assert canonical_json({2: "x", None: "y", False: "z"}) == b'{"2":"x","false":"z","null":"y"}'


def test_colliding_keys_resolve_whatever_the_insertion_order() -> None:
    assert hash_tool_args({1: "a", "1": "b"}) == hash_tool_args({"1": "b", 1: "a"})


def test_bytes_become_hex() -> None:
    assert canonical_json(b"\x00\xff") == b'"00ff"'


def test_aware_datetimes_normalise_to_utc() -> None:
    paris = datetime(2026, 1, 1, 10, 0, tzinfo=timezone(timedelta(hours=1)))
    utc = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
    assert hash_tool_args(paris) == hash_tool_args(utc)


def test_common_value_types_have_canonical_forms() -> None:
    class Colour(Enum):
        RED = "red"

    value = {
        "uuid": UUID("12345678-1234-5678-1234-567812345678"),
        "path": PurePosixPath("/data/x"),
        "decimal": Decimal("2.50"),
        "delta": timedelta(seconds=90),
        "enum": Colour.RED,
    }
    assert canonical_json(value) == (
        b'{"decimal":2.5,"delta":90,"enum":"red","path":"/data/x",'
        b'"uuid":"12345678-1234-5678-1234-567812345678"}'
    )


def test_dataclass_hashes_like_a_dict_of_its_fields() -> None:
    @dataclass
    class Query:
        text: str
        limit: int

    assert hash_tool_args(Query("x", 3)) == hash_tool_args({"limit": 3, "text": "x"})


def test_pydantic_model_hashes_like_its_json_dump() -> None:
    class Query(pydantic.BaseModel):
        text: str
        limit: int

    assert hash_tool_args(Query(text="x", limit=3)) == hash_tool_args({"text": "x", "limit": 3})


def test_named_tuple_hashes_like_a_list() -> None:
    point = namedtuple("point", ["x", "y"])
    assert hash_tool_args(point(1, 2)) == hash_tool_args([1, 2])


def test_cycles_do_not_raise() -> None:
    loop: list[object] = [1]
    loop.append(loop)
    assert canonical_json(loop) == b'[1,"<cycle>"]'


def test_object_with_broken_str_does_not_raise() -> None:
    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert canonical_json(Broken()) == b'"<Broken>"'


def test_hash_is_the_same_in_another_process_with_another_hash_seed() -> None:
    code = (
        "from agentwatch.producer import hash_tool_args;"
        "print(hash_tool_args({'tags': {'x', 'y', 'z', 'w'}, 'q': 'paris', 'n': 2.0,"
        " 'nested': {'b': [1, (2, 3)], 'a': None}}))"
    )
    here = hash_tool_args(
        {
            "nested": {"a": None, "b": [1, [2, 3]]},
            "n": 2,
            "q": "paris",
            "tags": {"w", "z", "y", "x"},
        }
    )
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == here
