"""A lower CPU priority for the node's background threads (Linux: a nice value per thread).

The event loop answers requests; the group-commit and WAL-checkpoint threads write what was
already answered.  The whole node shares one CPU with them (the bench pins it to one), and a
datagram that wakes the loop while a commit runs waited for the commit's time slice: the
scheduler preempts a thread of lower priority sooner.  Measured (issue 8): PUBLISH p99 at
5,600/s 2.31 -> 2.25 ms and 2.36 -> 2.22 ms (two sets of six alternating pairs, lower in ten
of twelve), the commit thread still keeping up at 45,000 PUBLISH/s offered
(``benchmarks/commit_lag.py``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading

log = logging.getLogger(__name__)

BACKGROUND_NICENESS = 5
"""Added to a background thread's nice value: a CFS/EEVDF weight of 335 against the loop's
1024 at nice 0; enough CPU for the commit thread to keep up at full load."""


def lower_thread_priority(niceness: int = BACKGROUND_NICENESS) -> None:
    """Lower the calling thread's priority by ``niceness``.

    Linux only: there ``setpriority(PRIO_PROCESS, tid)`` sets one thread's nice value; other
    systems read that id as a process id, so nothing is done there.
    """
    if not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + niceness)
    except OSError as exc:  # (a seccomp profile, say): the thread runs as it was
        log.debug("cannot lower the priority of thread %d: %s", tid, exc)
