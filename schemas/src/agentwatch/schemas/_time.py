"""Time helpers: event time is integer microseconds since the Unix epoch (UTC)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["EPOCH", "format_ts", "from_us", "to_us", "utc_now"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def to_us(ts: datetime) -> int:
    """Aware datetime -> integer microseconds since the epoch (exact, no float)."""
    return (ts - EPOCH) // _ONE_US


def from_us(ts_us: int) -> datetime:
    """Integer microseconds since the epoch -> aware UTC datetime."""
    return EPOCH + timedelta(microseconds=ts_us)


def format_ts(ts: datetime) -> str:
    """RFC 3339 UTC with microseconds, e.g. ``2026-11-20T09:00:01.250000Z``."""
    utc = ts.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if utc.year < 1000:  # glibc's %Y does not pad: "1-01-01T..." is no RFC 3339 time
        text = f"{utc.year:04d}{text[text.index('-'):]}"
    return text


def utc_now() -> datetime:
    return datetime.now(UTC)
