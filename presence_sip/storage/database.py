"""One SQLite file per network, shared by every component, with per-component migrations.

``DATA_DIR/presence.sqlite`` is opened in WAL mode so that several processes on one host (the
nodes of a network, the ``presence-sip hss`` CLI) read while one writes.  Each component (HSS,
registrar, charging, ...) registers an ordered list of SQL migrations under its name;
:func:`migrate` applies the missing ones inside ``BEGIN IMMEDIATE``, so two processes starting
together apply each migration exactly once.  Applied versions live in
``schema_versions(component, version)``.

This module is an IO edge: ``sqlite3.Error`` and ``OSError`` become ``StoreError`` here.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from presence_sip.sip.errors import ConfigError, StoreError

__all__ = [
    "BUSY_TIMEOUT_MS",
    "DATABASE_NAME",
    "DomainNotRecorded",
    "check_domain",
    "check_recorded_domain",
    "connect",
    "connect_without_trace",
    "database_path",
    "get_setting",
    "map_errors",
    "migrate",
    "newer_schemas",
    "open_network_database",
    "register_migrations",
    "resolve_domain",
    "schema_version",
    "set_setting",
    "transaction",
]

DATABASE_NAME = "presence.sqlite"
"""File name of a network's database inside its data directory."""

BUSY_TIMEOUT_MS = 10_000
"""How long a writer waits for another process's write lock before failing."""

_SAVEPOINT = "presence_sip_nested"

_MIGRATIONS: dict[str, tuple[str, ...]] = {}

