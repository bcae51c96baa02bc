"""UDP transport: one :class:`asyncio.DatagramProtocol` per listening socket (RFC 3261 §18)."""

from __future__ import annotations

import array
import asyncio
import errno
import fcntl
import logging
import socket
import termios
import time
from typing import Any, Protocol, cast

from presence_sip.log_limit import LogLimit
from presence_sip.sip.errors import TransportError

logger = logging.getLogger(__name__)

RECEIVE_BUFFER = 4 * 1024 * 1024
"""SO_RCVBUF asked for: bursts of thousands of datagrams are normal under benchmark load."""

SEND_BUFFER = 1024 * 1024
"""SO_SNDBUF asked for."""


class DatagramOwner(Protocol):
    """Who a :class:`UdpListener` hands datagrams to (the driver)."""

    def datagram_received(self, listener: UdpListener, data: bytes, addr: tuple[Any, ...]) -> None:
        """One datagram from ``addr`` (the socket address as given by asyncio), whatever its size
        (the parser answers 513)."""


class UdpListener(asyncio.DatagramProtocol):
    """A bound UDP socket: receives datagrams for the owner and sends from the same socket."""

    def __init__(self, owner: DatagramOwner) -> None:
        self._owner = owner
        self._transport: asyncio.DatagramTransport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Resolved once the socket is closed."""
        self.host = ""
        self.port = 0
        self.version = 4
        self.too_large = LogLimit()
        """Messages that did not fit a datagram (EMSGSIZE)."""
        self._fd = -1
        self._waiting = array.array("i", [0])
        """FIONREAD's answer (one buffer, not one per question)."""

    # -- asyncio callbacks -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            _grow_buffers(sock)
            self.version = 6 if sock.family == socket.AF_INET6 else 4
            self._fd = sock.fileno()
        sockname = transport.get_extra_info("sockname")
        self.host, self.port = sockname[0], sockname[1]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._owner.datagram_received(self, data, addr)

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, OSError) and exc.errno == errno.EMSGSIZE:
            # A message bigger than a datagram (a large NOTIFY): it is lost, an operator must
            # see why (its transaction retransmits it in vain until Timer F); once a minute.
            if self.too_large.due(time.monotonic()):
                logger.warning(
                    "udp %s:%s: message too large for a datagram, not sent (%d so far)",
                    self.host,
                    self.port,
                    self.too_large.count,
                )
            return
        # ICMP errors (port unreachable, ...) for an earlier sendto: nothing to do on UDP.
        logger.debug("udp %s:%s: %s", self.host, self.port, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fd = -1
        if not self.closed.done():
            self.closed.set_result(None)

    # -- API for the driver ------------------------------------------------------------------
    @property
    def usable(self) -> bool:
        """True while the socket is open."""
        return self._transport is not None and not self._transport.is_closing()

    def input_waiting(self) -> bool:
        """Whether a datagram waits in the socket, not yet read (FIONREAD gives the size of the
        first one: an empty datagram reads as none, and so does a closed socket)."""
        if self._fd < 0 or self._transport is None or self._transport.is_closing():
            return False
        try:
            fcntl.ioctl(self._fd, termios.FIONREAD, self._waiting, True)
        except OSError:
            return False
        return self._waiting[0] > 0

    def send(self, data: bytes, host: str, port: int) -> None:
        """Send one datagram to ``host:port`` (an IP literal: never resolved here)."""
        if self._transport is None or self._transport.is_closing():
            raise TransportError(f"udp socket {self.host}:{self.port} is closed")
        try:
            self._transport.sendto(data, (host, port))
        except (OSError, ValueError, TypeError) as exc:
            raise TransportError(f"udp send to {host}:{port} failed: {exc}") from exc

    def close(self) -> None:
        """Close the socket; :attr:`closed` resolves when asyncio has released it."""
        if self._transport is not None:
            self._transport.close()
        elif not self.closed.done():
            self.closed.set_result(None)


def _grow_buffers(sock: socket.socket) -> None:
    """Ask for big socket buffers: forced (needs CAP_NET_ADMIN) first, else up to the sysctl cap."""
    for name, size in (("SO_RCVBUFFORCE", RECEIVE_BUFFER), ("SO_SNDBUFFORCE", SEND_BUFFER)):
        plain = name.replace("FORCE", "")
        try:
            sock.setsockopt(socket.SOL_SOCKET, getattr(socket, name), size)
            continue
        except (OSError, AttributeError):
            pass
        try:  # Linux silently caps this at net.core.[rw]mem_max
            sock.setsockopt(socket.SOL_SOCKET, getattr(socket, plain), size)
        except OSError as exc:
            logger.debug("cannot set %s to %d: %s", plain, size, exc)
