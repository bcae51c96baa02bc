"""Configuration records: frozen dataclasses, a docstring per field (STYLE.md §1)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Timers:
    """RFC 3261 §17 timer base values, in seconds."""

    t1: float = 0.5
    """RTT estimate; Timer E starts here and doubles (UDP)."""
    t2: float = 4.0
    """Maximum retransmit interval for non-INVITE requests."""
    t4: float = 5.0
    """Maximum time a message stays in the network; Timer K (UDP)."""

    @property
    def timer_f(self) -> float:
        """Non-INVITE client transaction timeout (64*T1)."""
        return 64 * self.t1

    @property
    def timer_j(self) -> float:
        """Non-INVITE server transaction wait for retransmissions on UDP (64*T1)."""
        return 64 * self.t1


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource caps that keep a node alive under hostile input."""

    max_message_size: int = 61440
    """Largest SIP message accepted on any transport; larger gets 513 (or a close on streams).
    Below the 65,507-byte UDP payload limit, so an oversize datagram is answered, not cut."""
    max_connections: int = 10000
    """Open TCP/TLS connections accepted at once; the node opens one of its own only while
    fewer than this are open in all (as Kamailio's ``tcp_max_connections``), else the request
    fails as a transport error (a request moved to TCP for its size then goes over UDP)."""
    idle_connection_timeout: float = 300.0
    """A stream connection with no traffic for this long is closed."""
    message_read_timeout: float = 20.0
    """A message begun on a stream connection must be whole within this many seconds, else the
    connection is closed: a sender trickling a byte now and then would otherwise hold it (and
    with enough of them every connection slot).  Kamailio's ``tcp_msg_read_timeout``, 20 s."""
    udp_mtu: int = 1300
    """A request larger than this many bytes for a UDP destination goes over TCP (RFC 3261
    §18.1.1, path MTU unknown), and over UDP after all when the TCP connection fails; 0 keeps
    every request on UDP (Kamailio's ``udp_mtu``, off there by default)."""
    max_transactions: int = 200000
    """Server transactions kept at once, the Completed ones waiting for Timer J/K included.
    When full, the Completed record closest to its end is dropped early to make room; only
    with none left do new requests get 503."""
