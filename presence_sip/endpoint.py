"""The sans-IO SIP endpoint: bytes in, bytes out, roles plugged in by method.

``Endpoint`` is what the asyncio driver pumps (``receive`` / ``outbox`` / ``get_timer`` /
``handle_timer``).  It parses (triaging bad input per STYLE.md §4), runs the RFC 3261 transaction
layer, applies the checks every UAS makes before a role sees a request (RFC 3261 §8.2: URI scheme,
Require, method), and dispatches to the role handlers registered for each method.  Roles answer
at once (return a :class:`Response`) or later through :meth:`Endpoint.respond`; they originate
requests (NOTIFY) with :meth:`Endpoint.send_request`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final, Protocol

from presence_sip.config import Limits, Timers
from presence_sip.ids import IdSource
from presence_sip.log_limit import LogLimit
from presence_sip.sip import (
    Request,
    Response,
    SipParseError,
    make_response,
    parse_message,
    to_bytes,
)
from presence_sip.sip.message import Message
from presence_sip.sip.parser import ParseFailure
from presence_sip.sip.peer import Peer
from presence_sip.sip.uri import AbsoluteUri
from presence_sip.stun import binding_response, is_stun
from presence_sip.transaction.events import (
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TransactionTimedOut,
)
from presence_sip.transaction.manager import TransactionKey, TransactionManager
from presence_sip.transaction.server import response_destination, server_key, stamp_via

log = logging.getLogger(__name__)

RESPONSE_START: Final = b"SIP/"
"""How a response begins (RFC 3261 §7.2): what the flood guard lets through uncounted."""

KNOWN_NOT_ALLOWED: Final = ("INVITE", "BYE", "MESSAGE", "INFO", "PRACK", "UPDATE", "REFER")
"""Methods we recognise but do not serve: 405 + Allow (RFC 3261 §8.2.1)."""


@dataclass(slots=True)
class Incoming:
    """A request handed to a role, with what the role needs to answer it."""

    request: Request
    """The parsed request (top Via already carries received/rport)."""
    source: Peer
    """Where it came from (with the stream connection id)."""
    key: TransactionKey
    """The server transaction to answer through."""
    identity: object | None = None
    """The verified TLS peer identity of the connection, when there is one."""


class _Local:
    """Sentinel type of :data:`LOCAL`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "LOCAL"


LOCAL: Final = _Local()
"""A router's verdict: handle the request here."""

RequestHandler = Callable[[Incoming, float], Response | None]
RouteDecision = Response | None | _Local
"""A router answers LOCAL, a Response to send, or None (it forwarded and will answer later)."""


class Router(Protocol):
    """Decides, before any local handler, whether a request is ours or to be forwarded."""

    def route(self, incoming: Incoming, now: float) -> RouteDecision: ...


ResponseCallback = Callable[[Response | None, float], None]
"""Called with the final response of an originated request, or None on timeout / transport error."""


class TimedRole(Protocol):
    """A role with its own deadlines (subscription expiry, NOTIFY rate limits...)."""

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...


@dataclass(slots=True)
class EndpointStats:
    """Counters an operator can read (and the benchmarks print)."""

    received: int = 0
    dropped: int = 0
    malformed_answered: int = 0
    responses_sent: int = 0
    requests_sent: int = 0
    timeouts: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    stun_answered: int = 0
    """STUN Binding requests answered on UDP (RFC 5626 §8 keep-alives), 420s included."""
    stun_dropped: int = 0
    """Datagrams starting as STUN does (first byte 0-3) and not answered: indications,
    responses, other methods, malformed ones."""
    keepalives: int = 0
    """Datagrams of nothing but CRLFs (a UDP keep-alive, as pjsua sends): not answered."""


STORING_METHODS: Final = frozenset({"REGISTER", "PUBLISH", "SUBSCRIBE"})
"""Requests whose 200 means a change stored (bindings, publications, subscriptions)."""


