"""The cyclic garbage collector of a serving process (issue 8): short young collections only.

CPython's collector is generational: a young collection walks the container objects allocated
since the last one, an older one also walks everything that survived before.  A server's state
(subscriptions, dialogs, publications, completed transactions waiting out Timer J) is made of
such survivors, so the pauses grow with it.  Measured with ``benchmarks/profile_sansio.py
--gc-tuned`` under the previous tuning (thresholds 20,000 / 20 / 100): young collections of
20,000-60,000 objects paused 6.4 ms under PUBLISH load and 43 ms while 60,000 subscriptions were
established, and an older one 78 ms; with CPython's defaults a full collection also starts
whenever a quarter of the heap was promoted since the last one, every few seconds under churn.
Kamailio has no such pause; on the latency row they were the stalls behind a share of the p99.

The policy here:

* **Young collections only, and small.**  ``gc.set_threshold(YOUNG_THRESHOLD, NEVER, NEVER)``:
  a young collection every :data:`YOUNG_THRESHOLD` net container allocations; survivors are
  promoted and never walked again automatically.  Same measurement: the longest pause went to
  0.4 ms under PUBLISH load and 4.4 ms while the 60,000 subscriptions were established, with
  less collector time in total (41 ms instead of 55 ms, 322 ms instead of 540 ms).
* **Nothing to collect on the request path.**  The sans-IO core and the uvloop transports
  create no reference cycles (``tests/unit/test_gc_policy.py`` runs the presence flows and
  checks what only the cyclic collector could free), so what the core stops using is freed
  by reference counting, promoted or not.
* **A full collection on a schedule** (:class:`FullCollections`, every :data:`FULL_INTERVAL`
  seconds) for cycles made elsewhere that outlive a young collection: asyncio's own selector
  transports (``--loop asyncio``) leave one per closed connection, an exception kept with its
  traceback makes one.  Its pause grows with the state, as before, but it comes every ten
  minutes, and each run is logged with what it found and how long it took (INFO when it found
  something: a cycle worth removing at its source).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

from presence_sip.runtime.heap import trim_heap

__all__ = ["FULL_INTERVAL", "NEVER", "YOUNG_THRESHOLD", "FullCollections", "tune_gc"]

log = logging.getLogger(__name__)

YOUNG_THRESHOLD = 1_000
"""Net container allocations between two young collections (CPython's default is 700)."""

NEVER = 2**31 - 1
"""An older-generation threshold that is never reached (the count it is compared with grows by
one per young collection: at a thousand a second, 68 years)."""

FULL_INTERVAL = 600.0
"""Seconds between two scheduled full collections."""


def tune_gc() -> None:
    """Set the policy for a long-running server (call once its stored state is loaded).

    Collects, then freezes everything alive (modules, configuration, the state just loaded
    from the database) into the permanent generation, which no collection walks again, and
    sets the thresholds above.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, NEVER, NEVER)


def collect_all() -> tuple[int, float]:
    """One full collection: (unreachable objects found, seconds it took); logged."""
    started = time.perf_counter()
    found = gc.collect()
    took = time.perf_counter() - started
    level = logging.INFO if found else logging.DEBUG
    log.log(level, "full garbage collection: %d unreachable objects, %.1f ms", found, took * 1000)
    return found, took


class FullCollections:
    """Runs :func:`collect_all` every ``interval`` seconds on the running loop until closed."""

    def __init__(self, interval: float = FULL_INTERVAL) -> None:
        self.interval = interval
        self.runs = 0
        """Scheduled collections done so far."""
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Schedule the first collection (needs a running loop)."""
        self._handle = asyncio.get_running_loop().call_later(self.interval, self._run)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _run(self) -> None:
        self.runs += 1
        try:
            collect_all()
            # What a burst of load left behind (completed transactions of a 32 s Timer J,
            # ...) is freed by now, but glibc keeps the pages: give them back, on a thread
            # (the soak audit of 2026-11-27 saw RSS stay at the busiest moment's level).
            asyncio.get_running_loop().run_in_executor(None, trim_heap)
        finally:
            self.start()
