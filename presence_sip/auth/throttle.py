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

import logging
from collections.abc import Iterable

from presence_sip.config import Limits
from presence_sip.source_limits import MAX_SOURCES, SourceBuckets

log = logging.getLogger(__name__)


class AuthThrottle(SourceBuckets):
    """Failed password checks per source address (``source_limits``, a leaky bucket each)."""

    __slots__ = ()

    def __init__(
        self,
        failures: int,
        window: float = 60.0,
        block: float = 300.0,
        exempt: Iterable[str] = (),
    ) -> None:
        super().__init__(failures, window, block, exempt)

    @property
    def failures(self) -> int:
        """Failed authentications from one address within :attr:`window` that start a block."""
        return self.limit

    @property
    def blocked_requests(self) -> int:
        """Requests refused while their address was blocked."""
        return self.refused

    def blocked(self, host: str, now: float) -> bool:
        """Whether requests from ``host`` are refused now (counted when they are)."""
        return self.retry_after(host, now) > 0

    def failed(self, host: str, now: float) -> None:
        """One failed authentication from ``host``: one WARNING line when it starts a block."""
        if self.add(host, now):
            log.warning(
                "auth blocked: src=%s for %d s after %d failed authentications within %d s",
                self.address(host),
                self.block,
                self.limit,
                self.window,
            )


def auth_throttle_for(limits: Limits, current: AuthThrottle | None = None) -> AuthThrottle | None:
    """The throttle ``limits`` ask for (``auth_failures``, ``auth_block``,
    ``auth_failures_exempt``); None when ``auth_failures`` is 0.  ``current``, a running node's
    (a configuration reloaded), is kept with what it counted and blocked, under the new limits."""
    if not limits.auth_failures:
        return None
    if current is None:
        return AuthThrottle(
            limits.auth_failures, block=limits.auth_block, exempt=limits.auth_failures_exempt
        )
    current.reconfigure(limits.auth_failures, limits.auth_block, limits.auth_failures_exempt)
    return current


__all__ = ["MAX_SOURCES", "AuthThrottle", "auth_throttle_for"]
