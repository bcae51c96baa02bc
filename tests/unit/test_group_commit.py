"""Group commit: one transaction per interval, nothing lost on close, retried after a failure;
on a commit thread, the caller never waits for SQLite and a row's newer state commits last."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from presence_sip.sip.errors import StoreError
from presence_sip.storage.database import connect
from presence_sip.storage.group_commit import FAILING_GRACE, GroupCommit, Statement


class RowWriter:
    """Queues values; writes them into table ``t`` when the group commits."""

    def __init__(self) -> None:
        self.pending: list[int] = []
        self.fail = False

    def pending_statements(self) -> list[Statement]:
        statements: list[Statement] = []
        if self.fail:
            statements.append(("INSERT INTO missing_table VALUES (?)", [(1,)]))
        statements.append(("INSERT INTO t VALUES (?)", [(v,) for v in self.pending]))
        return statements

    def clear_pending(self) -> None:
        self.pending.clear()


_opened: list[sqlite3.Connection] = []


@pytest.fixture(autouse=True)
def _close_databases() -> Iterator[None]:
    """The in-memory databases a test opened are closed after it (Python 3.13 warns of an
    unclosed connection, and warnings are errors here)."""
    yield
    while _opened:
        _opened.pop().close()


def memory_database() -> sqlite3.Connection:
    """An in-memory database with table ``t``, closed after the test."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    _opened.append(conn)
    conn.execute("CREATE TABLE t (v INTEGER)")
    return conn


def setup() -> tuple[sqlite3.Connection, GroupCommit, RowWriter]:
    conn = memory_database()
    group = GroupCommit(conn, interval=0.03)
    writer = RowWriter()
    group.register(writer)
    return conn, group, writer


def rows(conn: sqlite3.Connection) -> list[int]:
    return [r[0] for r in conn.execute("SELECT v FROM t ORDER BY v")]


def test_changes_wait_for_the_interval_then_commit_together() -> None:
    conn, group, writer = setup()
    assert group.get_timer() is None  # nothing pending: no timer
    writer.pending += [1, 2]
    group.mark()
    group.handle_timer(100.0)  # first commit after a quiet period is due at once
    assert rows(conn) == [1, 2]
    writer.pending.append(3)
    group.mark()
    assert group.get_timer() == pytest.approx(100.03)
    group.handle_timer(100.01)
    assert rows(conn) == [1, 2]  # not yet due
    writer.pending.append(4)
    group.handle_timer(100.03)
    assert rows(conn) == [1, 2, 3, 4]
    assert group.commits == 2
    assert group.get_timer() is None


def test_a_failed_commit_keeps_the_changes_and_retries() -> None:
    conn, group, writer = setup()
    writer.pending.append(7)
    writer.fail = True
    group.mark()
    group.handle_timer(1.0)  # logged, not raised
    assert rows(conn) == []
    assert writer.pending == [7]
    writer.fail = False
    group.handle_timer(1.03)
    assert rows(conn) == [7]


def test_a_commit_that_keeps_failing_logs_once_a_minute_then_its_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    conn, group, writer = setup()
    writer.pending.append(7)
    writer.fail = True
    group.mark()
    now = 1.0
    while now < 61.0:  # a minute of retries, one per gap (30 ms)
        group.handle_timer(now)
        now += 0.031
    assert group.failures == 1936
    lines = [r for r in caplog.records if r.name == "presence_sip.storage.group_commit"]
    assert [r.levelname for r in lines] == ["ERROR"]  # the first, with its traceback
    assert lines[0].exc_info is not None
    group.handle_timer(now)  # a minute after the first line
    assert caplog.records[-1].getMessage() == "group commit still failing: 1937 attempts so far"
    group.handle_timer(now + 0.031)  # not again for a minute
    assert len([r for r in caplog.records if r.name == lines[0].name]) == 2
    writer.fail = False
    group.handle_timer(now + 0.062)
    assert rows(conn) == [7]
    assert caplog.records[-1].getMessage() == "group commit succeeded after 1938 failed attempts"
    assert group.failures == 0


