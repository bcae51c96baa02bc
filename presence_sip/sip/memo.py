"""Bounded memo tables for values parsed from header text.

The same Request-URIs, name-addrs, CSeqs and header names recur between messages; the parsed
values are immutable, so one parse can serve them all.  A table that reaches its limit is emptied
whole: the values in use come back within a few messages, and memory stays bounded whatever peers
send.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")

MEMO_LIMIT = 4096
"""Entries a table holds before it is emptied."""


def remember(table: dict[K, V], key: K, value: V) -> V:
    """Store ``value`` under ``key`` (emptying ``table`` first when full) and return it."""
    if len(table) >= MEMO_LIMIT:
        table.clear()
    table[key] = value
    return value