_CORE_MIGRATIONS = (
    """
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
)


@contextmanager
def map_errors(action: str) -> Iterator[None]:
    """Turn ``sqlite3.Error``/``OSError`` raised inside into ``StoreError("<action>: ...")``."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"{action}: {exc}") from exc


def database_path(data_dir: str | Path) -> Path:
    """``DATA_DIR/presence.sqlite``."""
    return Path(data_dir) / DATABASE_NAME


JOURNAL_SIZE_LIMIT = 16 * 1024 * 1024
"""Bytes a write-ahead log file keeps once it has been checkpointed and starts over."""


def connect(path: str | Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """Open (creating if needed) a database file with the project's pragmas.

    Autocommit mode (``isolation_level=None``): transactions are explicit, see :func:`transaction`.
    WAL journal, ``synchronous=NORMAL`` (durable across process crashes; a power loss may lose
    the last commits, never corrupts), foreign keys enforced, busy timeout for concurrent writers.
    ``check_same_thread=False`` for a connection opened here and used by another thread.
    """
    with map_errors(f"cannot open database {path}"):
        conn = sqlite3.connect(
            path,
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=check_same_thread,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = _enter_wal_mode(conn)
            if str(mode).lower() != "wal":
                raise StoreError(f"cannot open database {path}: WAL mode refused ({mode})")
            conn.execute("PRAGMA synchronous = NORMAL")
            # When the log starts over, its file is cut back to this (else it keeps its peak).
            conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
            conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            conn.close()
            raise
    return conn


_WAL_SWITCH_PAUSE_S = 0.005
"""The pause between tries of a WAL switch that found the file busy."""


def _enter_wal_mode(conn: sqlite3.Connection) -> str:
    """Switch the file to WAL (a no-op when it is already) and return the mode it is in.

    The switch of a new file needs its exclusive lock, and SQLite answers "database is locked"
    at once, without the busy handler, to a connection that holds the shared lock and asks for
    it while another does the same (its deadlock rule): processes creating one database
    together (a node and an ``hss`` command at first start) would see it.  So it is tried again
    for up to :data:`BUSY_TIMEOUT_MS`, as any other write waits.  A try that does meet the busy
    handler (another process holds the exclusive lock) waits only for what is left of that time,
    so the whole switch is bounded by it (it could take twice as long); the connection's own
    busy timeout is put back afterwards, whatever the outcome."""
    normal_timeout_ms = int(conn.execute("PRAGMA busy_timeout").fetchone()[0])
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    try:
        while True:
            try:
                return _try_wal_mode(conn, deadline)
            except sqlite3.OperationalError as exc:
                busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() + _WAL_SWITCH_PAUSE_S >= deadline:
                    raise
            time.sleep(_WAL_SWITCH_PAUSE_S)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {normal_timeout_ms}")


def _try_wal_mode(conn: sqlite3.Connection, deadline: float) -> str:
    """One ``PRAGMA journal_mode = WAL``, its busy handler waiting until *deadline* at most."""
    remaining_ms = max(0, math.ceil((deadline - time.monotonic()) * 1000))
    conn.execute(f"PRAGMA busy_timeout = {remaining_ms}")
    return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])


def connect_read_only(path: str | Path) -> sqlite3.Connection:
    """Open an existing database for reading only, for a user who may not write it (an
    auditor's account, a backup copy).

    SQLite reads a WAL-mode file read-only only if its ``-shm`` file exists or can be made; in
    a directory this user may not write, and after a clean close left none, the file is read
    as immutable instead (a snapshot: changes a node writes meanwhile may be missed)."""
    location = Path(path).resolve().as_posix()
    for mode in ("mode=ro", "immutable=1"):
        conn = sqlite3.connect(f"file:{location}?{mode}", uri=True, isolation_level=None)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            conn.close()
            last = exc
            continue
        return conn
    raise StoreError(f"cannot read database {path}: {last}")


def connect_without_trace(path: str | Path) -> sqlite3.Connection:
    """A read-only connection that writes nothing beside ``path``: through its write-ahead log
    when there is one (a node's that has it open), else as an immutable file (SQLite would
    make ``-wal`` and ``-shm`` files for a read-only reader, and leave them, owned by whoever
    read)."""
    logged = Path(f"{path}-wal").exists()  # (immutable=1 would not read what it holds)
    mode = "mode=ro" if logged else "immutable=1"
    location = Path(path).resolve().as_posix()
    with map_errors(f"cannot read database {path}"):
        return sqlite3.connect(f"file:{location}?{mode}", uri=True, isolation_level=None)


DATA_DIR_MODE = 0o750
"""A data directory made here: no access for others (its database holds credentials)."""
DATABASE_MODE = 0o640
"""A database file made here: the HA1 digests it keeps are as good as the passwords for the
network's realm, so others may not read it (a group may: an auditor's account, a backup job);
SQLite gives its ``-wal`` and ``-shm`` files the same mode.  Existing files keep theirs."""


def open_network_database(data_dir: str | Path) -> sqlite3.Connection:
    """Create *data_dir* if needed and open its ``presence.sqlite`` with core tables migrated."""
    path = database_path(data_dir)
    with map_errors(f"cannot create data directory {data_dir}"):
        Path(data_dir).mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, DATABASE_MODE))
    conn = connect(path)
    try:
        migrate(conn, "core")
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the body atomically: ``BEGIN IMMEDIATE`` ... ``COMMIT``, ``ROLLBACK`` on any exception.

    ``IMMEDIATE`` takes the write lock up front, so two processes cannot both read then fail to
    upgrade.  Nested use becomes a savepoint: an inner failure caught by the caller undoes only
    the inner part.  SQLite errors leave as ``StoreError``.
    """
    nested = conn.in_transaction
    with map_errors("database error"):
        conn.execute(f"SAVEPOINT {_SAVEPOINT}" if nested else "BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException as exc:
        _undo(conn, nested)
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"database error: {exc}") from exc
        raise
    with map_errors("database error"):
        conn.execute(f"RELEASE {_SAVEPOINT}" if nested else "COMMIT")


def _undo(conn: sqlite3.Connection, nested: bool) -> None:
    """Roll back the (inner) transaction, unless SQLite already did (it may, on some errors)."""
    if not conn.in_transaction:
        return
    with map_errors("database error"):
        if nested:
            conn.execute(f"ROLLBACK TO {_SAVEPOINT}")
            conn.execute(f"RELEASE {_SAVEPOINT}")
        else:
            conn.execute("ROLLBACK")


def register_migrations(component: str, migrations: Sequence[str]) -> None:
    """Declare *component*'s schema history: migration *i* (from 0) brings it to version *i+1*.

    Append new migrations, never edit applied ones.  Registering the same list again is a no-op;
    a different list under the same name is a bug (``ValueError``).
    """
    new = tuple(migrations)
    old = _MIGRATIONS.setdefault(component, new)
    if old != new:
        raise ValueError(f"migrations for {component!r} registered twice with different content")


def schema_version(conn: sqlite3.Connection, component: str) -> int:
    """The version of *component* applied to this database (0 if none)."""
    with map_errors("cannot read schema version"):
        _create_versions_table(conn)
        row = conn.execute(
            "SELECT version FROM schema_versions WHERE component = ?", (component,)
        ).fetchone()
    return 0 if row is None else int(row[0])


def newer_schemas(conn: sqlite3.Connection) -> list[str]:
    """What in this database a later release wrote: each component whose version is past the
    migrations registered here, or that has none registered (a component added later), as
    ``"hss version 9 (this release knows up to 4)"``.  What :func:`migrate` would refuse, once
    every store module is imported (each registers its migrations)."""
    with map_errors("cannot read schema versions"):
        rows = conn.execute("SELECT component, version FROM schema_versions").fetchall()
    newer = []
    for component, version in sorted(rows):
        known = len(_MIGRATIONS.get(component, ()))
        if int(version) > known:
            newer.append(f"{component} version {version} (this release knows up to {known})")
    return newer


def migrate(conn: sqlite3.Connection, component: str) -> int:
    """Apply *component*'s missing migrations in one transaction; return its version.

    ``StoreError`` if the database is newer than this code knows (written by a later release).
    """
    migrations = _MIGRATIONS.get(component)
    if migrations is None:
        raise ValueError(f"no migrations registered for {component!r}")
    if schema_version(conn, component) == len(migrations):
        return len(migrations)  # up to date: no write lock taken
    with transaction(conn), map_errors(f"cannot migrate {component} schema"):
        current = schema_version(conn, component)
        if current > len(migrations):
            raise StoreError(
                f"database schema of {component} is version {current}, "
                f"this presence-sip knows up to {len(migrations)}"
            )
        for script in migrations[current:]:
            for statement in _statements(script):
                conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_versions (component, version) VALUES (?, ?) "
            "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
            (component, len(migrations)),
        )
    return len(migrations)


def get_setting(conn: sqlite3.Connection, key: str) -> str | None:
    """A value of the shared ``settings`` table, or ``None``."""
    with map_errors("cannot read settings"):
        row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def set_setting(conn: sqlite3.Connection, key: str, value: str) -> None:
    """Create or replace a value of the shared ``settings`` table."""
    with transaction(conn):
        conn.execute(
            "INSERT INTO settings (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


class DomainNotRecorded(ConfigError):
    """A new database, or one that records no domain yet, opened without a domain: nothing may
    guess it (its HA1s would be computed for the wrong realm, and a node of the right domain
    would refuse the database)."""


_NO_DOMAIN = "this database records no network domain yet: the first use must name it"


class DomainMismatch(ConfigError):
    """The database records another network domain than the one asked for."""

    def __init__(self, stored: str, requested: str) -> None:
        super().__init__(f"database belongs to domain {stored}, not {requested}")
        self.stored = stored


def check_domain(conn: sqlite3.Connection, requested: str | None) -> None:
    """Refuse what :func:`resolve_domain` would, reading only (the ``settings`` table if there
    is one: a file made by another release, or empty), so before anything is migrated: no
    domain recorded and none requested (:class:`DomainNotRecorded`), or a *requested* one that
    differs from the recorded one (:class:`DomainMismatch`)."""
    with map_errors("cannot read settings"):
        stored = _recorded_domain(conn)
    _agreed_domain(stored, requested)


def check_recorded_domain(path: str | Path, requested: str | None) -> None:
    """:func:`check_domain` on the database file at ``path``, read without a trace
    (:func:`connect_without_trace`): what a store would refuse is refused before the file is
    opened for writing (the switch to WAL, the migrations).  No file: a new database, which
    needs *requested* (nothing may guess the realm of its HA1s).  A file this cannot read is
    left to the store's opening, which says why (not a database, not readable, ...)."""
    if not Path(path).exists():
        if requested is None:
            raise DomainNotRecorded("no database yet, and making one needs the network domain")
        return
    try:
        conn = connect_without_trace(path)
        try:
            stored = _recorded_domain(conn)
        finally:
            conn.close()
    except (sqlite3.Error, StoreError):
        return
    _agreed_domain(stored, requested)


