"""Escalation on real HTTP servers on 127.0.0.1: a firing nobody acknowledges goes to
the next endpoint of the chain, once per level; an acknowledgement or the resolution
stops the chain; chains are validated; the open alerts are journaled and restored (a
restart keeps pending escalations)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest

from agentwatch.alerts import (
    Ack,
    Dispatcher,
    EndpointConfig,
    EscalationState,
    Escalator,
    WebhookReceiver,
    endpoints_from_mapping,
)
from agentwatch.schemas import Alert, AlertState, ConfigError, Severity

SECRET = "escalation-test-secret"
AFTER_S = 0.2
WAIT_S = 15.0
AlertFactory = Callable[..., Alert]


def endpoint(name: str, url: str, **extra: Any) -> EndpointConfig:
    fields: dict[str, Any] = {
        "name": name,
        "url": url,
        "secret": SECRET,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
        "allow_private": True,  # the receivers listen on 127.0.0.1
    }
    return EndpointConfig.model_validate(fields | extra)


@contextmanager
def chain(
    n: int, options: dict[str, Any] | None = None, **first: Any
) -> Iterator[tuple[Escalator, list[WebhookReceiver]]]:
    """Endpoints e0 -> e1 -> ... -> e(n-1), each escalating after AFTER_S; only e0's
    filters match (critical alerts), the others get alerts by escalation alone.
    ``options`` go to the Escalator."""
    receivers = [WebhookReceiver(secret=SECRET).start() for _ in range(n)]
    try:
        configs = []
        for i, receiver in enumerate(receivers):
            extra: dict[str, Any] = {
                "filters": {"severities": ["critical"] if i == 0 else ["info"]}
            }
            if i + 1 < n:
                extra |= {"escalate_after_s": AFTER_S, "escalate_to": f"e{i + 1}"}
            if i == 0:
                extra |= first
            configs.append(endpoint(f"e{i}", receiver.url, **extra))
        dispatcher = Dispatcher(configs, on_dead_letter=lambda f: None)
        escalator = Escalator(dispatcher, **(options or {}))
        try:
            yield escalator, receivers
        finally:
            escalator.close()
            dispatcher.close()
    finally:
        for receiver in receivers:
            receiver.stop()


def settle(escalator: Escalator) -> None:
    assert escalator.wait_timers(WAIT_S)
    assert escalator.dispatcher.wait_idle(WAIT_S)


def critical(make_alert: AlertFactory) -> Alert:
    return make_alert(severity=Severity.CRITICAL)


def resolution(alert: Alert) -> Alert:
    return alert.model_copy(update={"state": AlertState.RESOLVED})


def test_unacknowledged_firing_reaches_the_second_endpoint(make_alert: AlertFactory) -> None:
    alert = critical(make_alert)
    with chain(2) as (escalator, (first, second)):
        escalator.submit(alert)
        assert second.wait_for(1, WAIT_S)
        settle(escalator)
        assert len(first.received) == 1
        (escalated,) = second.received
        assert escalated.alert() == alert
        assert escalated.verified
        assert escalator.stats.escalated == 1


def test_chain_goes_one_level_per_timer_and_once_per_level(make_alert: AlertFactory) -> None:
    alert = critical(make_alert)
    with chain(3) as (escalator, receivers):
        escalator.submit(alert)
        escalator.submit(alert)  # read twice (a redelivery): one timer chain all the same
        assert receivers[2].wait_for(1, WAIT_S)
        settle(escalator)
        assert [len(r.received) for r in receivers] == [2, 1, 1]
        assert escalator.stats.escalated == 2


def test_acknowledged_before_the_timer_is_not_escalated(make_alert: AlertFactory) -> None:
    alert = critical(make_alert)
    with chain(2) as (escalator, (first, second)):
        escalator.submit(alert)
        assert escalator.ack(Ack.now(alert.alert_id, "maria"))
        settle(escalator)
        assert len(first.received) == 1
        assert second.received == []
        assert escalator.stats.stopped_by_ack == 1
        assert escalator.acked(alert.alert_id) is not None


def test_ack_known_before_the_firing_prevents_escalation(make_alert: AlertFactory) -> None:
    """As after a restart: the acks topic is read before the alerts are read again."""
    alert = critical(make_alert)
    with chain(2) as (escalator, (first, second)):
        escalator.ack(Ack.now(alert.alert_id, "maria", via="cli"))
        escalator.submit(alert)
        settle(escalator)
        assert len(first.received) == 1
        assert second.received == []


def test_second_ack_of_one_alert_is_not_new(make_alert: AlertFactory) -> None:
    alert = critical(make_alert)
    with chain(2) as (escalator, _):
        assert escalator.ack(Ack.now(alert.alert_id, "maria"))
        assert not escalator.ack(Ack.now(alert.alert_id, "li"))
        acked = escalator.acked(alert.alert_id)
        assert acked is not None
        assert acked.by == "maria"


def test_resolution_stops_the_chain(make_alert: AlertFactory) -> None:
    alert = critical(make_alert)
    with chain(2) as (escalator, (first, second)):
        escalator.submit(alert)
        escalator.submit(resolution(alert))
        settle(escalator)
        assert [d.alert().state for d in first.received] == ["firing", "resolved"]
        assert second.received == []
        assert escalator.stats.stopped_by_resolution == 1


def test_resolution_reaches_the_endpoints_it_was_escalated_to(make_alert: AlertFactory) -> None:
    alert = critical(make_alert)
    with chain(3) as (escalator, receivers):
        escalator.submit(alert)
        assert receivers[2].wait_for(1, WAIT_S)
        settle(escalator)
        escalator.submit(resolution(alert))
        settle(escalator)
        for receiver in receivers:
            assert [d.alert().state for d in receiver.received] == ["firing", "resolved"]


def test_alert_the_first_endpoint_does_not_take_is_not_escalated(
    make_alert: AlertFactory,
) -> None:
    with chain(2) as (escalator, (first, second)):
        escalator.submit(make_alert(severity=Severity.WARNING))
        settle(escalator)
        assert first.received == []
        assert second.received == []
        assert escalator.open_alerts == 0


# -- journal and restore (a restart) -----------------------------------------------------

WALL_NOW = 1_800_000_000.0


class Journal:
    """What an Escalator hands its journal: (alert id, decoded state or None)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, EscalationState | None]] = []

    def __call__(self, alert_id: str, record: bytes | None) -> None:
        self.records.append((alert_id, None if record is None else EscalationState.decode(record)))

    def latest(self, alert_id: str) -> EscalationState | None:
        return [state for a, state in self.records if a == alert_id][-1]


