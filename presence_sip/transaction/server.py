"""Server transactions (RFC 3261 §17.2) and the server-side rules around them.

* :class:`ServerTransaction`: non-INVITE server machine (§17.2.2, Figure 8), Timer J.
* :class:`InviteServerTransaction`: INVITE server machine (§17.2.1, Figure 7), Timers G, H, I.
  presence-sip answers INVITE with 405; this machine retransmits that answer until the ACK.
* :func:`server_key`: request -> transaction key (§17.2.3, with the RFC 2543 fallback).
* :func:`stamp_via`: ``received`` / ``rport`` on the top Via (§18.2.1, RFC 3581 §4).
* :func:`response_destination`: where responses go (§18.2.2, RFC 3581 §4).
"""

from __future__ import annotations

import ipaddress
import sys
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, TypeGuard

from presence_sip.ids import BRANCH_MAGIC
from presence_sip.sip import grammar
from presence_sip.sip.errors import LocalProtocolError
from presence_sip.sip.headers import Headers
from presence_sip.sip.message import Request, Response
from presence_sip.sip.peer import Peer
from presence_sip.sip.serializer import to_bytes
from presence_sip.sip.uri import Via

from .events import TransactionKey, TransactionTimedOut
from .states import (
    INVITE_SERVER_TRANSITIONS,
    NON_INVITE_SERVER_TRANSITIONS,
    Input,
    Machine,
    SideEffect,
    State,
    Table,
)

if TYPE_CHECKING:
    from .context import Context

DEFAULT_PORT = 5060
"""RFC 3261 §18.2.2: port for a response when the Via names none (UDP)."""


def has_rfc3261_branch(branch: str | None) -> TypeGuard[str]:
    """True when ``branch`` starts with the magic cookie and has something after it.

    RFC 3261 §17.2.3; RFC 4475 §3.3.x "badbranch": ``branch=z9hG4bK`` alone is treated as no
    usable branch, so such a request is matched with the RFC 2543 rules.
    """
    return (
        branch is not None and len(branch) > len(BRANCH_MAGIC) and branch.startswith(BRANCH_MAGIC)
    )


def _sent_by(via: Via) -> str:
    """The key's sent-by, one string object per address (``sys.intern``): every transaction
    from a peer, a lingering one included, shares it (issue 8: 64 B less per Completed
    transaction from 127.0.0.1:16000).  Interned strings made at run time are freed with their
    last reference; the interning table keeps its peak size, at most one slot per transaction
    alive (``max_transactions``), when a peer varies its Via."""
    host = via.host.lower()
    return sys.intern(host if via.port is None else f"{host}:{via.port}")


def server_key(request: Request, via: Via) -> TransactionKey:
    """The key of the server transaction ``request`` belongs to (RFC 3261 §17.2.3).

    With an RFC 3261 branch: (branch, sent-by, method), ACK matching INVITE; CANCEL has its own
    transaction.  Otherwise the RFC 2543 rules: Request-URI, From tag, To tag, Call-ID, CSeq
    number, top Via.  ``via`` is the top Via as received (before :func:`stamp_via`).
    May raise :class:`SipParseError` when a header the key needs is malformed.
    """
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch
    if has_rfc3261_branch(branch):
        # tuple.__new__ skips the NamedTuple's Python-level __new__ (issue 8: ~220 ns, not ~400).
        return tuple.__new__(TransactionKey, (branch, method, _sent_by(via)))
    return legacy_key(request, via, method, request.to.tag or "")


def legacy_key(request: Request, via: Via, method: str, to_tag: str) -> TransactionKey:
    """RFC 3261 §17.2.3 matching for RFC 2543 peers, folded into one key.

    An ACK is looked up with the To tag of the response it acknowledges, hence ``to_tag``.
    """
    composite = "\n".join(
        (
            "rfc2543",
            request.uri,
            request.from_.tag or "",
            to_tag,
            request.call_id,
            str(request.cseq.seq),
            str(via),
        )
    )
    return TransactionKey(composite, method, _sent_by(via))


def _same_address(via_host: str, source_host: str) -> bool:
    if via_host == source_host:
        return True
    host = via_host[1:-1] if via_host.startswith("[") else via_host
    try:
        return ipaddress.ip_address(host) == ipaddress.ip_address(source_host)
    except ValueError:  # a domain name (or a source that is not an IP literal)
        return False


