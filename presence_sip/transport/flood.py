"""Flood protection per source address: too many requests, or connections, from one address.

Kamailio's ``pike`` module (loaded by its default config under ``WITH_ANTIFLOOD``, off by default)
counts the requests of each source address and drops them while the address goes above a
density; OpenSIPS has the same module.  Without it one source could take a node's whole CPU
(the hostile-client audit of 2026-11-27: 15,000 OPTIONS a second from one address took 25 % of a
CPU after per-request logging went to DEBUG), and one source could hold every one of
``max_connections`` TCP/TLS slots until their idle timeout, shutting out every TCP client.

:class:`FloodGuard` is checked by the driver before a message is parsed:

* ``flood_requests``: that many requests from one address at once, or more than that many a
  second (a leaky bucket, ``source_limits``), block the address for ``flood_block`` seconds.
  Its requests are dropped unread meanwhile, unanswered (an answer is what a flood of forged UDP
  sources wants from us); one WARNING line when the block starts, ``flood blocked: src=...``
  (fail2ban can take it from there, with a firewall's cost per packet instead of ours).
  Responses are not counted here: most answer our own requests (a watcher's 200s to a burst of
  NOTIFYs).  Those that answer none, strays (RFC 3261 §18.1.2, §17.1.3: dropped), and those too
  malformed to match one, are counted as requests once the transaction layer has found no
  match (:meth:`FloodGuard.stray_response`): a flood of ``SIP/2.0 200 OK`` is no way around the
  guard, and a response that matches a transaction never costs a lookup here.
* A TLS handshake, done (:meth:`FloodGuard.handshake_done`) or failed or timed out
  (:meth:`FloodGuard.handshake_failed`), counts as a request over TCP/TLS: the server's half of
  a handshake costs a key exchange and a signature, so a source opening connection after
  connection to fail them (a scanner, a slow-handshake flood) or to complete them and close
  (``openssl s_client`` in a loop: 745 handshakes a second from one address went uncounted,
  hostile test of 2026-11-27) is blocked as a request flood is, while a phone that does not
  trust our certificate and retries every few seconds stays far below any sensible
  ``flood_requests``, and one connection's handshake counts once among its requests.
* UDP and TCP/TLS requests are counted apart.  Anyone can forge a datagram's source address, so
  a block that UDP requests started drops that address's UDP requests only: datagrams forged
  with a peer's address (a peering network's gateway on mutual TLS) must not close its
  connections nor refuse its new ones.  A connection's address is the peer's own (the handshake
  proved it): a block started over TCP/TLS drops all the address's requests, closes the
  connection it flooded over and refuses its new connections.
* ``max_connections_per_source``: inbound connections open at once from one address, counted
  from the moment the TCP connection is accepted (a TLS one before its handshake), until it is
  gone (a failed or timed-out handshake included).

Both are off by default, as pike is in Kamailio's default config: the right figures depend on
what stands in front of a node.  Whoever shares an address (a NAT, a carrier-grade NAT) shares its
budget; an edge proxy, SBC or another node of the network sends everyone's requests from its own
address: list those in ``flood_exempt``.  A phone starting up sends a REGISTER and a SUBSCRIBE per
buddy at once, so ``flood_requests`` must be well above a phone's buddy count.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from presence_sip.config import Limits
from presence_sip.source_limits import SourceBuckets

log = logging.getLogger(__name__)

RESPONSE_START = b"SIP/"
"""How a response begins (RFC 3261 §7.2); a request begins with its method."""


class FloodGuard:
    """Requests and inbound connections per source address; sans-IO (``now`` is given)."""

    __slots__ = ("_connections", "_datagrams", "_streams", "max_connections", "refused_connections")

    def __init__(
        self,
        requests: int,
        *,
        block: float = 60.0,
        max_connections: int = 0,
        exempt: Iterable[str] = (),
    ) -> None:
        self._datagrams = SourceBuckets(requests, 1.0, block, exempt)
        """UDP requests per address (a limit of 0: not counted); their blocks drop UDP only."""
        self._streams = SourceBuckets(requests, 1.0, block, exempt)
        """TCP/TLS requests per address; their blocks drop everything from it and refuse its
        connections."""
        self.max_connections = max_connections
        """Inbound connections open at once from one address; 0: no limit but the node's."""
        self._connections: dict[str, int] = {}
        """address -> inbound connections open from it (no entry: none)."""
        self.refused_connections = 0
        """Connections refused for :attr:`max_connections` or a block."""

    def reconfigure(self, limits: Limits) -> None:
        """New limits (see :func:`flood_guard_for`); blocks under way keep their end."""
        exempt = exempt_addresses(limits)
        self._datagrams.reconfigure(limits.flood_requests, limits.flood_block, exempt)
        self._streams.reconfigure(limits.flood_requests, limits.flood_block, exempt)
        self.max_connections = limits.max_connections_per_source

    @property
    def blocks(self) -> int:
        """Blocks started."""
        return self._datagrams.blocks + self._streams.blocks

    @property
    def dropped(self) -> int:
        """Requests dropped unread while their address was blocked, the ones that started
        a block included."""
        return self._datagrams.refused + self._streams.refused + self.blocks

    def drop(self, data: bytes, host: str, now: float) -> bool:
        """Whether the datagram ``data`` from ``host`` is to be dropped unread (a request from an
        address that is blocked, or that this request makes blocked for UDP)."""
        datagrams = self._datagrams
        if not datagrams.limit or data.startswith(RESPONSE_START):
            return False
        if self._streams.retry_after(host, now) or datagrams.retry_after(host, now):
            return True
        return self._started(datagrams, host, now, "UDP")

    def drop_streamed(self, data: bytes, host: str, now: float) -> bool:
        """Whether the message ``data`` from a connection with ``host`` is to be dropped unread,
        and its connection closed (a request from an address blocked over TCP/TLS, or that this
        request makes blocked)."""
        streams = self._streams
        if not streams.limit or data.startswith(RESPONSE_START):
            return False
        if streams.retry_after(host, now):
            return True
        return self._started(streams, host, now, "TCP/TLS")

    def stray_response(self, host: str, streamed: bool, now: float) -> bool:
        """A response from ``host`` that matched no transaction of ours, or could not be
        parsed (dropped either way), counted as a request over UDP or, ``streamed``, over
        TCP/TLS.  True when the address is blocked for it (now, or already): a connection it
        came over is then to be closed.  Not counted while the address is blocked (nor as a
        dropped request: it was read)."""
        streams = self._streams
        if not streams.limit:
            return False
        if streamed:
            return bool(streams.blocked_for(host, now)) or self._started(
                streams, host, now, "TCP/TLS"
            )
        datagrams = self._datagrams
        if streams.blocked_for(host, now) or datagrams.blocked_for(host, now):
            return True
        return self._started(datagrams, host, now, "UDP")

    def handshake_failed(self, host: str, now: float) -> bool:
        """An inbound TLS handshake from ``host`` failed or timed out: counted as a request over
        TCP/TLS (see the module docstring); True when it starts a block."""
        streams = self._streams
        if not streams.limit or streams.blocked_for(host, now):
            return False
        return self._started(streams, host, now, "TCP/TLS")

    @staticmethod
    def _started(buckets: SourceBuckets, host: str, now: float, transport: str) -> bool:
        """Count one request; True, with the WARNING line, when it starts a block."""
        if not buckets.add(host, now):
            return False
        log.warning(
            "flood blocked: src=%s for %d s after %d requests at once or more than %d a second"
            " over %s",
            buckets.address(host),
            buckets.block,
            buckets.limit,
            buckets.limit,
            transport,
        )
        return True

    def connection_refusal(self, host: str, now: float) -> str | None:
        """An inbound connection from ``host``, just accepted (TLS: before its handshake): None
        when it is taken (then :meth:`connection_closed` must follow, however it ends), else
        why it is refused."""
        buckets = self._streams
        address = buckets.address(host)
        if not address:  # exempt
            return None
        if buckets.limit and buckets.blocked_for(host, now):  # (not a dropped request)
            self.refused_connections += 1
            return "blocked for flooding"
        count = self._connections.get(address, 0)
        if self.max_connections and count >= self.max_connections:
            self.refused_connections += 1
            return f"{count} open from it (max_connections_per_source)"
        self._connections[address] = count + 1
        return None

    def connection_open(self, host: str) -> None:
        """An inbound connection from ``host`` that was open before this guard was made (a
        reload turned it on): counted towards the per-source cap, never refused; as with one
        :meth:`connection_refusal` took, :meth:`connection_closed` must follow."""
        address = self._streams.address(host)
        if address:
            self._connections[address] = self._connections.get(address, 0) + 1

    def handshake_done(self, host: str, now: float) -> bool:
        """An inbound TLS handshake from ``host`` is done: counted as a request over TCP/TLS,
        as a failed one is (the node paid the key exchange and the signature either way: a
        source completing handshake after handshake and closing, ``openssl s_client`` in a
        loop, is a flood too).  True, counted as refused, when its address is blocked,
        already or by this handshake: the connection is then closed, as
        :meth:`refused_when_up` closes one."""
        if self.refused_when_up(host, now):
            return True
        streams = self._streams
        if not streams.limit or not self._started(streams, host, now, "TCP/TLS"):
            return False
        self.refused_connections += 1
        return True

    def refused_when_up(self, host: str, now: float) -> bool:
        """An inbound connection :meth:`connection_refusal` took is up (TLS: its handshake,
        which may last seconds, is done): True, counted as refused, when its address was
        blocked meanwhile (it is then closed, as a new connection from it is refused)."""
        buckets = self._streams
        if not buckets.limit or not buckets.blocked_for(host, now):
            return False
        self.refused_connections += 1
        return True

    def connection_closed(self, host: str) -> None:
        """An inbound connection :meth:`connection_refusal` took is gone (closed, refused later,
        or its handshake failed)."""
        address = self._streams.address(host)
        if not address:
            return
        count = self._connections.get(address, 0) - 1
        if count > 0:
            self._connections[address] = count
        else:
            self._connections.pop(address, None)


def exempt_addresses(limits: Limits) -> tuple[str, ...]:
    """What the guard never counts: ``flood_exempt`` and the config file's own hosts."""
    return limits.flood_exempt + limits.flood_exempt_peers


def flood_guard_for(limits: Limits, current: FloodGuard | None = None) -> FloodGuard | None:
    """The guard ``limits`` ask for (``flood_requests``, ``max_connections_per_source`` and
    their block and exemptions); None when they ask for neither: the guard is off.

    ``current``, a running driver's (a configuration reloaded), is kept under the new limits,
    even when they turn it off (its limits 0 count nothing): it knows the connections open from
    each address, which the per-source cap needs should it come back."""
    if current is not None:
        current.reconfigure(limits)
        return current
    if not (limits.flood_requests or limits.max_connections_per_source):
        return None
    return FloodGuard(
        limits.flood_requests,
        block=limits.flood_block,
        max_connections=limits.max_connections_per_source,
        exempt=exempt_addresses(limits),
    )


__all__ = ["FloodGuard", "flood_guard_for"]
