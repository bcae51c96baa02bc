"""Warnings an operator needs, at most once a minute: a condition that repeats per message (a
refused handshake, a datagram too large, a change that cannot be stored) counts every time and
is logged once per interval, with the count so far."""

from __future__ import annotations

from typing import Final

INTERVAL: Final = 60.0
"""Seconds between two log lines of one condition."""


class LogLimit:
    """Counts one condition; :meth:`due` says when it is time to log it again."""

    __slots__ = ("_next", "count", "interval")

    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self.count = 0
        """Occurrences so far."""
        self._next = float("-inf")

    def due(self, now: float) -> bool:
        """Count one occurrence at ``now``; True when it is to be logged."""
        self.count += 1
        if now < self._next:
            return False
        self._next = now + self.interval
        return True
