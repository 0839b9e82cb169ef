from __future__ import annotations

from agentwatch.producer import InProcessLog, InProcessTransport, Transport
from agentwatch.producer.testing import CollectingTransport


def test_in_process_transport_satisfies_the_protocol() -> None:
    assert isinstance(InProcessTransport(InProcessLog()), Transport)


def test_collecting_transport_satisfies_the_protocol() -> None:
    assert isinstance(CollectingTransport(), Transport)


def test_object_missing_a_method_is_not_a_transport() -> None:
    class SendOnly:
        def send(self, records: object) -> None: ...

    assert not isinstance(SendOnly(), Transport)
