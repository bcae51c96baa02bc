"""RFC 3261 §17 transaction state machines as data (STYLE.md §3, the h2 ``stream.py`` pattern).

Each machine is a table ``(State, Input) -> (SideEffect | None, next State)``.  :class:`Machine`
looks the pair up; a pair that is not in the table raises :class:`LocalProtocolError` and leaves the
machine TERMINATED.  The tables say *what* happens; the transaction classes in ``client.py`` and
``server.py`` carry out each :class:`SideEffect` (send, arm a timer, emit an event).

The machines share one :class:`State` and one :class:`Input` enum; each table uses the subset its
figure names.  Every input a peer can cause (a retransmitted request, a late or reordered response,
an ACK) is legal in every live state of the machine it reaches, so bad or reordered network input
never raises; only the TU misusing the API or a bug can reach a missing pair.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from presence_sip.sip.errors import LocalProtocolError


class State(Enum):
    """Transaction states (RFC 3261 Figures 6, 7, 8)."""

    __hash__ = object.__hash__  # members are singletons; Enum hashes the name in Python

    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


class Input(Enum):
    """Everything that can happen to a transaction."""

    __hash__ = object.__hash__  # members are singletons; Enum hashes the name in Python

    RECV_PROVISIONAL = "1xx received"
    RECV_FINAL = "200-699 received"
    REQUEST = "request retransmission received"
    ACK = "ACK received"
    SEND_PROVISIONAL = "1xx from TU"
    SEND_SUCCESS = "2xx from TU"
    SEND_FINAL = "300-699 from TU"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_K = "Timer K"
    TRANSPORT_ERROR = "transport error"
    ABANDON = "TU gives up without a final response"


class SideEffect(Enum):
    """What a transition asks the transaction to do."""

    __hash__ = object.__hash__  # members are singletons; Enum hashes the name in Python

    RETRANSMIT_REQUEST = "resend the request; Timer E backs off"
    DELIVER_PROVISIONAL = "pass the 1xx to the TU"
    DELIVER_FINAL = "pass the final response to the TU; stop E/F, start K"
    TIME_OUT = "tell the TU the transaction timed out"
    ABSORB = "absorb a retransmission"
    SEND_RESPONSE = "send the TU's response and remember it"
    SEND_FINAL = "send the TU's final response; start J (or G and H)"
    RESEND_RESPONSE = "resend the last response sent, if any"
    RETRANSMIT_RESPONSE = "resend the final response; Timer G backs off"
    CONFIRM = "ACK received: stop G/H, start I"
    DISCARD = "drop a response the TU sent after the final one"
    ABANDON = "no response will come: absorb retransmissions silently until Timer J"


Table = Mapping[tuple[State, Input], tuple[SideEffect | None, State]]
"""A transition table: ``(state, input) -> (side effect, next state)``."""

_T, _P, _C, _F, _X = (
    State.TRYING,
    State.PROCEEDING,
    State.COMPLETED,
    State.CONFIRMED,
    State.TERMINATED,
)

# RFC 3261 §17.1.2.2, Figure 6: non-INVITE client transaction.
# Deviation: a 1xx reaching Completed (reordered behind the final on UDP) is absorbed like a
# retransmitted final instead of being undefined.
NON_INVITE_CLIENT_TRANSITIONS: dict[tuple[State, Input], tuple[SideEffect | None, State]] = {
    (_T, Input.TIMER_E): (SideEffect.RETRANSMIT_REQUEST, _T),
    (_T, Input.TIMER_F): (SideEffect.TIME_OUT, _X),
    (_T, Input.TRANSPORT_ERROR): (SideEffect.TIME_OUT, _X),
    (_T, Input.RECV_PROVISIONAL): (SideEffect.DELIVER_PROVISIONAL, _P),
    (_T, Input.RECV_FINAL): (SideEffect.DELIVER_FINAL, _C),
    (_P, Input.TIMER_E): (SideEffect.RETRANSMIT_REQUEST, _P),
    (_P, Input.TIMER_F): (SideEffect.TIME_OUT, _X),
    (_P, Input.TRANSPORT_ERROR): (SideEffect.TIME_OUT, _X),
    (_P, Input.RECV_PROVISIONAL): (SideEffect.DELIVER_PROVISIONAL, _P),
    (_P, Input.RECV_FINAL): (SideEffect.DELIVER_FINAL, _C),
    (_C, Input.RECV_PROVISIONAL): (SideEffect.ABSORB, _C),
    (_C, Input.RECV_FINAL): (SideEffect.ABSORB, _C),
    (_C, Input.TIMER_K): (None, _X),
}

# RFC 3261 §17.2.2, Figure 8: non-INVITE server transaction.  The TU answers with 1xx or
# 200-699 (a 2xx is an ordinary final response here).  §17.2.2: responses the TU passes after the
# final one are discarded.  Transport errors are not inputs: a response whose connection is gone is
# sent again on a new one by the transport (§18.2.2), the transaction then just times out (J).
# RFC 4320 §4.2: a TU that has no final response to give (a forwarded request timed out: a 408
# MUST NOT be sent) abandons the transaction; it goes to Completed with nothing to send, and
# absorbs retransmissions of the request until Timer J.
NON_INVITE_SERVER_TRANSITIONS: dict[tuple[State, Input], tuple[SideEffect | None, State]] = {
    (_T, Input.REQUEST): (SideEffect.ABSORB, _T),
    (_T, Input.SEND_PROVISIONAL): (SideEffect.SEND_RESPONSE, _P),
    (_T, Input.SEND_SUCCESS): (SideEffect.SEND_FINAL, _C),
    (_T, Input.SEND_FINAL): (SideEffect.SEND_FINAL, _C),
    (_P, Input.REQUEST): (SideEffect.RESEND_RESPONSE, _P),
    (_P, Input.SEND_PROVISIONAL): (SideEffect.SEND_RESPONSE, _P),
    (_P, Input.SEND_SUCCESS): (SideEffect.SEND_FINAL, _C),
    (_P, Input.SEND_FINAL): (SideEffect.SEND_FINAL, _C),
    (_C, Input.REQUEST): (SideEffect.RESEND_RESPONSE, _C),
    (_C, Input.SEND_PROVISIONAL): (SideEffect.DISCARD, _C),
    (_C, Input.SEND_SUCCESS): (SideEffect.DISCARD, _C),
    (_C, Input.SEND_FINAL): (SideEffect.DISCARD, _C),
    (_C, Input.TIMER_J): (None, _X),
    (_T, Input.ABANDON): (SideEffect.ABANDON, _C),
    (_P, Input.ABANDON): (SideEffect.ABANDON, _C),
}

# RFC 3261 §17.2.1, Figure 7: INVITE server transaction.  presence-sip answers INVITE with 405;
# the machine exists so that final response is retransmitted on Timer G until the ACK arrives.
# A 2xx ends the transaction at once (RFC 3261; the ACK for it is its own transaction).  An ACK or
# INVITE retransmission that arrives out of order (before the final, after the ACK) is absorbed.
INVITE_SERVER_TRANSITIONS: dict[tuple[State, Input], tuple[SideEffect | None, State]] = {
    (_P, Input.REQUEST): (SideEffect.RESEND_RESPONSE, _P),
    (_P, Input.ACK): (SideEffect.ABSORB, _P),
    (_P, Input.SEND_PROVISIONAL): (SideEffect.SEND_RESPONSE, _P),
    (_P, Input.SEND_SUCCESS): (SideEffect.SEND_RESPONSE, _X),
    (_P, Input.SEND_FINAL): (SideEffect.SEND_FINAL, _C),
    (_C, Input.REQUEST): (SideEffect.RESEND_RESPONSE, _C),
    (_C, Input.ACK): (SideEffect.CONFIRM, _F),
    (_C, Input.TIMER_G): (SideEffect.RETRANSMIT_RESPONSE, _C),
    (_C, Input.TIMER_H): (SideEffect.TIME_OUT, _X),
    (_C, Input.SEND_PROVISIONAL): (SideEffect.DISCARD, _C),
    (_C, Input.SEND_SUCCESS): (SideEffect.DISCARD, _C),
    (_C, Input.SEND_FINAL): (SideEffect.DISCARD, _C),
    (_F, Input.REQUEST): (SideEffect.ABSORB, _F),
    (_F, Input.ACK): (SideEffect.ABSORB, _F),
    (_F, Input.SEND_PROVISIONAL): (SideEffect.DISCARD, _F),
    (_F, Input.SEND_SUCCESS): (SideEffect.DISCARD, _F),
    (_F, Input.SEND_FINAL): (SideEffect.DISCARD, _F),
    (_F, Input.TIMER_I): (None, _X),
}

TRANSITIONS: dict[str, Table] = {
    "non-INVITE client (RFC 3261 Figure 6)": NON_INVITE_CLIENT_TRANSITIONS,
    "INVITE server (RFC 3261 Figure 7)": INVITE_SERVER_TRANSITIONS,
    "non-INVITE server (RFC 3261 Figure 8)": NON_INVITE_SERVER_TRANSITIONS,
}
"""Every table by name, for ``docs/gen_state_diagrams.py``."""


class Machine:
    """Runs one transition table (h2 ``H2StreamStateMachine.process_input``)."""

    __slots__ = ("_table", "state")

    def __init__(self, table: Table, state: State) -> None:
        self._table = table
        self.state = state

    def process(self, event: Input) -> SideEffect | None:
        """Apply ``event``; return the side effect to carry out.

        Raises :class:`LocalProtocolError` (and moves to TERMINATED) for a pair not in the table.
        """
        entry = self._table.get((self.state, event))
        if entry is None:
            old = self.state
            self.state = State.TERMINATED
            raise LocalProtocolError(f"{event.value} not allowed in state {old.value}")
        effect, self.state = entry
        return effect


__all__ = [
    "INVITE_SERVER_TRANSITIONS",
    "NON_INVITE_CLIENT_TRANSITIONS",
    "NON_INVITE_SERVER_TRANSITIONS",
    "TRANSITIONS",
    "Input",
    "Machine",
    "SideEffect",
    "State",
    "Table",
]