class Endpoint:
    """Parse, transact, check and dispatch; see the module docstring."""

    def __init__(
        self,
        *,
        ids: IdSource,
        timers: Timers | None = None,
        limits: Limits | None = None,
        supported: Iterable[str] = ("path",),
        user_agent: str = "presence-sip",
    ) -> None:
        self.ids = ids
        self.limits = limits or Limits()
        self.transactions = TransactionManager(
            timers=timers or Timers(), id_source=ids, max_transactions=self.limits.max_transactions
        )
        self.handlers: dict[str, RequestHandler] = {"OPTIONS": self._options}
        self.allow_events: list[str] = []
        self.accept: list[str] = []
        self.supported = tuple(supported)
        self.user_agent = user_agent
        self.roles: list[TimedRole] = []
        self.stats = EndpointStats()
        self.identities: dict[int, object] = {}
        self.made_here: Response | None = None
        """While a response callback runs: the 408/503 the endpoint made itself for it (a
        timeout or transport error, ``synthesize``), else None.  (A To-tag cannot tell: an
        in-dialog request's own is copied into it.)"""
        self.connections: set[int] = set()
        """Ids of the stream connections up now (the driver reports them made and lost)."""
        self._connected: dict[tuple[str, str, int], int] = {}
        """How many stream connections are up now with each peer address (transport, host,
        port): two at once when a peer that connects from its listening port (SO_REUSEPORT) is
        also connected to by the node, or a new connection comes before the old one's loss."""
        self._pending: dict[TransactionKey, ResponseCallback] = {}
        self._synthesize: set[TransactionKey] = set()
        self._stateless: list[tuple[bytes, Peer]] = []
        self._to_tag = ids.new_id("t")
        """The random part (64 bits) of the To-tags of responses outside a dialog."""
        self._tags = 0
        self.router: Router | None = None
        self.addresses: dict[str, tuple[str, int]] = {}
        """Our (host, port) per transport, for Via sent-by and Record-Route (set by the node)."""
        self.cannot_store: Callable[[float], bool] | None = None
        """Set by the node: True while changes cannot be stored (the group commit keeps
        failing); the methods of :data:`STORING_METHODS` then get 503 instead of a 200 that
        would never be kept."""
        self._store_refusals = LogLimit()
        self.report_stray: Callable[[Peer, float], None] | None = None
        """Set by the node while its flood guard counts requests: told of each response that
        matches no transaction of ours (RFC 3261 §18.1.2, §17.1.3) or could not be parsed,
        both dropped, with its source.  A response that matches one never calls it."""

    # --- wiring -------------------------------------------------------------------------------

    def register(self, method: str, handler: RequestHandler) -> None:
        """Serve ``method`` with ``handler`` (one role per method)."""
        self.handlers[method] = handler

    def add_role(self, role: TimedRole) -> None:
        self.roles.append(role)

    @property
    def allow(self) -> str:
        return ", ".join([*self.handlers, "ACK", "CANCEL"])

    # --- the Endpoint protocol the driver pumps -----------------------------------------------

    def receive(self, data: bytes, source: Peer, now: float) -> None:
        self.stats.received += 1
        # SIP text starts with a letter: one byte compare on the hot path (an empty datagram
        # has no first byte, and is no SIP either).
        if (not data or data[0] < 0x41) and not source.reliable and self._not_text(data, source):
            return
        try:
            message = parse_message(
                data, datagram=not source.reliable, max_size=self.limits.max_message_size
            )
        except ParseFailure as failure:  # (its own name: mypyc types a handler's name once)
            self._answer_malformed(failure.partial, failure, source)
            self._unparsed(data, source, now)
            return
        except SipParseError as exc:
            if exc.status == 513 and not data.startswith(RESPONSE_START):
                self._answer_oversize(data, exc, source)
                return
            self._drop(data, exc.reason, source)
            self._unparsed(data, source, now)
            return
        if isinstance(message, Request) and message.method == "INVITE":
            self._answer_invite(message, source, now)
            return
        self.transactions.receive(message, source, now)
        self._drain(now)

    def _not_text(self, data: bytes, source: Peer) -> bool:
        """A datagram that does not start with a letter: a STUN message (RFC 5626 §8: answered
        when a Binding request, see :mod:`presence_sip.stun`), a CRLF keep-alive, or something
        that starts as STUN does but is not (dropped); True when it was one of those, False for
        the SIP parser (leading CRLFs before a message, RFC 3261 §7.5).  Over TCP/TLS the
        stream framing has its own keep-alives (RFC 5626 §4.4.1, transport/stream.py)."""
        if is_stun(data):
            answer = binding_response(data, source.host, source.port)
            if answer is None:
                self.stats.stun_dropped += 1
                log.debug("STUN from %s not answered: %r", source, data[:20])
            else:
                self.stats.stun_answered += 1
                self._stateless.append((answer, reply_peer(source)))
            return True
        if not data.strip(b"\r\n"):
            self.stats.keepalives += 1  # (pjsua's default UDP keep-alive is one CRLF)
            return True
        if data[0] < 4:  # RFC 7983 §7: STUN's first bytes, no SIP; but not framed as STUN is
            self.stats.stun_dropped += 1
            log.debug("malformed STUN from %s dropped: %r", source, data[:20])
            return True
        return False

    def _unparsed(self, data: bytes, source: Peer, now: float) -> None:
        """A message that failed to parse: a response (what the flood guard did not count)
        matches no transaction, so it is reported as a stray."""
        report = self.report_stray
        if report is not None and data.startswith(RESPONSE_START):
            report(source, now)

    def _answer_invite(self, request: Request, source: Peer, now: float) -> None:
        """RFC 3261 §8.2.7: no INVITE is served here (405, or an earlier check's answer), so
        it is answered as a stateless UAS does: once per INVITE received (a retransmission is
        answered again), without a server transaction.  A transaction would resend its answer
        ~11 times over 32 s (Timer G until Timer H) to a source that never ACKs, a spoofed one
        included (12x the bytes it was sent), and hold ~5 KB for those 32 s: an INVITE flood
        of 6,250/s from one source filled the 200,000-transaction table, and every request of
        every client got 503.  (Kamailio's default configuration answers with ``sl``, likewise
        stateless.)  The ACK to the answer matches nothing and is dropped."""
        try:
            via = request.top_via
            key = server_key(request, via)
        except SipParseError as exc:
            self._drop(b"", exc.reason, source)
            return
        reply_to = response_destination(stamp_via(request, via, source), source)
        incoming = Incoming(request, source, key, self.identities.get(source.connection))
        response = self._answer(incoming, now)
        if response is not None:
            self._stamp(response)
            self._stateless_tag(request, response, key)
            self._count(response)
            self._send_stateless(response, reply_to)

    def _stateless_tag(self, request: Request, response: Response, key: TransactionKey) -> None:
        """RFC 3261 §8.2.7: a stateless UAS gives the same To-tag to the same request (its
        retransmissions): the node's random part and a hash of the transaction key, in place
        of the counted tag the response was given."""
        sent = request.headers.get("To")
        to = response.headers.get("To")
        if sent is None or to is None or not to.startswith(sent + ";tag="):
            return  # the request had its own To-tag (or no To): nothing was added
        digest = hash(key) & 0xFFFFFFFF
        response.headers.set("To", f"{sent};tag={self._to_tag}i{digest:x}")
        response.invalidate()

    def receive_malformed(
        self, data: bytes, error: SipParseError, source: Peer, now: float
    ) -> None:
        self._answer_oversize(data, error, source)

    def connection_made(self, peer: Peer, identity: object | None, now: float) -> None:
        if peer.connection not in self.connections:
            self.connections.add(peer.connection)
            address = (peer.transport, peer.host, peer.port)
            self._connected[address] = self._connected.get(address, 0) + 1
        if identity is not None:
            self.identities[peer.connection] = identity

    def connection_lost(self, peer: Peer, now: float) -> None:
        if peer.connection in self.connections:
            self.connections.discard(peer.connection)
            address = (peer.transport, peer.host, peer.port)
            left = self._connected[address] - 1  # (counted when it was made)
            if left:
                self._connected[address] = left
            else:
                del self._connected[address]
        self.identities.pop(peer.connection, None)
        self.transactions.connection_lost(peer, now)
        self._drain(now)

    def is_connected(self, peer: Peer) -> bool:
        """Whether a stream connection with ``peer``'s address (whatever its id) is up now."""
        return (peer.transport, peer.host, peer.port) in self._connected

    def outbox(self) -> list[tuple[bytes, Peer]]:
        out = self.transactions.outbox()
        if self._stateless:
            out.extend(self._stateless)
            self._stateless = []
        return out

    def get_timer(self) -> float | None:
        deadline = self.transactions.get_timer()
        for role in self.roles:
            timer = role.get_timer()
            if timer is not None and (deadline is None or timer < deadline):
                deadline = timer
        return deadline

    def handle_timer(self, now: float) -> None:
        self.transactions.handle_timer(now)
        self._drain(now)
        for role in self.roles:
            timer = role.get_timer()
            if timer is not None and timer <= now:
                role.handle_timer(now)
        self._drain(now)

    # --- used by roles ------------------------------------------------------------------------

    def local_address(self, transport: str) -> tuple[str, int] | None:
        return self.addresses.get(transport)

    def respond(
        self, key: TransactionKey, response: Response, now: float, *, stamp: bool = True
    ) -> None:
        """Send ``response`` through the server transaction ``key`` (``stamp``: add Server)."""
        if stamp:
            self._stamp(response)
        self.transactions.respond(key, response, now)
        self._count(response)

    def _count(self, response: Response) -> None:
        """The statistics and the log line of a response sent."""
        self.stats.responses_sent += 1
        self.stats.by_status[response.status] = self.stats.by_status.get(response.status, 0) + 1
        # DEBUG: a line per response cost as much CPU as the request under a flood of OPTIONS
        # (42 % of a CPU at 15,000/s against 25 % without, hostile-client audit); the status
        # line (SIGUSR1) counts them, and Kamailio logs nothing per request either.
        if response.status >= 200 and log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s %s -> %d %s (Call-ID %s)",
                response.cseq.method,
                response.headers.get("To"),
                response.status,
                response.reason,
                response.headers.get("Call-ID"),
            )

    def abandon(self, key: TransactionKey, now: float) -> None:
        """Answer nothing to the server transaction ``key`` (RFC 4320 §4.2: no late 408)."""
        self.transactions.abandon(key, now)

    def reply(
        self,
        incoming: Incoming,
        status: int,
        reason: str | None = None,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        now: float,
    ) -> None:
        """Shorthand: build with :func:`make_response` (adding our To-tag) and send."""
        response = make_response(
            incoming.request, status, reason, to_tag=self.response_tag(), headers=headers, body=body
        )
        self.respond(incoming.key, response, now)

    def _stamp(self, response: Response) -> None:
        """Our own responses carry a To-tag (RFC 3261 §8.2.6.2) and a Server header."""
        headers = response.headers
        if response.status > 100:
            to = headers.get("To")
            # (";tag=" as written is the usual case: normalise only when it is not found)
            if to is not None and ";tag=" not in to and ";tag=" not in to.replace(" ", "").lower():
                headers.set("To", f"{to};tag={self.response_tag()}")
                response.invalidate()
        if self.user_agent and "Server" not in headers:
            headers.add("Server", self.user_agent)

    def new_branch(self) -> str:
        return self.transactions.new_branch()

    def response_tag(self) -> str:
        """A To-tag for a response outside a dialog: the node's random part and a count, so
        that each is globally unique (RFC 3261 §19.3; one tag for them all broke the letter
        of it, Linphone and Twinkle audits) at the cost of one addition."""
        self._tags += 1
        return self._to_tag + str(self._tags)  # (a format spec cost ~1,000 instructions)

    def send_request(
        self,
        request: Request,
        destination: Peer,
        now: float,
        on_response: ResponseCallback | None = None,
        *,
        synthesize: bool = False,
        timeout: float | None = None,
    ) -> TransactionKey:
        """Send ``request`` (its top Via must carry a fresh branch) in a client transaction.

        ``on_response`` gets the final response, or None when the transaction timed out or the
        transport failed; with ``synthesize`` it gets a locally made 408 (timeout) or 503
        (transport error) instead, as RFC 3261 §8.1.3.1 describes.  ``timeout``: seconds
        before it times out, instead of Timer F.
        """
        key = self.transactions.send_request(request, destination, now, timeout)
        self.stats.requests_sent += 1
        if on_response is not None:
            self._pending[key] = on_response
            if synthesize:
                self._synthesize.add(key)
        return key

    # --- internals ----------------------------------------------------------------------------

    def _drain(self, now: float) -> None:
        events = self.transactions.events
        while events:
            event = events.popleft()
            if isinstance(event, RequestReceived):
                self._dispatch(event, now)
            elif isinstance(event, ResponseReceived):
                if event.response.status >= 200:
                    self._synthesize.discard(event.key)
                    callback = self._pending.pop(event.key, None)
                    if callback is not None:
                        callback(event.response, now)
            elif isinstance(event, TransactionTimedOut):
                self.stats.timeouts += 1
                callback = self._pending.pop(event.key, None)
                if callback is not None:
                    failure = self._failure(event)
                    self.made_here = failure
                    try:
                        callback(failure, now)
                    finally:
                        self.made_here = None
            elif isinstance(event, StrayResponse):
                self.stats.dropped += 1  # (RFC 3261 §18.1.2: dropped, no log line per stray)
                report = self.report_stray
                if report is not None:
                    report(event.source, now)

    def _failure(self, event: TransactionTimedOut) -> Response | None:
        if event.key not in self._synthesize:
            return None
        self._synthesize.discard(event.key)
        status = 503 if event.transport_error else 408
        return make_response(event.request, status)

    def _dispatch(self, event: RequestReceived, now: float) -> None:
        request = event.request
        if event.key is None or request.method == "ACK":
            return  # RFC 3261 §17.2.3: never answer an ACK
        incoming = Incoming(
            request, event.source, event.key, self.identities.get(event.source.connection)
        )
        response = self._answer(incoming, now)
        if response is not None:
            self.respond(incoming.key, response, now)

    def _answer(self, incoming: Incoming, now: float) -> Response | None:
        """The checks and the role's answer (None: the role answers later)."""
        request = incoming.request
        try:
            return self._check_and_handle(incoming, now)
        except SipParseError as exc:
            # A typed accessor found a defect the role needed: answer with what it names.
            return make_response(request, exc.status, exc.reason, to_tag=self.response_tag())
        except Exception:
            # A fault of ours (a bug): still answer, so the server transaction ends and its
            # slot in the table is freed.
            log.exception("%s %s from %s: 500", request.method, request.uri, incoming.source)
            return make_response(request, 500, to_tag=self.response_tag())

    def _check_and_handle(self, incoming: Incoming, now: float) -> Response | None:
        request = incoming.request
        if isinstance(request.request_uri, AbsoluteUri):
            # RFC 3261 §8.2.2.1 (RFC 4475 unkscm, novelsc)
            return make_response(request, 416, to_tag=self.response_tag())
        unsupported = (
            [opt for opt in request.token_list("Require") if opt not in self.supported]
            if "Require" in request.headers
            else None
        )
        if unsupported and request.method != "CANCEL":
            # RFC 3261 §8.2.2.3 (RFC 4475 bext01)
            return make_response(
                request,
                420,
                to_tag=self.response_tag(),
                headers=[("Unsupported", ", ".join(unsupported))],
            )
        if self.router is not None and request.method != "CANCEL":
            decision = self.router.route(incoming, now)
            if decision is not LOCAL:
                return decision  # type: ignore[return-value]
        handler = self.handlers.get(request.method)
        if handler is not None:
            cannot_store = self.cannot_store
            if cannot_store is not None and request.method in STORING_METHODS and cannot_store(now):
                return self._store_refusal(request, now)
            return handler(incoming, now)
        if request.method == "CANCEL":
            # RFC 3261 §9.2: nothing of ours is cancellable (no INVITE is served)
            return make_response(request, 481, to_tag=self.response_tag())
        if request.method in KNOWN_NOT_ALLOWED:
            return make_response(
                request, 405, to_tag=self.response_tag(), headers=[("Allow", self.allow)]
            )
        return make_response(
            request, 501, to_tag=self.response_tag(), headers=[("Allow", self.allow)]
        )

    def _store_refusal(self, request: Request, now: float) -> Response:
        if self._store_refusals.due(now):
            log.error("changes cannot be stored: REGISTER, PUBLISH and SUBSCRIBE get 503")
        return make_response(
            request,
            503,
            "Storage unavailable",
            to_tag=self.response_tag(),
            headers=[("Retry-After", "30")],
        )

    def _options(self, incoming: Incoming, now: float) -> Response:
        """RFC 3261 §11.2: 200 with what we can do."""
        headers = [("Allow", self.allow)]
        if self.allow_events:
            headers.append(("Allow-Events", ", ".join(self.allow_events)))
        if self.accept:
            headers.append(("Accept", ", ".join(self.accept)))
        headers.append(("Supported", ", ".join(self.supported)))
        return make_response(incoming.request, 200, to_tag=self.response_tag(), headers=headers)

    def _answer_malformed(self, partial: Message, error: SipParseError, source: Peer) -> None:
        """STYLE.md §4 triage: answer an addressable bad request statelessly, drop the rest."""
        if not isinstance(partial, Request) or partial.method == "ACK":
            self._drop(b"", f"{error.reason} (response or ACK)", source)
            return
        headers = partial.headers
        if not all(name in headers for name in ("Via", "From", "To", "Call-ID", "CSeq")):
            self._drop(b"", error.reason, source)
            return
        # The reply goes back where the request came from (the source address on UDP, the same
        # connection on streams), so even a malformed Via (RFC 4475 badinv01) can be answered.
        response = make_response(partial, error.status, error.reason, to_tag=self.response_tag())
        self._send_stateless(response, reply_peer(source))
        self.stats.malformed_answered += 1
        log.debug("malformed %s from %s: %d %s", partial.method, source, error.status, error.reason)

    def _answer_oversize(self, data: bytes, error: SipParseError, source: Peer) -> None:
        head = data.split(b"\r\n\r\n", 1)[0][: self.limits.max_message_size]
        try:
            partial = parse_message(head + b"\r\n\r\n", datagram=True)
        except ParseFailure as exc:
            self._answer_malformed(exc.partial, error, source)
            return
        except SipParseError:
            self._drop(data, error.reason, source)
            return
        self._answer_malformed(partial, error, source)

    def _send_stateless(self, response: Response, destination: Peer) -> None:
        self._stateless.append((to_bytes(response), destination))

    def _drop(self, data: bytes, reason: str, source: Peer) -> None:
        self.stats.dropped += 1
        log.debug("dropped from %s: %s %r", source, reason, data[:64])


def reply_peer(source: Peer) -> Peer:
    """Where a stateless response goes: the source connection, or (RFC 3581) the source address."""
    return source if source.reliable else Peer("udp", source.host, source.port)
