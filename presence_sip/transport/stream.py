"""TCP/TLS transport: one :class:`asyncio.Protocol` per connection, Content-Length framed."""

from __future__ import annotations

import asyncio
import enum
import logging
import ssl
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, cast

from presence_sip.config import Limits
from presence_sip.sip.errors import SipParseError, TransportError
from presence_sip.sip.framing import StreamBuffer
from presence_sip.sip.peer import Peer

from .tls import PeerIdentity, domain_certificate_problem

logger = logging.getLogger(__name__)

WRITE_HIGH_WATER = 256 * 1024
"""Above this many unsent bytes we stop reading from the peer (it is not reading our answers)."""
WRITE_LOW_WATER = 64 * 1024
"""Reading resumes when the unsent bytes drop below this."""
WRITE_HARD_LIMIT = 4 * 1024 * 1024
"""Unsent bytes beyond which the connection is aborted."""
CLOSE_GRACE = 5.0
"""Seconds a graceful close may take to flush (or to linger) before the connection is aborted."""
LINGER_MAX_BYTES = 1024 * 1024
"""Bytes a lingering close reads and drops before it gives up and aborts the connection."""

MAX_TLS_PRELUDE = 64 * 1024
"""Raw bytes an inbound TLS connection may send before its upgrade starts (a ClientHello is at
most a few records); more is not TLS and the connection is aborted."""

PONG = b"\r\n"
"""RFC 5626 §4.4.1: a double-CRLF ping is answered with a single CRLF."""


class StreamOwner(Protocol):
    """Who a :class:`StreamConnection` reports to (the driver)."""

    def stream_accepted(self, conn: StreamConnection) -> bool:
        """An inbound connection was accepted (TLS: before its handshake starts; ``conn.peer``
        is known).  False refuses it (it is aborted at once); after True,
        :meth:`stream_released` follows once the connection is gone, however it ends."""

    def stream_released(self, conn: StreamConnection) -> None:
        """An inbound connection :meth:`stream_accepted` took is gone (closed, refused later,
        or its handshake failed, timed out or was cancelled)."""

    def stream_made(self, conn: StreamConnection) -> bool:
        """The connection is up (TLS: handshake done). False refuses it (it is aborted)."""

    def stream_message(self, conn: StreamConnection, data: bytes) -> None:
        """One framed message."""

    def stream_malformed(self, conn: StreamConnection, data: bytes, error: SipParseError) -> None:
        """Framing failed; the connection is closed after this returns."""

    def stream_lost(self, conn: StreamConnection) -> None:
        """A connection reported by :meth:`stream_made` is gone."""

    def spawn(self, coro: Coroutine[Any, Any, None]) -> bool:
        """Run ``coro`` as a task the owner tracks and cancels on stop; False if it refuses."""

    def handshake_aborted(
        self, conn: StreamConnection, *, failed: bool, reason: str | None = None
    ) -> None:
        """An inbound TLS handshake ended without a connection (it is aborted): ``failed`` when
        the peer's handshake failed or timed out, False when we cancelled it (a stop);
        ``reason``, when it failed with an error or timed out, says how (for the log)."""


class State(enum.Enum):
    """Life of a stream connection."""

    CONNECTING = "connecting"
    OPEN = "open"
    LINGERING = "lingering"
    """Framing was lost: answered, half-closed, dropping what the peer still sends."""
    CLOSING = "closing"
    CLOSED = "closed"


