"""The sockets a driver listens on: UDP listeners and TCP/TLS servers, off the request path.

Each listen address is bound without name resolution (:func:`.sockets.bound_socket`); the
driver's send path reads :attr:`Listeners.udp` directly (``Driver._udp`` is the same list).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from .listen import ListenSpec
from .sockets import bound_socket
from .stream import StreamConnection
from .udp import DatagramOwner, UdpListener

BACKLOG = 1024
"""listen() backlog of TCP/TLS servers."""


class Listeners:
    """One driver's UDP listeners and TCP/TLS servers, from :meth:`open` to :meth:`wait_closed`."""

    __slots__ = ("servers", "udp")

    def __init__(self) -> None:
        self.udp: list[UdpListener] = []
        """The UDP sockets, in the order of the listen addresses (the list is never replaced)."""
        self.servers: list[tuple[str, asyncio.Server]] = []
        """The TCP/TLS servers, each with its transport name."""

    async def open(
        self,
        loop: asyncio.AbstractEventLoop,
        spec: ListenSpec,
        owner: DatagramOwner,
        accept: Callable[[], StreamConnection],
    ) -> None:
        """Bind ``spec``: a UDP listener that hands datagrams to ``owner``, or a TCP/TLS
        server whose connections ``accept`` makes."""
        if spec.transport == "udp":
            sock = bound_socket(spec, socket.SOCK_DGRAM)
            _, listener = await loop.create_datagram_endpoint(lambda: UdpListener(owner), sock=sock)
            self.udp.append(listener)
            return
        sock = bound_socket(spec, socket.SOCK_STREAM)
        server = await loop.create_server(accept, sock=sock, backlog=BACKLOG)
        self.servers.append((spec.transport, server))

    @property
    def addresses(self) -> list[ListenSpec]:
        """The addresses actually bound (real ports when 0 was asked for)."""
        out = [ListenSpec("udp", u.host, u.port) for u in self.udp]
        for name, server in self.servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                out.append(ListenSpec(name, host, port))
        return out

    def stop_accepting(self) -> None:
        """Close the TCP/TLS servers (connections they accepted stay up)."""
        for _, server in self.servers:
            server.close()

    def close_udp(self) -> list[asyncio.Future[None]]:
        """Close the UDP sockets; what to wait for until they are closed."""
        for listener in self.udp:
            listener.close()
        return [u.closed for u in self.udp if not u.closed.done()]

    async def wait_closed(self) -> None:
        """Once the servers are closed, forget every listener."""
        for _, server in self.servers:
            await server.wait_closed()
        self.servers.clear()
        self.udp.clear()
