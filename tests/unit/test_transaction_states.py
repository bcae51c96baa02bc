"""Every (State, Input) pair of every RFC 3261 §17 table, legal or not (h2 test_state_machines)."""

from __future__ import annotations

import itertools

import pytest

from presence_sip.sip.errors import LocalProtocolError
from presence_sip.transaction.states import (
    INVITE_SERVER_TRANSITIONS,
    NON_INVITE_CLIENT_TRANSITIONS,
    NON_INVITE_SERVER_TRANSITIONS,
    TRANSITIONS,
    Input,
    Machine,
    SideEffect,
    State,
    Table,
)

T, P, C, F, X = State.TRYING, State.PROCEEDING, State.COMPLETED, State.CONFIRMED, State.TERMINATED
E = SideEffect

# Written out from RFC 3261 Figure 6 (non-INVITE client), independently of the module.
EXPECTED_CLIENT = {
    (T, Input.TIMER_E): (E.RETRANSMIT_REQUEST, T),
    (T, Input.TIMER_F): (E.TIME_OUT, X),
    (T, Input.TRANSPORT_ERROR): (E.TIME_OUT, X),
    (T, Input.RECV_PROVISIONAL): (E.DELIVER_PROVISIONAL, P),
    (T, Input.RECV_FINAL): (E.DELIVER_FINAL, C),
    (P, Input.TIMER_E): (E.RETRANSMIT_REQUEST, P),
    (P, Input.TIMER_F): (E.TIME_OUT, X),
    (P, Input.TRANSPORT_ERROR): (E.TIME_OUT, X),
    (P, Input.RECV_PROVISIONAL): (E.DELIVER_PROVISIONAL, P),
    (P, Input.RECV_FINAL): (E.DELIVER_FINAL, C),
    (C, Input.RECV_PROVISIONAL): (E.ABSORB, C),
    (C, Input.RECV_FINAL): (E.ABSORB, C),
    (C, Input.TIMER_K): (None, X),
}

# RFC 3261 Figure 8 (non-INVITE server).
EXPECTED_SERVER = {
    (T, Input.REQUEST): (E.ABSORB, T),
    (T, Input.SEND_PROVISIONAL): (E.SEND_RESPONSE, P),
    (T, Input.SEND_SUCCESS): (E.SEND_FINAL, C),
    (T, Input.SEND_FINAL): (E.SEND_FINAL, C),
    (P, Input.REQUEST): (E.RESEND_RESPONSE, P),
    (P, Input.SEND_PROVISIONAL): (E.SEND_RESPONSE, P),
    (P, Input.SEND_SUCCESS): (E.SEND_FINAL, C),
    (P, Input.SEND_FINAL): (E.SEND_FINAL, C),
    (C, Input.REQUEST): (E.RESEND_RESPONSE, C),
    (C, Input.SEND_PROVISIONAL): (E.DISCARD, C),
    (C, Input.SEND_SUCCESS): (E.DISCARD, C),
    (C, Input.SEND_FINAL): (E.DISCARD, C),
    (C, Input.TIMER_J): (None, X),
    # RFC 4320 §4.2: the TU gives up without a final response.
    (T, Input.ABANDON): (E.ABANDON, C),
    (P, Input.ABANDON): (E.ABANDON, C),
}

# RFC 3261 Figure 7 (INVITE server).
EXPECTED_INVITE_SERVER = {
    (P, Input.REQUEST): (E.RESEND_RESPONSE, P),
    (P, Input.ACK): (E.ABSORB, P),
    (P, Input.SEND_PROVISIONAL): (E.SEND_RESPONSE, P),
    (P, Input.SEND_SUCCESS): (E.SEND_RESPONSE, X),
    (P, Input.SEND_FINAL): (E.SEND_FINAL, C),
    (C, Input.REQUEST): (E.RESEND_RESPONSE, C),
    (C, Input.ACK): (E.CONFIRM, F),
    (C, Input.TIMER_G): (E.RETRANSMIT_RESPONSE, C),
    (C, Input.TIMER_H): (E.TIME_OUT, X),
    (C, Input.SEND_PROVISIONAL): (E.DISCARD, C),
    (C, Input.SEND_SUCCESS): (E.DISCARD, C),
    (C, Input.SEND_FINAL): (E.DISCARD, C),
    (F, Input.REQUEST): (E.ABSORB, F),
    (F, Input.ACK): (E.ABSORB, F),
    (F, Input.SEND_PROVISIONAL): (E.DISCARD, F),
    (F, Input.SEND_SUCCESS): (E.DISCARD, F),
    (F, Input.SEND_FINAL): (E.DISCARD, F),
    (F, Input.TIMER_I): (None, X),
}

TABLES: list[tuple[str, Table, Table]] = [
    ("client", NON_INVITE_CLIENT_TRANSITIONS, EXPECTED_CLIENT),
    ("server", NON_INVITE_SERVER_TRANSITIONS, EXPECTED_SERVER),
    ("invite-server", INVITE_SERVER_TRANSITIONS, EXPECTED_INVITE_SERVER),
]

ALL_PAIRS = [
    pytest.param(table, expected, state, event, id=f"{name}-{state.name}-{event.name}")
    for (name, table, expected), state, event in itertools.product(TABLES, State, Input)
]


@pytest.mark.parametrize(("name", "table", "expected"), TABLES)
def test_table_is_the_rfc_figure(name: str, table: Table, expected: Table) -> None:
    assert table == expected


def test_transitions_index_names_every_table() -> None:
    assert list(TRANSITIONS.values()) == [
        NON_INVITE_CLIENT_TRANSITIONS,
        INVITE_SERVER_TRANSITIONS,
        NON_INVITE_SERVER_TRANSITIONS,
    ]
    assert all("RFC 3261 Figure" in name for name in TRANSITIONS)


@pytest.mark.parametrize(("table", "expected", "state", "event"), ALL_PAIRS)
def test_every_state_input_pair(table: Table, expected: Table, state: State, event: Input) -> None:
    machine = Machine(table, state)
    if (state, event) in expected:
        effect, target = expected[(state, event)]
        assert machine.process(event) is effect
        assert machine.state is target
    else:
        with pytest.raises(LocalProtocolError, match=event.value):
            machine.process(event)
        assert machine.state is State.TERMINATED


@pytest.mark.parametrize(("name", "table", "expected"), TABLES)
def test_terminated_accepts_nothing(name: str, table: Table, expected: Table) -> None:
    assert not [pair for pair in table if pair[0] is State.TERMINATED]


@pytest.mark.parametrize(("name", "table", "expected"), TABLES)
def test_every_live_state_reaches_terminated(name: str, table: Table, expected: Table) -> None:
    """No machine can get stuck: from each state it uses, TERMINATED is reachable."""
    graph: dict[State, set[State]] = {}
    for (state, _event), (_effect, target) in table.items():
        graph.setdefault(state, set()).add(target)
    for start in graph:
        seen, todo = {start}, [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert State.TERMINATED in seen, start


def test_peer_inputs_never_raise_in_live_states() -> None:
    """Retransmissions, late responses and ACKs are legal in every live state (never crash)."""
    peer_inputs = {
        "client": (Input.RECV_PROVISIONAL, Input.RECV_FINAL),
        "server": (Input.REQUEST,),
        "invite-server": (Input.REQUEST, Input.ACK),
    }
    for name, table, _expected in TABLES:
        live = {state for state, _event in table}
        for state in live:
            for event in peer_inputs[name]:
                assert (state, event) in table, (name, state, event)
