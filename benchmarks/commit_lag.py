#!/usr/bin/env python3
"""How far the group commit of ``presence-sip serve`` trails its answers under PUBLISH load.

Starts ``serve`` as ``run.py`` does (pinned to CPU 0, a fresh data directory), sends
``publish.xml`` at ``--rate`` for ``--seconds`` (SIPp on CPU 1), and every ``--every`` seconds
reads, from a read-only connection of its own (SQLite WAL: readers never block the writer), the
largest rowid of ``presence_publications``.  Every initial PUBLISH of the scenario makes a
publication with a new entity-tag, so that rowid counts the publications on disk.  It prints
the count over time and when it reached the number of PUBLISHes SIPp saw answered.  A commit
thread that falls behind shows as a count that lags further and further, and a long wait after
SIPp's end; a node that keeps up holds every answered publication at most one commit gap
(30 ms, ``storage/group_commit.py``) plus the commit in flight after its answer.

Usage::

    .venv/bin/python benchmarks/commit_lag.py --rate 30000 --seconds 10
    .venv/bin/python benchmarks/commit_lag.py --rate 45000 --seconds 10   # overload

Loopback only, like the rest of the bench.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness.config import DOMAIN, FULL, SIPP_CPU
from benchmarks.harness.processes import REAPER
from benchmarks.harness.servers import Ours, preflight
from benchmarks.harness.sipp import Sipp, SippJob, write_csvs
from presence_sip.storage.database import DATABASE_NAME

SETTLE = 5.0
"""Seconds the poller goes on after SIPp ended."""


class RowPoller(threading.Thread):
    """Reads the largest publication rowid every ``every`` seconds until stopped."""

    def __init__(self, database: Path, every: float) -> None:
        super().__init__(daemon=True)
        self.database = database
        self.every = every
        self.samples: list[tuple[float, int]] = []
        """(seconds since the poller started, publications on disk)."""
        self.started_at = time.monotonic()
        self._stop_polling = threading.Event()

    def run(self) -> None:
        os.sched_setaffinity(0, {int(SIPP_CPU)})  # off the server's CPU
        conn = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True)
        try:
            while not self._stop_polling.is_set():
                row = conn.execute("SELECT max(rowid) FROM presence_publications").fetchone()
                self.samples.append((time.monotonic() - self.started_at, int(row[0] or 0)))
                self._stop_polling.wait(self.every)
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop_polling.set()
        self.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=30_000, help="PUBLISH/s (default 30000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of traffic")
    parser.add_argument("--every", type=float, default=0.25, help="seconds between two reads")
    args = parser.parse_args(argv)
    preflight(["ours"])
    workdir = Path(tempfile.mkdtemp(prefix="presence-commit-lag-"))
    try:
        return measure(workdir, args.rate, args.seconds, args.every)
    finally:
        REAPER.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


def measure(workdir: Path, rate: float, seconds: float, every: float) -> int:
    csvs = write_csvs(workdir, FULL)
    server = Ours(workdir)
    server.start()
    assert server.rundir is not None
    poller = RowPoller(server.rundir / "data" / DATABASE_NAME, every)
    poller.start()
    keys = {"domain": DOMAIN, "expires": "3600", "basic": "open", "note": "bench"}
    job = SippJob(
        "publish.xml", rate, int(rate * seconds), 60_000, csvs["publish"], keys, seconds + 15
    )
    run = Sipp(workdir, []).run(job, server)
    sipp_end = time.monotonic() - poller.started_at
    time.sleep(SETTLE)
    poller.stop()
    server.stop()
    print(run.describe())
    stride = max(1, round(1.0 / every))
    for at, rows in poller.samples[::stride]:
        print(f"{at:7.2f} s  publications on disk {rows:>9,}")
    answered = run.successful
    complete = next((at for at, rows in poller.samples if rows >= answered), None)
    print(f"SIPp: {answered:,} PUBLISHes answered, ended at {sipp_end:.2f} s")
    if complete is None:
        final = poller.samples[-1][1] if poller.samples else 0
        print(f"on disk {SETTLE:.0f} s later: {final:,} (NOT all answered ones)")
        return 1
    print(f"all on disk at {complete:.2f} s ({complete - sipp_end:+.2f} s from SIPp's end)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
