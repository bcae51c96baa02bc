"""Where a message came from or goes to: transport + address (+ the stream connection, if any)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Peer:
    """A transport address.

    ``transport`` is ``"udp"``, ``"tcp"`` or ``"tls"``.  ``connection`` identifies the stream
    connection a message arrived on (0 for UDP or "any / open a new one"); sending to a Peer with a
    connection id reuses that connection while it is open (RFC 3261 §18.2.2).
    """

    transport: str
    host: str
    port: int
    connection: int = 0

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"

    def without_connection(self) -> Peer:
        return Peer(self.transport, self.host, self.port, 0)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


def peer_from_text(text: str) -> Peer:
    """``udp:127.0.0.1:5060`` / ``tls:[::1]:5061`` (``str(Peer)``) back to a Peer."""
    transport, _, rest = text.partition(":")
    host, _, port = rest.rpartition(":")
    return Peer(transport, host.strip("[]"), int(port) if port.isdigit() else 5060)
