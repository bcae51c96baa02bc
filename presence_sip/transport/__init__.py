"""The only package with sockets: UDP, TCP and TLS transports and the driver that pumps the core."""

from __future__ import annotations

from .driver import Driver, Endpoint
from .listen import ListenSpec, parse_listen
from .tls import PeerIdentity, client_context, server_context

__all__ = [
    "Driver",
    "Endpoint",
    "ListenSpec",
    "PeerIdentity",
    "client_context",
    "parse_listen",
    "server_context",
]
