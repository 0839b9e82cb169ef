"""Record value -> event rows (plain dicts) and rejects, for the sink's hot path.

:func:`agentwatch.schemas.decode_record` builds a pydantic ``Event`` per event: ~4 µs of
validation and an object the sink only takes apart again into columns. Here a record is
parsed once with orjson and each event dict that is *plainly* valid (the shape our
producer sends: a UUID ``event_id``, ``ts`` as ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``, and
what :func:`agentwatch.schemas.fastcheck.plainly_valid` accepts) is used as it is. Any
other item goes through pydantic exactly as ``decode_record`` would take it, so what is
accepted, and the reason of a reject, are the same (a differential test holds the two
paths to that, on valid and broken events).
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from agentwatch.schemas import (
    Event,
    Rejected,
    decode_record,
    describe_validation_error,
    item_json,
    oversized,
)
from agentwatch.schemas.fastcheck import plain_event as _plain
from agentwatch.sinks._rows import event_row

__all__ = ["decode_rows"]


def decode_rows(value: bytes) -> tuple[list[dict[str, Any]], list[Rejected]]:
    """One record value (an event object or an array of 1..N) -> rows and rejects."""
    too_large = oversized(value)
    if too_large is not None:
        return [], [too_large]
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        parsed = None
    if type(parsed) is dict:
        if _plain(parsed):
            return [parsed], []
    elif type(parsed) is list and parsed:
        rows: list[dict[str, Any]] = []
        rejected: list[Rejected] = []
        for index, item in enumerate(parsed):
            if type(item) is dict and _plain(item):
                rows.append(item)
            else:
                _slow_item(index, item, rows, rejected)
        return rows, rejected
    # Anything else (malformed, empty, a lone event that is not plain): the reference path.
    decoded = decode_record(value)
    return [event_row(e) for e in decoded.events], decoded.rejected


def _slow_item(index: int, item: Any, rows: list[dict[str, Any]], rejected: list[Rejected]) -> None:
    raw = item_json(index, item)
    if isinstance(raw, Rejected):
        rejected.append(raw)
        return
    if not isinstance(item, dict):
        rejected.append(
            Rejected(raw, f"item {index} is {type(item).__name__}, not an object", index)
        )
        return
    try:
        rows.append(event_row(Event.model_validate_json(raw)))
    except ValidationError as exc:
        rejected.append(Rejected(raw, describe_validation_error(exc), index))
