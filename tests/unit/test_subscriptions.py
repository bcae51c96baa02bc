"""Every (State, Input) pair of the RFC 6665 notifier machine (STYLE.md §7)."""

from __future__ import annotations

import itertools

import pytest

from presence_sip.presence.subscriptions import (
    TRANSITIONS,
    Input,
    SideEffect,
    State,
    SubscriptionMachine,
)
from presence_sip.sip.errors import LocalProtocolError

S, In, E = State, Input, SideEffect

EXPECTED: dict[tuple[State, Input], tuple[SideEffect | None, State]] = {
    (S.INIT, In.AUTH_ALLOW): (E.NOTIFY, S.ACTIVE),
    (S.INIT, In.AUTH_POLITE_BLOCK): (E.NOTIFY, S.ACTIVE),
    (S.INIT, In.AUTH_CONFIRM): (E.NOTIFY, S.PENDING),
    (S.INIT, In.AUTH_BLOCK): (E.REJECT, S.TERMINATED),
    (S.PENDING, In.AUTH_ALLOW): (E.NOTIFY, S.ACTIVE),
    (S.PENDING, In.AUTH_POLITE_BLOCK): (E.NOTIFY, S.ACTIVE),
    (S.PENDING, In.AUTH_CONFIRM): (None, S.PENDING),
    (S.PENDING, In.AUTH_BLOCK): (E.NOTIFY_REJECTED, S.TERMINATED),
    (S.PENDING, In.REFRESH): (E.NOTIFY, S.PENDING),
    (S.PENDING, In.UNSUBSCRIBE): (E.NOTIFY_TIMEOUT, S.TERMINATED),
    (S.PENDING, In.EXPIRE): (E.NOTIFY_TIMEOUT, S.TERMINATED),
    (S.PENDING, In.NOTIFY_FAILED): (None, S.TERMINATED),
    (S.PENDING, In.STATE_CHANGED): (None, S.PENDING),
    (S.PENDING, In.RESOURCE_GONE): (E.NOTIFY_NORESOURCE, S.TERMINATED),
    (S.ACTIVE, In.AUTH_ALLOW): (E.NOTIFY, S.ACTIVE),
    (S.ACTIVE, In.AUTH_POLITE_BLOCK): (E.NOTIFY, S.ACTIVE),
    (S.ACTIVE, In.AUTH_CONFIRM): (None, S.ACTIVE),
    (S.ACTIVE, In.AUTH_BLOCK): (E.NOTIFY_REJECTED, S.TERMINATED),
    (S.ACTIVE, In.REFRESH): (E.NOTIFY, S.ACTIVE),
    (S.ACTIVE, In.UNSUBSCRIBE): (E.NOTIFY_TIMEOUT, S.TERMINATED),
    (S.ACTIVE, In.EXPIRE): (E.NOTIFY_TIMEOUT, S.TERMINATED),
    (S.ACTIVE, In.NOTIFY_FAILED): (None, S.TERMINATED),
    (S.ACTIVE, In.STATE_CHANGED): (E.NOTIFY, S.ACTIVE),
    (S.ACTIVE, In.RESOURCE_GONE): (E.NOTIFY_NORESOURCE, S.TERMINATED),
    (S.TERMINATED, In.NOTIFY_FAILED): (None, S.TERMINATED),
}


def test_table_is_the_documented_one() -> None:
    assert TRANSITIONS == EXPECTED


@pytest.mark.parametrize(("state", "event"), list(itertools.product(State, Input)))
def test_every_pair(state: State, event: Input) -> None:
    machine = SubscriptionMachine(state)
    expected = EXPECTED.get((state, event))
    if expected is None:
        with pytest.raises(LocalProtocolError):
            machine.process(event)
        assert machine.state is State.TERMINATED
    else:
        assert machine.process(event) is expected[0]
        assert machine.state is expected[1]


def test_a_full_life() -> None:
    machine = SubscriptionMachine()
    assert state_of(machine) is State.INIT
    assert machine.process(Input.AUTH_CONFIRM) is SideEffect.NOTIFY
    assert machine.process(Input.REFRESH) is SideEffect.NOTIFY
    assert machine.process(Input.AUTH_ALLOW) is SideEffect.NOTIFY
    assert state_of(machine) is State.ACTIVE
    assert machine.process(Input.EXPIRE) is SideEffect.NOTIFY_TIMEOUT
    assert state_of(machine) is State.TERMINATED


def state_of(machine: SubscriptionMachine) -> State:
    """The state, read through a call (so the type checker does not narrow it)."""
    return machine.state
