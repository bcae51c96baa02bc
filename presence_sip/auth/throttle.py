"""Failed digest authentications per source address, and the block they lead to.

Without it one source tried ~9,400 passwords a second against one account, every guess answered
(hostile-client audit of 2026-11-27; ``sipvicious_svcrack`` found a 3,001st-word password in
16.6 s).  After :attr:`AuthThrottle.failures` failed authentications from one address within
:attr:`AuthThrottle.window` seconds, that address's requests that need authentication get 503
with Retry-After (the seconds left) for :attr:`AuthThrottle.block` seconds, their credentials
not even checked (503, not 403: a 403 SHOULD NOT be repeated, RFC 3261 §21.4.4, and a phone
behind the same NAT that obeys it would stay unregistered after the block); one WARNING line when
the block starts (``auth blocked: src=...``, for fail2ban as well).  An address, not an address
and port: scanners change ports.  IPv6 sources count per /64 (one subscriber's prefix).

The price is paid by whoever shares the address (a NAT, a carrier-grade NAT): set
``auth_failures`` above what their misconfigured phones make together, or 0 to turn it off.  An
edge proxy or SBC in front of the node sends everyone's requests from its own address: list it
in ``auth_failures_exempt`` (its own protection does the job there), or every user behind it is
blocked by a few misconfigured phones.  Kamailio leaves this to the ``pike`` module or fail2ban;
both still work beside it.  Over UDP a source address can be forged: the guard counts a UDP
failure only when its nonce was sent to that address (a keyed tag in the nonce, ``auth.digest``),
so forging a victim's address blocks it only for someone who can read the victim's traffic.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections.abc import Iterable

log = logging.getLogger(__name__)

MAX_SOURCES = 65536
"""Addresses followed at once, and addresses blocked at once (two tables).  When the first is
full the address that failed longest ago is forgotten; when the second is, the block that
ends first (all last as long).  Blocks are kept apart so that failures from 65,536 other
addresses (spoofed datagrams, or the /64s of one IPv6 /48) cannot push a blocked guesser out of
the table and unblock it."""


class AuthThrottle:
    """Counts failures per source address (a leaky bucket each); sans-IO (``now`` is given)."""

    __slots__ = (
        "_blocked",
        "_counts",
        "block",
        "blocked_requests",
        "blocks",
        "exempt",
        "failures",
        "window",
    )

    def __init__(
        self,
        failures: int,
        window: float = 60.0,
        block: float = 300.0,
        exempt: Iterable[str] = (),
    ) -> None:
        self.failures = failures
        """Failed authentications from one address within :attr:`window` that start a block."""
        self.exempt = tuple(ipaddress.ip_network(net, strict=False) for net in exempt)
        """Addresses never counted nor blocked (edge proxies, SBCs: everyone's address), not
        even when another address of their IPv6 /64 is."""
        self.window = window
        self.block = block
        self.blocks = 0
        """Blocks started (for operators and tests)."""
        self.blocked_requests = 0
        """Requests refused while their address was blocked."""
        self._counts: dict[str, list[float]] = {}
        """address -> [time of its last failure, bucket level], the stalest first."""
        self._blocked: dict[str, float] = {}
        """address -> blocked until, in the order the blocks started."""

    def blocked(self, host: str, now: float) -> bool:
        """Whether requests from ``host`` are refused now (counted when they are)."""
        return self.retry_after(host, now) > 0

    def retry_after(self, host: str, now: float) -> int:
        """Whole seconds until requests from ``host`` are taken again (0: now; counted as a
        refused request when not 0)."""
        blocked = self._blocked
        if not blocked:
            return 0
        address = _address(host)
        until = blocked.get(address)
        if until is None:
            return 0
        if until <= now:
            del blocked[address]
            return 0
        if self.exempt and self._exempt(host):
            return 0  # (an IPv6 neighbour in its /64 got the /64 blocked)
        self.blocked_requests += 1
        return max(1, math.ceil(until - now))

    def failed(self, host: str, now: float) -> None:
        """One failed authentication from ``host``.

        A leaky bucket per address: each failure adds one, :attr:`failures` leak away per
        :attr:`window`, and a bucket that goes above ``failures - 1`` starts a block.  So a burst
        of :attr:`failures` blocks at once, a steady rate under :attr:`failures` a window
        never does, and a burst split across the boundary of a fixed window (which let up to
        twice as many through, review of 2026-11-27) is no way around it."""
        if self.exempt and self._exempt(host):
            return
        address = _address(host)
        counts = self._counts
        entry = counts.pop(address, None)  # (re-inserted last: the table drops the stalest)
        if entry is None:
            if len(counts) >= MAX_SOURCES:
                del counts[next(iter(counts))]
            level = 0.0
        else:
            leaked = (now - entry[0]) * self.failures / self.window
            level = max(0.0, entry[1] - leaked)
        level += 1
        if level <= self.failures - 1:  # (not "< failures": what leaked in between the
            counts[address] = [now, level]  # burst's own requests must not save it)
            return
        blocked = self._blocked
        if blocked.pop(address, None) is None and len(blocked) >= MAX_SOURCES:
            del blocked[next(iter(blocked))]
        blocked[address] = now + self.block
        self.blocks += 1
        log.warning(
            "auth blocked: src=%s for %d s after %d failed authentications within %d s",
            address,
            self.block,
            self.failures,
            self.window,
        )

    def _exempt(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False
        return any(ip in network for network in self.exempt)


def _address(host: str) -> str:
    """The unit counted: the IPv4 address, or the /64 of an IPv6 one."""
    if ":" not in host:
        return host
    try:
        network = ipaddress.IPv6Network(f"{host.strip('[]')}/64", strict=False)
    except ValueError:
        return host
    return str(network)
