"""JSON Schema of the public models (committed under ``schemas/json/``)."""

from __future__ import annotations

from typing import Any, Final, Literal

import orjson
from pydantic import BaseModel

from agentwatch.schemas._alert import Alert
from agentwatch.schemas._control import ControlRecord
from agentwatch.schemas._delivery import DeliveryFailure
from agentwatch.schemas._event import Event

__all__ = ["SCHEMA_NAMES", "json_schema", "json_schema_bytes"]

SCHEMA_NAMES: Final = ("event", "alert", "control", "delivery_failure")


def json_schema(
    name: Literal["event", "alert", "control", "delivery_failure"] | str,
) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``event``, ``alert``, ``control`` or
    ``delivery_failure`` (a record of ``agentwatch.alerts.dlq``) as seen on the wire."""
    models: dict[str, type[BaseModel]] = {"event": Event, "alert": Alert,
                                          "control": ControlRecord,
                                          "delivery_failure": DeliveryFailure}
    model = models.get(name)
    if model is None:
        raise ValueError(f"unknown schema {name!r}; choose one of {', '.join(SCHEMA_NAMES)}")
    schema = model.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://agentwatch.dev/schemas/{name}.v1.json"
    return schema


def json_schema_bytes(name: str) -> bytes:
    """Stable, pretty bytes (sorted keys, trailing newline): what the committed files hold."""
    options = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
    return orjson.dumps(json_schema(name), option=options) + b"\n"
