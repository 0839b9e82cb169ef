"""An acknowledgement: the record of the compacted ``agentwatch.acks`` topic (a wire
contract: ``agentwatch alerts ack`` and the alert service's link server write it, every
dispatcher follows it, the sink stores it in ``alert_acks``; key = the alert id)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from agentwatch.schemas._time import format_ts

__all__ = ["MAX_ACK_BY_CHARS", "Ack"]

MAX_ACK_BY_CHARS: Final = 200
_MAX_ALERT_ID_CHARS: Final = 200


@dataclass(frozen=True, slots=True)
class Ack:
    """``alert_id`` acknowledged ``by`` someone ``at`` a time, ``via`` a path
    (``cli``, ``link:<endpoint>``, ``api``)."""

    alert_id: str
    by: str
    at: datetime
    via: str = "api"

    def __post_init__(self) -> None:
        if not self.alert_id or len(self.alert_id) > _MAX_ALERT_ID_CHARS:
            raise ValueError(f"alert_id: must be 1 to {_MAX_ALERT_ID_CHARS} characters")
        if not self.by.strip() or len(self.by) > MAX_ACK_BY_CHARS:
            raise ValueError(f"by: must be 1 to {MAX_ACK_BY_CHARS} characters, not blank")
        if self.at.tzinfo is None:
            raise ValueError("at: must carry a time zone")

    @classmethod
    def now(cls, alert_id: str, by: str, via: str = "api") -> Ack:
        return cls(alert_id, by.strip(), datetime.now(UTC), via)

    def encode(self) -> bytes:
        """The record value on the acks topic (JSON)."""
        return orjson.dumps(
            {
                "alert_id": self.alert_id,
                "acked_by": self.by,
                "acked_at": format_ts(self.at),
                "via": self.via,
            }
        )

    @classmethod
    def decode(cls, raw: bytes | None) -> Ack:
        """An acks-topic record value; ValueError naming the key when it is not one."""
        try:
            data: Any = orjson.loads(raw or b"")
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")  # noqa: TRY004 - a ValueError for callers
        for key in ("alert_id", "acked_by", "acked_at"):
            if not isinstance(data.get(key), str):
                raise ValueError(f"{key}: missing or not a string")  # noqa: TRY004 - callers catch ValueError
        try:
            at = datetime.fromisoformat(data["acked_at"]).astimezone(UTC)
        except (ValueError, OverflowError):
            raise ValueError(f"acked_at: not an RFC 3339 time: {data['acked_at']!r}") from None
        via = data.get("via", "api")
        return cls(data["alert_id"], data["acked_by"], at, via if isinstance(via, str) else "api")
