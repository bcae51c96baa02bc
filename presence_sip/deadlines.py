"""Deadlines of many records in one heap, with lazy deletion kept bounded (issue 8).

Subscriptions, publications and registrar bindings each expire at a deadline that moves on every
refresh, and most end long before it (an unSUBSCRIBE, a removed publication).  Taking an entry
out of a binary heap costs a search, so the entry stays and is skipped when it comes due: the
owner's ``is_current(deadline, key)`` says whether the record still expires then (lazy deletion).

Left alone, those dead entries pile up until their old deadline, hours away: a watcher that
subscribes and unsubscribes 1,800 times a second with Expires 3600 leaves 6.5 million of them.
So the heap is compacted, dropping every dead entry in one pass, whenever it has doubled since
the last compaction.  The cost per push stays O(log n) amortised, and the heap never holds more
than twice the records that were live at the last compaction (or 1,024 entries).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["DeadlineHeap"]

K = TypeVar("K")

MIN_COMPACT_SIZE = 1024
"""A heap shorter than this is never compacted (a pass over a few entries is not worth it)."""


class DeadlineHeap(Generic[K]):
    """``(deadline, key)`` entries, earliest first; dead ones are skipped, and dropped in bulk."""

    def __init__(self, is_current: Callable[[float, K], bool]) -> None:
        self._entries: list[tuple[float, K]] = []
        self._is_current = is_current
        """The owner's test: does the record ``key`` still expire at ``deadline``?"""
        self._compact_at = MIN_COMPACT_SIZE
        """Compact when a push makes the heap this long."""

    def __len__(self) -> int:
        """Entries held, dead ones included."""
        return len(self._entries)

    def push(self, deadline: float, key: K) -> None:
        """Add a deadline (a refresh pushes the new one; the old entry becomes dead)."""
        entries = self._entries
        heapq.heappush(entries, (deadline, key))
        if len(entries) >= self._compact_at:
            self.compact()

    def next_deadline(self) -> float | None:
        """The earliest deadline held (perhaps a dead entry's: the timer then fires for
        nothing); no allocation, called after every datagram."""
        entries = self._entries
        return entries[0][0] if entries else None

    def pop_due(self, now: float) -> K | None:
        """The key of the earliest live entry due at ``now`` (removed from the heap), or None
        when nothing live is due; dead entries met on the way are dropped."""
        entries = self._entries
        while entries and entries[0][0] <= now:
            deadline, key = heapq.heappop(entries)
            if self._is_current(deadline, key):
                return key
        return None

    def compact(self) -> None:
        """Drop every dead entry now (one pass and a heapify)."""
        is_current = self._is_current
        live = [entry for entry in self._entries if is_current(entry[0], entry[1])]
        heapq.heapify(live)
        self._entries = live
        self._compact_at = max(MIN_COMPACT_SIZE, 2 * len(live))
