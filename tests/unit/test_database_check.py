"""storage.database_check: would a node start on this data directory, read without a trace?

The database is made by the stores themselves (``SqliteSubscriberStore``), the refusals compared
with what a :class:`~presence_sip.node.Node` says when it is built on the same directory.  (The
checks of file permissions need another user than root: ``tests/integration/test_serve_check.py``
runs them.)
"""

from __future__ import annotations

import os
import re
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from presence_sip.node import Node, NodeConfig
from presence_sip.sip.errors import ConfigError, StoreError
from presence_sip.storage.database import connect, database_path
from presence_sip.storage.database_check import check_database
from presence_sip.storage.sqlite_hss import HSS_MIGRATIONS, SqliteSubscriberStore

DOMAIN = "net-b.test"


def provision(data: Path, *users: str, domain: str = DOMAIN) -> None:
    store = SqliteSubscriberStore.open(data, domain)
    try:
        for user in users:
            store.add_subscriber(user, "secret")
    finally:
        store.close()


def node_refusal(data: Path, domain: str) -> str:
    """What a node built on ``data`` for ``domain`` says."""
    with pytest.raises(ConfigError) as refused:
        Node(NodeConfig(name="ps1", domain=domain, data_dir=str(data))).close()
    return str(refused.value)


def test_a_data_directory_to_be_made_is_a_new_database_and_is_not_made(tmp_path: Path) -> None:
    data = tmp_path / "var" / "net-b"
    state = check_database(data, DOMAIN, "ps1")
    assert (state.counts, state.describe()) == (None, "new database")
    assert state.path == database_path(data)
    assert not (tmp_path / "var").exists()
    data.mkdir(parents=True)  # made, empty: the node makes the database in it
    assert check_database(data, DOMAIN, "ps1").describe() == "new database"
    assert list(data.iterdir()) == []


def test_a_database_says_what_it_holds_and_nothing_is_left_beside_it(tmp_path: Path) -> None:
    data = tmp_path / "net-b"
    provision(data, "+447700900601", "+447700900602")
    before = sorted(p.name for p in data.iterdir())
    state = check_database(data, DOMAIN, "ps1")
    assert state.counts == {"subscribers": 2}
    assert state.describe() == "database: 2 subscribers"
    assert sorted(p.name for p in data.iterdir()) == before == ["presence.sqlite"]


def test_a_database_in_use_is_read_through_its_log(tmp_path: Path) -> None:
    """A node holds it open (WAL): what it committed is counted, not yet checkpointed."""
    data = tmp_path / "net-b"
    provision(data, "+447700900601")
    running = connect(database_path(data))
    try:
        running.execute("PRAGMA wal_autocheckpoint = 0")
        store = SqliteSubscriberStore(running, domain=DOMAIN)
        store.add_subscriber("+447700900602", "secret")
        assert Path(f"{database_path(data)}-wal").stat().st_size > 0
        assert check_database(data, DOMAIN, "ps1").describe() == "database: 2 subscribers"
        store.add_subscriber("+447700900603", "secret")  # (the writer was not held up)
    finally:
        running.close()


def test_a_log_left_without_its_shm_file_is_read(tmp_path: Path) -> None:
    """A ``-wal`` holding commits (here the whole schema and the domain: nothing was
    checkpointed) with no ``-shm`` beside it, as a copy of a live data directory may leave:
    read through it, not as an immutable file that would find an empty database."""
    live, copied = tmp_path / "live", tmp_path / "copy"
    live.mkdir()
    copied.mkdir()
    writer = connect(database_path(live))
    try:
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        SqliteSubscriberStore(writer, domain="net-a.test").add_subscriber("+447700900602", "pw")
        for name in ("presence.sqlite", "presence.sqlite-wal"):
            (copied / name).write_bytes((live / name).read_bytes())
    finally:
        writer.close()
    refusal = re.escape("database belongs to domain net-a.test, not net-b.test")
    with pytest.raises(ConfigError, match=refusal):
        check_database(copied, DOMAIN, "ps1")
    assert check_database(copied, "net-a.test", "ps1").describe() == "database: 1 subscriber"


def test_a_database_of_another_domain_is_refused_as_the_node_refuses_it(tmp_path: Path) -> None:
    data = tmp_path / "net-b"
    provision(data, "+447700900601", domain="net-a.test")
    with pytest.raises(ConfigError) as refused:
        check_database(data, DOMAIN, "ps1")
    assert (
        str(refused.value)
        == node_refusal(data, DOMAIN)
        == (f"data directory {data}: database belongs to domain net-a.test, not {DOMAIN}")
    )
    assert check_database(data, "NET-A.test", "ps1").counts == {"subscribers": 1}


def test_a_database_of_a_later_release_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "net-b"
    provision(data)
    with closing(sqlite3.connect(database_path(data))) as later, later:
        later.execute("UPDATE schema_versions SET version = 99 WHERE component = 'hss'")
    with pytest.raises(ConfigError) as refused:
        check_database(data, DOMAIN, "ps1")
    assert str(refused.value) == (
        f"database {database_path(data)} was written by a later presence-sip (hss version 99"
        f" (this release knows up to {len(HSS_MIGRATIONS)})): a node of this release refuses it"
    )
    with pytest.raises(StoreError, match="database schema of hss is version 99"):
        Node(NodeConfig(name="ps1", domain=DOMAIN, data_dir=str(data))).close()


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "net-b"
    data.mkdir()
    database_path(data).write_bytes(b"not a database, " * 512)
    with pytest.raises(
        ConfigError, match=re.escape(f"cannot read database {database_path(data)}: file is")
    ):
        check_database(data, DOMAIN, "ps1")


def test_a_data_directory_that_is_a_file_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "net-b"
    data.write_text("")
    with pytest.raises(ConfigError, match=re.escape(f"data directory {data} is not a directory")):
        check_database(data, DOMAIN, "ps1")
    with pytest.raises(
        ConfigError, match=re.escape(f"cannot create data directory {data / 'x'}: {data} is")
    ):
        check_database(data / "x", DOMAIN, "ps1")


def test_a_database_that_is_a_dangling_link_or_not_a_file_is_refused(tmp_path: Path) -> None:
    """A link to a file that is gone is no "new database" (the start would make an empty one
    where the link points); a directory or a FIFO in its place is named as such, not by
    SQLite's "disk I/O error"."""
    data = tmp_path / "net-b"
    data.mkdir()
    database_path(data).symlink_to(tmp_path / "moved-away.sqlite")
    with pytest.raises(ConfigError, match=r"is a link to .*moved-away\.sqlite, which does not"):
        check_database(data, DOMAIN, "ps1")
    database_path(data).unlink()
    database_path(data).mkdir()
    with pytest.raises(ConfigError, match="is not a regular file"):
        check_database(data, DOMAIN, "ps1")
    database_path(data).rmdir()
    os.mkfifo(database_path(data))
    with pytest.raises(ConfigError, match="is not a regular file"):
        check_database(data, DOMAIN, "ps1")
