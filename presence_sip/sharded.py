"""A dict split into many small dicts by key hash, so no insertion copies every entry (issue 8).

A Python dict keeps its entries in one table.  When the table fills up, the insertion that finds
it full allocates a larger one and copies every live entry across: at 87,381 entries, two thirds
of 2^17, that one insertion takes ~5-12 ms.  A table that only grows (one entry per PUBLISH for a
publication's entity-tag, one per lingering UDP transaction until Timer J) hits that point after
21,845, 43,690, 87,381 ... insertions; a table with churn at a steady size hits it too, every time
its append-only entry array fills up with deleted slots and is compacted.  Under load, every
request queued behind that insertion waits for the copy: the clusters of slow requests that set
the server's p99 (``benchmarks/latency_timeline.py``).

:class:`ShardedDict` spreads the entries over :data:`SHARDS` dicts by the low bits of the key's
hash, the way Kamailio's fixed-size hash tables spread theirs over buckets.  Each shard resizes on
its own, copying 1/256th of the entries; at a million entries that is ~4,000, a fraction of a
millisecond.  It offers the part of the dict interface the tables above use; iteration order is
by shard, not by insertion.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Final, Generic, TypeVar

if TYPE_CHECKING:
    from mypy_extensions import i64

__all__ = ["SHARDS", "ShardedDict"]

K = TypeVar("K")
V = TypeVar("V")

SHARDS: Final = 256
"""Dicts per table: a power of two, so the shard is ``hash(key) & (SHARDS - 1)``."""

_MASK: Final = SHARDS - 1


def _index(key: object) -> i64:
    """The shard of ``key``.  As an ``i64`` mypyc masks the hash unboxed; as an ``int`` half of
    all hashes (64-bit, against 63 bits of a short int) would make a long object for ``&``."""
    digest: i64 = hash(key)
    return digest & _MASK


class ShardedDict(Generic[K, V]):
    """A mapping of ``K`` to ``V`` held in :data:`SHARDS` dicts chosen by ``hash(key)``.

    :meth:`put_bounded` makes it a bounded cache: a full shard is emptied, not the table.  Where
    a key may be missing, ask :meth:`get` (with a sentinel default when None is a value) rather
    than ``[]``: a ``KeyError`` raised out of a compiled method builds a traceback, thousands of
    instructions.
    """

    __slots__ = ("_count", "_shards")

    def __init__(self) -> None:
        self._shards: list[dict[K, V]] = [{} for _ in range(SHARDS)]
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, key: K) -> bool:
        return key in self._shards[_index(key)]

    def __getitem__(self, key: K) -> V:
        return self._shards[_index(key)][key]

    def get(self, key: K, default: V | None = None) -> V | None:
        return self._shards[_index(key)].get(key, default)

    def __setitem__(self, key: K, value: V) -> None:
        shard = self._shards[_index(key)]
        before = len(shard)
        shard[key] = value
        self._count += len(shard) - before

    def setdefault(self, key: K, default: V) -> V:
        """The value of ``key``, after setting it to ``default`` when it is not held."""
        shard = self._shards[_index(key)]
        before = len(shard)
        value = shard.setdefault(key, default)
        self._count += len(shard) - before
        return value

    def __delitem__(self, key: K) -> None:
        del self._shards[_index(key)][key]
        self._count -= 1

    def pop(self, key: K, default: V | None = None) -> V | None:
        """Remove ``key`` and return its value; ``default`` when it is not held."""
        shard = self._shards[_index(key)]
        before = len(shard)
        value = shard.pop(key, default)
        self._count -= before - len(shard)
        return value

    def put_bounded(self, key: K, value: V, limit: int) -> V:
        """Set ``key`` in a cache of about ``limit`` entries and return ``value``.

        A shard already holding its share of ``limit`` is emptied first: a full cache drops
        1/256th of its entries at a time, where emptying one dict would free them all at once
        (and grow again through every resize)."""
        shard = self._shards[_index(key)]
        if len(shard) >= max(1, limit // SHARDS):
            self._count -= len(shard)
            shard.clear()
        before = len(shard)
        shard[key] = value
        self._count += len(shard) - before
        return value

    def __iter__(self) -> Iterator[K]:
        for shard in self._shards:
            yield from shard

    def values(self) -> Iterator[V]:
        for shard in self._shards:
            yield from shard.values()

    def clear(self) -> None:
        for shard in self._shards:
            shard.clear()
        self._count = 0
