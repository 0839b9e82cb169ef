"""The pure part of `agentwatch sink`: intents, tokens, batch cuts, duplicates, dead letters,
failed webhook deliveries."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from agentwatch.schemas import Alert, default_price_table, encode_alert
from agentwatch.sinks import DeadLetter
from agentwatch.sinks.kafka import (
    INTENT_PREFIX,
    PartitionBatch,
    RecentIds,
    batch_token,
    intent_metadata,
    parse_intent,
)
from agentwatch.sinks.webhooks._failures import DeliveryFailure

# Not imported from conftest: with tests/integration in the same run, ``conftest`` names
# the integration suite's module.
AlertFactory = Callable[..., Alert]


def _event(event_id: str, **fields: object) -> dict[str, object]:
    return {
        "event_id": event_id,
        "ts": "2026-11-20T09:00:00.000001Z",
        "agent_id": "a",
        "session_id": "s",
        "kind": "llm_call",
        **fields,
    }


def _id(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def test_intent_metadata_round_trips_and_ignores_foreign_metadata() -> None:
    assert parse_intent(intent_metadata(41)) == 41
    assert intent_metadata(41).startswith(INTENT_PREFIX)
    assert parse_intent("") is None
    assert parse_intent(None) is None
    assert parse_intent("written by another tool") is None
    assert parse_intent(INTENT_PREFIX + "x12") is None


def test_token_names_group_topic_partition_and_range() -> None:
    assert batch_token("g", "agentwatch.events", 3, 100, 199) == "g/agentwatch.events/3/100-199"
    batch = PartitionBatch("agentwatch.events", 3, kind="events", start=100)
    with pytest.raises(ValueError, match="empty batch"):
        batch.token("g")
    batch.add(100, orjson.dumps(_event(_id(1))), None)
    batch.add(101, orjson.dumps(_event(_id(2))), None)
    assert batch.token("g") == "g/agentwatch.events/3/100-101"


def test_batch_without_a_commit_starts_at_its_first_record() -> None:
    batch = PartitionBatch("t", 0, kind="events")
    batch.add(7, orjson.dumps([_event(_id(1)), _event(_id(2))]), None)
    assert (batch.start, batch.last, len(batch.events)) == (7, 7, 2)


def test_a_batch_from_an_intent_is_cut_at_exactly_its_last_offset() -> None:
    batch = PartitionBatch("t", 0, kind="events", start=10, cut_at=12)
    for offset in (10, 11):
        assert batch.accepts(offset)
        batch.add(offset, orjson.dumps(_event(_id(offset))), None)
        assert not batch.must_flush
    batch.add(12, orjson.dumps(_event(_id(12))), None)
    assert batch.must_flush
    assert not batch.accepts(13)
    assert batch.token("g") == "g/t/0/10-12"
    batch.committed()
    assert (batch.start, batch.cut_at, batch.empty, batch.events) == (13, None, True, [])
    assert batch.accepts(13)


def test_recent_ids_drop_a_resent_event_and_forget_the_oldest() -> None:
    recent = RecentIds(capacity=4)
    batch = PartitionBatch("t", 0, kind="events")
    batch.add(0, orjson.dumps([_event(_id(1)), _event(_id(2))]), recent)
    batch.add(1, orjson.dumps([_event(_id(1)), _event(_id(3))]), recent)
    assert [e["event_id"] for e in batch.events] == [_id(1), _id(2), _id(3)]
    assert batch.duplicates == 1
    assert len(recent) == 3
    for n in (4, 5):  # ids 1 and 2 age out once two newer generations of 2 came in
        assert not recent.seen(_id(n))
    assert recent.seen(_id(3))
    assert not recent.seen(_id(1))


def test_bad_records_become_dead_letters_with_their_source() -> None:
    batch = PartitionBatch("ev", 2, kind="events")
    batch.add(5, b"{oops", None)
    batch.add(6, orjson.dumps([_event(_id(1)), _event("not-a-uuid")]), None)
    batch.add(7, None, None)
    assert len(batch.events) == 1
    sources = [d.source for d in batch.dead_letters]
    assert sources == ["ev/2/5", "ev/2/6#1", "ev/2/7"]
    assert "malformed JSON" in batch.dead_letters[0].reason
    assert "event_id" in batch.dead_letters[1].reason
    assert batch.rows == 4


def test_alerts_topic_records_become_alerts_or_dead_letters(make_alert: AlertFactory) -> None:
    batch = PartitionBatch("al", 0, kind="alerts")
    alert = make_alert()
    batch.add(0, encode_alert(alert), None)
    batch.add(1, b'{"rule": 1}', None)
    assert batch.alerts == [alert]
    assert [d.source for d in batch.dead_letters] == ["al/0/1"]


def _failure(alert: Alert, endpoint: str = "team-slack") -> DeliveryFailure:
    return DeliveryFailure(
        alert=alert,
        endpoint=endpoint,
        delivery_id="d-1",
        attempts=8,
        status_code=503,
        error="HTTP 503: upstream unavailable",
    )


def test_a_failed_delivery_becomes_an_alert_row_with_its_status_and_a_dead_letter(
    make_alert: AlertFactory,
) -> None:
    batch = PartitionBatch("al.dlq", 1, kind="alert_failures")
    failure = _failure(make_alert())
    batch.add(4, failure.encode(), None)
    assert batch.failures == [failure]
    assert batch.alerts == []
    assert batch.dead_letters == [DeadLetter("al.dlq/1/4", failure.reason, failure.encode())]
    assert "webhook team-slack" in batch.dead_letters[0].reason
    assert batch.rows == 2
    assert batch.alert_rows() == ([failure.alert], ["failed:team-slack"])


def test_an_unreadable_failure_record_becomes_a_dead_letter_with_the_reason() -> None:
    batch = PartitionBatch("al.dlq", 0, kind="alert_failures")
    batch.add(0, b'{"endpoint": "x"}', None)
    batch.add(1, b"{oops", None)
    batch.add(2, None, None)
    assert batch.failures == []
    assert [d.source for d in batch.dead_letters] == ["al.dlq/0/0", "al.dlq/0/1", "al.dlq/0/2"]
    assert "`alert`" in batch.dead_letters[0].reason
    assert batch.dead_letters[0].raw == b'{"endpoint": "x"}'
    assert batch.alert_rows() == ([], None)


def test_failed_deliveries_share_the_exactly_once_protocol_of_the_other_topics(
    make_alert: AlertFactory,
) -> None:
    batch = PartitionBatch("al.dlq", 2, kind="alert_failures", start=10, cut_at=11)
    batch.add(10, _failure(make_alert()).encode(), None)
    assert not batch.complete  # re-formed from an intent: waits for its cut
    batch.add(11, _failure(make_alert(), "pager").encode(), None)
    assert batch.must_flush
    assert batch.token("g") == "g/al.dlq/2/10-11"
    _, status = batch.alert_rows()
    assert status == ["failed:team-slack", "failed:pager"]
    batch.committed()
    assert (batch.start, batch.failures, batch.dead_letters, batch.rows) == (12, [], [], 0)


def test_alert_rows_without_failures_leave_delivery_status_to_its_default(
    make_alert: AlertFactory,
) -> None:
    batch = PartitionBatch("al", 0, kind="alerts")
    alert = make_alert()
    batch.add(0, encode_alert(alert), None)
    assert batch.alert_rows() == ([alert], None)


def test_events_without_cost_are_priced_like_the_core_prices_them() -> None:
    prices = default_price_table()
    batch = PartitionBatch("t", 0, kind="events")
    sent = _event(_id(1), model="gpt-4o-mini", input_tokens=1000, output_tokens=100)
    own = _event(_id(2), model="gpt-4o-mini", input_tokens=1000, cost_usd=0.5)
    batch.add(0, orjson.dumps([sent, own]), None, prices)
    assert batch.events[0]["cost_usd"] == prices.cost_usd("gpt-4o-mini", 1000, 100, None)
    assert batch.events[0]["cost_usd"] is not None
    assert batch.events[0]["cost_usd"] > 0
    assert batch.events[1]["cost_usd"] == 0.5


def test_a_batch_from_an_intent_is_incomplete_until_its_cut() -> None:
    batch = PartitionBatch("t", 0, kind="events", start=10, cut_at=12)
    batch.add(10, orjson.dumps(_event(_id(10))), None)
    # Storing it now would give it another token than the first attempt's.
    assert not batch.complete
    assert not batch.must_flush
    assert batch.token("g") == "g/t/0/10-12"


def test_a_cut_whose_last_records_are_gone_still_carries_the_first_token() -> None:
    batch = PartitionBatch("t", 0, kind="events", start=10, cut_at=12)
    batch.add(10, orjson.dumps(_event(_id(10))), None)
    assert not batch.accepts(14)  # 11 and 12 were deleted (retention, compaction)
    batch.passed_cut()
    assert batch.complete
    assert batch.must_flush
    assert batch.token("g") == "g/t/0/10-12"
    batch.committed()
    assert batch.start == 13


def test_a_cut_range_entirely_gone_leaves_nothing_to_complete() -> None:
    batch = PartitionBatch("t", 0, kind="events", start=10, cut_at=12)
    assert not batch.accepts(20)
    batch.passed_cut()
    assert batch.cut_at is None
    assert batch.accepts(20)
