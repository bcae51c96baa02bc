"""``presence-sip backup FILE`` and ``presence-sip restore FILE``: a network's database, whole.

One SQLite file per network holds everything a node keeps (subscribers and their credentials,
rules, bindings, publications, subscriptions).  Copying that file while a node runs is not a
backup: the last commits sit in its write-ahead log beside it, and a copy taken during a
checkpoint is torn.  ``backup`` uses SQLite's online backup API: a consistent snapshot taken
while the nodes keep serving (in WAL mode a reader does not stop the writer), checked, then put
in place atomically as one self-contained file (rollback journal mode, no ``-wal`` beside it).

``restore`` puts such a file back: only while no node runs on the data directory (each holds
its ``NAME.lock``; they are held by ``restore`` while it works, so none starts meanwhile), after
checking the file is a presence-sip database this release can run (an older one is migrated
when a node opens it), and after saving the database it replaces, with its log, as
``presence.sqlite.before-restore-YYYYmmdd-HHMMSS``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from presence_sip.sip.errors import ConfigError, StoreError
from presence_sip.storage.database import (
    DATABASE_MODE,
    DATABASE_NAME,
    database_path,
    map_errors,
    newer_schemas,
)
from presence_sip.storage.database_check import (
    describe_counts,
    register_every_store,
    table_counts,
)

DEFAULT_DATA_DIR = "./data"

WAL_FILES = ("-wal", "-shm")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    backup = subparsers.add_parser(
        "backup",
        help="copy a network's database, consistent, while its nodes run",
        description="Copy DATA/presence.sqlite to FILE with SQLite's online backup (nodes keep "
        "serving), check the copy and put it in place atomically.",
    )
    backup.add_argument("file", metavar="FILE", help="the copy to write (replaced if it exists)")
    _data_argument(backup)
    backup.set_defaults(func=run_backup)
    restore = subparsers.add_parser(
        "restore",
        help="put a backup back while no node runs on the data directory",
        description="Replace DATA/presence.sqlite with FILE (made by backup); the replaced "
        "database is kept beside it as presence.sqlite.before-restore-<time>.",
    )
    restore.add_argument("file", metavar="FILE", help="a database made by presence-sip backup")
    _data_argument(restore)
    restore.set_defaults(func=run_restore)


def _data_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", default=DEFAULT_DATA_DIR, help=f"data directory (default {DEFAULT_DATA_DIR})"
    )


def run_backup(args: argparse.Namespace) -> int:
    source = database_path(args.data)
    if not source.is_file():
        raise ConfigError(f"no database in {args.data} ({DATABASE_NAME} does not exist)")
    target = Path(args.file)
    if target.resolve() == source.resolve():
        raise ConfigError(f"{target} is the database itself")
    counts = copy_database(source, target)
    print(f"backed up {source} to {target}: {describe_counts(counts)}, {_size(target)}")
    return 0


def run_restore(args: argparse.Namespace) -> int:
    backup = Path(args.file)
    if not backup.is_file():
        raise ConfigError(f"cannot read {backup}: no such file")
    data = Path(args.data)
    if not data.is_dir():
        raise ConfigError(f"no data directory {data}")
    with _nodes_stopped(data):
        counts = check_backup(backup, runnable=True)
        current = database_path(data)
        saved, mode, owner = None, DATABASE_MODE, _owner(data)
        if current.exists():
            stamp = time.strftime("%Y%m%d-%H%M%S")
            saved = _unused(current.with_name(f"{DATABASE_NAME}.before-restore-{stamp}"))
            copy_database(current, saved)
            mode = stat.S_IMODE(current.stat().st_mode)  # (an operator's choice is kept)
            owner = _owner(current)
        copy_database(backup, current, replace_log=True, mode=mode, owner=owner)
    kept = f"; the database it replaced is {saved}" if saved is not None else ""
    print(f"restored {backup} to {current}: {describe_counts(counts)}{kept}")
    return 0


def _owner(path: Path) -> tuple[int, int] | None:
    """Who the restored database is to belong to when root restores it: the owner of the one
    it replaces (else of the data directory), so that the nodes' user can still open it; None
    for any other user, whose files are its own."""
    if os.geteuid() != 0:
        return None
    status = path.stat()
    return status.st_uid, status.st_gid


def _unused(path: Path) -> Path:
    """``path``, or the first of ``path-2``, ``path-3``... that does not exist: a second restore
    within the same second must not write over the database the first one set aside."""
    candidate, number = path, 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.name}-{number}")
    return candidate


def copy_database(
    source: Path,
    target: Path,
    *,
    replace_log: bool = False,
    mode: int = 0o600,
    owner: tuple[int, int] | None = None,
) -> dict[str, int]:
    """Copy ``source`` (its log's commits included) to ``target``, mode ``mode`` (0600: it
    holds credentials) and, given, ``owner`` (uid, gid), through a temporary file and a rename,
    checked first; the counts of
    :data:`~presence_sip.storage.database_check.COUNTED_TABLES` in the copy.

    ``replace_log``: ``target`` is a live database path whose old ``-wal``/``-shm`` files must
    go with the old file (SQLite would replay the old log into the new file)."""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with map_errors(f"cannot back up {source} to {target}"):
            _online_copy(source, temporary)
            counts = check_backup(temporary)
            os.chmod(temporary, mode)
            if owner is not None:
                os.chown(temporary, *owner)
            if replace_log:
                for suffix in WAL_FILES:
                    Path(f"{target}{suffix}").unlink(missing_ok=True)
            os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return counts


def _online_copy(source: Path, target: Path) -> None:
    """SQLite's backup API: a snapshot as of one read transaction, however long the copy."""
    target.unlink(missing_ok=True)  # (a temporary file left by a copy that was killed)
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # credentials: 0600
    reader = sqlite3.connect(f"file:{source.resolve().as_posix()}?mode=ro", uri=True)
    try:
        writer = sqlite3.connect(target, isolation_level=None)
        try:
            reader.backup(writer)
            writer.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        finally:
            writer.close()
    finally:
        reader.close()
    with open(target, "rb+") as handle:
        os.fsync(handle.fileno())


