"""Identifier sources (branches, tags, Call-IDs, ETags): injected so tests are deterministic."""

from __future__ import annotations

import secrets
from typing import Protocol


class IdSource(Protocol):
    """Makes fresh opaque identifiers."""

    def new_id(self, prefix: str = "") -> str: ...


class RandomIdSource:
    """Cryptographically random identifiers (the default in a running node)."""

    __slots__ = ()

    def new_id(self, prefix: str = "") -> str:
        return prefix + secrets.token_hex(8)


class CountingIdSource:
    """Deterministic identifiers for tests: ``prefix + "id1"``, ``"id2"``, ..."""

    __slots__ = ("count", "stem")

    def __init__(self, stem: str = "id") -> None:
        self.stem = stem
        self.count = 0

    def new_id(self, prefix: str = "") -> str:
        self.count += 1
        return f"{prefix}{self.stem}{self.count}"


BRANCH_MAGIC = "z9hG4bK"
"""RFC 3261 §8.1.1.7 magic cookie that starts every branch we generate."""
