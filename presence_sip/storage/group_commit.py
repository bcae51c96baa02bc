"""Group commit: row changes of many requests written in one SQLite transaction.

A store built with a :class:`GroupCommit` does not write on the request path: it keeps its
pending row changes in memory (coalesced per primary key: the newest state of a row wins) and
marks the group dirty.  The endpoint's timer calls :meth:`GroupCommit.handle_timer`, which
writes every pending change of every store in ONE ``BEGIN IMMEDIATE`` ... ``COMMIT``, at most
once per ``interval`` (30 ms by default); after a quiet period the first change is written at
the next timer turn, i.e. right after the answer leaves.

With a ``spare_interval`` (a serving node: 10 ms), the gap after a commit is that shorter one
while the process used less than :data:`SPARE_BELOW` of a CPU since the commit before: smaller
groups while there is CPU to spare; under load the groups stay large, where each commit's fixed
cost (the pages it writes to the WAL) counts (issue 8: at 20,000 PUBLISH/s a fixed 10 ms gap
cost 5 points of CPU, hence the load test).

With a ``path`` (a serving node), the transaction runs on a commit thread with its own
connection to that file: the timer builds the rows of the pending changes on the loop's thread
(:meth:`PendingWriter.pending_statements`, a snapshot of tuples) and hands them over, and the
event loop goes on answering while SQLite writes (the sqlite3 module releases the GIL while
SQLite works).  One group is in flight at a time: while it is, new changes stay pending and
coalesce, and the next group is handed over after it committed, so a row's newer state always
commits after its older one.  Issue 8: a commit of ~55 PUBLISHes took 0.4 ms (p99 0.7 ms) on the
loop, and the requests that arrived meanwhile waited it out; off the loop, the median p99 at
5,400 PUBLISH/s went from 2.82 to 2.63 ms (five alternating pairs, lower in all five), with the
same CPU at 20,000/s.  Without a path (tests, tools), the transaction runs on the caller's
connection and thread.

Durability window (issue 8): a change is in memory, not on disk, for at most ``interval`` plus
one event-loop turn plus the commit in flight after the answer to its request was sent.  A clean
stop (SIGTERM/SIGINT, ``Node.stop``/``Node.close``) flushes first, so a restart loses nothing; a
crash (SIGKILL, power loss) may lose the changes of that window (publications, subscriptions,
bindings and NOTIFY CSeq blocks of the last ~30 ms).  A lost CSeq block is harmless when the
subscription row itself is lost with it; otherwise the row of the previous block is on disk and
``cseq_block`` stays ahead.  Nothing in this wave needs a change on disk before the answer; a
record that must be (a charging record, DESIGN.md step 9) uses its own write-through store.

This module is an IO edge: ``sqlite3.Error`` becomes ``StoreError`` (logged by the timer, at
most once per :data:`FAILURE_LOG_INTERVAL` while it keeps failing; raised by
:meth:`GroupCommit.flush`); the changes of a failed commit are kept and retried one gap later,
before any newer ones.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from presence_sip.runtime.priority import lower_thread_priority
from presence_sip.sip.errors import StoreError
from presence_sip.storage.database import connect, map_errors, transaction

__all__ = [
    "DEFAULT_INTERVAL",
    "FAILING_GRACE",
    "FAILURE_LOG_INTERVAL",
    "SPARE_INTERVAL",
    "GroupCommit",
    "PendingWriter",
    "Row",
    "Statement",
]

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 0.03
"""Seconds between two group commits under load (the durability window, see the docstring)."""
SPARE_INTERVAL = 0.01
"""Seconds between two group commits of a serving node while it has CPU time to spare."""
SPARE_BELOW = 0.5
"""The process has CPU time to spare while it used less than this share of one CPU."""
FAILURE_LOG_INTERVAL = 60.0
"""Seconds between two log lines of a group commit that keeps failing (a full disk, a lock held
by another process): the first failure is logged with its traceback, then one line a minute
with the count, and the first success after them."""
FAILING_GRACE = 5.0
"""Seconds of failing commits after which the node stops accepting changes (503): a moment of
contention is ridden out, an outage is not answered 200 (a 200 that is never stored)."""

Row = tuple[object, ...]
"""The parameters of one execution of a statement."""
Statement = tuple[str, Sequence[Row]]
"""SQL and the rows it is executed with (``executemany``)."""


class PendingWriter(Protocol):
    """A store whose changes a :class:`GroupCommit` writes."""

    def pending_statements(self) -> list[Statement]:
        """The statements that write the pending changes, their rows built now (tuples)."""

    def clear_pending(self) -> None:
        """The statements were taken (and will be written): forget the pending changes."""


class GroupCommit:
    """The write-behind buffer of one database; a timed role of the endpoint.

    ``conn`` is the caller's connection (:meth:`flush` writes on it); with ``path``, the timer's
    commits run on a :class:`CommitThread` with a connection of its own to that file."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        interval: float = DEFAULT_INTERVAL,
        spare_interval: float | None = None,
        path: str | Path | None = None,
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
        """Some store has changes not yet taken for a commit."""
        self.commits = 0
        """Transactions committed (for operators and tests)."""
        self._writers: list[PendingWriter] = []
        self._last = 0.0  # the first commit is due at once (any clock is past 0 + interval)
        # Not `_thread`: mypyc names the C field `__thread`, a C keyword (GCC's thread-local).
        self._committer: CommitThread | None = None if path is None else CommitThread(path)
        self._taken: list[Statement] | None = None
        """The statements of the group handed to the commit thread and not yet committed."""
        self._writing: Future[None] | None = None
        self._handed = 0.0
        """When the group in flight was handed to the commit thread."""
        self.failures = 0
        """Failed commits since the last successful one (for operators and tests)."""
        self.failing_since: float | None = None
        """When the current run of failed commits began (None: the last commit succeeded)."""
        self._failure_logged = 0.0

    def register(self, writer: PendingWriter) -> None:
        """Write ``writer``'s pending changes with every group commit."""
        self._writers.append(writer)

    def mark(self) -> None:
        """A store queued a change."""
        self.dirty = True

    def get_timer(self) -> float | None:
        """When the next commit (or look at the one in flight) is due: the current gap after
        the previous one, if there is something to write."""
        if self.dirty or self._taken is not None:
            return self._last + self._gap
        return None

    def handle_timer(self, now: float) -> None:
        """Commit when due (or hand the group to the commit thread, after settling the one in
        flight); a failure is logged and retried one gap later."""
        if not (self.dirty or self._taken is not None) or now < self._last + self._gap:
            return
        self._choose_gap(now)
        self._last = now
        try:
            if self._committer is None:
                self.flush()
            else:
                self._hand_over()
        except StoreError:
            self._failed(now)

    def cannot_store(self, now: float) -> bool:
        """Commits have failed, or the one in flight has hung, for :data:`FAILING_GRACE`
        seconds or more (a full disk, a stalled disk, a database locked by another process):
        changes answered now might never be stored."""
        since = self.failing_since
        if since is not None and now - since >= FAILING_GRACE:
            return True
        writing = self._writing
        # (Future.done() takes the future's lock: asked only once the grace has passed, as
        # this runs for every storing request.)
        return writing is not None and now - self._handed >= FAILING_GRACE and not writing.done()

    def wait_in_flight(self) -> None:
        """Wait until the group handed to the commit thread is written, or has failed (settled
        as usual at the next commit).  For a caller whose clock runs ahead of real time
        (``benchmarks/profile_sansio.py``); a node never waits for its commit thread."""
        if self._writing is not None:
            self._writing.exception()

    def _failed(self, now: float) -> None:
        """Log a failed commit: the first with its traceback, then once a minute."""
        self.failures += 1
        if self.failing_since is None:
            self.failing_since = now
        if self.failures == 1:
            log.exception("group commit failed; retrying every %.0f ms", self._gap * 1000)
        elif now >= self._failure_logged + FAILURE_LOG_INTERVAL:
            log.error("group commit still failing: %d attempts so far", self.failures)
        else:
            return
        self._failure_logged = now

    def _committed(self) -> None:
        self.commits += 1
        self.failing_since = None
        if self.failures:
            log.warning("group commit succeeded after %d failed attempts", self.failures)
            self.failures = 0

    def _hand_over(self) -> None:
        """Settle the group in flight, then give the commit thread the next one."""
        assert self._committer is not None
        if self._writing is not None:
            if not self._writing.done():
                return  # still writing: look again one gap later
            self._settle()  # raises StoreError: the same group is handed over again next time
        if self._taken is None and self.dirty:
            self._taken = self._take()
        if self._taken is not None:
            self._writing = self._committer.write(self._taken)
            self._handed = self._last

    def _settle(self) -> None:
        """The group in flight has finished: count it, or raise its ``StoreError``."""
        assert self._writing is not None
        writing, self._writing = self._writing, None
        writing.result()  # waits while it writes; raises what the commit raised
        self._taken = None
        self._committed()

    def _take(self) -> list[Statement]:
        statements = self._pending()
        self._forget_pending()
        return statements

    def _pending(self) -> list[Statement]:
        return [s for writer in self._writers for s in writer.pending_statements()]

    def _forget_pending(self) -> None:
        for writer in self._writers:
            writer.clear_pending()
        self.dirty = False

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
        """Write every change now: the group in flight, then (on this thread) the pending ones,
        in one transaction (raises ``StoreError``; nothing is forgotten then)."""
        if self._writing is not None:
            try:
                self._settle()
            except StoreError:
                pass  # its statements are still taken: written below, before the newer ones
        if self._taken is None and not self.dirty:
            return
        statements = (self._taken or []) + self._pending()
        with transaction(self.conn) as conn:
            for sql, rows in statements:
                conn.executemany(sql, rows)
        self._forget_pending()
        self._taken = None
        self._committed()

    def close(self) -> None:
        """Flush (a clean stop loses nothing), then stop the commit thread."""
        try:
            self.flush()
        finally:
            if self._committer is not None:
                self._committer.close()


class CommitThread:
    """One thread and its own connection to the database file, writing one group at a time.

    The connection is opened here, so a failure to open it fails the caller (``StoreError``).
    Its COMMITs never checkpoint the WAL: that is the node's
    :class:`~presence_sip.storage.checkpoint.Checkpointer`'s job, which the commit would otherwise
    wait for (and take turns with)."""

    def __init__(self, path: str | Path) -> None:
        self._conn = connect(path, check_same_thread=False)  # used by the thread only
        with map_errors(f"cannot open database {path}"):
            self._conn.execute("PRAGMA wal_autocheckpoint = 0")
        self._pool = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="group-commit", initializer=lower_thread_priority
        )

    def write(self, statements: list[Statement]) -> Future[None]:
        """Run ``statements`` in one transaction on the thread; the future raises
        ``StoreError`` if it failed (rolled back)."""
        return self._pool.submit(self._write, statements)

    def _write(self, statements: list[Statement]) -> None:
        with transaction(self._conn) as conn:
            for sql, rows in statements:
                conn.executemany(sql, rows)

    def close(self) -> None:
        """Wait for the group in flight, stop the thread and close its connection."""
        self._pool.shutdown(wait=True)
        self._conn.close()
