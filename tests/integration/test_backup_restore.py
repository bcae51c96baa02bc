"""``presence-sip backup`` while a real node serves PUBLISHes, and ``restore`` after it stopped.

What an operator checks: the backup is taken without stopping the node and holds what was
published before it; ``restore`` refuses while a node runs; after a restore the node serves the
backed-up state (a watcher's fetch gets the note published before the backup, not the one after),
and the database it replaced is kept.
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from serve_process import (
    ServeProcess,
    UdpClient,
    build_request,
    parse_response,
    serve_command,
)

from presence_sip.cli import backup as backup_module
from presence_sip.sip import Request, parse_message
from presence_sip.storage.database import database_path
from presence_sip.storage.sqlite_hss import HSS_MIGRATIONS, SqliteSubscriberStore

DOMAIN = "example.test"
ALICE, BOB = "+447700900601", "+447700900602"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*serve_command(), *args], capture_output=True, text=True, timeout=60, check=False
    )


def publish(node: ServeProcess, user: str, note: str) -> int:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:{user}@{DOMAIN}">'
        f'<tuple id="t1"><status><basic>open</basic></status><note>{note}</note></tuple>'
        "</presence>"
    ).encode()
    uri = f"sip:{user}@{DOMAIN}"
    with UdpClient() as client:
        request = build_request(
            "PUBLISH", uri, client, from_=f"<{uri}>", body=body,
            headers=[("Event", "presence"), ("Expires", "3600"),
                     ("Content-Type", "application/pidf+xml")],
        )  # fmt: skip
        return client.request(request, node).status


def fetched_notes(node: ServeProcess, user: str) -> list[str]:
    """A watcher's fetch (SUBSCRIBE, Expires 0): the notes of the NOTIFY it gets."""
    uri = f"sip:{user}@{DOMAIN}"
    with UdpClient() as client:
        request = build_request(
            "SUBSCRIBE", uri, client, from_=f"<sip:{BOB}@{DOMAIN}>",
            headers=[("Event", "presence"), ("Expires", "0"),
                     ("Contact", f"<sip:{BOB}@{client.host}:{client.port}>"),
                     ("Accept", "application/pidf+xml")],
        )  # fmt: skip
        client.send(request, node)
        while (data := client.recv(5.0)) is not None:
            message = parse_message(data)
            if isinstance(message, Request) and message.method == "NOTIFY":
                return re.findall(r"<note[^>]*>([^<]*)</note>", message.body.decode())
            assert parse_response(data).status < 300
    raise AssertionError("no NOTIFY to the fetch")


def provision(data: Path) -> None:
    data.mkdir()
    store = SqliteSubscriberStore.open(data, DOMAIN)
    try:
        for user in (ALICE, BOB):
            store.add_subscriber(user, "secret")
    finally:
        store.close()


def backup_under_load(
    node: ServeProcess, data: Path, backup: Path
) -> tuple[subprocess.CompletedProcess[str], list[int]]:
    """``presence-sip backup`` while another thread keeps the node writing (PUBLISHes): its
    result, and the statuses of those PUBLISHes."""
    stop = threading.Event()
    statuses: list[int] = []

    def keep_publishing() -> None:
        while not stop.is_set():
            statuses.append(publish(node, BOB, f"busy {len(statuses)}"))

    writer = threading.Thread(target=keep_publishing)
    writer.start()
    try:
        return cli("backup", "--data", str(data), str(backup)), statuses
    finally:
        stop.set()
        writer.join()


