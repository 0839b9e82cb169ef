"""SendFailures: what the broker refused of the worker's sends, on real asyncio futures
(a send's future as aiokafka resolves it)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import MessageSizeTooLargeError, TopicAuthorizationFailedError

from agentwatch.processors.worker._sends import SendFailures, SendRefusedError
from agentwatch.schemas import TransportError


async def _settle(*futures: asyncio.Future[object]) -> None:
    await asyncio.sleep(0)  # done callbacks run on the loop's next turn
    for f in futures:
        assert f.done()


def test_acked_and_cancelled_sends_are_not_failures() -> None:
    async def go() -> SendFailures:
        loop = asyncio.get_running_loop()
        sends = SendFailures()
        acked, cancelled = loop.create_future(), loop.create_future()
        sends.watch(acked, "t.alerts")
        sends.watch(cancelled, "t.alerts")
        acked.set_result("metadata")
        cancelled.cancel()
        await _settle(acked, cancelled)
        return sends

    sends = asyncio.run(go())
    assert sends.count == 0
    sends.check()  # does not raise


def test_a_refused_send_fails_the_check_naming_topic_and_error_and_stays() -> None:
    async def go() -> SendFailures:
        loop = asyncio.get_running_loop()
        sends = SendFailures()
        pending = [loop.create_future() for _ in range(5)]
        for f in pending[:4]:
            sends.watch(f, "g-session-state-changelog")
        sends.watch(pending[4], "t.alerts")
        for f in pending[:4]:
            f.set_exception(MessageSizeTooLargeError())
        pending[4].set_exception(TopicAuthorizationFailedError())
        await _settle(*pending)
        done_already = loop.create_future()
        done_already.set_exception(MessageSizeTooLargeError())
        sends.watch(done_already, "g-session-state-changelog")  # noted at once
        return sends

    sends = asyncio.run(go())
    assert sends.count == 6
    with pytest.raises(SendRefusedError) as raised:
        sends.check()
    text = str(raised.value)
    assert "refused 6 record(s)" in text
    assert "5 to g-session-state-changelog: [Error 10] MessageSizeTooLargeError" in text
    assert "1 to t.alerts: [Error 29] TopicAuthorizationFailedError" in text
    assert "Nothing after them was committed" in text
    assert isinstance(raised.value, TransportError)  # the CLI prints it as one line
    with pytest.raises(SendRefusedError):
        sends.check()  # a lost record stays lost: no later checkpoint may commit


def test_distinct_refusals_beyond_three_are_counted_not_named() -> None:
    async def go() -> SendFailures:
        loop = asyncio.get_running_loop()
        sends = SendFailures()
        futures = [loop.create_future() for _ in range(5)]
        for i, f in enumerate(futures):
            sends.watch(f, f"topic-{i}")
            f.set_exception(MessageSizeTooLargeError())
        await _settle(*futures)
        return sends

    sends = asyncio.run(go())
    text = ""
    with pytest.raises(SendRefusedError) as raised:
        sends.check()
    text = str(raised.value)
    assert [f"topic-{i}" in text for i in range(5)] == [True, True, True, False, False]
    assert "; 2 more)" in text
