"""Bounded memo tables for values parsed from header text.

The same Request-URIs, name-addrs, CSeqs and header names recur between messages; the parsed
values are immutable, so one parse can serve them all.  A table that reaches its limit drops its
oldest 1/64th (insertion order): what is in use comes back within a few messages, and memory
stays bounded whatever peers send.

Why not empty a full table whole: the values dropped are freed there and then, and at thousands
of entries that stops the loop for milliseconds (~2 ms for 4,096 parsed URIs, issue 8).  An
eighth at a time still stopped it for ~2 ms (2,048 parsed name-addrs) every 2,048 new watchers
while subscriptions from distinct watchers were established (sans-IO hold of 100,000, the most
frequent slow calls left after the sharded tables); 1/64th spreads the same work over 64
pauses of ~0.25 ms.

Why this size: a miss costs a parse (~10,000 instructions for a Request-URI).  With 4,096
entries the 10,000 presentities of the benchmark's PUBLISH row missed on every PUBLISH; 16,384
hold them.  That, with From tags kept out of the name-addr table (``uri._tagged_name_addr``),
took 226,600 -> 206,900 instructions per PUBLISH (cachegrind, ``profile_sansio.py publish``)
and the server from 70-85 % to 65-78 % of a CPU at 6,000 PUBLISH/s.  The price: full tables
hold ~12 MB more (the memory row's 100,000 distinct watchers fill them).
"""

from __future__ import annotations

from itertools import islice
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")

MEMO_LIMIT = 16384
"""Entries a table holds before its oldest are dropped."""
MEMO_DROP = MEMO_LIMIT // 64
"""Entries dropped, oldest first, when a table is full."""


def remember(table: dict[K, V], key: K, value: V) -> V:
    """Store ``value`` under ``key`` (making room first when full) and return it."""
    if len(table) >= MEMO_LIMIT:
        make_room(table)
    table[key] = value
    return value


def make_room(table: dict[K, V]) -> None:
    """Drop the :data:`MEMO_DROP` oldest entries of ``table`` (the first inserted)."""
    for key in list(islice(table, MEMO_DROP)):
        del table[key]
