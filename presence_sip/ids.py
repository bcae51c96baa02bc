"""Identifier sources (branches, tags, Call-IDs, ETags): injected so tests are deterministic."""

from __future__ import annotations

import os
from typing import Final, Protocol


class IdSource(Protocol):
    """Makes fresh opaque identifiers."""

    def new_id(self, prefix: str = "") -> str: ...


_ID_HEX: Final = 16
"""Hex digits per random identifier: 64 bits (RFC 3261 §19.3 asks at least 32 for a tag)."""
_POOL_BYTES: Final = 4096
"""Bytes fetched from the OS per refill (one ``os.urandom`` call serves 256 identifiers)."""


class _Pool:
    """Random hex digits from ``os.urandom``, consumed ``_ID_HEX`` at a time (issue 8: one
    ``secrets.token_hex`` call per identifier was ~3 % of a PUBLISH)."""

    __slots__ = ("digits", "pos")

    def __init__(self) -> None:
        self.digits = ""
        self.pos = 0

    def reset(self) -> None:
        """Forget the buffered digits (a forked child must not reuse its parent's)."""
        self.digits = ""
        self.pos = 0


_POOL: Final = _Pool()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_POOL.reset)


class RandomIdSource:
    """Cryptographically random identifiers (the default in a running node)."""

    __slots__ = ()

    def new_id(self, prefix: str = "") -> str:
        pool = _POOL
        pos = pool.pos
        if pos + _ID_HEX > len(pool.digits):
            pool.digits = os.urandom(_POOL_BYTES).hex()
            pos = 0
        pool.pos = pos + _ID_HEX
        return prefix + pool.digits[pos : pos + _ID_HEX]


class CountingIdSource:
    """Deterministic identifiers for tests: ``prefix + "id1"``, ``"id2"``, ..."""

    __slots__ = ("count", "stem")

    def __init__(self, stem: str = "id") -> None:
        self.stem = stem
        self.count = 0

    def new_id(self, prefix: str = "") -> str:
        self.count += 1
        return f"{prefix}{self.stem}{self.count}"


BRANCH_MAGIC: Final = "z9hG4bK"
"""RFC 3261 §8.1.1.7 magic cookie that starts every branch we generate."""
