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
    """Open TCP/TLS connections accepted at once, and (counted apart, so that a flood of
    inbound ones cannot stop the node reaching its next hops) opened by the node at once:
    beyond them a request fails as a transport error."""
    idle_connection_timeout: float = 300.0
    """A stream connection with no traffic for this long is closed."""
    message_read_timeout: float = 20.0
    """A message begun on a stream connection must be whole within this many seconds, else the
    connection is closed: a sender trickling a byte now and then would otherwise hold it (and
    with enough of them every connection slot).  Kamailio's ``tcp_msg_read_timeout``, 20 s."""
    udp_mtu: int = 0
    """A request larger than this many bytes for a UDP destination goes over TCP (RFC 3261
    §18.1.1 says 1300 when the path MTU is unknown), and over UDP after all when the TCP
    connection fails.  0, the default as in Kamailio (``udp_mtu``) and OpenSIPS, keeps every
    request on UDP: a UDP watcher behind NAT takes no TCP, and a connect whose SYN is dropped
    holds that watcher's NOTIFY for the 10 s connect timeout (the next, smaller one overtakes
    it over UDP)."""
    auth_failures: int = 30
    """Failed password checks (wrong password, unknown user) from one source address that
    start a block: that many in a burst, or more than that many a minute (a leaky bucket).
    Blocked, its requests that need authentication get 503 + Retry-After for
    :attr:`auth_block` seconds (no password guess is answered then); 0 turns it off
    (``presence_sip.auth.throttle``)."""
    auth_block: float = 300.0
    """Seconds a source address stays blocked after :attr:`auth_failures`."""
    auth_failures_exempt: tuple[str, ...] = ()
    """Addresses or networks (``"192.0.2.10"``, ``"10.0.0.0/8"``) never blocked: edge proxies
    and SBCs, whose address is everyone's behind them."""
    flood_requests: int = 0
    """Requests from one source address in a burst, or more than this many a second (a leaky
    bucket), that start a block: its requests are dropped unread and its new connections
    refused for :attr:`flood_block` seconds (``presence_sip.transport.flood``, Kamailio's
    ``pike``).  A response that matches no transaction (or does not parse) and a failed TLS
    handshake count as a request; a response that matches one never does.  0, the default as
    pike is off in Kamailio's default config, turns it off."""
    flood_block: float = 60.0
    """Seconds a source address stays blocked after :attr:`flood_requests`."""
    max_connections_per_source: int = 0
    """Inbound TCP/TLS connections open at once from one source address (IPv6: one /64), each
    from its TCP accept (TLS: before its handshake) until it is gone; 0, the default, leaves
    only :attr:`max_connections`."""
    flood_exempt: tuple[str, ...] = ()
    """Addresses or networks never counted by :attr:`flood_requests` nor
    :attr:`max_connections_per_source`, as the config file lists them: edge proxies, SBCs."""
    flood_exempt_peers: tuple[str, ...] = ()
    """Exempt as :attr:`flood_exempt` without being listed there: the addresses the config
    file's nodes listen on and the hosts of its ``[[network.route]]`` next hops."""
    max_transactions: int = 200000
    """Server transactions kept at once, the Completed ones waiting for Timer J/K included.
    When full, the Completed record closest to its end is dropped early to make room; only
    with none left do new requests get 503."""
