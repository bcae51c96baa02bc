"""WAL checkpoints from the checkpointer thread (storage/checkpoint.py), on a real database file."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from presence_sip.storage import checkpoint
from presence_sip.storage.checkpoint import Checkpointer
from presence_sip.storage.database import JOURNAL_SIZE_LIMIT, connect

CHUNK = b"x" * 100_000  # ~25 pages per commit
COMMITS = 40  # ~4 MB written in all


def write_chunks(conn: sqlite3.Connection, wal: Path, pause: float) -> int:
    """Commit COMMITS chunks; the largest size the WAL file reached."""
    largest = 0
    for _ in range(COMMITS):
        conn.execute("INSERT INTO blobs VALUES (?)", (CHUNK,))
        largest = max(largest, wal.stat().st_size)
        time.sleep(pause)
    return largest


def fresh(tmp_path: Path) -> tuple[sqlite3.Connection, Path, Path]:
    path = tmp_path / "presence.sqlite"
    conn = connect(path)
    conn.execute("CREATE TABLE blobs (b BLOB)")
    return conn, path, Path(f"{path}-wal")


def automatic_checkpoint_pages(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])


def test_the_thread_keeps_the_log_short(tmp_path: Path) -> None:
    conn, path, wal = fresh(tmp_path)
    checkpointer = Checkpointer(conn, path, interval=0.01)
    try:
        assert automatic_checkpoint_pages(conn) == 0  # the writer's COMMITs never checkpoint
        largest = write_chunks(conn, wal, pause=0.03)
    finally:
        checkpointer.close()
    assert checkpointer.checkpoints >= 5
    # The log restarts after each checkpoint: without the thread it holds every commit (the
    # test below, >= 4 MB).  Half of that, not a quarter: the thread runs 5 nice levels below
    # the writer, and on a busy 2-CPU host (a fresh-clone CI run, 2026-11-28) it once waited
    # ~0.36 s, 12 commits (1.2 MB), before its next checkpoint.
    assert largest < len(CHUNK) * COMMITS / 2
    assert automatic_checkpoint_pages(conn) == 1000  # SQLite's default is back
    assert conn.execute("SELECT count(*) FROM blobs").fetchone()[0] == COMMITS
    conn.close()


def test_without_it_the_log_would_grow(tmp_path: Path) -> None:
    """The contrast: automatic checkpoints off and no thread, the log holds every commit."""
    conn, _, wal = fresh(tmp_path)
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    largest = write_chunks(conn, wal, pause=0.0)
    assert largest >= len(CHUNK) * COMMITS
    conn.close()


def test_close_stops_the_thread_and_its_connection(tmp_path: Path) -> None:
    conn, path, _ = fresh(tmp_path)
    checkpointer = Checkpointer(conn, path, interval=0.01)
    checkpointer.close()
    done = checkpointer.checkpoints
    time.sleep(0.05)
    assert checkpointer.checkpoints == done
    assert not checkpointer._thread.is_alive()
    conn.close()
    checkpointer.close()  # again, with the writer closed: nothing to do


def test_a_long_log_is_truncated_and_its_file_given_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Soak audit: under steady writes the log grew to 235 MiB beside a 7 MiB database."""
    monkeypatch.setattr(checkpoint, "LARGE_LOG_PAGES", 100)
    conn, path, wal = fresh(tmp_path)
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    write_chunks(conn, wal, pause=0.0)  # ~1,000 pages, no checkpoint yet
    assert wal.stat().st_size >= len(CHUNK) * COMMITS
    checkpointer = Checkpointer(conn, path, interval=0.01)
    try:
        deadline = time.monotonic() + 5
        while checkpointer.truncations == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        checkpointer.close()
    assert checkpointer.truncations >= 1
    assert wal.stat().st_size < len(CHUNK)  # the file itself is cut back, not only reused
    assert conn.execute("SELECT count(*) FROM blobs").fetchone()[0] == COMMITS
    conn.close()


def test_connections_cut_the_log_file_back_when_it_starts_over(tmp_path: Path) -> None:
    conn, _, _ = fresh(tmp_path)
    assert conn.execute("PRAGMA journal_size_limit").fetchone()[0] == JOURNAL_SIZE_LIMIT
    conn.close()