def test_journal_records_the_firing_each_escalation_and_the_closing(
    make_alert: AlertFactory,
) -> None:
    alert = critical(make_alert)
    journal = Journal()
    with chain(3, {"journal": journal, "wall_clock": lambda: WALL_NOW}) as (escalator, receivers):
        escalator.submit(alert)
        assert receivers[2].wait_for(1, WAIT_S)
        settle(escalator)
        escalator.submit(resolution(alert))
        settle(escalator)
    states = [state for _, state in journal.records]
    assert [None if s is None else sorted(s.received) for s in states] == [
        ["e0"], ["e0", "e1"], ["e0", "e1", "e2"], None
    ]
    last_open = states[-2]
    assert last_open is not None
    assert last_open.alert == alert
    assert last_open.escalated == {"e1", "e2"}
    assert set(last_open.received.values()) == {WALL_NOW}


def test_restored_alert_past_its_deadline_escalates_once(make_alert: AlertFactory) -> None:
    """The dispatcher was down when the deadline passed: escalated right after start."""
    alert = critical(make_alert)
    saved = EscalationState(alert, {"e0": WALL_NOW - 60})
    with chain(2, {"wall_clock": lambda: WALL_NOW}) as (escalator, (first, second)):
        assert escalator.restore([saved]) == 1
        assert second.wait_for(1, WAIT_S)
        settle(escalator)
        assert first.received == []  # it had the firing before the restart
        assert [d.alert() for d in second.received] == [alert]
        assert escalator.stats.restored == 1


