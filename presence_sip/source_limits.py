"""Per source address: a leaky bucket of events, and the block a full bucket starts.

Two guards count events per source address this way: failed password checks
(``auth.throttle``) and requests taken in at all (``transport.flood``, Kamailio's ``pike``).  An
address, not an address and port (scanners change ports); IPv6 sources count per /64, one
subscriber's prefix (an IPv6 attacker has 2^64 addresses of its own).  Sans-IO: ``now`` is given.

A leaky bucket per address: each event adds one, :attr:`SourceBuckets.limit` leak away per
:attr:`SourceBuckets.window`, and a bucket that goes above ``limit - 1`` starts a block of
:attr:`SourceBuckets.block` seconds.  So a burst of ``limit`` events blocks at once, a steady rate
under ``limit`` a window never does, and a burst split across the boundary of a fixed window
(which let up to twice as many through, review of 2026-11-27) is no way around it.  While
blocked an address is not counted; its bucket starts empty when the block ends.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable

MAX_SOURCES = 65536
"""Addresses followed at once, and addresses blocked at once (two tables).  When the first is
full the address counted longest ago is forgotten; when the second is, the block that ends first
(all last as long).  Blocks are kept apart so that events from 65,536 other addresses (spoofed
datagrams, or the /64s of one IPv6 /48) cannot push a blocked source out of the table and
unblock it."""

EXEMPT = ""
"""What :meth:`SourceBuckets.address` gives for an exempt source."""


class SourceBuckets:
    """Events per source address and the blocks they start (see the module docstring)."""

    __slots__ = (
        "_addresses",
        "_blocked",
        "_levels",
        "block",
        "blocks",
        "exempt",
        "limit",
        "refused",
        "window",
    )

    def __init__(self, limit: int, window: float, block: float, exempt: Iterable[str] = ()) -> None:
        self.limit = limit
        """Events from one address in a burst, or more than this many a :attr:`window`, that
        start a block."""
        self.window = window
        self.block = block
        """Seconds a block lasts."""
        self.exempt = tuple(ipaddress.ip_network(net, strict=False) for net in exempt)
        """Addresses never counted nor blocked (edge proxies, SBCs: everyone's address), not
        even when another address of their IPv6 /64 is."""
        self.blocks = 0
        """Blocks started (for operators and tests)."""
        self.refused = 0
        """Events refused while their address was blocked."""
        self._levels: dict[str, list[float]] = {}
        """address -> [time of its last event, bucket level], the stalest first."""
        self._blocked: dict[str, float] = {}
        """address -> blocked until, in the order the blocks started."""
        self._addresses: dict[str, str] = {}
        """host as given -> the unit counted, or :data:`EXEMPT` (parsing an address costs more
        than the rest of a check: the flood guard checks every datagram)."""

    def reconfigure(self, limit: int, block: float, exempt: Iterable[str]) -> None:
        """New limits (a configuration reloaded): the levels counted so far go on leaking at
        the new pace, blocks under way keep their end, and an address now exempt is no longer
        blocked nor counted."""
        self.limit = limit
        self.block = block
        self.exempt = tuple(ipaddress.ip_network(net, strict=False) for net in exempt)
        self._addresses.clear()

    def address(self, host: str) -> str:
        """The unit ``host`` counts as: the IPv4 address, the /64 of an IPv6 one, or
        :data:`EXEMPT`."""
        known = self._addresses.get(host)
        if known is not None:
            return known
        address = EXEMPT if self.exempt and self._exempt(host) else source_address(host)
        if len(self._addresses) >= MAX_SOURCES:
            self._addresses.clear()
        self._addresses[host] = address
        return address

    def retry_after(self, host: str, now: float) -> int:
        """Whole seconds until events from ``host`` are taken again (0: now; counted as
        refused when not 0)."""
        wait = self.blocked_for(host, now)
        if wait:
            self.refused += 1
        return wait

    def blocked_for(self, host: str, now: float) -> int:
        """Whole seconds ``host`` stays blocked (0: it is not), counting nothing."""
        blocked = self._blocked
        if not blocked:
            return 0
        address = self.address(host)
        until = blocked.get(address)
        if until is None:
            return 0  # (and so for EXEMPT, never a key: an exempt IPv6 host's /64 neighbour
        if until <= now:  # may have got the /64 blocked)
            del blocked[address]
            return 0
        return max(1, math.ceil(until - now))

    def add(self, host: str, now: float) -> bool:
        """One event from ``host``; True when it starts a block."""
        address = self.address(host)
        if not address:  # EXEMPT
            return False
        levels = self._levels
        entry = levels.pop(address, None)  # (re-inserted last: the table drops the stalest)
        if entry is None:
            if len(levels) >= MAX_SOURCES:
                del levels[next(iter(levels))]
            level = 1.0
        else:
            leaked = (now - entry[0]) * self.limit / self.window
            level = max(0.0, entry[1] - leaked) + 1
        if level <= self.limit - 1:  # (not "< limit": what leaked in between the burst's own
            if entry is None:  # events must not save it)
                levels[address] = [now, level]
            else:
                entry[0], entry[1] = now, level
                levels[address] = entry
            return False
        blocked = self._blocked
        if blocked.pop(address, None) is None and len(blocked) >= MAX_SOURCES:
            del blocked[next(iter(blocked))]
        blocked[address] = now + self.block
        self.blocks += 1
        return True

    def _exempt(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False
        return any(ip in network for network in self.exempt)


def source_address(host: str) -> str:
    """The unit counted: the IPv4 address, or the /64 of an IPv6 one."""
    if ":" not in host:
        return host
    try:
        network = ipaddress.IPv6Network(f"{host.strip('[]')}/64", strict=False)
    except ValueError:
        return host
    return str(network)


__all__ = ["EXEMPT", "MAX_SOURCES", "SourceBuckets", "source_address"]
