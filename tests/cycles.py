"""Reference cycles of the project's objects: what only CPython's cyclic collector could free.

``serve`` walks old objects only every ten minutes (``presence_sip/runtime/gc_policy.py``), so
tests check that serving leaves no such garbage behind."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def cyclic_garbage() -> Iterator[list[str]]:
    """The types of the project's objects that became garbage inside the block and that only
    the cyclic collector could free (the list is filled on exit, sorted, one entry per type)."""
    found: list[str] = []
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield found
        gc.collect()
        found.extend(
            sorted(
                {
                    f"{type(o).__module__}.{type(o).__qualname__}"
                    for o in gc.garbage
                    if type(o).__module__.startswith("presence_sip")
                }
            )
        )
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if enabled:
            gc.enable()
