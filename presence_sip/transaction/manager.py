"""The sans-IO transaction layer (RFC 3261 §17): match, retransmit, time out.

Drive it like aioquic's ``QuicConnection``: feed parsed messages with :meth:`receive`, answer with
:meth:`respond`, send with :meth:`send_request`; after every input drain :meth:`next_event` and
:meth:`outbox`, then re-arm one timer for :meth:`get_timer` and call :meth:`handle_timer` when it
expires.  Time is always the ``now`` argument.

The tables, timers and queues the manager shares with its transactions are a
:class:`~presence_sip.transaction.context.Context` (``context.py``: the timer heap, and the
lingering records of Completed non-INVITE UDP transactions until Timer J/K).
"""

from __future__ import annotations

import heapq
import logging
from typing import Final

from presence_sip.config import Timers
from presence_sip.ids import BRANCH_MAGIC, IdSource
from presence_sip.sip.errors import ConfigError, LocalProtocolError, SipParseError
from presence_sip.sip.message import Request, Response
from presence_sip.sip.peer import Peer
from presence_sip.sip.responses import make_response
from presence_sip.sip.serializer import to_bytes
from presence_sip.sip.uri import Via

from .client import ClientTransaction, set_via_transport
from .context import Context, ServerTx
from .events import Event, RequestReceived, StrayResponse, TransactionKey
from .server import (
    InviteServerTransaction,
    ServerTransaction,
    has_rfc3261_branch,
    legacy_key,
    response_destination,
    server_key,
    stamp_via,
)

logger = logging.getLogger(__name__)

DEFAULT_TIMERS: Final = Timers()
"""RFC 3261 defaults: T1 = 500 ms, T2 = 4 s, T4 = 5 s."""

RETRY_AFTER: Final = "5"
"""Seconds a client refused for a full table is asked to wait (RFC 3261 §20.33)."""

SHED_LOG_INTERVAL: Final = 60.0
"""Seconds between two warnings that the transaction table is full and records are shed."""

_BRANCH_PARAM: Final = ";branch="
_BRANCH_ENDS: Final = (";", ",", " ", "\t")
"""What ends a plainly written branch value (a header value holds no CR or LF)."""


def plain_branch(message: Request | Response) -> str | None:
    """The top Via's branch read from the header text when it is written plainly.

    ``;branch=`` in the first Via value, no quoted string or comma before it: the value up to
    the next ``;``, ``,`` or blank.  None otherwise (also for an empty value, or one holding a
    quote or a control character); the caller then parses the Via.  Issue 8: parsing the Via
    of every response to a NOTIFY only to read the branch was ~5 % of a SUBSCRIBE/NOTIFY
    cycle, and a regular expression for it still ~2 %; these are ``str.find`` calls.
    """
    value = message.headers.get("Via")
    if value is None:
        return None
    start = value.find(_BRANCH_PARAM)
    if start < 0 or value.find('"', 0, start) >= 0 or value.find(",", 0, start) >= 0:
        return None
    start += len(_BRANCH_PARAM)
    end = len(value)
    for stop in _BRANCH_ENDS:
        found = value.find(stop, start, end)
        if found >= 0:
            end = found
    branch = value[start:end]
    if not branch or '"' in branch or not branch.isprintable():
        return None  # (isprintable: no other blank, no control character)
    return branch


