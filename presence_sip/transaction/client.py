"""The non-INVITE client transaction (RFC 3261 §17.1.2, Figure 6).

presence-sip never sends INVITE, so there is no INVITE client machine.  The transaction owns the
serialised request (sent once, retransmitted on Timer E over UDP) and reports to the TU through
events; its timers live in the manager's heap (``Context``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from presence_sip.sip.errors import LocalProtocolError
from presence_sip.sip.message import Request, Response
from presence_sip.sip.peer import Peer

from .events import ResponseReceived, TransactionKey, TransactionTimedOut
from .states import NON_INVITE_CLIENT_TRANSITIONS, Input, Machine, SideEffect, State

if TYPE_CHECKING:
    from .context import Context


_VIA_TRANSPORT: Final = re.compile(r"\A(\s*SIP\s*/\s*2\.0\s*/\s*)[^\s,;]+", re.IGNORECASE)
"""The protocol and transport of a Via value, up to the blank before the sent-by."""


def set_via_transport(request: Request, transport: str) -> bool:
    """Write ``transport`` into the top Via of ``request`` (RFC 3261 §18.1.1: a request that
    changes transport says so in its top Via); False when the top Via is not in a form to edit."""
    headers = request.headers
    first = headers.get("Via")
    if first is None:
        return False
    edited, count = _VIA_TRANSPORT.subn(rf"\g<1>{transport}", first, count=1)
    if count == 0:
        return False
    known = request.known_top_via()
    headers.replace_first("Via", edited)
    request.invalidate()
    if known is not None:
        request.seed(top_via=known._replace(transport=transport))
    return True


class ClientTransaction(Machine):
    """One request we sent and the responses it gets back."""

    __slots__ = (
        "_ctx",
        "armed",
        "data",
        "destination",
        "fallback",
        "interval",
        "key",
        "request",
    )

    def __init__(
        self,
        ctx: Context,
        key: TransactionKey,
        request: Request,
        data: bytes,
        destination: Peer,
        now: float,
        fallback: tuple[bytes, Peer] | None = None,
        timeout: float | None = None,
    ) -> None:
        # (Machine's fields set here: one call less per request sent)
        self._table = NON_INVITE_CLIENT_TRANSITIONS
        self.state = State.TRYING
        self._ctx = ctx
        self.key = key
        self.request: Request | None = request
        """The request; dropped once Completed over UDP (only absorbing is left to do)."""
        self.data = data
        """The request exactly as sent (and resent)."""
        self.destination = destination
        self.fallback = fallback
        """The request as it would have gone over UDP and where, when it was moved to TCP for
        its size (RFC 3261 §18.1.1): sent that way should the connection fail before any
        answer."""
        self.armed: dict[Input, int] = {}
        timers = ctx.timers
        self.interval = timers.t1
        ctx.transmit(data, destination)
        # RFC 3261 §17.1.2.2: Timer E (T1, unreliable transports only) and Timer F (64*T1).
        if not destination.reliable:
            ctx.arm(self, Input.TIMER_E, now + timers.t1)
        # (``timeout``: a proxy's shorter wait on one branch, Kamailio's fr_timer)
        ctx.arm(self, Input.TIMER_F, now + (timers.timer_f if timeout is None else timeout))

    def receive_response(self, response: Response, source: Peer, now: float) -> None:
        """A response whose top Via branch and CSeq method match this transaction (§17.1.3)."""
        event = Input.RECV_PROVISIONAL if response.status < 200 else Input.RECV_FINAL
        effect = self._apply(event)
        ctx = self._ctx
        request = self.request
        if effect is SideEffect.ABSORB or request is None:
            # RFC 3261 §17.1.2.2: retransmitted finals in Completed are discarded.
            ctx.stats["responses_absorbed"] += 1
            return
        ctx.emit(ResponseReceived(response, source, self.key, request))  # (positional: faster)
        if effect is SideEffect.DELIVER_FINAL:
            ctx.forget(self)  # Timers E and F (nothing else is armed in Trying/Proceeding)
            # RFC 3261 §17.1.2.2: Timer K = T4 on unreliable transports, 0 on reliable ones.
            if self.destination.reliable:
                self._apply(Input.TIMER_K)
            else:
                # Completed only absorbs: a record does that (issue 8: thousands of NOTIFY
                # transactions wait here for Timer K), see ``Context.linger``.
                # (Stale heap entries may keep this object a while: let the request go now.)
                self.request = None
                self.data = b""
                ctx.linger(self.key, now + ctx.timers.t4)

    def fire(self, timer: Input, now: float) -> None:
        """Timer E, F or K expired."""
        effect = self._apply(timer)
        ctx = self._ctx
        if effect is SideEffect.RETRANSMIT_REQUEST:
            ctx.transmit(self.data, self.destination)
            ctx.stats["requests_retransmitted"] += 1
            # RFC 3261 §17.1.2.2: E doubles up to T2 in Trying, and is T2 in Proceeding.
            t2 = ctx.timers.t2
            if self.state is State.PROCEEDING:
                self.interval = t2
            else:
                self.interval = min(2 * self.interval, t2)
            ctx.arm(self, Input.TIMER_E, now + self.interval)
        elif effect is SideEffect.TIME_OUT:
            if self.fallback is not None:
                # Moved to TCP and the connection never answered within the transaction's time
                # (a proxy's branch timeout is shorter than the connect timeout): that address
                # gets large requests over UDP for a while too.
                ctx.stream_failed(self.destination, now)
            self._time_out(transport_error=False)

    def transport_error(self, now: float) -> None:
        """The stream connection carrying the request failed (RFC 3261 §17.1.4)."""
        if self.fallback is not None and self.state is State.TRYING:
            self._fall_back(now)
            return
        self._apply(Input.TRANSPORT_ERROR)
        self._time_out(transport_error=True)

    def _fall_back(self, now: float) -> None:
        """RFC 3261 §18.1.1: a request moved from UDP to TCP for its size whose connection
        cannot be made (refused, reset, or not answered) is sent over UDP after all, still
        within Timer F; its address gets large requests over UDP for a while."""
        assert self.fallback is not None
        assert self.request is not None
        ctx = self._ctx
        ctx.stream_failed(self.destination, now)
        ctx.uncarry(self)
        self.data, self.destination = self.fallback
        self.fallback = None
        set_via_transport(self.request, "UDP")
        ctx.stats["stream_fallbacks"] += 1
        ctx.transmit(self.data, self.destination)
        ctx.arm(self, Input.TIMER_E, now + self.interval)

    def _time_out(self, *, transport_error: bool) -> None:
        ctx = self._ctx
        ctx.stats["transport_errors" if transport_error else "timeouts"] += 1
        if self.request is not None:  # always: only Trying/Proceeding time out
            ctx.emit(
                TransactionTimedOut(
                    key=self.key, request=self.request, transport_error=transport_error
                )
            )

    def _apply(self, event: Input) -> SideEffect | None:
        try:
            effect = self.process(event)
        except LocalProtocolError:
            self._finish()
            raise
        if self.state is State.TERMINATED:
            self._finish()
        return effect

    def _finish(self) -> None:
        ctx = self._ctx
        ctx.forget(self)
        if ctx.clients.get(self.key) is self:
            del ctx.clients[self.key]
        if self.destination.reliable:
            ctx.uncarry(self)

    def __repr__(self) -> str:
        return f"<ClientTransaction {self.key.method} {self.key.branch} {self.state.name}>"


__all__ = ["ClientTransaction", "set_via_transport"]
