"""Background threads (group commit, WAL checkpoint) run at a lower priority than the loop."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path

from presence_sip.runtime.priority import BACKGROUND_NICENESS, lower_thread_priority
from presence_sip.storage.checkpoint import Checkpointer
from presence_sip.storage.database import connect
from presence_sip.storage.group_commit import GroupCommit, Statement


def nice_of(thread: threading.Thread) -> int:
    assert thread.native_id is not None
    return os.getpriority(os.PRIO_PROCESS, thread.native_id)


def test_only_the_calling_thread_is_lowered() -> None:
    main = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen: list[int] = []

    def work() -> None:
        lower_thread_priority()
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == [min(main + BACKGROUND_NICENESS, 19)]  # (19: the lowest priority)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main


class OneRow:
    def pending_statements(self) -> list[Statement]:
        return [("INSERT INTO t VALUES (?)", [(1,)])]

    def clear_pending(self) -> None:
        pass


def test_the_commit_and_checkpoint_threads_run_below_the_loop(tmp_path: Path) -> None:
    main = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    path = tmp_path / "presence.sqlite"
    conn = connect(path)
    conn.execute("CREATE TABLE t (v INTEGER)")
    checkpointer = Checkpointer(conn, path)
    group = GroupCommit(conn, interval=0.01, path=path)
    group.register(OneRow())
    try:
        group.mark()
        now = 1.0
        deadline = time.monotonic() + 5
        while group.get_timer() is not None:  # handed to the commit thread, then settled
            assert time.monotonic() < deadline, "the commit thread did not finish"
            group.handle_timer(now)
            now += 0.01
            time.sleep(0.005)
        assert group.commits == 1
        with closing(sqlite3.connect(path)) as reader:
            assert reader.execute("SELECT v FROM t").fetchall() == [(1,)]
        named = {t.name.split("_")[0]: t for t in threading.enumerate()}
        lowered = min(main + BACKGROUND_NICENESS, 19)
        assert nice_of(named["group-commit"]) == lowered  # (set before its first group)
        deadline = time.monotonic() + 5  # the checkpoint thread lowers itself when it starts
        while nice_of(named["wal-checkpoint"]) != lowered and time.monotonic() < deadline:
            time.sleep(0.01)
        assert nice_of(named["wal-checkpoint"]) == lowered
    finally:
        group.close()
        checkpointer.close()
        conn.close()