def stamp_via(request: Request, via: Via, source: Peer) -> Via:
    """Add ``received`` / fill ``rport`` on the top Via of ``request``; return the new top Via.

    RFC 3261 §18.2.1: ``received=<source address>`` when sent-by is a name or another address.
    RFC 3581 §4: when ``rport`` is present, set it to the source port and always add ``received``.
    (A value the sender put in ``rport`` or ``received`` itself is overwritten.)  The request's
    header text is edited only when something changes; the rest of the message is untouched.
    """
    has_rport = via.rport is not None
    if not has_rport and _same_address(via.host, source.host):
        return via
    params: list[tuple[str, str | None]] = []
    for name, value in via.params:
        lname = name.lower()
        if lname == "received":
            continue
        params.append((name, str(source.port)) if lname == "rport" else (name, value))
    params.append(("received", source.host))
    stamped = via.with_params(tuple(params))
    _replace_top_via(request, str(stamped))
    return stamped


def _replace_top_via(request: Request, text: str) -> None:
    items = list(request.headers)
    index = next(i for i, (name, _) in enumerate(items) if name == "Via")  # top Via was parsed
    value = items[index][1]
    rest = grammar.split_commas(value)[1:] if "," in value else []
    items[index] = ("Via", ", ".join([text, *rest]))
    # Names are already canonical: rebuild without re-canonicalising every header.
    request.headers = Headers._from_canonical(items, [name.lower() for name, _ in items])
    request.invalidate()


def response_destination(via: Via, source: Peer) -> Peer:
    """Where responses to a request go (RFC 3261 §18.2.2, RFC 3581 §4).

    Reliable transports: back on the connection the request came in on; the Peer's address is
    where a new connection goes should that one have closed: the ``received`` address and the
    sent-by port (else 5060, 5061 for TLS), not the closed connection's own port.  UDP: the
    ``received`` address (else sent-by host) and the filled ``rport`` (else sent-by port, else
    5060).  ``maddr`` is ignored: a node never answers to multicast.  ``via`` is the stamped top
    Via.
    """
    host = via.received or via.host
    if host.startswith("["):
        host = host[1:-1]
    if source.reliable:
        port = via.port or (5061 if source.transport == "tls" else DEFAULT_PORT)
    else:
        rport = via.rport
        port = rport if type(rport) is int else (via.port or DEFAULT_PORT)
    if host == source.host and port == source.port:
        return source  # the usual case (RFC 3581): one Peer object per transaction, not two
    return Peer(source.transport, host, port, source.connection)


class _Server(Machine, ABC):
    """What both server machines share: the request, the last response, the reply address."""

    __slots__ = ("_ctx", "armed", "data", "key", "reply_to", "request", "response", "source")

    def __init__(
        self,
        table: Table,
        state: State,
        ctx: Context,
        key: TransactionKey,
        request: Request | None,
        source: Peer,
        reply_to: Peer,
    ) -> None:
        # (Machine's fields set here: one call less per request received)
        self._table = table
        self.state = state
        self._ctx = ctx
        self.key = key
        self.request: Request | None = request
        """The request that created the transaction (top Via stamped); a non-INVITE
        transaction over UDP drops it once Completed."""
        self.source = source
        """Where it came from."""
        self.reply_to = reply_to
        """Where responses go (RFC 3261 §18.2.2)."""
        self.response: Response | None = None
        """The last response sent (None before any)."""
        self.data = b""
        """That response as bytes, resent on request retransmissions."""
        self.armed: dict[Input, int] = {}

    def receive_request(self, now: float) -> None:
        """A retransmission of the request (RFC 3261 §17.2.1, §17.2.2)."""
        effect = self._apply(Input.REQUEST)
        if effect is SideEffect.RESEND_RESPONSE and self.data:
            self._ctx.transmit(self.data, self.reply_to)
            self._ctx.stats["responses_resent"] += 1
        else:
            self._ctx.stats["requests_absorbed"] += 1

    def send_response(self, response: Response, now: float) -> None:
        """The TU answers (RFC 3261 §17.2.1, §17.2.2)."""
        status = response.status
        effect = self._apply(
            Input.SEND_PROVISIONAL
            if status < 200
            else Input.SEND_SUCCESS
            if status < 300
            else Input.SEND_FINAL
        )
        ctx = self._ctx
        if effect is SideEffect.DISCARD:
            ctx.stats["responses_discarded"] += 1
            return
        self.response = response
        self.data = to_bytes(response)
        ctx.transmit(self.data, self.reply_to)
        if effect is SideEffect.SEND_FINAL:
            self._completed(now)

    @abstractmethod
    def fire(self, timer: Input, now: float) -> None:
        """A timer of this transaction expired."""

    @abstractmethod
    def _completed(self, now: float) -> None:
        """The final response went out: start the Completed-state timers."""

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
        if ctx.servers.get(self.key) is self:
            del ctx.servers[self.key]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key.method} {self.state.name}>"