class TransactionManager:
    """All client and server transactions of one node (RFC 3261 §17), sans-IO.

    ``max_transactions`` caps the server transactions kept, the Completed ones lingering for
    Timer J/K included.  When it is reached, a new request first ends the lingering record
    closest to its deadline (:meth:`Context.shed`, counted as ``lingering_shed``, logged at most
    once a minute); only with none left is it answered 503 statelessly (``overload_rejected``).
    ``stats`` counts what happened (see :data:`~presence_sip.transaction.context.STAT_NAMES`).
    """

    __slots__ = (
        "_ctx",
        "_ids",
        "_max",
        "_tcp_sent_bys",
        "_udp_mtu",
        "_warned",
        "events",
        "stats",
        "timers",
    )

    def __init__(
        self,
        *,
        timers: Timers = DEFAULT_TIMERS,
        id_source: IdSource,
        max_transactions: int = 200000,
    ) -> None:
        if not 0 < timers.t1 <= timers.t2 or timers.t4 < 0:
            raise ConfigError("Timers need 0 < T1 <= T2 and T4 >= 0")
        self.timers = timers
        self._ids = id_source
        self._max = max_transactions
        self._warned: dict[str, float] = {}
        """When each kind of full-table warning was last logged."""
        self._ctx = Context(timers)
        self.stats = self._ctx.stats
        """Counters by name (:data:`~presence_sip.transaction.context.STAT_NAMES`)."""
        self.events = self._ctx.events
        """Events for the TU, oldest first: pop them from the left, or call :meth:`next_event`."""
        self._udp_mtu = 0
        self._tcp_sent_bys: frozenset[tuple[str, int]] = frozenset()

    def set_max_transactions(self, max_transactions: int) -> None:
        """The cap on server transactions kept from now on (a configuration reloaded).  Below
        what the table holds, each new request ends one Completed transaction early, or gets
        503 while only live ones are left, until the table drains under it."""
        self._max = max_transactions

    def move_large_requests(self, udp_mtu: int, tcp_sent_bys: frozenset[tuple[str, int]]) -> None:
        """RFC 3261 §18.1.1: a request over ``udp_mtu`` bytes (0: none) for a UDP destination
        goes over TCP instead, when its top Via's sent-by is one of ``tcp_sent_bys`` (where this
        node takes TCP connections: the Via stays true with only its transport changed).  Should
        the connection fail before any answer, the request goes over UDP after all."""
        self._udp_mtu = udp_mtu
        self._tcp_sent_bys = tcp_sent_bys

    # -- inputs ------------------------------------------------------------------------------

    def receive(self, message: Request | Response, source: Peer, now: float) -> None:
        """A parsed message arrived from ``source``."""
        if isinstance(message, Request):
            self._receive_request(message, source, now)
        else:
            self._receive_response(message, source, now)

    def respond(self, key: TransactionKey, response: Response, now: float) -> None:
        """Send ``response`` through the server transaction ``key``.

        Raises :class:`LocalProtocolError` when no such transaction is alive.
        """
        ctx = self._ctx
        txn = ctx.servers.get(key)
        if txn is None:
            if key in ctx.lingering:  # Completed: RFC 3261 §17.2.2 discards later responses
                ctx.stats["responses_discarded"] += 1
                return
            raise LocalProtocolError(f"No server transaction {key.method} {key.branch!r}")
        txn.send_response(response, now)

    def abandon(self, key: TransactionKey, now: float) -> None:
        """End the non-INVITE server transaction ``key`` without a final response.

        RFC 4320 §4.2: an element that cannot answer before the client's transaction expires
        (a request it forwarded timed out) sends no 408 at all.  Over UDP the transaction still
        absorbs retransmissions of the request until Timer J, so a late one is not handled as a
        new request.  Raises :class:`LocalProtocolError` when no such live transaction exists.
        """
        txn = self._ctx.servers.get(key)
        if not isinstance(txn, ServerTransaction):
            raise LocalProtocolError(f"No non-INVITE server transaction {key.method}")
        txn.abandon(now)
        self.stats["abandoned"] += 1

    def send_request(
        self, request: Request, destination: Peer, now: float, timeout: float | None = None
    ) -> TransactionKey:
        """Start a non-INVITE client transaction: send ``request`` to ``destination``; it times
        out after ``timeout`` seconds instead of Timer F when given (a proxy failing over).

        The caller has put a top Via whose branch came from :meth:`new_branch`.  Raises
        :class:`LocalProtocolError` for INVITE/ACK, a missing or non-RFC 3261 branch, a CSeq method
        that differs from the method, or a branch already in use.
        """
        method = request.method
        if method in ("INVITE", "ACK"):
            raise LocalProtocolError(f"{method} client transactions are not supported")
        try:
            via = request.known_top_via()  # a NOTIFY we build comes with its Via parsed
            branch = via.branch if via is not None else plain_branch(request)
            if branch is None:
                branch = request.top_via.branch
            cseq_method = request.cseq.method
        except SipParseError as exc:
            raise LocalProtocolError(f"Request not sendable: {exc.reason}") from None
        if not has_rfc3261_branch(branch):
            raise LocalProtocolError("Top Via needs a branch from new_branch()")
        if cseq_method != method:
            raise LocalProtocolError("CSeq method differs from the request method")
        key = TransactionKey(branch, method)
        ctx = self._ctx
        if key in ctx.clients or key in ctx.lingering:
            raise LocalProtocolError(f"Branch {branch!r} already in use")
        data = to_bytes(request)
        fallback = None
        if self._udp_mtu and len(data) > self._udp_mtu and not destination.reliable:
            moved = self._over_tcp(request, destination, now)
            if moved is not None:
                fallback = (data, destination)
                data, destination = moved
        txn = ctx.clients[key] = ClientTransaction(
            ctx, key, request, data, destination, now, fallback, timeout
        )
        if destination.reliable:
            ctx.carry(txn)
        ctx.stats["requests_sent"] += 1
        return key

    def _over_tcp(
        self, request: Request, destination: Peer, now: float
    ) -> tuple[bytes, Peer] | None:
        """The request as sent over TCP to ``destination``'s address, its top Via saying so, or
        None when it stays on UDP (see :meth:`move_large_requests`)."""
        via = request.top_via
        host = via.host[1:-1] if via.host.startswith("[") else via.host
        if (host.lower(), via.port or 5060) not in self._tcp_sent_bys:
            return None
        if not self._ctx.stream_usable(destination.host, destination.port, now):
            return None
        if not set_via_transport(request, "TCP"):
            return None
        self.stats["requests_moved_to_tcp"] += 1
        return to_bytes(request), Peer("tcp", destination.host, destination.port)

    def connection_lost(self, peer: Peer, now: float) -> None:
        """A stream connection closed: its client transactions fail at once (RFC 3261 §17.1.4).

        A transaction sent to "any connection" (connection id 0) of the same transport, host and
        port counts as carried by it.  Server transactions stay: their responses are sent on a new
        connection by the transport (§18.2.2).
        """
        if not peer.reliable:
            return
        carried = self._ctx.streams.get((peer.transport, peer.host, peer.port))
        if carried is None:
            return
        for txn in list(carried.values()):
            if txn.destination.connection in (0, peer.connection):
                # Reliable client transactions never linger in Completed (Timer K = 0).
                txn.transport_error(now)

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at or before ``now``."""
        ctx = self._ctx
        # Records only: nothing to fire, so their order against the heap does not matter.
        ctx.expiry_j.expire(now, ctx.lingering)
        ctx.expiry_k.expire(now, ctx.lingering)
        while ctx.heap and ctx.heap[0][0] <= now:  # (a fired timer may rebuild the heap)
            _, seq, owner, timer = heapq.heappop(ctx.heap)
            if owner.armed.get(timer) == seq:
                del owner.armed[timer]
                ctx.live -= 1
                owner.fire(timer, now)

    # -- outputs -----------------------------------------------------------------------------

    def next_event(self) -> Event | None:
        """The next event for the TU, or None."""
        events = self._ctx.events
        return events.popleft() if events else None

    def outbox(self) -> list[tuple[bytes, Peer]]:
        """Datagrams / stream writes to send, oldest first; drains the queue."""
        ctx = self._ctx
        out = ctx.outbox
        ctx.outbox = []
        return out

    def get_timer(self) -> float | None:
        """The earliest deadline of any live timer, or None."""
        ctx = self._ctx
        heap = ctx.heap
        while heap:
            _, seq, owner, timer = heap[0]
            if owner.armed.get(timer) == seq:
                break
            heapq.heappop(heap)
        # (Records end at their deadline, or before it from the head when shed: an Expiry head
        # is never stale.)
        deadline = heap[0][0] if heap else None
        for queued in (ctx.expiry_j.deadlines, ctx.expiry_k.deadlines):
            if queued and (deadline is None or queued[0] < deadline):
                deadline = queued[0]
        return deadline

    def new_branch(self) -> str:
        """A fresh RFC 3261 branch: the magic cookie plus a new id (§8.1.1.7)."""
        return BRANCH_MAGIC + self._ids.new_id()

    # -- lookups -----------------------------------------------------------------------------

    def server_transaction(self, key: TransactionKey) -> ServerTx | None:
        """The live server transaction ``key``, or None.

        A lingering one (Completed over UDP) is rebuilt from its record: a snapshot without the
        request and the Response object, acting on the record's behalf.
        """
        ctx = self._ctx
        txn = ctx.servers.get(key)
        if txn is None and key.sent_by and (record := ctx.lingering.get(key)) is not None:
            reply_to = Peer("udp", record[2], record[3])
            txn = ServerTransaction.completed_view(ctx, key, record[1], reply_to)
        return txn

    def client_request(self, key: TransactionKey) -> Request | None:
        """The request of the live client transaction ``key``, or None."""
        txn = self._ctx.clients.get(key)
        return None if txn is None else txn.request

    def __len__(self) -> int:
        """Live transactions, client and server."""
        ctx = self._ctx
        return len(ctx.clients) + len(ctx.servers) + len(ctx.lingering)

    # -- internals ---------------------------------------------------------------------------

    def _receive_request(self, request: Request, source: Peer, now: float) -> None:
        ctx = self._ctx
        try:
            via = request.top_via
            key = server_key(request, via)
        except SipParseError as exc:
            self._drop(source, request, exc.reason)
            return
        if request.method == "ACK":
            self._receive_ack(request, via, key, source, now)
            return
        txn = ctx.servers.get(key)
        if txn is not None:
            txn.receive_request(now)
            return
        record = ctx.lingering.get(key)
        if record is not None:  # Completed (RFC 3261 §17.2.2): resend the final response
            if record[1]:
                ctx.transmit(record[1], Peer("udp", record[2], record[3]))
                ctx.stats["responses_resent"] += 1
            else:  # abandoned (RFC 4320 §4.2): nothing to resend
                ctx.stats["requests_absorbed"] += 1
            return
        # RFC 3261 §18.2.1 / RFC 3581 §4: stamp the top Via before anyone looks at it.
        via = stamp_via(request, via, source)
        reply_to = response_destination(via, source)
        if len(ctx.servers) + len(ctx.lingering) >= self._max and not self._shed(now):
            self._reject(request, reply_to, now)
            return
        txn_new: ServerTx
        if request.method == "INVITE":
            txn_new = InviteServerTransaction(ctx, key, request, source, reply_to)
        else:
            txn_new = ServerTransaction(ctx, key, request, source, reply_to)
        ctx.servers[key] = txn_new
        ctx.stats["requests_received"] += 1
        ctx.events.append(RequestReceived(request, source, key))  # (positional: builds faster)

    def _receive_ack(
        self, request: Request, via: Via, key: TransactionKey, source: Peer, now: float
    ) -> None:
        txn = self._ctx.servers.get(key)
        if not has_rfc3261_branch(via.branch):
            txn = self._legacy_ack_match(request, via, txn)
        if isinstance(txn, InviteServerTransaction):
            txn.receive_ack(now)
            return
        # RFC 3261 §17.2.3: an ACK matching no transaction (the ACK for a 2xx) goes to the TU.
        stamp_via(request, via, source)
        self.stats["stray_acks"] += 1
        self._ctx.emit(RequestReceived(request=request, source=source, key=None))

    def _legacy_ack_match(
        self, request: Request, via: Via, found: ServerTx | None
    ) -> InviteServerTransaction | None:
        """RFC 3261 §17.2.3 for RFC 2543 ACKs: the ACK's To tag is that of our response.

        ``found`` was looked up with the ACK's own To tag (the INVITE carried that tag); else the
        INVITE had no To tag and the response added one.
        """
        tag = request.to.tag
        candidates = (found, self._ctx.servers.get(legacy_key(request, via, "INVITE", "")))
        for txn in candidates:
            if isinstance(txn, InviteServerTransaction) and txn.response_to_tag() == tag:
                return txn
        return None

    def _receive_response(self, response: Response, source: Peer, now: float) -> None:
        ctx = self._ctx
        # The usual case: a response to a live transaction, found without parsing its Via.
        branch = plain_branch(response)
        if branch is not None:
            try:
                method = response.cseq.method
            except SipParseError as exc:
                self._drop(source, response, exc.reason)
                return
            txn = ctx.clients.get((branch, method, ""))  # (a plain tuple: no NamedTuple built)
            if txn is not None:
                ctx.stats["responses_received"] += 1
                txn.receive_response(response, source, now)
                return
        try:
            branch = response.top_via.branch
            method = response.cseq.method
        except SipParseError as exc:
            self._drop(source, response, exc.reason)
            return
        # RFC 3261 §17.1.3: match on top Via branch and CSeq method.
        key = TransactionKey(branch or "", method)
        txn = ctx.clients.get(key) if branch else None
        if txn is None:
            if branch and key in ctx.lingering:  # Completed (RFC 3261 §17.1.2.2): absorb
                ctx.stats["responses_received"] += 1
                ctx.stats["responses_absorbed"] += 1
                return
            ctx.stats["stray_responses"] += 1
            ctx.emit(StrayResponse(response=response, source=source))
            return
        ctx.stats["responses_received"] += 1
        txn.receive_response(response, source, now)

    def _shed(self, now: float) -> bool:
        """Full: end a lingering record early (:meth:`Context.shed`); False when none is left."""
        if not self._ctx.shed():
            return False
        self._count_full(
            "lingering_shed",
            now,
            "transaction table full (max_transactions %d): Completed transactions end before"
            " Timer J/K to make room (%d so far)",
        )
        return True

    def _reject(self, request: Request, reply_to: Peer, now: float) -> None:
        """Full, with nothing to shed: answer 503 without a transaction (RFC 3261 §21.5.4),
        with a Retry-After, and warn (at most once a minute)."""
        response = make_response(
            request, 503, to_tag=self._ids.new_id(), headers=[("Retry-After", RETRY_AFTER)]
        )
        self._ctx.transmit(to_bytes(response), reply_to)
        self._count_full(
            "overload_rejected",
            now,
            "transaction table full of live transactions (max_transactions %d): new requests"
            " are answered 503 (%d so far)",
        )

    def _count_full(self, counter: str, now: float, warning: str) -> None:
        """Count what a full table did; warn about it at most once a minute (per counter)."""
        stats = self.stats
        stats[counter] += 1
        if now >= self._warned.get(counter, float("-inf")) + SHED_LOG_INTERVAL:
            self._warned[counter] = now
            logger.warning(warning, self._max, stats[counter])

    def _drop(self, source: Peer, message: Request | Response, reason: str) -> None:
        """STYLE.md §4 triage 1: no usable Via/CSeq/To/From -> drop, log at DEBUG, count."""
        self.stats["dropped"] += 1
        logger.debug("dropped message from %s: %s (%r)", source, reason, message)


__all__ = ["DEFAULT_TIMERS", "TransactionKey", "TransactionManager"]
