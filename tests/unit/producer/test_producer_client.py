from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from agentwatch.producer import Agentwatch, InProcessLog, InProcessTransport, current_span
from agentwatch.producer.testing import CollectingTransport, Collector, collector
from agentwatch.schemas import (
    Event,
    EventKind,
    ModelPrice,
    PriceTable,
    decode_record,
    default_price_table,
)


def _decoded(values: list[bytes]) -> list[Event]:
    events: list[Event] = []
    for value in values:
        decoded = decode_record(value)
        assert decoded.rejected == []
        events.extend(decoded.events)
    return events


# -- emit ---------------------------------------------------------------------------------


def test_emit_dict_fills_ids_time_session_agent_and_tenant(aw: Collector) -> None:
    aw.emit({"kind": "agent_step", "name": "plan"})
    (event,) = aw.events
    assert uuid.UUID(event.event_id).version == 4
    assert event.ts.tzinfo is not None
    assert event.session_id == aw.default_session_id
    assert (event.agent_id, event.tenant_id, event.name) == ("test-agent", "acme", "plan")


def test_emit_keeps_fields_the_caller_set(aw: Collector) -> None:
    aw.emit(
        {
            "kind": "custom",
            "event_id": "12345678-1234-4234-8234-123456789abc",
            "ts": "2026-11-20T09:00:01.250000Z",
            "agent_id": "other",
            "session_id": "s-1",
        }
    )
    (event,) = aw.events
    assert event.event_id == "12345678-1234-4234-8234-123456789abc"
    assert event.ts == datetime(2026, 11, 20, 9, 0, 1, 250000, tzinfo=UTC)
    assert (event.agent_id, event.session_id) == ("other", "s-1")


def test_emit_copies_the_dict(aw: Collector) -> None:
    event = {"kind": "custom", "name": "before"}
    aw.emit(event)
    event["name"] = "after"
    assert aw.events[0].name == "before"


def test_emit_event_model_is_sent_as_is(aw: Collector) -> None:
    model = Event(
        event_id=str(uuid.uuid4()),
        ts=datetime.now(UTC),
        agent_id="a",
        session_id="s",
        kind=EventKind.HANDOFF,
        tenant_id="t",
    )
    aw.emit(model)
    (event,) = aw.events
    assert event == model


def test_emit_inside_a_session_links_session_trace_and_parent(aw: Collector) -> None:
    with aw.session() as session:
        aw.emit({"kind": "guardrail", "name": "pii"})
    guardrail = next(e for e in aw.events if e.kind == "guardrail")
    assert guardrail.session_id == session.session_id
    assert guardrail.trace_id == session.trace_id
    assert guardrail.parent_span_id == session.span_id


def test_emit_with_unknown_field_is_counted_invalid_not_raised(aw: Collector) -> None:
    aw.emit({"kind": "llm_call", "input_token": 5})
    assert aw.events == []
    assert aw.stats.invalid == 1


def test_emit_with_unknown_kind_is_counted_invalid(aw: Collector) -> None:
    aw.emit({"kind": "thinking"})
    aw.emit({"name": "no kind"})
    assert aw.stats.invalid == 2


def test_emit_of_a_non_event_is_counted_invalid(aw: Collector) -> None:
    aw.emit("llm_call")  # type: ignore[arg-type]
    aw.emit(None)  # type: ignore[arg-type]
    assert aw.stats.invalid == 2


def test_emit_with_a_wrong_type_is_caught_by_full_validation(aw: Collector) -> None:
    aw.emit({"kind": "llm_call", "input_tokens": "5"})
    aw.emit({"kind": "llm_call", "input_tokens": -1})
    aw.emit({"kind": "custom", "attributes": {"x": {1, 2}}})
    assert aw.events == []
    assert aw.stats.invalid == 3


def test_invalid_event_is_logged_as_a_warning_naming_the_field(
    aw: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="agentwatch.producer"):
        aw.emit({"kind": "llm_call", "output_tokens": -3})
        aw.flush()
    assert "output_tokens" in caplog.text


def test_emit_after_close_is_dropped_quietly() -> None:
    client = collector()
    client.close()
    client.emit({"kind": "custom"})
    assert client.stats.dropped == 1
    assert client.transport.records == []


# -- records --------------------------------------------------------------------------------