class ServerTransaction(_Server):
    """A non-INVITE server transaction (RFC 3261 §17.2.2, Figure 8)."""

    __slots__ = ()

    def __init__(
        self,
        ctx: Context,
        key: TransactionKey,
        request: Request | None,
        source: Peer,
        reply_to: Peer,
    ) -> None:
        super().__init__(
            NON_INVITE_SERVER_TRANSITIONS, State.TRYING, ctx, key, request, source, reply_to
        )

    @classmethod
    def completed_view(
        cls, ctx: Context, key: TransactionKey, data: bytes, reply_to: Peer
    ) -> ServerTransaction:
        """A Completed transaction rebuilt from its lingering record (``Context.linger``); see
        ``TransactionManager.server_transaction``."""
        txn = cls(ctx, key, None, reply_to, reply_to)
        txn.state = State.COMPLETED
        txn.data = data
        return txn

    def _completed(self, now: float) -> None:
        # RFC 3261 §17.2.2: Timer J = 64*T1 on unreliable transports, 0 on reliable ones.
        if self.reply_to.reliable:
            self._apply(Input.TIMER_J)
        else:
            # Completed only resends ``data``: a record does that (issue 8: thousands of
            # transactions wait here for 32 s), see ``Context.linger``.
            ctx = self._ctx
            ctx.linger(self.key, now + ctx.timers.timer_j, self.data, self.reply_to)

    def abandon(self, now: float) -> None:
        """The TU will not answer (RFC 4320 §4.2): Completed, with no final response to resend."""
        self._apply(Input.ABANDON)
        self._completed(now)

    def fire(self, timer: Input, now: float) -> None:
        self._apply(timer)


class InviteServerTransaction(_Server):
    """An INVITE server transaction (RFC 3261 §17.2.1, Figure 7).

    No automatic 100 Trying: the TU answers INVITE at once (405), well inside the 200 ms §17.2.1
    allows before a 100 is due.
    """

    __slots__ = ("interval",)

    def __init__(
        self, ctx: Context, key: TransactionKey, request: Request, source: Peer, reply_to: Peer
    ) -> None:
        super().__init__(
            INVITE_SERVER_TRANSITIONS, State.PROCEEDING, ctx, key, request, source, reply_to
        )
        self.interval = ctx.timers.t1

    def response_to_tag(self) -> str | None:
        """To tag of the last response sent (RFC 2543 ACK matching), None before any."""
        return None if self.response is None else self.response.to.tag

    def receive_ack(self, now: float) -> None:
        """The ACK for our final response (or a retransmission of it)."""
        effect = self._apply(Input.ACK)
        ctx = self._ctx
        if effect is not SideEffect.CONFIRM:
            ctx.stats["acks_absorbed"] += 1
            return
        ctx.cancel(self, Input.TIMER_G)
        ctx.cancel(self, Input.TIMER_H)
        # RFC 3261 §17.2.1: Timer I = T4 on unreliable transports, 0 on reliable ones.
        if self.reply_to.reliable:
            self._apply(Input.TIMER_I)
        else:
            ctx.arm(self, Input.TIMER_I, now + ctx.timers.t4)

    def _completed(self, now: float) -> None:
        # RFC 3261 §17.2.1: Timer G = T1 (unreliable only), Timer H = 64*T1.
        ctx = self._ctx
        if not self.reply_to.reliable:
            ctx.arm(self, Input.TIMER_G, now + self.interval)
        ctx.arm(self, Input.TIMER_H, now + 64 * ctx.timers.t1)

    def fire(self, timer: Input, now: float) -> None:
        effect = self._apply(timer)
        ctx = self._ctx
        if effect is SideEffect.RETRANSMIT_RESPONSE:
            ctx.transmit(self.data, self.reply_to)
            ctx.stats["responses_retransmitted"] += 1
            # RFC 3261 §17.2.1: G doubles up to T2.
            self.interval = min(2 * self.interval, ctx.timers.t2)
            ctx.arm(self, Input.TIMER_G, now + self.interval)
        elif effect is SideEffect.TIME_OUT:
            ctx.stats["timeouts"] += 1
            if self.request is not None:  # always: an INVITE transaction keeps its request
                ctx.emit(TransactionTimedOut(key=self.key, request=self.request))


__all__ = [
    "InviteServerTransaction",
    "ServerTransaction",
    "has_rfc3261_branch",
    "legacy_key",
    "response_destination",
    "server_key",
    "stamp_via",
]
