"""Warnings an operator needs, at most once a minute: a condition that repeats per message (a
refused handshake, a datagram too large, a change that cannot be stored) counts every time and
is logged once per interval, with the count so far (:class:`LogLimit`).  A line worth having for
each occurrence while they are few (each names its source: a failed TLS handshake) is logged up
to a few times per interval, the others counted for one line that says how many were not
(:class:`LogBurst`)."""

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


class LogBurst:
    """Up to ``lines`` occurrences logged per interval, the interval starting at the first of
    them; the others are counted in :attr:`unlogged`, for one line once the interval is over
    (:attr:`ends`)."""

    __slots__ = ("_logged", "ends", "interval", "lines", "unlogged")

    def __init__(self, lines: int, interval: float = INTERVAL) -> None:
        self.lines = lines
        self.interval = interval
        self.unlogged = 0
        """Occurrences not logged since :meth:`take_unlogged` last took them."""
        self.ends = float("-inf")
        """When the current interval ends (the next occurrence from then on starts one)."""
        self._logged = 0

    def due(self, now: float) -> bool:
        """One occurrence at ``now``: True when it is to be logged, else it is counted."""
        if now >= self.ends:
            self.ends = now + self.interval
            self._logged = 0
        if self._logged < self.lines:
            self._logged += 1
            return True
        self.unlogged += 1
        return False

    def take_unlogged(self) -> int:
        """The occurrences not logged so far (for the line that says so), counting anew."""
        unlogged, self.unlogged = self.unlogged, 0
        return unlogged
