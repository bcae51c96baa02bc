"""The pump between one sans-IO endpoint and its sockets (aioquic ``asyncio/protocol.py``).

After every input (datagram, framed message, connection event, timer) the driver drains the
endpoint's ``outbox()``, sends each item, then re-arms ONE ``loop.call_at`` timer from
``get_timer()``.  ``now`` is ``loop.time()``, or the ``clock`` given (a node passes wall-clock
time so that stored expiries mean the same after a restart).

Deadlines are served in slots of 1/:data:`TIMER_SLOTS` s: the loop timer fires at the end of the
slot holding the earliest deadline (never early, at most ~4 ms late; RFC 3261 timers are
hundreds of ms and tolerate that), so under load one callback fires every timer of a slot, and
the loop timer is re-armed only when a deadline appears in an earlier slot than the armed one.
Input comes first: while datagrams wait in a UDP socket when the timer fires, the timers wait
for them (for up to :data:`INPUT_FIRST_FOR` s; see ``Driver._run_timers``).

The answers to a burst of datagrams leave together, in one send per burst while the process is
busy, and in groups of at most :data:`BURST_SEND_EVERY` while it has CPU time to spare (the
``cpu_clock``, ``time.process_time``, tells which; see ``Driver._pump_soon``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import ssl
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ParamSpec, Protocol, TypeVar

from presence_sip.config import Limits
from presence_sip.sip.errors import ConfigError, SipParseError, TransportError
from presence_sip.sip.peer import Peer

from .address_table import AddressTable
from .connection_limits import ConnectionLimits
from .flood import flood_guard_for
from .handshakes import HANDSHAKE_TIMEOUT, HandshakeBookkeeping
from .listen import ListenSpec
from .listeners import Listeners
from .outbound import CONNECT_TIMEOUT, FailureLog, connect, source_host
from .sockets import IP_LITERALS as _LITERALS  # (the send path's names, kept)
from .sockets import address_key
from .sockets import ip_literal as _ip_literal
from .stream import StreamConnection
from .tasks import Tasks
from .tls import PeerIdentity, TlsContexts
from .udp import UdpListener

logger = logging.getLogger(__name__)

STOP_GRACE = 2.0
"""Seconds :meth:`Driver.stop` lets connections close gracefully before aborting them."""
MAX_SEND_ROUNDS = 16
"""Bound on outbox -> send failure -> connection_lost -> outbox rounds within one input."""
UDP_AFFINITY_SIZE = 4096
"""Remote addresses remembered to pick the UDP socket a peer talked to last."""
TIMER_SLOTS = 256
"""Timer slots per second: deadlines are rounded up to the next 1/256 s (~3.9 ms)."""
BURST_SEND_EVERY = 8
"""In a burst, with CPU time to spare, the answers so far leave after this many inputs..."""
BURST_SEND_AFTER = 0.001
"""... or this many seconds after the last send, whichever comes first (see _pump_soon)."""
SPARE_BELOW = 0.6
"""The process has CPU time to spare while it uses less than this share of one CPU..."""
LOAD_WINDOW = 0.25
"""... measured over this many seconds."""
INPUT_FIRST_FOR = 0.1
"""Seconds the timers may wait for the datagrams that wait in a UDP socket (see _run_timers)."""

P = ParamSpec("P")
R = TypeVar("R")


class Endpoint(Protocol):
    """The sans-IO core the driver pumps (transaction manager + role).

    Peers of stream messages carry the connection id; a send to ``Peer(..., connection=0)`` uses
    any open connection to that address or opens one.
    """

    def receive(self, data: bytes, source: Peer, now: float) -> None:
        """One datagram, or one framed stream message."""

    def receive_malformed(
        self, data: bytes, error: SipParseError, source: Peer, now: float
    ) -> None:
        """Stream framing failed (bad/missing Content-Length, over the size cap).

        ``data`` is what was buffered (the header block at most).  The endpoint may queue one
        error response; the driver then closes the connection.
        """

    def connection_made(self, peer: Peer, identity: PeerIdentity | None, now: float) -> None:
        """A TCP/TLS connection is up (TLS: handshake done); ``identity`` = verified certificate."""

    def connection_lost(self, peer: Peer, now: float) -> None:
        """A connection closed, or messages to ``peer`` cannot be delivered.

        For a closed connection ``peer`` carries its id.  When a connect/handshake fails or a send
        is impossible, it is reported for every Peer value the messages were addressed to (often
        ``connection=0``), so transactions fail fast (RFC 3261 §17.1.4).
        """

    def outbox(self) -> list[tuple[bytes, Peer]]:
        """Drain what to send."""

    def get_timer(self) -> float | None:
        """Absolute ``loop.time()`` deadline of the next timer, if any."""

    def handle_timer(self, now: float) -> None:
        """The deadline from :meth:`get_timer` has passed."""


class Driver:
    """Owns an endpoint and its UDP/TCP/TLS transports and pumps data and timers between them.

    ``server_ssl`` serves ``tls:`` listeners; ``client_ssl`` opens outbound TLS connections
    (client certificate + verification against the CA bundle); :meth:`use_tls` replaces them
    for the connections that come after.  ``cpu_clock`` gives the CPU seconds the process has
    used (tests pass their own).
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        limits: Limits | None = None,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        route_ssl: ssl.SSLContext | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        clock: Callable[[], float] | None = None,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self._endpoint = endpoint
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._limits = limits if limits is not None else Limits()
        self._server_ssl = server_ssl
        self._client_ssl = client_ssl
        self._route_ssl = route_ssl if route_ssl is not None else client_ssl
        """For route next hops (``tls_names``): ``client_ssl``'s certificates and trust, the
        name check left to RFC 5922's (a copy made by ``tls.route_context``)."""
        self._connect_timeout = connect_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._listeners = Listeners()
        self._udp = self._listeners.udp  # the same list: the send path reads it directly
        self._connections: dict[int, StreamConnection] = {}
        self._by_address: AddressTable[StreamConnection] = AddressTable()
        self._live: set[StreamConnection] = set()  # every connection until asyncio released it
        self._udp_affinity: dict[tuple[str, int], UdpListener] = {}
        self._udp_peers: dict[tuple[Any, ...], Peer] = {}
        """One Peer per remote UDP address (issue 8: not one per datagram)."""
        self._inbound = 0
        self.flood = flood_guard_for(self._limits)
        """Requests and connections per source address (``transport.flood``); None: off."""
        self._connection_limits = ConnectionLimits(self.flood, self._limits, self._now)
        self.tls_names: dict[tuple[str, int], frozenset[str]] = {}
        """The SIP domains a TLS next hop's certificate must stand for, by (IP, port): those of
        the routes that name it (RFC 5922 §4, §7.3: the client matches the domain it is trying
        to reach, not the address it resolved to; the identities as §7.1 reads them, see
        ``tls.domain_identities``).  Other peers: Python's host name check of their host."""
        self._tasks = Tasks()
        self.handshakes = HandshakeBookkeeping()
        self._send_failures = FailureLog()
        self._ids = itertools.count(1)
        self._timer: asyncio.TimerHandle | None = None
        self._waiting_timers: asyncio.Handle | None = None
        """The callback the due timers wait in for the input (see _run_timers)."""
        self._timer_at = math.inf
        """The slot (endpoint clock) the loop timer fires at; inf when none is armed, -inf
        while the timers wait for the input (nothing re-arms the loop timer then)."""
        self._timers_due_since = 0.0
        """Loop time at which the loop timer fired (the timers wait for input from then on)."""
        self._time: Callable[[], float] = clock if clock is not None else _not_started
        self._pump_pending = False
        self._pump_now = 0.0
        """The endpoint time of the first input since the last pump (see _pump_soon)."""
        self._unsent_inputs = 0
        """Inputs taken in since the last send of the burst."""
        self._split_bursts = False
        """Whether the last LOAD_WINDOW left the process CPU time to spare (see _pump_soon)."""
        self._window_start = 0.0
        """Endpoint time at which the current LOAD_WINDOW began (the first begins at start)."""
        self._window_cpu = 0.0
        """The process's CPU seconds then."""

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self, listen: Sequence[ListenSpec]) -> None:
        """Bind every listen address; :class:`TransportError` (after cleanup) if one fails."""
        self._loop = asyncio.get_running_loop()
        if self._clock is None:
            self._time = self._loop.time
        self._window_start = self._time()
        self._window_cpu = self._cpu_clock()
        self._running = True
        for spec in listen:
            try:
                await self._listen(spec)
            except (OSError, ssl.SSLError) as exc:
                await self.stop()
                raise TransportError(f"cannot listen on {spec}: {exc}") from exc
            except ConfigError:
                await self.stop()
                raise
            logger.info("listening on %s", spec)
        self.transmit()

    async def stop(self) -> None:
        """Close every socket and connection; leaves no task, timer or open transport behind."""
        self._running = False
        self._cancel_timer()
        self._listeners.stop_accepting()
        await self._tasks.cancel()
        self.handshakes.cancel()  # after its tasks: the failures they report meanwhile count
        conns = list(self._live)
        for conn in conns:
            conn.close()
        waiting = [c.closed for c in conns if not c.closed.done()]
        waiting += self._listeners.close_udp()
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=STOP_GRACE)
            if late:
                for conn in conns:
                    conn.abort()
                await asyncio.wait(late, timeout=STOP_GRACE)
        await self._listeners.wait_closed()
        self._connections.clear()
        self._by_address.clear()
        self._udp_affinity.clear()
        self._inbound = 0

    def use_flood_limits(self, limits: Limits) -> None:
        """The flood guard's limits from now on (a configuration reloaded): the guard is kept
        under them (``flood_guard_for``), or made when it was off: then it counts the inbound
        connections already up towards the per-source cap (not those still in their TLS
        handshake: they are counted neither way)."""
        self.flood = flood_guard_for(limits, self.flood)
        inbound = (conn for conn in self._connections.values() if not conn.outbound)
        self._connection_limits.use_flood(self.flood, inbound)

    def use_tls(self, contexts: TlsContexts) -> None:
        """TLS connections accepted or opened from now on use ``contexts`` (SIGHUP reloads the
        node's files); those up, or in their handshake, keep the context they began with."""
        self._server_ssl = contexts.server
        self._client_ssl = contexts.client
        self._route_ssl = contexts.route

    def connection_count(self) -> int:
        """TCP/TLS connections held: inbound ones once up (TLS: handshake done), outbound ones
        from when they are opened."""
        return len(self._connections)

    @property
    def local_addresses(self) -> list[ListenSpec]:
        """The addresses actually bound (real ports when 0 was asked for)."""
        return self._listeners.addresses

    async def _listen(self, spec: ListenSpec) -> None:
        loop = self._get_loop()
        tls = spec.transport == "tls"
        if tls and self._server_ssl is None:
            raise ConfigError(f"{spec} needs a TLS certificate (server context)")

        def accept() -> StreamConnection:
            conn = StreamConnection(
                self,
                next(self._ids),
                spec.transport,
                self._limits,
                server_tls=self._server_ssl if tls else None,  # per connection: see use_tls
                handshake_timeout=HANDSHAKE_TIMEOUT,
            )
            self._track(conn)
            return conn

        await self._listeners.open(loop, spec, self, accept)

    def _track(self, conn: StreamConnection) -> None:
        self._live.add(conn)
        conn.closed.add_done_callback(lambda _: self._live.discard(conn))

    # -- the pump ----------------------------------------------------------------------------
    def transmit(self) -> None:
        """Drain the outbox, send each item, then re-arm the one timer.

        Call it after feeding the endpoint from outside the driver (e.g. the application asked
        the endpoint to send a request).
        """
        if self._running:
            self._pump(None)

    def _pump(self, now: float | None) -> None:
        """:meth:`transmit` after an input at ``now`` (None: unknown, always ask get_timer)."""
        endpoint = self._endpoint
        for _ in range(MAX_SEND_ROUNDS):
            try:
                items = endpoint.outbox()
            except Exception:  # STYLE.md §4: see _call
                logger.exception("endpoint outbox raised (a bug); still serving")
                break
            if not items:
                break
            failed = self._send_all(items)
            if not failed:
                break
            self._report_lost(dict.fromkeys(failed))
        # Every new deadline is at or after ``now``: when the armed timer fires in now's slot
        # already, no deadline can need an earlier one, and get_timer() is not even asked.
        if now is None or self._timer_at > math.ceil(now * TIMER_SLOTS) / TIMER_SLOTS:
            self._arm_timer()

    def _pump_soon(self, now: float) -> None:
        """:meth:`_pump` once the datagrams that are ready in this loop iteration are all in,
        or sooner in a long burst while the process has CPU time to spare.

        The loop hands over every datagram that is ready (uvloop: up to 32 per socket wake-up)
        before it runs the callbacks scheduled meanwhile, so one pump can send the answers to a
        burst of requests back to back: one wake-up of the peer for the burst instead of one
        per answer, and one outbox/timer round (issue 8).  That costs latency: the first
        request of a 32-datagram burst waits for all 32 (~4 ms).  Sending within the burst
        (after BURST_SEND_EVERY inputs or BURST_SEND_AFTER s) cuts the wait but costs CPU on
        both sides, a wake-up each: always splitting took the server from 77 % to 88 % of a
        CPU at 6,000 PUBLISH/s, and 8,000/s no longer passed.  So bursts are split only after
        a LOAD_WINDOW in which the process used less than SPARE_BELOW of a CPU; under heavier
        load (and before anything was measured) a burst goes in one send.  With one datagram
        per iteration it is the same pump, a callback later.  Stream messages pump at once (a
        pong written by the connection must follow the answers to the messages before it)."""
        if not self._running:
            return
        if not self._pump_pending:
            self._pump_pending = True
            self._pump_now = now
            self._unsent_inputs = 1
            self._get_loop().call_soon(self._pump_deferred)
            return
        self._unsent_inputs += 1
        if self._split_bursts and (
            self._unsent_inputs >= BURST_SEND_EVERY or now - self._pump_now >= BURST_SEND_AFTER
        ):
            # The deferred pump stays scheduled: it sends what the rest of the burst leaves.
            self._unsent_inputs = 0
            self._pump_now = now
            self._pump(now)

    def _pump_deferred(self) -> None:
        self._pump_pending = False
        if self._running:
            self._pump(self._pump_now)
            self._note_load(self._pump_now)

    def _note_load(self, now: float) -> None:
        """Close the load window when it is due: were there CPU cycles to spare in it?"""
        elapsed = now - self._window_start
        if elapsed < LOAD_WINDOW:
            return
        cpu = self._cpu_clock()
        self._split_bursts = cpu - self._window_cpu < SPARE_BELOW * elapsed
        self._window_start = now
        self._window_cpu = cpu

    def _arm_timer(self) -> None:
        try:
            deadline = self._endpoint.get_timer()
        except Exception:  # STYLE.md §4: see _call
            logger.exception("endpoint get_timer raised (a bug); still serving")
            return
        if deadline is None:
            self._cancel_timer()
            return
        # Rounded up to the end of its slot (multiplying by a power of two is exact).
        slot = math.ceil(deadline * TIMER_SLOTS) / TIMER_SLOTS
        if slot >= self._timer_at:
            return  # the armed timer fires first (or together); it re-arms for the rest
        self._cancel_timer()
        loop = self._get_loop()
        at = slot
        if self._clock is not None:  # the endpoint's clock is not the loop's: convert
            at = loop.time() + max(0.0, slot - self._clock())
        self._timer_at = slot
        self._timer = loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timers_due_since = self._get_loop().time()
        self._timer_at = -math.inf
        self._run_timers()

    def _run_timers(self) -> None:
        """The endpoint's timers, once no datagram waits in a UDP socket (or INPUT_FIRST_FOR s
        after the loop timer fired, whichever comes first).

        uvloop (libuv) reads at most 32 datagrams per socket per loop iteration, then runs the
        due timers; asyncio reads one.  After a stall (a VM descheduled, a long callback), the
        answers to the requests a timer would retransmit may be waiting in the socket: a node
        stopped for 0.8 s, while the answers to 100 of its NOTIFYs came in, sent all 100 again
        (``tests/integration/test_serve_stall.py``).  So the timers wait, one loop iteration
        (``call_soon``) at a time, until no datagram is left to read.  The wait is bounded: a
        socket that never empties (more load than the node can serve) delays the timers by
        INPUT_FIRST_FOR at most.  The question costs one ``ioctl`` per UDP socket."""
        loop = self._get_loop()
        if loop.time() - self._timers_due_since < INPUT_FIRST_FOR and any(
            listener.input_waiting() for listener in self._udp
        ):
            self._waiting_timers = loop.call_soon(self._run_timers)
            return
        self._waiting_timers = None
        self._timer_at = math.inf
        now = self._time()
        self._call(self._endpoint.handle_timer, now)
        if self._running:
            self._pump(None)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._waiting_timers is not None:
            self._waiting_timers.cancel()
        self._timer = self._waiting_timers = None
        self._timer_at = math.inf

    def _call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R | None:
        """Call into the endpoint.  An exception escaping it is a bug: log it and keep serving."""
        try:
            return fn(*args, **kwargs)
        except Exception:  # STYLE.md §4: the one top-level guard of the code base
            logger.exception("endpoint %s raised (a bug); still serving", fn.__name__)
            return None

    def _report_lost(self, peers: dict[Peer, None]) -> None:
        now = self._now()
        for peer in peers:
            self._call(self._endpoint.connection_lost, peer, now)

    # -- sending -----------------------------------------------------------------------------
    def _send_all(self, items: list[tuple[bytes, Peer]]) -> list[Peer]:
        """Send each item; the peers to report as lost (empty on success or while connecting)."""
        failed: list[Peer] = []
        for data, peer in items:
            try:
                if peer.transport == "udp":
                    self._send_udp(data, peer)
                elif peer.transport in ("tcp", "tls"):
                    self._stream_for(peer).send(data)
                else:
                    raise TransportError(f"unknown transport {peer.transport!r}")
            except TransportError as exc:
                self._send_failures.log("cannot send to %s: %s", peer, exc)  # (see FailureLog)
                failed.append(peer)
        return failed

    def _send_udp(self, data: bytes, peer: Peer) -> None:
        host, version = _LITERALS.get(peer.host) or _ip_literal(peer.host)
        udp = self._udp
        if len(udp) == 1 and udp[0].version == version:
            udp[0].send(data, host, peer.port)  # one socket: nothing to choose (the hot path)
            return
        listener = self._udp_affinity.get((host, peer.port))
        if listener is None or not listener.usable:
            listener = next((u for u in udp if u.version == version and u.usable), None)
        if listener is None:
            raise TransportError(f"no UDP socket for IPv{version}")
        listener.send(data, host, peer.port)

    def _stream_for(self, peer: Peer) -> StreamConnection:
        """RFC 3261 §18.2.2: the connection asked for, else one to that address, else a new one."""
        if peer.connection:
            conn = self._connections.get(peer.connection)
            if conn is not None and conn.usable and conn.transport_name == peer.transport:
                return conn
        host, _ = _ip_literal(peer.host)
        conn = self._by_address.get((peer.transport, host, peer.port))
        if conn is not None and conn.usable:
            conn.requested.add(peer)
            return conn
        return self._open(Peer(peer.transport, host, peer.port, 0), requested=peer)

    def _open(self, address: Peer, *, requested: Peer) -> StreamConnection:
        if not self._running:
            raise TransportError("driver is stopped")
        if address.transport == "tls" and self._client_ssl is None:
            raise TransportError("no TLS client context to open a TLS connection")
        opened = len(self._connections) - self._inbound
        if opened >= self._limits.max_connections:
            raise TransportError(f"{opened} connections opened by this node are open already")
        ident = next(self._ids)
        target = Peer(address.transport, address.host, address.port, ident)
        conn = StreamConnection(self, ident, address.transport, self._limits, target=target)
        if address.transport == "tls":
            conn.domains = self.tls_names.get((address.host, address.port), frozenset())
        conn.requested.update((address, requested))
        self._track(conn)
        self._connections[ident] = conn
        self._by_address.add(address_key(target), conn, use_now=True)
        self._tasks.start(self._get_loop(), self._connect(conn))
        return conn

    def handshake_aborted(
        self, conn: StreamConnection, *, failed: bool, reason: str | None = None
    ) -> None:
        """A failed handshake counts towards its source's flood bucket (``transport.flood``);
        the rest is :meth:`.HandshakeBookkeeping.ended` (its log line, the heap trim)."""
        if failed and self.flood is not None and self._running:
            self.flood.handshake_failed(conn.peer.host, self._now())
        loop = self._loop if self._running else None
        self.handshakes.ended((conn.peer.host, conn.peer.port), reason, loop)

    async def _connect(self, conn: StreamConnection) -> None:
        failure = await connect(
            self._get_loop(),
            conn,
            source_host(self._listeners.servers, conn.transport_name, conn.peer.host),
            client_ssl=self._client_ssl,
            route_ssl=self._route_ssl,
            timeout=self._connect_timeout,
        )
        if failure is not None:
            self._send_failures.log("cannot connect to %s: %s", conn.peer, failure)
            self._connect_failed(conn)

    def _connect_failed(self, conn: StreamConnection) -> None:
        conn.fail()
        self._forget(conn)
        if self._running:
            self._report_lost(dict.fromkeys(conn.requested))
            self.transmit()

    def _forget(self, conn: StreamConnection) -> None:
        self._connections.pop(conn.id, None)
        self._by_address.remove(address_key(conn.peer), conn)

    # -- StreamOwner -------------------------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, None]) -> bool:
        """Run a connection's TLS handshake as a tracked task (bounded by max_connections)."""
        if not self._running or len(self._tasks) >= self._limits.max_connections:
            coro.close()
            if self._running:
                self.handshakes.refused(len(self._tasks))
            return False
        self._tasks.start(self._get_loop(), coro)
        return True

    def stream_accepted(self, conn: StreamConnection) -> bool:
        """An inbound connection, before anything else (TLS: before its handshake): the flood
        guard's block and per-source cap apply from here (:class:`.ConnectionLimits`)."""
        return self._running and self._connection_limits.accepted(conn)

    def stream_released(self, conn: StreamConnection) -> None:
        """An inbound connection :meth:`stream_accepted` took is gone."""
        self._connection_limits.released(conn)

    def stream_made(self, conn: StreamConnection) -> bool:
        """A connection is up: register it and tell the endpoint."""
        if not self._running:
            return False
        if not conn.outbound:
            if not self._connection_limits.admits_up(conn, self._inbound):
                return False
            self._inbound += 1
            self._connections[conn.id] = conn
            self._by_address.add(address_key(conn.peer), conn, use_now=False)
        self._call(self._endpoint.connection_made, conn.peer, conn.identity, self._now())
        self.transmit()
        return True

    def stream_message(self, conn: StreamConnection, data: bytes) -> None:
        """One framed message from a connection."""
        now = self._time()
        if self.flood is not None and self.flood.drop_streamed(data, conn.peer.host, now):
            conn.close()  # (and new connections from its address are refused while blocked)
            return
        self._call(self._endpoint.receive, data, conn.peer, now)
        if self._running:  # at once: the connection may write a pong right after this message
            self._pump(now)

    def stream_malformed(self, conn: StreamConnection, data: bytes, error: SipParseError) -> None:
        """Framing lost: let the endpoint queue an answer and send it before the close."""
        self._call(self._endpoint.receive_malformed, data, error, conn.peer, self._now())
        self.transmit()

    def stream_lost(self, conn: StreamConnection) -> None:
        """A connection closed."""
        self._forget(conn)
        if not conn.outbound:
            self._inbound -= 1
        if self._running:
            self._call(self._endpoint.connection_lost, conn.peer, self._now())
            self.transmit()

    def stray_response(self, source: Peer, now: float) -> None:
        """A response from ``source`` matched no transaction (or could not be parsed): the
        endpoint's ``report_stray``, set when the flood guard counts requests.  Counted as a
        request is; a connection it came over is closed when its address is blocked."""
        if self._connection_limits.stray_response(source, now):
            conn = self._connections.get(source.connection)
            if conn is not None:
                conn.close()

    # -- DatagramOwner -----------------------------------------------------------------------
    def datagram_received(self, listener: UdpListener, data: bytes, addr: tuple[Any, ...]) -> None:
        """One datagram; remembers which socket the peer talks to when there are several."""
        now = self._time()
        if self.flood is not None and self.flood.drop(data, addr[0], now):
            return  # (unanswered: forged sources are what a flood of them wants answered)
        if len(self._udp) > 1:
            self._remember_udp(listener, str(addr[0]), int(addr[1]))
        # Keyed by the address tuple asyncio gives: no conversion or new key per datagram.
        peer = self._udp_peers.get(addr) or self._udp_peer(addr)
        try:
            self._endpoint.receive(data, peer, now)
        except Exception:  # STYLE.md §4: see _call
            logger.exception("endpoint receive raised (a bug); still serving")
        self._pump_soon(now)

    def _udp_peer(self, addr: tuple[Any, ...]) -> Peer:
        peers = self._udp_peers
        if len(peers) >= UDP_AFFINITY_SIZE:
            peers.clear()
        peer = peers[addr] = Peer("udp", str(addr[0]), int(addr[1]))
        return peer

    def _remember_udp(self, listener: UdpListener, host: str, port: int) -> None:
        affinity = self._udp_affinity
        affinity.pop((host, port), None)
        if len(affinity) >= UDP_AFFINITY_SIZE:
            del affinity[next(iter(affinity))]
        affinity[(host, port)] = listener

    # -- helpers -----------------------------------------------------------------------------
    def _get_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise TransportError("driver not started")
        return self._loop

    def _now(self) -> float:
        return self._time()


def _not_started() -> float:
    raise TransportError("driver not started")
