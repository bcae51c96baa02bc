"""The deadlines of many records, earliest first, each record held once (issue 8).

Subscriptions, publications and registrar bindings each expire at a deadline that moves on every
refresh, and many end long before it (an unSUBSCRIBE, a removed publication).  A plain binary
heap cannot move or remove an entry, so it keeps the old one and skips it when it comes due
(lazy deletion); under churn those dead entries pile up until their old deadline, hours away (a
watcher subscribing and unsubscribing 1,800 times a second with Expires 3600 leaves 6.5 million
of them).  Dropping them in bulk from time to time bounds the memory but stops the node for a
pass over the whole heap: tens of milliseconds at 100,000 records, enough for a UDP socket
buffer to overflow under load.

So the heap keeps an index from key to position, and moves or removes an entry where it is:
every operation is O(log n), nothing dead is ever held and no operation walks the heap.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from presence_sip.sharded import ShardedDict

__all__ = ["DeadlineHeap"]

K = TypeVar("K")


class DeadlineHeap(Generic[K]):
    """Keys ordered by deadline (a binary min-heap with a position index); a key is held once."""

    __slots__ = ("_deadlines", "_keys", "_positions")

    def __init__(self) -> None:
        self._deadlines: list[float] = []
        self._keys: list[K] = []
        self._positions: ShardedDict[K, int] = ShardedDict()
        """Key -> its index in ``_deadlines`` and ``_keys`` (sharded: no resize stalls)."""

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: K) -> bool:
        return key in self._positions

    def deadline(self, key: K) -> float | None:
        """The deadline of ``key``, or None when it holds none."""
        position = self._positions.get(key)
        return None if position is None else self._deadlines[position]

    def set(self, key: K, deadline: float) -> None:
        """Give ``key`` this deadline (added, or moved from the one it had)."""
        position = self._positions.get(key)
        if position is None:
            position = len(self._keys)
            self._deadlines.append(deadline)
            self._keys.append(key)
            self._positions[key] = position
            self._sift_up(position)
            return
        self._deadlines[position] = deadline
        self._settle(position)

    def discard(self, key: K) -> None:
        """Forget ``key`` (nothing happens when it holds no deadline)."""
        position = self._positions.pop(key)
        if position is not None:
            self._remove_at(position)

    def next_deadline(self) -> float | None:
        """The earliest deadline; no allocation, called after every datagram."""
        deadlines = self._deadlines
        return deadlines[0] if deadlines else None

    def pop_due(self, now: float) -> K | None:
        """The key with the earliest deadline when that is at or before ``now`` (it is
        forgotten), else None."""
        deadlines = self._deadlines
        if not deadlines or deadlines[0] > now:
            return None
        key = self._keys[0]
        del self._positions[key]
        self._remove_at(0)
        return key

    # --- the heap ------------------------------------------------------------------------------

    def _remove_at(self, position: int) -> None:
        """Drop the entry at ``position`` (already out of the index): the last entry takes its
        place and moves up or down to where it belongs."""
        deadlines, keys = self._deadlines, self._keys
        last_deadline = deadlines.pop()
        last_key = keys.pop()
        if position == len(keys):
            return  # it was the last entry
        self._put(position, last_deadline, last_key)
        self._settle(position)

    def _settle(self, position: int) -> None:
        """Move the entry at ``position``, whose deadline just changed, to where it belongs."""
        deadlines = self._deadlines
        if position > 0 and deadlines[position] < deadlines[(position - 1) >> 1]:
            self._sift_up(position)
        else:
            self._sift_down(position)

    def _put(self, position: int, deadline: float, key: K) -> None:
        self._deadlines[position] = deadline
        self._keys[position] = key
        self._positions[key] = position

    def _sift_up(self, position: int) -> None:
        """Move the entry at ``position`` towards the root while its parent is later."""
        deadlines, keys = self._deadlines, self._keys
        deadline = deadlines[position]
        key = keys[position]
        while position > 0:
            parent = (position - 1) >> 1
            if deadlines[parent] <= deadline:
                break
            self._put(position, deadlines[parent], keys[parent])
            position = parent
        self._put(position, deadline, key)

    def _sift_down(self, position: int) -> None:
        """Move the entry at ``position`` towards the leaves while a child is earlier."""
        deadlines, keys = self._deadlines, self._keys
        count = len(deadlines)
        deadline = deadlines[position]
        key = keys[position]
        while True:
            child = 2 * position + 1
            if child >= count:
                break
            right = child + 1
            if right < count and deadlines[right] < deadlines[child]:
                child = right
            if deadlines[child] >= deadline:
                break
            self._put(position, deadlines[child], keys[child])
            position = child
        self._put(position, deadline, key)
