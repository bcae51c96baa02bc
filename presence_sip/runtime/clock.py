"""The clock of a serving node: wall-clock time that never jumps.

Stored expiries (bindings, publications, subscriptions) are wall-clock seconds, so that they
mean the same after a restart; the node's timers (RFC 3261 retransmissions, Timer F, group
commits, expiries) run on the same clock.  ``time.time()`` would stop them all for as long as
the system clock is stepped back (an NTP step, a VM resumed, ``date -s``): the TLS/persistence
audit of 2026-11-27 saw commits and NOTIFY retransmissions stop for the hour of a one-hour step.
So the node reads the wall clock once, at start, and counts from there with a clock that never
steps (CLOCK_BOOTTIME where there is one: it also counts the time a VM was paused).
A step of the system clock while it runs is logged; what the node stores keeps its own time
until the next start (the difference is the step).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

STEP_WARNING = 2.0
"""Seconds between the system clock and the node's after which a step is reported."""
CHECK_INTERVAL = 60.0
"""Seconds between two comparisons with the system clock."""


def _boot_time() -> float:
    """Seconds since boot, suspended time included (Linux): unlike CLOCK_MONOTONIC it goes on
    while a VM is paused or the host sleeps, so the node's clock does not fall behind then."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


_ADVANCING: Callable[[], float] = _boot_time if hasattr(time, "CLOCK_BOOTTIME") else time.monotonic


class SteadyWallClock:
    """Wall-clock seconds from the start, advanced by a clock that never steps (callable)."""

    __slots__ = ("_monotonic", "_next_check", "_origin", "_reported", "_wall")

    def __init__(
        self,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = _ADVANCING,
    ) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._origin = wall() - monotonic()
        self._reported = 0.0
        self._next_check = 0.0

    def __call__(self) -> float:
        return self._origin + self._monotonic()

    def drift(self) -> float:
        """System clock minus this clock: how far the system clock was stepped since start."""
        return self._wall() - self()

    # -- a timed role of the endpoint: compares with the system clock once a minute ----------

    def get_timer(self) -> float | None:
        return self._next_check

    def handle_timer(self, now: float) -> None:
        if now < self._next_check:
            return
        self._next_check = now + CHECK_INTERVAL
        drift = self.drift()
        if abs(drift - self._reported) >= STEP_WARNING:
            self._reported = drift
            log.warning(
                "the system clock was stepped by %+.1f s since the node started: its timers go"
                " on undisturbed; expiries it stores are %+.1f s off until it restarts",
                drift,
                -drift,
            )
