"""Giving freed C heap back to the system (glibc ``malloc_trim``).

A TLS connection that never finishes its handshake costs OpenSSL and the event loop some tens
of kilobytes of C heap.  They are freed when the node aborts it, but glibc keeps the pages, and
a flood of such connections (anyone can open them: they need no certificate) grew a node by
~40 KB each, for good (the TLS audit of 2026-11-27 measured 48 MB -> 452 MB over 9,000; every
byte came back with ``malloc_trim``).  The driver trims after many aborted handshakes, on a
thread (ctypes releases the GIL; a trim of a large heap takes 5-30 ms); elsewhere (musl, macOS)
this does nothing.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def _load_trim() -> Callable[[int], int] | None:
    try:  # the process's own symbols: no library search (find_library runs ldconfig)
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _load_trim()


def trim_heap() -> bool:
    """Return the free pages of the C heap to the system; False where that is not possible."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