def _recorded_domain(conn: sqlite3.Connection) -> str | None:
    table = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'settings'"
    ).fetchone()
    if table is None:
        return None
    row = conn.execute("SELECT value FROM settings WHERE key = 'domain'").fetchone()
    return None if row is None else str(row[0])


def _agreed_domain(stored: str | None, requested: str | None) -> str:
    """The domain of a database that records *stored* opened for *requested*, or the refusal:
    neither (:class:`DomainNotRecorded`), or two that differ (:class:`DomainMismatch`)."""
    if stored is None:
        if requested is None:
            raise DomainNotRecorded(_NO_DOMAIN)
        return requested
    if requested is not None and requested != stored:
        raise DomainMismatch(stored, requested)
    return stored


def resolve_domain(conn: sqlite3.Connection, requested: str | None) -> str:
    """The network domain this database belongs to.

    The first opener records *requested*; later openers get the recorded one, and a *requested*
    domain that differs is a ``ConfigError`` (HA1s are tied to the realm).  No domain recorded
    and none requested: :class:`DomainNotRecorded`.
    """
    stored = get_setting(conn, "domain")
    if stored is None and requested is not None:
        with transaction(conn):
            stored = get_setting(conn, "domain")  # another process may have just written it
            if stored is None:
                stored = requested
                set_setting(conn, "domain", stored)
    return _agreed_domain(stored, requested)


def _create_versions_table(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_versions ("
        " component TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID"
    )


def _statements(script: str) -> Iterator[str]:
    """Split a migration into statements (``executescript`` would commit our transaction)."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                yield pending
            pending = ""
    if pending.strip(" \t\r\n;"):
        raise ValueError(f"incomplete SQL statement in migration: {pending.strip()[:60]!r}")


register_migrations("core", _CORE_MIGRATIONS)