def test_one_sessions_events_of_one_interval_are_one_record_in_order() -> None:
    client = collector(linger_ms=60_000)
    for i in range(20):
        client.emit({"kind": "custom", "session_id": "s1", "attributes": {"seq": i}})
    records = client.records
    assert len(records) == 1
    assert [e.attributes["seq"] for e in _decoded([records[0][1]]) if e.attributes] == list(
        range(20)
    )
    client.close()


def test_record_key_is_tenant_slash_session() -> None:
    client = collector(tenant_id="acme", linger_ms=60_000)
    client.emit({"kind": "custom", "session_id": "s-9"})
    ((key, _),) = client.records
    assert key == b"acme/s-9"
    client.close()


def test_record_value_is_a_json_array_even_for_one_event(aw: Collector) -> None:
    aw.emit({"kind": "custom"})
    ((_, value),) = aw.records
    assert isinstance(orjson.loads(value), list)


def test_records_respect_the_event_bound() -> None:
    client = collector(linger_ms=60_000, max_batch_events=4)
    for _ in range(10):
        client.emit({"kind": "custom", "session_id": "s"})
    counts = [len(orjson.loads(v)) for _, v in client.records]
    assert counts == [4, 4, 2]
    client.close()


def test_records_respect_the_byte_bound() -> None:
    client = collector(linger_ms=60_000, max_batch_bytes=2048)
    for i in range(40):
        client.emit({"kind": "custom", "session_id": "s", "attributes": {"seq": i}})
    records = client.records
    assert len(records) > 1
    assert all(len(value) <= 2048 for _, value in records)
    events = _decoded([v for _, v in records])
    assert [e.attributes["seq"] for e in events if e.attributes] == list(range(40))
    client.close()