def check_backup(path: Path, *, runnable: bool = False) -> dict[str, int]:
    """A presence-sip database SQLite finds whole (``runnable``: and not written by a later
    release, which a node of this one would refuse to open): the counts of
    :data:`~presence_sip.storage.database_check.COUNTED_TABLES`; :class:`StoreError` otherwise."""
    try:
        conn = sqlite3.connect(f"file:{path.resolve().as_posix()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None
    try:
        with map_errors(f"{path} is not a presence-sip database"):
            [verdict] = conn.execute("PRAGMA quick_check").fetchone()
            if verdict != "ok":
                raise StoreError(f"{path} is damaged: {verdict}")
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
            if "schema_versions" not in tables:
                raise StoreError(f"{path} is not a presence-sip database (no schema_versions)")
            if runnable:
                _refuse_later_release(conn, path)
            return table_counts(conn)
    finally:
        conn.close()


def _refuse_later_release(conn: sqlite3.Connection, path: Path) -> None:
    """:class:`StoreError` when a later release wrote the database (a node of this one would
    refuse to open it: a restore must not put it in place of one that runs)."""
    register_every_store()
    newer = newer_schemas(conn)
    if newer:
        raise StoreError(
            f"{path} was written by a later presence-sip ({'; '.join(newer)}): "
            "restore it with that release"
        )


@contextlib.contextmanager
def _nodes_stopped(data: Path) -> Iterator[None]:
    """Hold every node's lock file in ``data`` (``storage/node_lock.py``): a node that runs
    holds its own, so taking them all says none runs, and keeps any from starting."""
    held: list[int] = []
    try:
        for lock in sorted(data.glob("*.lock")):
            fd = os.open(lock, os.O_RDWR)
            held.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise ConfigError(
                    f"node {lock.stem!r} runs on {data}: stop it first (lock {lock})"
                ) from None
        yield
    finally:
        for fd in held:
            os.close(fd)


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 1024:.0f} KiB"


__all__ = ["check_backup", "copy_database", "register", "run_backup", "run_restore"]
