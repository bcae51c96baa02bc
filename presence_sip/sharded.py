"""A dict split into many small dicts by key hash, so no insertion copies every entry (issue 8).

A Python dict keeps its entries in one table.  When the table fills up, the insertion that finds
it full allocates a larger one and copies every live entry across: at 87,381 entries, two thirds
of 2^17, that one insertion takes ~5-12 ms.  A table that only grows (one entry per PUBLISH for a
publication's entity-tag, one per lingering UDP transaction until Timer J) hits that point after
21,845, 43,690, 87,381 ... insertions; a table with churn at a steady size hits it too, every time
its append-only entry array fills up with deleted slots and is compacted.  Under load, every
request queued behind that insertion waits for the copy: clusters of slow requests in
``benchmarks/latency_timeline.py``; at 699,051 entries (two thirds of 2^20) one insertion
takes ~26 ms.

:class:`ShardedDict` spreads the entries over :data:`SHARDS` dicts by the low bits of the key's
hash, the way Kamailio's fixed-size hash tables spread theirs over buckets.  Each shard resizes on
its own, copying 1/256th of the entries; at a million entries that is ~4,000, a fraction of a
millisecond.  It offers the part of the dict interface the tables above use, and iteration (in
shard order, not insertion order).

A table starts as one dict and splits into its shards once, when it first holds
:data:`SPLIT_AT` entries (copying them: ~0.35 ms): most tables of a node stay small (the
subscriptions of a cycle benchmark, the presentities of a lab), and one dict kept in the CPU's
caches costs less per lookup than 256 (measured: 3 points of CPU 0 at 7,400 SUBSCRIBE/NOTIFY
cycles/s with every table split from the start).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Final, Generic, TypeVar

if TYPE_CHECKING:
    from mypy_extensions import i64

__all__ = ["SHARDS", "SPLIT_AT", "ShardedDict"]

K = TypeVar("K")
V = TypeVar("V")

SHARDS: Final = 256
"""Dicts of a split table: a power of two, so the shard is ``hash(key) & (SHARDS - 1)``."""

SPLIT_AT: Final = 4096
"""Entries at which a table of one dict splits into :data:`SHARDS`: the split copies them
(~0.35 ms; ~0.75 ms at 8,192, and the three tables that grow by one per PUBLISH split at the
same request), and the table's last resize before, at 2,730 entries, copies those."""


def _index(key: object, mask: i64) -> i64:
    """The shard of ``key``.  As an ``i64`` mypyc masks the hash unboxed; as an ``int`` half of
    all hashes (64-bit, against 63 bits of a short int) would make a long object for ``&``."""
    digest: i64 = hash(key)
    return digest & mask


class ShardedDict(Generic[K, V]):
    """A mapping of ``K`` to ``V`` held in one dict, or once big in :data:`SHARDS` dicts chosen
    by ``hash(key)``.

    :meth:`put_bounded` makes it a bounded cache: a full shard is emptied, not the table.  Where
    a key may be missing, ask :meth:`get` (with a sentinel default when None is a value) rather
    than ``[]``: a ``KeyError`` raised out of a compiled method builds a traceback, thousands of
    instructions.
    """

    __slots__ = ("_count", "_mask", "_shards")

    def __init__(self) -> None:
        self._shards: list[dict[K, V]] = [{}]
        self._mask: i64 = 0
        """``len(_shards) - 1``: 0 while the table is one dict."""
        self._count = 0

    def _shard(self, key: K) -> dict[K, V]:
        mask = self._mask
        if mask == 0:
            return self._shards[0]  # (no hash: the dict computes it, or has it cached)
        return self._shards[_index(key, mask)]

    def _split(self) -> None:
        """Spread the entries of the one dict over :data:`SHARDS` dicts."""
        shards: list[dict[K, V]] = [{} for _ in range(SHARDS)]
        mask: i64 = SHARDS - 1
        for key, value in self._shards[0].items():
            shards[_index(key, mask)][key] = value
        self._shards = shards
        self._mask = mask

    def _grew(self, shard: dict[K, V], before: int) -> None:
        """Count what an insertion into ``shard`` added; split a one-dict table that is big."""
        self._count += len(shard) - before
        if self._mask == 0 and self._count >= SPLIT_AT:
            self._split()

    def __len__(self) -> int:
        return self._count

    def __contains__(self, key: K) -> bool:
        return key in self._shard(key)

    def __getitem__(self, key: K) -> V:
        return self._shard(key)[key]

    def get(self, key: K, default: V | None = None) -> V | None:
        return self._shard(key).get(key, default)

    def __setitem__(self, key: K, value: V) -> None:
        shard = self._shard(key)
        before = len(shard)
        shard[key] = value
        self._grew(shard, before)

    def setdefault(self, key: K, default: V) -> V:
        """The value of ``key``, after setting it to ``default`` when it is not held."""
        shard = self._shard(key)
        before = len(shard)
        value = shard.setdefault(key, default)
        self._grew(shard, before)
        return value

    def __delitem__(self, key: K) -> None:
        del self._shard(key)[key]
        self._count -= 1

    def pop(self, key: K, default: V | None = None) -> V | None:
        """Remove ``key`` and return its value; ``default`` when it is not held."""
        shard = self._shard(key)
        before = len(shard)
        value = shard.pop(key, default)
        self._count -= before - len(shard)
        return value

    def put_bounded(self, key: K, value: V, limit: int) -> V:
        """Set ``key`` in a cache of about ``limit`` entries and return ``value``.

        A full one-dict table is split first (whatever its size; a ``limit`` under
        :data:`SHARDS` keeps one dict), and a shard already holding its share of ``limit`` is
        emptied: a full cache drops 1/256th of its entries at a time, where emptying one dict
        would free them all at once (and grow again through every resize).  Right after the
        split the shards hold unequal shares, so the table may exceed ``limit`` by a few per
        cent until the fuller shards are next written."""
        if self._mask == 0 and self._count >= limit >= SHARDS:
            self._split()
        shard = self._shard(key)
        if len(shard) >= max(1, limit // len(self._shards)):
            self._count -= len(shard)
            shard.clear()
        before = len(shard)
        shard[key] = value
        self._grew(shard, before)
        return value

    def __iter__(self) -> Iterator[K]:
        for shard in self._shards:
            yield from shard

    def clear(self) -> None:
        """Empty the table (back to one dict)."""
        self._shards = [{}]
        self._mask = 0
        self._count = 0