def test_per_session_order_holds_across_many_sessions_and_threads() -> None:
    client = collector(linger_ms=1, max_batch_events=7, queue_size=100_000)

    def agent(n: int) -> None:
        for i in range(100):
            client.emit({"kind": "custom", "session_id": f"s{n}", "attributes": {"seq": i}})

    threads = [threading.Thread(target=agent, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    records = client.records
    for key, value in records:
        assert {e.key.encode() for e in decode_record(value).events} == {key}
    events = _decoded([v for _, v in records])
    for n in range(8):
        seqs = [e.attributes["seq"] for e in events if e.session_id == f"s{n}" and e.attributes]
        assert seqs == list(range(100))
    client.close()


def test_every_record_decodes_without_rejects(aw: Collector) -> None:
    with aw.session(attributes={"user": "u1"}):
        with aw.llm_call(model="gpt-4o", provider="openai") as span:
            span.input_tokens, span.output_tokens = 10, 5
        with aw.tool_call("search", args={"q": "x"}):
            pass
        aw.emit({"kind": "handoff", "name": "to-billing"})
    assert aw.transport.rejected == []
    assert [e.kind for e in aw.events] == [
        "session_start",
        "llm_call",
        "tool_call",
        "handoff",
        "session_end",
    ]


# -- cost -----------------------------------------------------------------------------------


def test_cost_is_filled_from_the_default_price_table(aw: Collector) -> None:
    with aw.llm_call(model="gpt-4o") as span:
        span.input_tokens, span.output_tokens = 1000, 200
    (event,) = aw.events
    assert event.cost_usd == pytest.approx(default_price_table().cost_usd("gpt-4o", 1000, 200))
    assert event.cost_usd


def test_cost_is_filled_for_emitted_dicts_too(aw: Collector) -> None:
    aw.emit({"kind": "llm_call", "model": "gpt-4o", "input_tokens": 1000})
    assert aw.events[0].cost_usd == pytest.approx(default_price_table().cost_usd("gpt-4o", 1000, 0))


def test_cost_set_by_the_caller_is_kept(aw: Collector) -> None:
    with aw.llm_call(model="gpt-4o") as span:
        span.input_tokens, span.cost_usd = 1000, 0.5
    assert aw.events[0].cost_usd == 0.5


def test_unknown_model_stays_unpriced(aw: Collector) -> None:
    with aw.llm_call(model="my-local-model") as span:
        span.input_tokens = 1000
    assert aw.events[0].cost_usd is None


def test_custom_price_table_is_used() -> None:
    prices = PriceTable({"house-model": ModelPrice(input_per_mtok=1.0, output_per_mtok=2.0)})
    client = collector(prices=prices)
    with client.llm_call(model="house-model") as span:
        span.input_tokens, span.output_tokens = 1_000_000, 1_000_000
    assert client.events[0].cost_usd == pytest.approx(3.0)
    client.close()


# -- redaction ------------------------------------------------------------------------------


def test_redact_hook_can_mask_attributes() -> None:
    def mask(event: dict[str, Any]) -> dict[str, Any]:
        if "attributes" in event:
            event["attributes"] = dict.fromkeys(event["attributes"], "***")
        return event

    client = collector(redact=mask)
    client.emit({"kind": "custom", "attributes": {"email": "a@b.c"}})
    assert client.events[0].attributes == {"email": "***"}
    client.close()


def test_redact_hook_returning_none_drops_the_event_as_redacted() -> None:
    def drop_guardrails(event: dict[str, Any]) -> dict[str, Any] | None:
        return None if event["kind"] == "guardrail" else event

    client = collector(redact=drop_guardrails)
    client.emit({"kind": "guardrail"})
    client.emit({"kind": "custom"})
    assert [e.kind for e in client.events] == ["custom"]
    assert (client.stats.redacted, client.stats.dropped) == (1, 0)
    client.close()


def test_redact_hook_that_raises_never_lets_the_event_out() -> None:
    def broken(event: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("oops")

    client = collector(redact=broken)
    client.emit({"kind": "custom"})
    assert client.events == []
    assert client.stats.failed == 1
    client.close()


def test_redact_hook_output_is_validated() -> None:
    client = collector(redact=lambda event: {**event, "input_tokens": -1})
    client.emit({"kind": "custom"})
    assert client.events == []
    assert client.stats.invalid == 1
    client.close()


def test_a_session_id_the_contract_rejects_is_counted_invalid_not_sent(aw: Collector) -> None:
    with aw.session(session_id="s" * 300):  # made by the client from the caller's context
        aw.emit({"kind": "custom"})
    aw.emit({"kind": "custom", "session_id": ""})
    aw.flush()
    assert aw.events == []
    assert aw.stats.invalid == 4  # session_start and session_end too


def test_an_event_gets_its_context_ids_and_price_checked_and_sent(aw: Collector) -> None:
    with aw.session(session_id="s-1", agent_id="concierge"):
        aw.emit({"kind": "llm_call", "model": "gpt-4o", "input_tokens": 10})
    aw.flush()
    event = next(e for e in aw.events if e.kind == "llm_call")
    assert (event.session_id, event.agent_id, event.tenant_id) == ("s-1", "concierge", "acme")
    assert event.trace_id
    assert event.parent_span_id
    assert event.cost_usd is not None
    assert event.cost_usd > 0
    assert aw.stats.invalid == 0


# -- stats ----------------------------------------------------------------------------------


def test_stats_add_up(aw: Collector) -> None:
    aw.emit({"kind": "custom"})
    aw.emit({"kind": "custom", "input_tokens": "x"})
    aw.emit({"kind": "nope"})
    aw.flush()
    stats = aw.stats
    assert (stats.emitted, stats.sent, stats.invalid, stats.queue_depth) == (3, 1, 2, 0)
    assert stats.emitted == (
        stats.sent + stats.dropped + stats.invalid + stats.redacted + stats.failed
        + stats.queue_depth + stats.buffered
    )


def test_stats_is_a_frozen_snapshot(aw: Collector) -> None:
    stats = aw.stats
    aw.emit({"kind": "custom"})
    aw.flush()
    assert stats.emitted == 0
    with pytest.raises(AttributeError):
        stats.sent = 5  # type: ignore[misc]


# -- drop policy ----------------------------------------------------------------------------


def test_full_queue_drops_counts_and_never_blocks_emit(blocking_transport: Any) -> None:
    client = Agentwatch(transport=blocking_transport, queue_size=4, linger_ms=0, max_batch_events=1)
    client.emit({"kind": "custom"})
    assert blocking_transport.entered.wait(30)  # the worker is now stuck in send()
    for _ in range(50):
        client.emit({"kind": "custom"})
    stats = client.stats
    assert (stats.emitted, stats.queue_depth, stats.dropped) == (51, 4, 46)
    blocking_transport.release.set()
    client.close()


def test_full_queue_warns_once_per_interval(
    blocking_transport: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = Agentwatch(transport=blocking_transport, queue_size=1, linger_ms=0, max_batch_events=1)
    client.emit({"kind": "custom"})
    assert blocking_transport.entered.wait(30)
    with caplog.at_level(logging.WARNING, logger="agentwatch.producer"):
        for _ in range(100):
            client.emit({"kind": "custom"})
    warnings = [r for r in caplog.records if "queue full" in r.getMessage()]
    assert len(warnings) == 1
    blocking_transport.release.set()
    client.close()


# -- failing and hanging transports ---------------------------------------------------------


@pytest.mark.usefixtures("no_backoff")
def test_transport_that_always_raises_is_retried_until_close_then_counted_failed(
    failing_transport: Any,
) -> None:
    transport = failing_transport()
    client = Agentwatch(transport=transport, linger_ms=0)
    client.emit({"kind": "custom"})
    assert client.flush(timeout_s=0.3) is False
    assert client.stats.buffered == 1  # kept, not given up
    client.close(timeout_s=0.3)
    assert (client.stats.failed, client.stats.sent, client.stats.buffered) == (1, 0, 0)
    assert transport.calls >= 3
    assert client.stats.retries == transport.calls


@pytest.mark.usefixtures("no_backoff")
def test_transient_send_failures_are_retried(failing_transport: Any) -> None:
    transport = failing_transport(failures=2)
    client = Agentwatch(transport=transport, linger_ms=0)
    client.emit({"kind": "custom"})
    assert client.flush()
    assert (client.stats.sent, client.stats.failed, client.stats.retries) == (1, 0, 2)
    assert len(transport.records) == 1
    client.close()


@pytest.mark.usefixtures("no_backoff")
def test_failures_are_logged_as_warnings(
    failing_transport: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = Agentwatch(transport=failing_transport(), linger_ms=0)
    with caplog.at_level(logging.WARNING, logger="agentwatch.producer"):
        client.emit({"kind": "custom"})
        client.flush(timeout_s=0.2)
    assert "delivery failed (RuntimeError('broker unreachable'))" in caplog.text
    assert "1 events kept" in caplog.text
    client.close(timeout_s=0.1)


def test_flush_returns_false_in_bounded_time_when_the_transport_hangs(
    blocking_transport: Any,
) -> None:
    client = Agentwatch(transport=blocking_transport, linger_ms=0)
    client.emit({"kind": "custom"})
    assert blocking_transport.entered.wait(30)
    assert client.flush(timeout_s=0.05) is False
    blocking_transport.release.set()
    client.close()


def test_close_returns_in_bounded_time_when_the_transport_hangs(
    blocking_transport: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = Agentwatch(transport=blocking_transport, linger_ms=0)
    client.emit({"kind": "custom"})
    assert blocking_transport.entered.wait(30)
    with caplog.at_level(logging.WARNING, logger="agentwatch.producer"):
        client.close(timeout_s=0.05)
    assert "close() gave up" in caplog.text


# -- lifecycle ------------------------------------------------------------------------------


def test_flush_without_any_event_is_true(aw: Collector) -> None:
    assert aw.flush()


def test_flush_delivers_to_an_in_process_log() -> None:
    log = InProcessLog()
    client = Agentwatch(transport=InProcessTransport(log, "events"), linger_ms=60_000)
    client.emit({"kind": "custom"})
    assert client.flush()
    assert log.end_offset("events") == 1
    client.close()


def test_close_sends_what_is_queued() -> None:
    log = InProcessLog()
    client = Agentwatch(transport=InProcessTransport(log), linger_ms=60_000)
    for _ in range(3):
        client.emit({"kind": "custom"})
    client.close()
    assert client.stats.sent == 3
    assert log.end_offset("agentwatch.events") == 1


def test_close_closes_the_transport() -> None:
    client = collector()
    client.emit({"kind": "custom"})
    client.close()
    assert client.transport.closed


def test_close_is_idempotent(aw: Collector) -> None:
    aw.close()
    aw.close()


def test_close_of_an_unused_client_closes_the_transport() -> None:
    client = collector()
    client.close()
    assert client.transport.closed


def test_transport_close_error_does_not_reach_the_caller(failing_transport: Any) -> None:
    client = Agentwatch(transport=failing_transport(failures=0))
    client.close()
    client2 = Agentwatch(transport=failing_transport(failures=0))
    client2.emit({"kind": "custom"})
    client2.close()


def test_with_block_starts_and_closes() -> None:
    transport = CollectingTransport()
    with Agentwatch(transport=transport) as client:
        client.emit({"kind": "custom"})
    assert transport.closed
    assert len(transport.events) == 1


def test_async_with_block_starts_and_closes() -> None:
    transport = CollectingTransport()

    async def main() -> None:
        async with Agentwatch(transport=transport) as client:
            client.emit({"kind": "custom"})
            assert await client.aflush()

    asyncio.run(main())
    assert transport.closed
    assert len(transport.events) == 1


def test_atexit_hook_is_registered_once_and_removed_on_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registered: list[Callable[[], None]] = []
    monkeypatch.setattr("atexit.register", registered.append)
    monkeypatch.setattr("atexit.unregister", registered.remove)
    client = collector()
    client.start()
    client.emit({"kind": "custom"})
    client.emit({"kind": "custom"})
    assert len(registered) == 1
    client.close()
    assert registered == []


def test_atexit_hook_sends_what_is_queued(monkeypatch: pytest.MonkeyPatch) -> None:
    registered: list[Callable[[], None]] = []
    monkeypatch.setattr("atexit.register", registered.append)
    monkeypatch.setattr("atexit.unregister", registered.remove)
    client = collector(linger_ms=60_000)
    client.emit({"kind": "custom"})
    registered[0]()  # what the interpreter does at exit
    assert len(client.transport.events) == 1


def test_default_session_id_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTWATCH_SESSION_ID", "run-42")
    client = collector()
    with client.tool_call("search"):
        pass
    assert client.events[0].session_id == "run-42"
    client.close()


def test_default_session_id_is_one_uuid_per_client() -> None:
    first, second = collector(), collector()
    assert first.default_session_id != second.default_session_id
    uuid.UUID(first.default_session_id)
    first.close()
    second.close()


def test_helpers_outside_a_session_log_nothing(
    aw: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="agentwatch.producer"):
        with aw.llm_call(model="gpt-4o"):
            assert current_span() is not None
        aw.flush()
    assert caplog.records == []


def test_an_id_and_time_of_the_callers_own_are_sent_as_given_or_counted_invalid(
    aw: Collector,
) -> None:
    """The caller's ``event_id`` and ``ts`` go through the fast check (a canonical UUID, a
    ``...Z`` time in the contract's range) or, when it is unsure, through pydantic: valid
    ones are sent exactly as given, invalid ones are counted, whichever path took them."""
    given = [
        ("6513270e-269e-4d37-b2a7-4de452e6b438", "2026-11-20T09:00:00.123456Z"),  # fast
        ("6513270e-269e-4d37-b2a7-4de452e6b439", "2026-11-20T09:00:01Z"),  # fast
        ("6513270E-269E-4D37-B2A7-4DE452E6B43A", "2026-11-20T11:00:02+02:00"),  # pydantic
        ("6513270e-269e-4d37-b2a7-4de452e6b43b", "2026-11-20T09:00Z"),  # pydantic's JSON takes it
    ]
    for event_id, ts in given:
        aw.emit({"kind": "tool_call", "event_id": event_id, "ts": ts, "session_id": "s"})
    for event_id, ts in [("oops", "2026-11-20T09:00:03Z"),
                         ("6513270e-269e-4d37-b2a7-4de452e6b43c", "2026-13-20T09:00:00Z"),
                         ("6513270e-269e-4d37-b2a7-4de452e6b43d", "1800-01-01T00:00:00Z")]:
        aw.emit({"kind": "tool_call", "event_id": event_id, "ts": ts, "session_id": "s"})
    assert aw.flush()
    assert aw.stats.invalid == 3
    sent = [item for _, value in aw.records for item in _items(value)]
    assert [(e["event_id"], e["ts"]) for e in sent] == given
    assert [e.event_id for e in aw.events] == [event_id for event_id, _ in given]


def _items(value: bytes) -> list[dict[str, object]]:
    decoded = orjson.loads(value)
    return decoded if isinstance(decoded, list) else [decoded]