def test_restored_alert_keeps_a_pending_deadline(make_alert: AlertFactory) -> None:
    alert = critical(make_alert)
    saved = EscalationState(alert, {"e0": WALL_NOW})  # just fired: its full wait is left
    with chain(2, {"wall_clock": lambda: WALL_NOW}) as (escalator, (_first, second)):
        escalator.restore([saved])
        assert escalator.open_alerts == 1
        assert escalator.pending_timers == 1
        assert second.wait_for(1, WAIT_S)
        settle(escalator)
        assert len(second.received) == 1


def test_restore_skips_the_levels_already_escalated(make_alert: AlertFactory) -> None:
    alert = critical(make_alert)
    saved = EscalationState(
        alert, {"e0": WALL_NOW - 60, "e1": WALL_NOW - 50}, frozenset({"e1"})
    )
    with chain(3, {"wall_clock": lambda: WALL_NOW}) as (escalator, receivers):
        escalator.restore([saved])
        assert receivers[2].wait_for(1, WAIT_S)
        settle(escalator)
        assert [len(r.received) for r in receivers] == [0, 0, 1]
        escalator.submit(resolution(alert))  # the escalated ones get the resolution
        settle(escalator)
        assert [[d.alert().state for d in r.received] for r in receivers] == [
            ["resolved"], ["resolved"], ["firing", "resolved"]
        ]


def test_restore_leaves_an_acknowledged_alert_closed(make_alert: AlertFactory) -> None:
    """Acks are read (from the acks topic) before the journal."""
    alert = critical(make_alert)
    journal = Journal()
    options = {"wall_clock": lambda: WALL_NOW, "journal": journal}
    with chain(2, options) as (escalator, (_first, second)):
        escalator.ack(Ack.now(alert.alert_id, "maria", via="cli"))
        assert escalator.restore([EscalationState(alert, {"e0": WALL_NOW - 60})]) == 0
        settle(escalator)
        assert second.received == []
        assert escalator.open_alerts == 0
    assert journal.records == [(alert.alert_id, None)]  # closed in the journal too


def test_restored_alert_read_again_from_the_alerts_topic_is_not_doubled(
    make_alert: AlertFactory,
) -> None:
    alert = critical(make_alert)
    with chain(2, {"wall_clock": lambda: WALL_NOW}) as (escalator, (first, second)):
        escalator.restore([EscalationState(alert, {"e0": WALL_NOW - 60})])
        escalator.submit(alert, skip={"e0"})  # uncommitted before the crash: read again
        assert second.wait_for(1, WAIT_S)
        settle(escalator)
        assert first.received == []
        assert len(second.received) == 1


def test_held_timers_wait_for_the_release_and_a_resolution_read_meanwhile_wins(
    make_alert: AlertFactory,
) -> None:
    """After a restart the timers are held until the alerts written meanwhile are read:
    a resolution among them closes an alert whose deadline passed while down."""
    resolved, open_ = critical(make_alert), critical(make_alert)
    with chain(2, {"wall_clock": lambda: WALL_NOW}) as (escalator, (first, second)):
        escalator.hold()
        escalator.restore([EscalationState(a, {"e0": WALL_NOW - 60}) for a in (resolved, open_)])
        assert escalator.pending_timers == 2
        escalator.submit(resolution(resolved))  # read from the alerts topic after the restart
        escalator.release()
        assert second.wait_for(1, WAIT_S)
        settle(escalator)
        assert [d.alert().alert_id for d in second.received] == [open_.alert_id]
        assert [d.alert().state for d in first.received] == ["resolved"]


