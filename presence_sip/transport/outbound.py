"""The TCP/TLS connections a node opens (RFC 3261 §18.2.2: "else a new one"), off the send path.

The :class:`~presence_sip.transport.driver.Driver` registers a new
:class:`~presence_sip.transport.stream.StreamConnection` and runs :func:`connect` for it as a
task: from which address (:func:`source_host`), with which TLS context and server name, within
which time.  A connection or send that fails is logged through :class:`FailureLog`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import time
from collections.abc import Iterable

from presence_sip.log_limit import LogLimit
from presence_sip.sip.peer import Peer

from .stream import StreamConnection

# The driver's logger: these lines keep the name operators (and their log filters) know.
logger = logging.getLogger("presence_sip.transport.driver")

CONNECT_TIMEOUT = 10.0
"""Seconds an outbound TCP connect plus TLS handshake may take."""


def source_host(
    servers: Iterable[tuple[str, asyncio.Server]], transport: str, peer_host: str
) -> str | None:
    """The address a new outbound connection leaves from: one this node listens on with
    that transport (as Kamailio binds them to its socket), so the peer sees the address the
    node serves on.  Only a listen address of the peer's family and kind (loopback or not)
    is used; None (the kernel's choice) otherwise, e.g. behind a wildcard listener.

    ``servers`` are the node's TCP/TLS servers, each with its transport name."""
    try:
        peer = ipaddress.ip_address(peer_host)
    except ValueError:
        return None
    for name, server in servers:
        if name != transport:
            continue
        for sock in server.sockets:
            host = ipaddress.ip_address(str(sock.getsockname()[0]).partition("%")[0])
            if (
                not host.is_unspecified
                and host.version == peer.version
                and host.is_loopback == peer.is_loopback
            ):
                return str(host)
    return None


async def connect(
    loop: asyncio.AbstractEventLoop,
    conn: StreamConnection,
    source: str | None,
    *,
    client_ssl: ssl.SSLContext | None,
    route_ssl: ssl.SSLContext | None,
    timeout: float,
) -> object | None:
    """Connect ``conn`` to its peer from ``source`` (None: the kernel's choice): None once it
    is up, else why it failed (the connection was refused after its handshake, or the connect
    or handshake failed or took longer than ``timeout``).  Cancelled: ``conn`` fails.

    TLS uses ``client_ssl`` with the peer's host as server name, or for a route's next hop
    (``conn.domains``) ``route_ssl``, see the driver's ``tls_names``."""
    peer, tls = conn.peer, conn.transport_name == "tls"
    context, name = client_ssl, peer.host
    if tls and conn.domains:
        # A route's next hop: its certificate is checked against the route's domains once
        # the chain is verified (StreamConnection._up), the domain is the SNI.
        context, name = route_ssl, min(conn.domains)
    try:
        async with asyncio.timeout(timeout):
            await loop.create_connection(
                lambda: conn,
                peer.host,
                peer.port,
                ssl=context if tls else None,
                server_hostname=name if tls else None,
                ssl_handshake_timeout=timeout if tls else None,
                local_addr=None if source is None else (source, 0),
            )
    except (OSError, ssl.SSLError, ssl.CertificateError, ValueError) as exc:  # edge mapping
        return exc if str(exc) else type(exc).__name__  # (an exception is always true)
    except asyncio.CancelledError:
        conn.fail()
        raise
    return conn.refused


class FailureLog:
    """Connections and sends that failed: a warning at most once a minute (with how many
    failed since the last one), the others at debug level.  Watchers that take no TCP make
    one each time a large request is moved to TCP for them (RFC 3261 §18.1.1)."""

    __slots__ = ("_logged", "limit")

    def __init__(self) -> None:
        self.limit = LogLimit()
        self._logged = 0
        """``limit.count`` when the last warning was logged."""

    def log(self, message: str, peer: Peer, reason: object) -> None:
        """One failure: ``message`` is a format with two ``%s``, for ``peer`` and ``reason``."""
        limit = self.limit
        previous = limit.count
        if limit.due(time.monotonic()):
            more = previous - self._logged
            self._logged = limit.count
            suffix = f" ({more} more failed since the last warning)" if more > 0 else ""
            logger.warning(message + "%s", peer, reason, suffix)
        else:
            logger.debug(message, peer, reason)
