"""Group commit: one transaction per interval, nothing lost on close, retried after a failure."""

from __future__ import annotations

import sqlite3

import pytest

from presence_sip.sip.errors import StoreError
from presence_sip.storage.group_commit import GroupCommit


class RowWriter:
    """Queues values; writes them into table ``t`` when the group commits."""

    def __init__(self) -> None:
        self.pending: list[int] = []
        self.fail = False

    def write_pending(self, conn: sqlite3.Connection) -> None:
        if self.fail:
            conn.execute("INSERT INTO missing_table VALUES (1)")
        conn.executemany("INSERT INTO t VALUES (?)", [(v,) for v in self.pending])

    def clear_pending(self) -> None:
        self.pending.clear()


def setup() -> tuple[sqlite3.Connection, GroupCommit, RowWriter]:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (v INTEGER)")
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