def test_cannot_store_after_the_grace_of_failing_commits_until_one_succeeds() -> None:
    _conn, group, writer = setup()
    writer.pending.append(7)
    writer.fail = True
    group.mark()
    assert not group.cannot_store(1.0)
    now = 1.0
    while now < 1.0 + FAILING_GRACE:
        group.handle_timer(now)
        assert not group.cannot_store(now)  # a moment of contention is ridden out
        now += 0.031
    group.handle_timer(now)
    assert group.cannot_store(now)
    writer.fail = False
    group.handle_timer(now + 0.031)
    assert not group.cannot_store(now + 0.031)


def test_close_flushes_and_flush_raises_store_errors() -> None:
    conn, group, writer = setup()
    writer.pending.append(5)
    group.mark()
    group.close()
    assert rows(conn) == [5]
    writer.pending.append(6)
    writer.fail = True
    group.mark()
    with pytest.raises(StoreError):
        group.flush()


def test_the_gap_shortens_while_the_process_has_cpu_to_spare() -> None:
    conn = memory_database()
    cpu = [0.0]
    group = GroupCommit(conn, interval=0.03, spare_interval=0.01, cpu_clock=lambda: cpu[0])
    writer = RowWriter()
    group.register(writer)

    def change(value: int) -> None:
        writer.pending.append(value)
        group.mark()

    change(1)
    group.handle_timer(10.0)  # after a quiet period: at once, and idle since: the short gap
    change(2)
    assert group.get_timer() == pytest.approx(10.01)
    cpu[0] += 0.004  # 40 % of the 10 ms: still spare
    group.handle_timer(10.01)
    change(3)
    assert group.get_timer() == pytest.approx(10.02)
    cpu[0] += 0.006  # 60 % of the 10 ms: busy, the long gap
    group.handle_timer(10.02)
    change(4)
    assert group.get_timer() == pytest.approx(10.05)
    group.handle_timer(10.04)
    assert rows(conn) == [1, 2, 3]  # not yet due
    cpu[0] += 0.003  # 10 % of the 30 ms: spare again
    group.handle_timer(10.05)
    change(5)
    assert group.get_timer() == pytest.approx(10.06)
    assert rows(conn) == [1, 2, 3, 4]


def test_without_a_spare_interval_the_gap_never_changes() -> None:
    conn, group, writer = setup()
    for n, now in enumerate((1.0, 1.03, 1.06)):
        writer.pending.append(n)
        group.mark()
        group.handle_timer(now)
        writer.pending.append(10 + n)
        group.mark()
        assert group.get_timer() == pytest.approx(now + 0.03)
    assert rows(conn) == [0, 1, 2, 10, 11]


# --- on a commit thread ---------------------------------------------------------------------


class KeyedWriter:
    """Pending values by key, upserted into table ``kv`` (the newest value of a key wins)."""

    def __init__(self) -> None:
        self.pending: dict[str, str] = {}
        self.fail = False

    def pending_statements(self) -> list[Statement]:
        statements: list[Statement] = []
        if self.fail:
            statements.append(("INSERT INTO missing_table VALUES (?)", [(1,)]))
        rows = [(k, v) for k, v in self.pending.items()]
        statements.append(("INSERT OR REPLACE INTO kv VALUES (?, ?)", rows))
        return statements

    def clear_pending(self) -> None:
        self.pending.clear()

    def change(self, group: GroupCommit, key: str, value: str) -> None:
        self.pending[key] = value
        group.mark()


Threaded = tuple[sqlite3.Connection, GroupCommit, KeyedWriter]


def open_threaded(path: Path) -> Threaded:
    """A database file with table ``kv`` and a group commit on a commit thread over it."""
    conn = connect(path)
    conn.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)")
    group = GroupCommit(conn, interval=0.03, path=path)
    writer = KeyedWriter()
    group.register(writer)
    return conn, group, writer


@pytest.fixture
def threaded(tmp_path: Path) -> Iterator[Threaded]:
    conn, group, writer = open_threaded(tmp_path / "db.sqlite")
    yield conn, group, writer
    group.close()
    conn.close()