def test_backup_while_serving_then_restore_after_the_node_stopped(
    serve_factory: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    data, backup = tmp_path / "net", tmp_path / "backups" / "net.sqlite"
    provision(data)
    backup.parent.mkdir()
    node = serve_factory(
        data_dir=data, domain=DOMAIN, auth="none", extra_args=["--default-policy", "allow"]
    )
    assert publish(node, ALICE, "before the backup") == 200
    result, statuses = backup_under_load(node, data, backup)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(
        rf"backed up {re.escape(str(database_path(data)))} to {re.escape(str(backup))}: "
        r"2 subscribers, 0 bindings, \d+ publications, 0 subscriptions, \d+ KiB\n",
        result.stdout,
    ), result.stdout
    assert statuses  # the node answered throughout
    assert set(statuses) == {200}
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600  # it holds credentials (HA1)
    assert sorted(p.name for p in backup.parent.iterdir()) == ["net.sqlite"]  # one file
    with closing(sqlite3.connect(backup)) as copy:
        assert copy.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert publish(node, ALICE, "after the backup") == 200

    refused = cli("restore", "--data", str(data), str(backup))
    lock = data / "node.lock"
    assert (refused.returncode, refused.stderr) == (
        2, f"presence-sip: error: node 'node' runs on {data}: stop it first (lock {lock})\n",
    )  # fmt: skip
    assert fetched_notes(node, ALICE) == ["after the backup"]  # nothing was touched
    node.stop()

    database_path(data).chmod(0o660)  # an operator's choice, kept by the restore
    restored = cli("restore", "--data", str(data), str(backup))
    assert restored.returncode == 0, restored.stderr
    assert stat.S_IMODE(database_path(data).stat().st_mode) == 0o660
    [kept] = data.glob("presence.sqlite.before-restore-*")
    assert f"the database it replaced is {kept}" in restored.stdout
    node.start()
    assert fetched_notes(node, ALICE) == ["before the backup"]
    node.stop()
    # The replaced database, its last commits included:
    with closing(sqlite3.connect(kept)) as old:
        rows = old.execute("SELECT * FROM presence_publications").fetchall()
    assert "after the backup" in str(rows)


def test_backup_and_restore_refuse_what_is_not_a_database(tmp_path: Path) -> None:
    nowhere = tmp_path / "nowhere"
    missing = cli("backup", "--data", str(nowhere), str(tmp_path / "x.sqlite"))
    assert (missing.returncode, missing.stderr) == (
        2, f"presence-sip: error: no database in {nowhere} (presence.sqlite does not exist)\n",
    )  # fmt: skip
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database" * 100)
    (tmp_path / "data").mkdir()
    result = cli("restore", "--data", str(tmp_path / "data"), str(junk))
    assert result.returncode == 1
    assert result.stderr.startswith(f"presence-sip: error: {junk} is not a presence-sip database")
    assert list((tmp_path / "data").iterdir()) == []  # nothing written


def test_restore_refuses_a_backup_of_a_later_release(tmp_path: Path) -> None:
    """A node of this release would refuse to open it: it must not replace the database."""
    data, backup = tmp_path / "net", tmp_path / "later.sqlite"
    provision(data)
    assert cli("backup", "--data", str(data), str(backup)).returncode == 0
    with closing(sqlite3.connect(backup)) as later, later:
        later.execute("UPDATE schema_versions SET version = 99 WHERE component = 'hss'")
        later.execute("INSERT INTO schema_versions VALUES ('billing', 1)")
    before = database_path(data).read_bytes()
    result = cli("restore", "--data", str(data), str(backup))
    assert (result.returncode, result.stderr) == (
        1,
        f"presence-sip: error: {backup} was written by a later presence-sip (billing version 1"
        " (this release knows up to 0); hss version 99 (this release knows up to "
        f"{len(HSS_MIGRATIONS)})): restore it with that release\n",
    )
    assert database_path(data).read_bytes() == before
    assert not list(data.glob("presence.sqlite.before-restore-*"))


def test_two_restores_within_a_second_keep_both_replaced_databases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first restore sets the original database aside; a second one in the same second
    (a script that restored the wrong file first) must not write over it."""
    data, first, second = tmp_path / "net", tmp_path / "first.sqlite", tmp_path / "second.sqlite"
    provision(data)
    for backup in (first, second):
        assert cli("backup", "--data", str(data), str(backup)).returncode == 0
    original = SqliteSubscriberStore.open(data, DOMAIN)
    try:
        original.add_subscriber("+447700900603", "secret")  # only in the original
    finally:
        original.close()
    monkeypatch.setattr(time, "strftime", lambda _: "20261127-120000")
    for backup in (first, second):
        assert backup_module.run_restore(argparse.Namespace(file=str(backup), data=str(data))) == 0
    kept = sorted(p.name for p in data.glob("presence.sqlite.before-restore-*"))
    assert kept == [
        "presence.sqlite.before-restore-20261127-120000",
        "presence.sqlite.before-restore-20261127-120000-2",
    ]
    with closing(sqlite3.connect(data / kept[0])) as old:
        [(count,)] = old.execute("SELECT count(*) FROM hss_subscribers").fetchall()
    assert count == 3  # the original's


def test_a_restore_as_root_leaves_the_database_to_the_nodes_user(tmp_path: Path) -> None:
    """Root restoring (a restore in a root shell, as an operator does) gives the restored
    database the replaced one's owner: left root's, the nodes' user could not open it and the
    next start failed.  Run as another user, the file is simply that user's."""
    data, backup = tmp_path / "net", tmp_path / "backup.sqlite"
    provision(data)
    assert cli("backup", "--data", str(data), str(backup)).returncode == 0
    nodes_user = (65534, 65534) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    os.chown(database_path(data), *nodes_user)
    assert backup_module.run_restore(argparse.Namespace(file=str(backup), data=str(data))) == 0
    restored = database_path(data).stat()
    assert (restored.st_uid, restored.st_gid) == nodes_user
