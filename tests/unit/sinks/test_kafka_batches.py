"""The pure part of `agentwatch sink`: intents, tokens, batch cuts, duplicates, dead letters,
failed webhook deliveries."""

from __future__ import annotations

import random
from collections.abc import Callable

import orjson
import pytest

from agentwatch.schemas import Alert, DeliveryFailure, default_price_table, encode_alert
from agentwatch.sinks.kafka import (
    INTENT_PREFIX,
    CommitMeta,
    PartitionBatch,
    RecentIds,
    batch_token,
    intent_metadata,
    memory_metadata,
    parse_commit,
    parse_intent,
)
from agentwatch.sinks.kafka._batches import record_event_ids

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
    # Generations flip before a record, when the newer is full (here: before record 1),
    # and a copy counts as seen again: record 1's generation holds ids 1 and 3.
    assert (recent.span, len(recent)) == ((0, 1), 4)
    batch.add(2, orjson.dumps([_event(_id(4))]), recent)  # record 0 is forgotten
    assert recent.span == (1, 2)
    batch.add(3, orjson.dumps([_event(_id(5))]), recent)
    batch.add(4, orjson.dumps([_event(_id(6))]), recent)  # records 0-1 are forgotten
    assert recent.span == (2, 4)
    batch.add(5, orjson.dumps([_event(_id(4)), _event(_id(1))]), recent)
    assert [e["event_id"] for e in batch.events][-1:] == [_id(1)]
    assert batch.duplicates == 2


def test_commit_metadata_round_trips_an_intent_and_the_id_memory_span() -> None:
    meta = parse_commit(intent_metadata(41, (7, 30)))
    assert meta == CommitMeta(cut_at=41, ids=(7, 30))
    assert parse_commit(memory_metadata((7, 30))) == CommitMeta(cut_at=None, ids=(7, 30))
    assert parse_commit(intent_metadata(41)) == CommitMeta(cut_at=41, ids=None)
    assert memory_metadata(None) == ""
    assert parse_intent(memory_metadata((1, 2))) is None
    # An intent written by a sink before the memory spans still completes its batch.
    assert parse_commit("agentwatch-sink/1 pending 12") == CommitMeta(cut_at=12, ids=None)
    assert parse_commit(INTENT_PREFIX + "12 ids 9 3") == CommitMeta(cut_at=12, ids=None)


def _log(records: int, seed: int) -> list[bytes]:
    """Records of 1-3 events, about one in four a copy of an event up to 12 records back."""
    rng = random.Random(seed)
    log: list[list[str]] = []
    for offset in range(records):
        ids = [_id(offset * 10 + k) for k in range(rng.randrange(1, 4))]
        if log and rng.random() < 0.25:
            ids.append(rng.choice(log[max(0, offset - 12) :]) [0])
        log.append(ids)
    return [orjson.dumps([_event(i) for i in ids]) for ids in log]


@pytest.mark.parametrize("restart_at", [1, 5, 17, 33, 58])
def test_a_memory_rebuilt_from_its_committed_span_drops_exactly_what_the_lost_one_did(
    restart_at: int,
) -> None:
    log = _log(80, seed=restart_at)
    warm = RecentIds(capacity=8)
    before = PartitionBatch("t", 0, kind="events", start=0)
    for offset in range(restart_at):
        before.add(offset, log[offset], warm)
    span = warm.span
    assert span is not None
    # A restarted sink: the span from the commit at restart_at, the records re-read.
    rebuilt = RecentIds(capacity=8, span=span)
    for offset in range(span[0], restart_at):
        rebuilt.prime(offset, record_event_ids(log[offset]))
    after_warm = PartitionBatch("t", 0, kind="events", start=restart_at)
    after_rebuilt = PartitionBatch("t", 0, kind="events", start=restart_at)
    for offset in range(restart_at, len(log)):
        after_warm.add(offset, log[offset], warm)
        after_rebuilt.add(offset, log[offset], rebuilt)
    assert after_rebuilt.events == after_warm.events
    assert after_rebuilt.duplicates == after_warm.duplicates > 0
    assert after_rebuilt.ids_at_start == span
    assert rebuilt.span == warm.span


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


def test_a_failed_delivery_is_taken_as_a_failure_for_the_sinks_one_mapping(
    make_alert: AlertFactory,
) -> None:
    batch = PartitionBatch("al.dlq", 1, kind="alert_failures")
    failure = _failure(make_alert())
    batch.add(4, failure.encode(), None)
    assert batch.failures == [failure]
    assert batch.alerts == []
    # Its alerts and dead_letters rows are ClickHouseSink.add_delivery_failures' to make.
    assert batch.dead_letters == []
    assert batch.rows == 2


def test_an_unreadable_failure_record_becomes_a_dead_letter_with_the_reason() -> None:
    batch = PartitionBatch("al.dlq", 0, kind="alert_failures")
    batch.add(0, b'{"endpoint": "x"}', None)
    batch.add(1, b"{oops", None)
    batch.add(2, None, None)
    assert batch.failures == []
    assert [d.source for d in batch.dead_letters] == ["al.dlq/0/0", "al.dlq/0/1", "al.dlq/0/2"]
    assert "`alert`" in batch.dead_letters[0].reason
    assert batch.dead_letters[0].raw == b'{"endpoint": "x"}'


def test_failed_deliveries_share_the_exactly_once_protocol_of_the_other_topics(
    make_alert: AlertFactory,
) -> None:
    batch = PartitionBatch("al.dlq", 2, kind="alert_failures", start=10, cut_at=11)
    batch.add(10, _failure(make_alert()).encode(), None)
    assert not batch.complete  # re-formed from an intent: waits for its cut
    batch.add(11, _failure(make_alert(), "pager").encode(), None)
    assert batch.must_flush
    assert batch.token("g") == "g/al.dlq/2/10-11"
    assert [f.delivery_status for f in batch.failures] == ["failed:team-slack", "failed:pager"]
    batch.committed()
    assert (batch.start, batch.failures, batch.dead_letters, batch.rows) == (12, [], [], 0)


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


def test_ack_records_become_ack_rows_and_bad_ones_dead_letters() -> None:
    from agentwatch.alerts import Ack  # noqa: PLC0415 - only this test needs it

    ack = Ack.now("alert-1", "maria", via="cli")
    batch = PartitionBatch("agentwatch.acks", 0, kind="acks")
    batch.add(0, ack.encode(), None)
    batch.add(1, b'{"alert_id": "a"}', None)
    assert batch.acks == [Ack.decode(ack.encode())]
    assert batch.acks[0].by == "maria"
    (letter,) = batch.dead_letters
    assert letter.source == "agentwatch.acks/0/1"
    assert "acked_by" in letter.reason
    assert batch.rows == 2
    batch.committed()
    assert batch.acks == []
