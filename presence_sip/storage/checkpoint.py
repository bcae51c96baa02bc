"""WAL checkpoints of a serving node, off the event loop's thread (issue 8).

SQLite's automatic checkpoint runs inside the COMMIT that fills the write-ahead log past 1,000
pages: it copies pages into the database file and waits for ``fdatasync`` twice, a stall of
10-20 ms every few seconds under PUBLISH load, which every request queued behind that commit
waits out (the p99 of the latency row).  A serving node turns the automatic checkpoint off on its
connection and a :class:`Checkpointer` thread, with its own connection, runs a PASSIVE
checkpoint (never blocks the writer) every :data:`CHECKPOINT_INTERVAL` seconds; the sqlite3
module releases the GIL while SQLite works.  Closing the last connection still checkpoints and
removes the log as before.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

from presence_sip.runtime.priority import lower_thread_priority
from presence_sip.storage.database import connect

log = logging.getLogger(__name__)

CHECKPOINT_INTERVAL = 1.0
"""Seconds between two checkpoints: the log holds about one second of writes."""

LARGE_LOG_PAGES = 10_000
"""A log this long (~40 MiB) is checkpointed with TRUNCATE; one that still could not be copied
entirely is worth a warning."""


class Checkpointer:
    """Checkpoints the WAL of ``path`` from a daemon thread until :meth:`close`.

    ``writer`` is the serving connection: its automatic checkpoint is turned off here and back
    on by :meth:`close`.  The thread's connection is opened here, so a failure to open it fails
    the caller (:class:`StoreError`) rather than leaving the log to grow.
    """

    def __init__(
        self, writer: sqlite3.Connection, path: str | Path, interval: float = CHECKPOINT_INTERVAL
    ) -> None:
        self._writer = writer
        self._path = Path(path)
        self._interval = interval
        self._stop = threading.Event()
        self.checkpoints = 0
        """Checkpoints run so far (complete or not)."""
        self.truncations = 0
        """Of them, truncating ones (the log had grown past :data:`LARGE_LOG_PAGES`)."""
        self._conn = connect(self._path, check_same_thread=False)  # used by the thread only
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread (after the checkpoint in progress) and restore SQLite's default.

        Once: a second call does nothing (the writer may be closed by then)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        self._conn.close()
        self._writer.execute("PRAGMA wal_autocheckpoint = 1000")

    def _run(self) -> None:
        lower_thread_priority()
        while not self._stop.wait(self._interval):
            try:
                _, pages, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if pages > LARGE_LOG_PAGES:
                    # Under steady writes a passive checkpoint seldom finds the log idle, so the
                    # log is seldom started over and kept growing (235 MiB beside a 7 MiB
                    # database, soak audit of 2026-11-27).  A truncating one waits for the
                    # writer, which is the commit thread, never the event loop: it delays a
                    # group by the copy, and gives the file back.
                    _, pages, copied = self._conn.execute(
                        "PRAGMA wal_checkpoint(TRUNCATE)"
                    ).fetchone()
                    self.truncations += 1
            except sqlite3.Error as exc:
                log.warning("WAL checkpoint of %s failed: %s", self._path, exc)
                continue
            self.checkpoints += 1
            if pages > LARGE_LOG_PAGES and copied < pages:
                log.warning(
                    "WAL of %s: %d pages, %d copied (a reader holds an old snapshot)",
                    self._path,
                    pages,
                    copied,
                )
