"""Sockets and addresses without name resolution: the driver never resolves DNS.

:func:`bound_socket` binds a listen address; :func:`ip_literal` normalises the host of a
:class:`~presence_sip.sip.peer.Peer` before a send and refuses names; :func:`address_key` keys
the driver's connections by address.
"""

from __future__ import annotations

import ipaddress
import socket

from presence_sip.sip.errors import TransportError
from presence_sip.sip.memo import remember
from presence_sip.sip.peer import Peer

from .listen import ListenSpec

AddressKey = tuple[str, str, int]
"""(transport, IP literal, port): a connection's address, as the driver looks it up."""

IP_LITERALS: dict[str, tuple[str, int]] = {}
"""The cache of :func:`ip_literal`: host as given -> (normalised literal, IP version)."""


def ip_literal(host: str) -> tuple[str, int]:
    """Normalised IP literal and its version; names are refused (the driver never resolves DNS).

    Cached: every datagram sent goes through here, and ``ipaddress`` costs microseconds."""
    found = IP_LITERALS.get(host)
    if found is not None:
        return found
    try:
        address = ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        raise TransportError(f"{host!r} is not an IP address (no DNS in the transport)") from None
    return remember(IP_LITERALS, host, (address.compressed, address.version))


def address_key(peer: Peer) -> AddressKey:
    """The key of ``peer``'s address (its connection id left out)."""
    return (peer.transport, peer.host, peer.port)


def bound_socket(spec: ListenSpec, kind: socket.SocketKind) -> socket.socket:
    """A socket bound to ``spec`` without any name resolution."""
    family = socket.AF_INET6 if spec.family_version == 6 else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((spec.host, spec.port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
