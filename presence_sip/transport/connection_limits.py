"""Which inbound TCP/TLS connections the driver takes, off the request path.

Two limits apply: the flood guard's (``transport.flood``: a source address blocked for
flooding, or with ``max_connections_per_source`` open), from the moment a connection is
accepted (TLS: before its handshake) and again once it is up; and ``max_connections`` inbound
connections up at once.  Each kind of refusal is warned about once a minute, with the count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from presence_sip.config import Limits
from presence_sip.log_limit import LogLimit
from presence_sip.sip.peer import Peer

from .flood import FloodGuard
from .stream import StreamConnection

# The driver's logger: these lines keep the name operators (and their log filters) know.
logger = logging.getLogger("presence_sip.transport.driver")


class ConnectionLimits:
    """The limits on one driver's inbound connections; ``flood`` None: the guard is off.

    ``clock`` is the driver's (endpoint) time, read only when the flood guard needs it."""

    __slots__ = (
        "_clock",
        "_counted",
        "_refused_at_cap",
        "_refused_by_source",
        "flood",
        "max_connections",
    )

    def __init__(
        self, flood: FloodGuard | None, limits: Limits, clock: Callable[[], float]
    ) -> None:
        self.flood = flood
        self._counted: set[int] = set()
        """Ids of the inbound connections open that ``flood`` counts (taken by it, or open
        when it was made): only their end is told to it."""
        self.max_connections = limits.max_connections
        """Inbound connections up at once (``Limits.max_connections``)."""
        self._clock = clock
        self._refused_by_source = LogLimit()
        self._refused_at_cap = LogLimit()

    def accepted(self, conn: StreamConnection) -> bool:
        """An inbound connection, before anything else (TLS: before its handshake): the flood
        guard's block and per-source cap apply from here.  False refuses it."""
        flood = self.flood
        if flood is None:
            return True
        refusal = flood.connection_refusal(conn.peer.host, self._clock())
        if refusal is None:
            self._counted.add(conn.id)
            return True
        self._warn_source_refused(conn, refusal)
        return False

    def released(self, conn: StreamConnection) -> None:
        """An inbound connection :meth:`accepted` took is gone."""
        if self.flood is not None and conn.id in self._counted:
            self._counted.discard(conn.id)
            self.flood.connection_closed(conn.peer.host)

    def use_flood(self, flood: FloodGuard | None, open_inbound: Iterable[StreamConnection]) -> None:
        """The flood guard from now on (a reload): one made just now (it was off) counts the
        inbound connections ``open_inbound`` from the start, so that its per-source cap
        covers them and their end does not lower the count of the ones that follow."""
        if flood is not None and flood is not self.flood:
            self._counted.clear()
            for conn in open_inbound:
                flood.connection_open(conn.peer.host)
                self._counted.add(conn.id)
        self.flood = flood

    def admits_up(self, conn: StreamConnection, inbound: int) -> bool:
        """An inbound connection is up while ``inbound`` others are: False refuses it (a TLS
        one's address blocked during its handshake, or by it, a handshake counting as a
        request; or ``max_connections`` up).  A plain TCP connection is up in the callback that
        :meth:`accepted` it: the flood guard has had its say."""
        flood = self.flood
        if (
            flood is not None
            and conn.transport_name == "tls"
            and flood.handshake_done(conn.peer.host, self._clock())
        ):
            self._warn_source_refused(conn, "blocked for flooding")
            return False
        if inbound >= self.max_connections:
            # Once a minute, with the count and the latest peer: one connection flooder
            # holding every slot made one WARNING line per connection it (or anyone)
            # opened next (2,182 lines in 20 s in the hostile-client audit).
            if self._refused_at_cap.due(time.monotonic()):
                logger.warning(
                    "refusing connections: %d open (max_connections); %d refused so far,"
                    " the latest from %s",
                    inbound,
                    self._refused_at_cap.count,
                    conn.peer,
                )
            return False
        return True

    def stray_response(self, source: Peer, now: float) -> bool:
        """A response from ``source`` matched no transaction (or could not be parsed): counted
        as a request is.  True when it came over a connection that is to be closed, its
        address being blocked."""
        flood = self.flood
        if flood is None:
            return False
        streamed = source.transport != "udp"
        return flood.stray_response(source.host, streamed, now) and streamed

    def _warn_source_refused(self, conn: StreamConnection, refusal: str) -> None:
        """Once a minute, with the count: one source opening connection after connection."""
        if self._refused_by_source.due(time.monotonic()):
            logger.warning(
                "refusing connections from %s: %s; %d refused so far",
                conn.peer.host,
                refusal,
                self._refused_by_source.count,
            )
