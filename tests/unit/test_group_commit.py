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


def test_the_gap_shortens_while_the_process_has_cpu_to_spare() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (v INTEGER)")
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
