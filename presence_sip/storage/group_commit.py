"""Group commit: row changes of many requests written in one SQLite transaction.

A store built with a :class:`GroupCommit` does not write on the request path: it keeps its
pending row changes in memory (coalesced per primary key: the newest state of a row wins) and
marks the group dirty.  The endpoint's timer calls :meth:`GroupCommit.handle_timer`, which
writes every pending change of every store in ONE ``BEGIN IMMEDIATE`` ... ``COMMIT``, at most
once per ``interval`` (30 ms by default); after a quiet period the first change is written at
the next timer turn, i.e. right after the answer leaves.

With a ``spare_interval`` (a serving node: 10 ms), the gap after a commit is that shorter one
while the process used less than :data:`SPARE_BELOW` of a CPU since the commit before.  A commit
stops the event loop for as long as it writes, and the requests that arrive meanwhile wait:
smaller groups, shorter stops.  Under load the groups stay large, where each commit's fixed cost
(the pages it writes to the WAL) counts (issue 8: at 5,700 PUBLISH/s on a quiet host, 10 ms
instead of 30 ms gave a median p99 of 3.09 against 3.32 ms in six alternating pairs; at 20,000/s
it cost 5 points of CPU, hence the load test).

Durability window (issue 8): a change is in memory, not on disk, for at most ``interval`` plus
one event-loop turn after the answer to its request was sent.  A clean stop (SIGTERM/SIGINT,
``Node.stop``/``Node.close``) flushes first, so a restart loses nothing; a crash (SIGKILL,
power loss) may lose the changes of that window (publications, subscriptions, bindings and
NOTIFY CSeq blocks of the last ~30 ms).  A lost CSeq block is harmless when the subscription
row itself is lost with it; otherwise the row of the previous block is on disk and
``cseq_block`` stays ahead.  Nothing in this wave needs a change on disk before the answer;
a record that must be (a charging record, DESIGN.md step 9) uses its own write-through store.

This module is an IO edge: ``sqlite3.Error`` becomes ``StoreError`` (logged by the timer,
raised by :meth:`GroupCommit.flush`); pending changes are kept and retried after a failure.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Protocol

from presence_sip.sip.errors import StoreError
from presence_sip.storage.database import transaction

__all__ = ["DEFAULT_INTERVAL", "SPARE_INTERVAL", "GroupCommit", "PendingWriter"]

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 0.03
"""Seconds between two group commits under load (the durability window, see the docstring)."""
SPARE_INTERVAL = 0.01
"""Seconds between two group commits of a serving node while it has CPU time to spare."""
SPARE_BELOW = 0.5
"""The process has CPU time to spare while it used less than this share of one CPU."""


class PendingWriter(Protocol):
    """A store whose changes a :class:`GroupCommit` writes."""

    def write_pending(self, conn: sqlite3.Connection) -> None:
        """Execute the pending changes (inside the group's transaction)."""

    def clear_pending(self) -> None:
        """The transaction committed: forget the pending changes."""


class GroupCommit:
    """The write-behind buffer of one connection; a timed role of the endpoint."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        interval: float = DEFAULT_INTERVAL,
        spare_interval: float | None = None,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self.conn = conn
        self.interval = interval
        self.spare_interval = spare_interval
        """The gap while the process has CPU time to spare (None: always ``interval``)."""
        self._gap = interval
        self._cpu_clock = cpu_clock
        self._cpu_at_last = cpu_clock()
        self.dirty = False
        """Some store has changes not yet written."""
        self.commits = 0
        """Transactions committed (for operators and tests)."""
        self._writers: list[PendingWriter] = []
        self._last = 0.0  # the first commit is due at once (any clock is past 0 + interval)

    def register(self, writer: PendingWriter) -> None:
        """Write ``writer``'s pending changes with every group commit."""
        self._writers.append(writer)

    def mark(self) -> None:
        """A store queued a change."""
        self.dirty = True

    def get_timer(self) -> float | None:
        """When the next commit is due: the current gap after the previous one, if dirty."""
        return self._last + self._gap if self.dirty else None

    def handle_timer(self, now: float) -> None:
        """Commit when due; a failure is logged and retried one gap later."""
        if not self.dirty or now < self._last + self._gap:
            return
        self._choose_gap(now)
        self._last = now
        try:
            self.flush()
        except StoreError:
            log.exception("group commit failed; retrying in %.0f ms", self._gap * 1000)

    def _choose_gap(self, now: float) -> None:
        """The gap to the next commit, from the CPU the process used since the last one."""
        if self.spare_interval is None:
            return
        cpu = self._cpu_clock()
        busy = cpu - self._cpu_at_last
        self._cpu_at_last = cpu
        spare = busy < SPARE_BELOW * (now - self._last)
        self._gap = self.spare_interval if spare else self.interval

    def flush(self) -> None:
        """Write every pending change now, in one transaction (raises ``StoreError``)."""
        if not self.dirty:
            return
        with transaction(self.conn) as conn:
            for writer in self._writers:
                writer.write_pending(conn)
        for writer in self._writers:
            writer.clear_pending()
        self.dirty = False
        self.commits += 1

    def close(self) -> None:
        """Flush (a clean stop loses nothing)."""
        self.flush()