def kv(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT k, v FROM kv"))


@contextmanager
def write_lock(path: Path) -> Iterator[None]:
    """Another connection holds the database's write lock inside the block."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


def settle(group: GroupCommit, now: float) -> float:
    """Timer turns one gap apart until nothing is pending or in flight; the last turn's time."""
    deadline = time.monotonic() + 5
    while group.get_timer() is not None:
        assert time.monotonic() < deadline, "the commit thread did not finish"
        now += group.interval
        time.sleep(0.005)
        group.handle_timer(now)
    return now


def test_the_timer_hands_the_group_over_and_never_waits_for_sqlite(
    threaded: Threaded, tmp_path: Path
) -> None:
    conn, group, writer = threaded
    writer.change(group, "alice", "open")
    with write_lock(tmp_path / "db.sqlite"):
        started = time.monotonic()
        group.handle_timer(1.0)  # the commit thread now waits for the lock, not the caller
        assert time.monotonic() - started < 0.5
        assert writer.pending == {}  # taken: its rows were built on this thread
        assert group.get_timer() == pytest.approx(1.03)  # look at the group in flight later
        group.handle_timer(1.03)  # still waiting for the lock: nothing settled, no error
        assert kv(conn) == {}
        assert group.commits == 0
    settle(group, 1.03)
    assert kv(conn) == {"alice": "open"}
    assert group.commits == 1


def test_a_newer_state_waits_for_the_group_in_flight_and_commits_after_it(
    threaded: Threaded, tmp_path: Path
) -> None:
    conn, group, writer = threaded
    writer.change(group, "alice", "open")
    with write_lock(tmp_path / "db.sqlite"):
        group.handle_timer(1.0)  # group 1 in flight, blocked
        writer.change(group, "alice", "closed")
        writer.change(group, "bob", "open")
        group.handle_timer(1.03)  # group 1 still in flight: group 2 stays pending
        assert writer.pending == {"alice": "closed", "bob": "open"}
    settle(group, 1.03)
    assert kv(conn) == {"alice": "closed", "bob": "open"}
    assert group.commits == 2


def test_a_failed_group_is_logged_and_retried_before_newer_changes(
    threaded: Threaded, caplog: pytest.LogCaptureFixture
) -> None:
    conn, group, writer = threaded
    writer.fail = True
    writer.change(group, "alice", "open")
    group.handle_timer(1.0)
    writer.fail = False
    writer.change(group, "alice", "closed")  # newer than the failing group's state
    now = 1.0
    while not any("group commit failed" in r.message for r in caplog.records):
        assert now < 100, "the failure was never reported"
        time.sleep(0.005)
        now += 0.03
        group.handle_timer(now)
    assert kv(conn) == {}
    assert group.commits == 0
    conn.execute("CREATE TABLE missing_table (v INTEGER)")  # the retry can succeed now
    settle(group, now)
    assert kv(conn) == {"alice": "closed"}  # the retried group first, the newer one after it
    assert conn.execute("SELECT count(*) FROM missing_table").fetchone()[0] == 1
    assert group.commits == 2


def test_close_writes_the_group_in_flight_and_the_pending_changes(tmp_path: Path) -> None:
    conn, group, writer = open_threaded(tmp_path / "db.sqlite")
    writer.change(group, "alice", "open")
    group.handle_timer(1.0)  # in flight
    writer.change(group, "bob", "open")  # pending
    group.close()
    assert kv(conn) == {"alice": "open", "bob": "open"}
    conn.close()


def test_flush_raises_when_the_group_in_flight_failed_and_forgets_nothing(
    threaded: Threaded,
) -> None:
    conn, group, writer = threaded
    writer.fail = True
    writer.change(group, "alice", "open")
    group.handle_timer(1.0)
    writer.fail = False
    with pytest.raises(StoreError):
        group.flush()  # the failed group, written again here, fails again
    conn.execute("CREATE TABLE missing_table (v INTEGER)")
    group.flush()
    assert kv(conn) == {"alice": "open"}


def test_a_commit_hung_on_its_thread_is_cannot_store_after_the_grace(
    threaded: Threaded, tmp_path: Path
) -> None:
    """A commit waiting on another process's lock (or a stalled disk) has not failed yet, but
    what is answered meanwhile is not stored: the node must say so after the grace."""
    conn, group, writer = threaded
    with write_lock(tmp_path / "db.sqlite"):
        writer.change(group, "a", "1")
        group.handle_timer(100.0)  # handed over; the thread waits for the lock
        assert not group.cannot_store(100.0 + FAILING_GRACE - 0.1)
        assert group.cannot_store(100.0 + FAILING_GRACE)
    settle(group, 100.0 + FAILING_GRACE)
    assert kv(conn) == {"a": "1"}
    assert not group.cannot_store(200.0)
