from __future__ import annotations

from agentwatch.producer import Agentwatch
from agentwatch.producer.testing import CollectingTransport, Collector, collector


def test_collector_is_an_agentwatch_wired_to_memory() -> None:
    client = collector(agent_id="bot")
    assert isinstance(client, Agentwatch)
    assert isinstance(client, Collector)
    assert isinstance(client.transport, CollectingTransport)
    client.close()


def test_collector_events_are_decoded_after_a_flush() -> None:
    client = collector(agent_id="bot", linger_ms=60_000)
    with client.tool_call("search", args={"q": "x"}):
        pass
    (event,) = client.events
    assert (event.kind, event.agent_id, event.name) == ("tool_call", "bot", "search")
    client.close()


def test_collector_records_are_key_value_pairs() -> None:
    client = collector(linger_ms=60_000)
    client.emit({"kind": "custom", "session_id": "s"})
    ((key, value),) = client.records
    assert key == b"default/s"
    assert value.startswith(b"[")
    client.close()


def test_collecting_transport_clear_forgets_records() -> None:
    transport = CollectingTransport()
    transport.send([(b"k", b"[]")])
    transport.clear()
    assert transport.records == []


def test_collecting_transport_reports_rejected_values() -> None:
    transport = CollectingTransport()
    transport.send([(b"k", b'[{"kind": "custom"}]')])
    assert transport.events == []
    assert len(transport.rejected) == 1