class StreamConnection(asyncio.Protocol):
    """One TCP or TLS connection.

    Inbound connections learn their peer from the socket; outbound ones are created by the driver
    with ``target`` and queue what is sent before the connection (and TLS handshake) is up.
    Inbound TLS is accepted as TCP and upgraded with ``loop.start_tls`` in a task the owner
    tracks, so a stop can cancel handshakes still in progress.
    """

    def __init__(
        self,
        owner: StreamOwner,
        ident: int,
        transport_name: str,
        limits: Limits,
        *,
        target: Peer | None = None,
        server_tls: ssl.SSLContext | None = None,
        handshake_timeout: float = 10.0,
    ) -> None:
        self._owner = owner
        self.id = ident
        """Connection id, unique within the driver (``Peer.connection``)."""
        self.transport_name = transport_name
        self.outbound = target is not None
        self.peer = target if target is not None else Peer(transport_name, "", 0, ident)
        """Remote address with this connection's id."""
        self.identity: PeerIdentity | None = None
        """Verified TLS peer certificate, if any."""
        self.requested: set[Peer] = set()
        """Peers the driver routed messages for onto this connection before it came up."""
        self.domains: frozenset[str] = frozenset()
        """Outbound TLS to a route's next hop: the SIP domains its certificate must stand for
        (RFC 5922), checked before anything is written; empty: the host name check only."""
        self.accepted = False
        """Inbound: the owner took the connection (:meth:`StreamOwner.stream_accepted`) and is
        yet to hear it is gone."""
        self.refused: str | None = None
        """Why the peer was refused after its handshake (the driver reports the connection
        as failed)."""
        self.state = State.CONNECTING
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Resolved once asyncio has released the connection (or it never came up)."""
        self._limits = limits
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._raw: asyncio.BaseTransport | None = None  # the TCP transport under an inbound TLS one
        self._server_tls = server_tls
        self._handshake_timeout = handshake_timeout
        self._buffer = StreamBuffer(limits.max_message_size)
        self._unframed = bytearray()  # mirror of what the StreamBuffer holds
        self._pings_seen = 0
        self._ping_run = 0
        self._receiving = True
        self._discarded = 0  # bytes dropped while lingering
        self._pending: list[bytes] = []
        self._early = bytearray()
        self._upgrading = False  # inbound TLS: start_tls has taken over the raw transport
        self._prelude = bytearray()  # inbound TLS: raw bytes read before start_tls took over
        self._last_activity = self._loop.time()
        self._message_started: float | None = None
        """When the message now partly received began (None: none is)."""
        self._timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<StreamConnection {self.id} {self.peer} {self.state.value}>"

    # -- asyncio callbacks -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self.outbound and not self._accept(transport):
            self.state = State.CLOSED
            cast(asyncio.Transport, transport).abort()
            return
        if self._server_tls is not None:
            self._raw = transport
            raw = cast(asyncio.Transport, transport)
            raw.pause_reading()
            if not self._owner.spawn(self._accept_tls(self._server_tls)):
                self.state = State.CLOSED
                raw.abort()
            return
        self._up(transport)

    def _accept(self, transport: asyncio.BaseTransport) -> bool:
        """An inbound connection: learn the peer and ask the owner (its per-source limits hold
        from here, before any TLS handshake)."""
        peername = transport.get_extra_info("peername")
        if not peername:  # (gone before asyncio could ask: ENOTCONN)
            return False
        self.peer = Peer(self.transport_name, str(peername[0]), int(peername[1]), self.id)
        self.accepted = self._owner.stream_accepted(self)
        return self.accepted

    async def _accept_tls(self, context: ssl.SSLContext) -> None:
        raw = cast(asyncio.Transport, self._raw)
        self._upgrading = True
        if self._prelude:
            # Runs after start_tls (below) has made its TLS protocol the raw transport's and
            # before that protocol starts the handshake and reading resumes: see _replay.
            prelude, self._prelude = bytes(self._prelude), bytearray()
            self._loop.call_soon(_replay, raw, prelude)
        try:
            tls = await self._loop.start_tls(
                raw,
                self,
                context,
                server_side=True,
                ssl_handshake_timeout=self._handshake_timeout,
            )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            # (logged by the owner, a few lines a minute: a handshake flood would fill the log)
            self._handshake_failed(raw, failed=True, reason=str(exc) or type(exc).__name__)
            return
        except asyncio.CancelledError:
            self._handshake_failed(raw, failed=False)
            raise
        if tls is None or tls.is_closing() or self.state is not State.CONNECTING:
            # (closed by the peer as the handshake ended, or by us: a stop)
            self._handshake_failed(raw, failed=self.state is State.CONNECTING)
            return
        self._up(tls)

    def _handshake_failed(
        self, raw: asyncio.Transport, *, failed: bool, reason: str | None = None
    ) -> None:
        # asyncio does not call connection_lost for a connection that died in the handshake:
        # resolve `closed` ourselves, after asyncio's own close callbacks have run.
        self.fail()
        raw.abort()
        self._loop.call_soon(self._set_closed)
        self._owner.handshake_aborted(self, failed=failed, reason=reason)

    def _set_closed(self) -> None:
        """Resolve :attr:`closed` (once) and tell the owner an accepted connection is gone."""
        if not self.closed.done():
            self.closed.set_result(None)
        if self.accepted:
            self.accepted = False
            self._owner.stream_released(self)

    def _up(self, transport: asyncio.BaseTransport) -> None:
        """The connection is usable (TLS: handshake done)."""
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is not None:
            self.identity = PeerIdentity.from_ssl_object(sslobj)
        if self.domains:
            problem = domain_certificate_problem(self.identity, self.domains)
            if problem is not None:  # nothing was written: the connection never came up
                self.refused = problem
                cast(asyncio.Transport, transport).abort()
                return
        self._transport = cast(asyncio.Transport, transport)
        self._transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)
        self.state = State.OPEN
        pending, self._pending = self._pending, []
        for data in pending:
            self._write(data)
        if not self._owner.stream_made(self):
            self.state = State.CLOSED
            self._transport.abort()
            return
        self._touch()
        self._arm(self._limits.idle_connection_timeout, self._idle_check)
        if self._early:
            early, self._early = bytes(self._early), bytearray()
            self.data_received(early)

    def data_received(self, data: bytes) -> None:
        if self.state is State.CONNECTING and self._raw is not None:
            raw = cast(asyncio.Transport, self._raw)
            if not self._upgrading:
                # uvloop starts reading when connection_made returns, whatever it did: the
                # ClientHello can reach us before the upgrade task runs.  Hold it for the TLS
                # protocol (a lost ClientHello stalls the handshake until its timeout).
                self._prelude += data
                raw.pause_reading()
                if len(self._prelude) > MAX_TLS_PRELUDE:
                    raw.abort()
                return
            # start_tls delivers data that came with the handshake before our task resumes
            self._early += data
            if len(self._early) > self._limits.max_message_size:
                raw.abort()
            return
        if self.state is State.LINGERING:
            self._discard(len(data))
            return
        if self.state is not State.OPEN or not self._receiving:
            return
        self._touch()
        self._buffer.feed(data)
        self._unframed += data
        while self.state is State.OPEN and self._receiving:
            try:
                message = self._buffer.next_message()
            except SipParseError as error:
                self._framing_lost(error)
                return
            self._skip_pings(answer=True)
            if message is None:
                self._time_partial_message()
                return
            del self._unframed[: len(message)]
            self._ping_run = 0
            self._owner.stream_message(self, message)

    def eof_received(self) -> bool | None:
        return None  # close our side too (lingering: the peer is done, so are we)

    def pause_writing(self) -> None:
        # The peer does not read our answers: stop reading its requests until it catches up.
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is None:
            return
        if (self.state is State.OPEN and self._receiving) or self.state is State.LINGERING:
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        previous, self.state = self.state, State.CLOSED
        self._cancel_timer()
        self._pending.clear()
        self._set_closed()
        if previous in (State.OPEN, State.LINGERING, State.CLOSING):
            logger.debug("connection %s closed (%s)", self, exc or "clean")
            self._owner.stream_lost(self)

    # -- API for the driver ------------------------------------------------------------------
    @property
    def usable(self) -> bool:
        """True while messages can be sent (queued while connecting)."""
        if self.state is State.CONNECTING:
            return True
        transport = self._transport
        return self.state is State.OPEN and transport is not None and not transport.is_closing()

    def send(self, data: bytes) -> None:
        """Write one message (queued until the connection is up)."""
        if self.state is State.CONNECTING:
            if sum(map(len, self._pending)) + len(data) > WRITE_HARD_LIMIT:
                raise TransportError(f"too much queued for {self.peer} while connecting")
            self._pending.append(data)
            return
        if not self.usable:
            raise TransportError(f"connection {self.id} to {self.peer} is closed")
        self._write(data)

    def close(self) -> None:
        """Graceful close: flush what is queued, then close; abort after :data:`CLOSE_GRACE`.

        A lingering connection stops lingering and keeps its deadline."""
        if self.state is State.CONNECTING:
            self.abort()
        elif self.state in (State.OPEN, State.LINGERING) and self._transport is not None:
            lingering = self.state is State.LINGERING
            self.state = State.CLOSING
            self._transport.close()
            if not lingering:
                self._arm(CLOSE_GRACE, self.abort)

    def abort(self) -> None:
        """Drop the connection now, unsent data included."""
        transport = self._transport or self._raw
        if transport is not None and not self.closed.done():
            cast(asyncio.Transport, transport).abort()
        self.fail()

    def fail(self) -> None:
        """The connection never came up (connect or handshake failed, or was cancelled)."""
        if self.state is State.CONNECTING:
            self.state = State.CLOSED
            self._pending.clear()
        if self._transport is None and self._raw is None:
            self._set_closed()  # no transport: connection_lost will never come

    # -- internals ---------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.write(data)
        self._touch()
        if self._transport.get_write_buffer_size() > WRITE_HARD_LIMIT:
            logger.warning("connection %s: peer is not reading; aborting", self)
            self._transport.abort()

    def _skip_pings(self, *, answer: bool) -> None:
        """Keep the mirror in step with CRLFs the StreamBuffer skipped; answer double-CRLF pings."""
        count = self._buffer.pings - self._pings_seen
        self._pings_seen = self._buffer.pings
        if not count:
            return
        del self._unframed[: 2 * count]
        self._ping_run += count
        while answer and self._ping_run >= 2:  # RFC 5626 §4.4.1: CRLFCRLF -> CRLF
            self._ping_run -= 2
            self._write(PONG)

    def _framing_lost(self, error: SipParseError) -> None:
        """RFC 3261 §18.3: framing is lost for good: report (an answer may go out), then close."""
        self._skip_pings(answer=False)
        self._receiving = False
        data = bytes(self._unframed)
        self._unframed.clear()
        end = data.find(b"\r\n\r\n")
        data = data[: end + 4] if end >= 0 else data[: self._limits.max_message_size]
        logger.info("connection %s: %s; closing", self, error.reason)
        self._owner.stream_malformed(self, data, error)
        self._linger()

    def _linger(self) -> None:
        """Lingering close (nginx ``lingering_close``): half-close, drain, then close.

        Why: the peer may still be sending the rest of what lost the framing (the body of an
        oversize message, pipelined requests).  Closing a socket with unread bytes in its receive
        buffer, or that still receives bytes, makes the kernel send RST instead of FIN (RFC 1122
        §4.2.2.13).  The peer then sees a reset where a clean EOF belongs (Linux: the answer,
        then ECONNRESET), or loses the answer if its stack flushes its queue on RST, or fails
        while still sending.  So: ``write_eof`` (FIN once the answer is flushed), read and
        drop what still comes, close when the peer closes.  Bounded: aborted after
        :data:`CLOSE_GRACE` seconds or :data:`LINGER_MAX_BYTES` bytes, whichever comes first.
        TLS cannot half-close (``can_write_eof`` is False): it closes as before, with close_notify.
        """
        transport = self._transport
        if (
            self.state is not State.OPEN
            or transport is None
            or transport.is_closing()  # the answer overflowed the write buffer: aborted
            or not transport.can_write_eof()
        ):
            self.close()
            return
        self.state = State.LINGERING
        transport.write_eof()
        transport.resume_reading()  # in case the answer paused it (pause_writing)
        self._arm(CLOSE_GRACE, self._linger_expired)

    def _discard(self, size: int) -> None:
        self._discarded += size
        if self._discarded > LINGER_MAX_BYTES:
            self._stop_lingering(f"{self._discarded} bytes sent after the answer")

    def _linger_expired(self) -> None:
        self._timer = None
        self._stop_lingering(f"not closed by the peer within {CLOSE_GRACE} s")

    def _stop_lingering(self, why: str) -> None:
        self._cancel_timer()
        logger.info("connection %s: %s; aborting", self, why)
        self.abort()

    def _touch(self) -> None:
        self._last_activity = self._loop.time()

    def _time_partial_message(self) -> None:
        """Start the clock of a message begun and not yet whole (bytes other than keep-alive
        CRLFs are waiting), or stop it when none is."""
        if not self._unframed.strip(b"\r\n"):
            self._message_started = None
        elif self._message_started is None:
            self._message_started = self._loop.time()
            self._arm(self._limits.message_read_timeout, self._idle_check)

    def _idle_check(self) -> None:
        self._timer = None
        if self.state is not State.OPEN:
            return
        now = self._loop.time()
        deadline = self._last_activity + self._limits.idle_connection_timeout
        started = self._message_started
        if started is not None:
            late = started + self._limits.message_read_timeout
            if now >= late:
                logger.info("connection %s: a message unfinished after %.0f s; closing",
                            self, now - started)  # fmt: skip
                self.close()
                return
            deadline = min(deadline, late)
        if now >= deadline:
            logger.info("connection %s idle; closing", self)
            self.close()
        else:
            self._timer = self._loop.call_at(deadline, self._idle_check)

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._cancel_timer()
        self._timer = self._loop.call_later(delay, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _replay(raw: asyncio.Transport, data: bytes) -> None:
    """Hand bytes read from ``raw`` before a TLS upgrade to the TLS protocol now reading it.

    asyncio's and uvloop's TLS protocols are buffered protocols (``get_buffer`` /
    ``buffer_updated``, uvloop's without subclassing ``asyncio.BufferedProtocol``) that keep
    what arrives before the handshake starts."""
    protocol = raw.get_protocol()
    get_buffer = getattr(protocol, "get_buffer", None)
    buffer_updated = getattr(protocol, "buffer_updated", None)
    if raw.is_closing() or get_buffer is None or buffer_updated is None:
        return  # closed meanwhile (the handshake task was cancelled)
    view = memoryview(data)
    while view:
        buffer = memoryview(get_buffer(len(view)))
        size = min(len(buffer), len(view))
        if size == 0:
            return  # a protocol that takes nothing more: leave the rest to the handshake timeout
        buffer[:size] = view[:size]
        buffer_updated(size)
        view = view[size:]