def test_forgotten_partition_is_not_escalated_here(make_alert: AlertFactory) -> None:
    """A revoked partition's open alerts go to its next owner (from the journal)."""
    kept, moved = critical(make_alert), critical(make_alert)
    journal = Journal()
    with chain(2, {"journal": journal}) as (escalator, (_first, second)):
        escalator.submit(kept, partition=0)
        escalator.submit(moved, partition=1)
        assert escalator.forget({1}) == 1
        assert second.wait_for(1, WAIT_S)
        settle(escalator)
        assert [d.alert().alert_id for d in second.received] == [kept.alert_id]
    moved_state = journal.latest(moved.alert_id)
    assert moved_state is not None  # left in the journal for the next owner
    assert moved_state.partition == 1


def test_escalation_state_round_trips(make_alert: AlertFactory) -> None:
    state = EscalationState(critical(make_alert), {"e0": 1.5, "e1": 2.0}, frozenset({"e1"}), 3)
    assert EscalationState.decode(state.encode()) == state


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (b"[]", "not a JSON object"),
        (b'{"alert": {}, "received": {}}', "alert"),
        (b"{", "not JSON"),
    ],
)
def test_unreadable_escalation_state_names_the_key(raw: bytes, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        EscalationState.decode(raw)


def test_escalation_state_with_bad_received_names_the_key(make_alert: AlertFactory) -> None:
    good = orjson.loads(EscalationState(critical(make_alert), {"e0": 1.0}).encode())
    with pytest.raises(ValueError, match="received"):
        EscalationState.decode(orjson.dumps(good | {"received": {"e0": "soon"}}))


# -- configuration ------------------------------------------------------------------------


def _entry(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "url": f"https://{name}.example/hook", "secret": "s"} | extra


def test_escalate_to_an_unknown_endpoint_names_the_key() -> None:
    data = {"endpoints": [_entry("a", escalate_after_s=60, escalate_to="nobody")]}
    with pytest.raises(ConfigError, match=r"e\.yaml: `endpoints\[0\]\.escalate_to`: no endpoint"):
        endpoints_from_mapping(data, source="e.yaml")


def test_escalation_cycle_is_refused_with_the_chain() -> None:
    data = {
        "endpoints": [
            _entry("a", escalate_after_s=60, escalate_to="b"),
            _entry("b", escalate_after_s=60, escalate_to="c"),
            _entry("c", escalate_after_s=60, escalate_to="a"),
        ]
    }
    with pytest.raises(
        ConfigError, match=r"`endpoints\[0\]\.escalate_to`: the chain a -> b -> c -> a"
    ):
        endpoints_from_mapping(data, source="e.yaml")


def test_escalation_to_itself_is_refused() -> None:
    data = {"endpoints": [_entry("a", escalate_after_s=60, escalate_to="a")]}
    with pytest.raises(
        ConfigError, match=r"`endpoints\[0\]\.escalate_to`: 'a' escalates to itself"
    ):
        endpoints_from_mapping(data, source="e.yaml")


@pytest.mark.parametrize(
    ("extra", "missing"),
    [({"escalate_after_s": 60}, "escalate_to"), ({"escalate_to": "b"}, "escalate_after_s")],
)
def test_escalation_keys_go_together(extra: dict[str, Any], missing: str) -> None:
    data = {"endpoints": [_entry("a", **extra), _entry("b")]}
    with pytest.raises(ConfigError, match=rf"`endpoints\[0\]\.{missing}`: missing"):
        endpoints_from_mapping(data, source="e.yaml")


@pytest.mark.parametrize("after", [0, -1, 10**9])
def test_escalate_after_s_out_of_range_names_the_key(after: int) -> None:
    data = {"endpoints": [_entry("a", escalate_after_s=after, escalate_to="b"), _entry("b")]}
    with pytest.raises(ConfigError, match=r"`endpoints\[0\]\.escalate_after_s`"):
        endpoints_from_mapping(data, source="e.yaml")


def test_dispatcher_refuses_a_cycle_given_in_python() -> None:
    configs = [
        EndpointConfig.model_validate(_entry("a", escalate_after_s=1, escalate_to="b")),
        EndpointConfig.model_validate(_entry("b", escalate_after_s=1, escalate_to="a")),
    ]
    with pytest.raises(ValueError, match="cycle"):
        Dispatcher(configs, on_dead_letter=lambda f: None)
