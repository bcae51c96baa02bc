"""Would a node start on its data directory?  Read without a trace, for ``serve --check``.

What a start needs of ``DATA_DIR`` and its ``presence.sqlite``, checked as the user running the
check (the service's, under the systemd unit) while the node may be running:

* the directory and the files the node opens (the database, its ``-wal`` and ``-shm`` files, the
  node's lock file) readable and writable: after an ``hss`` command that made them as root
  they may be root's, and the node cannot open them;
* a data directory that does not exist yet can be made (its first existing parent writable);
* the schema not written by a later release (a node of this one refuses it: a downgrade);
* the domain recorded in the database the node's own (the HSS keeps digest HA1s, bound to the
  realm: with another, every subscriber would fail authentication; the node refuses it).

Nothing is written, no lock is taken: the database is read through the write-ahead log a running
node keeps (``mode=ro``, a reader that never blocks its writer), or, when no node has it open
(no ``-wal`` beside it), as an immutable file, so that no log file is left behind (owned by
whoever ran the check).  A ``-wal`` without its ``-shm`` (a stop without a checkpoint) still
holds commits, the schema and the domain among them: it is read with ``mode=ro`` too (SQLite
then makes the ``-shm`` beside it; an immutable reader would not see them).
"""

from __future__ import annotations

import importlib
import os
import pwd
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from presence_sip.hss.records import InvalidRecord, normalize_domain
from presence_sip.sip.errors import ConfigError, StoreError
from presence_sip.storage.database import (
    DATABASE_NAME,
    DomainMismatch,
    connect_without_trace,
    database_path,
    get_setting,
    newer_schemas,
)
from presence_sip.storage.node_lock import lock_path

STORES = (
    "presence_sip.storage.sqlite_bindings",
    "presence_sip.storage.sqlite_hss",
    "presence_sip.storage.sqlite_presence",
)
"""The modules whose tables a database holds, each registering its migrations when imported (on
demand: the presence stores load lxml)."""

COUNTED_TABLES = (
    ("hss_subscribers", "subscribers"),
    ("bindings", "bindings"),
    ("presence_publications", "publications"),
    ("presence_subscriptions", "subscriptions"),
)
"""What a summary of a database counts, when it has the table (a node creates its own)."""

LOG_SUFFIXES = ("-wal", "-shm")


def register_every_store() -> None:
    """Import :data:`STORES`, so that every component's migrations are known."""
    for module in STORES:
        importlib.import_module(module)


def table_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """The rows of each table of :data:`COUNTED_TABLES` the database has, by label."""
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    counts = {}
    for table, label in COUNTED_TABLES:
        if table in tables:  # (a name of ours, never input)
            query = f"SELECT count(*) FROM {table}"  # noqa: S608
            counts[label] = int(conn.execute(query).fetchone()[0])
    return counts


def describe_counts(counts: dict[str, int]) -> str:
    """``2 subscribers, 1 binding, ...`` of :func:`table_counts`, or ``empty``."""
    held = ", ".join(
        f"{count} {label if count != 1 else label.removesuffix('s')}"
        for label, count in counts.items()
    )
    return held or "empty"


@dataclass(frozen=True, slots=True)
class DatabaseState:
    """What :func:`check_database` found."""

    path: Path
    """The database file."""
    counts: dict[str, int] | None
    """Rows of :data:`COUNTED_TABLES`; None for a database the node's first start creates."""

    def describe(self) -> str:
        """``new database``, or what the database holds."""
        if self.counts is None:
            return "new database"
        return f"database: {describe_counts(self.counts)}"


def check_database(data_dir: str | Path, domain: str, node: str) -> DatabaseState:
    """Whether node ``node`` of network ``domain`` could start on ``data_dir``; a
    :class:`ConfigError` saying why not."""
    path = database_path(data_dir)
    if not _directory_usable(Path(data_dir)):
        return DatabaseState(path, None)
    _require_access(lock_path(data_dir, node), os.R_OK | os.W_OK, "lock file")
    if path.is_symlink() and not path.exists():
        raise ConfigError(
            f"database {path} is a link to {os.readlink(path)}, which does not exist"
            " (a start would make a new, empty database there)"
        )
    if not path.exists():
        return DatabaseState(path, None)
    if not path.is_file():
        raise ConfigError(f"database {path} is not a regular file")
    for name in (DATABASE_NAME, *(DATABASE_NAME + s for s in LOG_SUFFIXES)):
        _require_access(Path(data_dir) / name, os.R_OK | os.W_OK, "database file")
    conn = _connect_without_trace(path)
    try:
        counts = _read(conn, path, data_dir, domain)
    except (sqlite3.Error, StoreError) as exc:
        raise ConfigError(f"cannot read database {path}: {exc}") from None
    finally:
        conn.close()
    return DatabaseState(path, counts)


def _directory_usable(data_dir: Path) -> bool:
    """True when ``data_dir`` exists and the node may work in it, False when it does not
    exist and the node may make it; :class:`ConfigError` otherwise."""
    if data_dir.exists():
        if not data_dir.is_dir():
            raise ConfigError(f"data directory {data_dir} is not a directory")
        _require_access(data_dir, os.R_OK | os.W_OK | os.X_OK, "data directory")
        return True
    parent = next(p for p in data_dir.absolute().parents if p.exists())
    if not parent.is_dir() or not _allowed(parent, os.W_OK | os.X_OK):
        raise ConfigError(
            f"cannot create data directory {data_dir}: {parent} is not a directory"
            f" {_user()} may write ({_ownership(parent)})"
        )
    return False


def _require_access(path: Path, mode: int, what: str) -> None:
    """:class:`ConfigError` unless ``path`` is missing or allows ``mode`` (reading and writing,
    and for a directory entering it) to this user."""
    if path.exists() and not _allowed(path, mode):
        raise ConfigError(
            f"{what} {path} is not readable and writable by user {_user()} ({_ownership(path)}):"
            " a node run as this user cannot open it (left by a restore, an hss command or a"
            " serve run as another user?)"
        )


def _allowed(path: Path, mode: int) -> bool:
    return os.access(path, mode, effective_ids=os.access in os.supports_effective_ids)


def _user() -> str:
    return _user_name(os.geteuid())


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _ownership(path: Path) -> str:
    status = path.stat()
    return f"owner {_user_name(status.st_uid)}, mode {status.st_mode & 0o7777:04o}"


def _connect_without_trace(path: Path) -> sqlite3.Connection:
    """A read-only connection that writes nothing beside ``path`` (``connect_without_trace``);
    :class:`ConfigError` when it cannot be opened."""
    try:
        return connect_without_trace(path)
    except StoreError as exc:
        raise ConfigError(str(exc)) from None


def _read(
    conn: sqlite3.Connection, path: Path, data_dir: str | Path, domain: str
) -> dict[str, int]:
    """The counts of the database; :class:`ConfigError` when a node would refuse it."""
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    if "schema_versions" in tables:
        register_every_store()
        newer = newer_schemas(conn)
        if newer:
            raise ConfigError(
                f"database {path} was written by a later presence-sip ({'; '.join(newer)}):"
                " a node of this release refuses it"
            )
    if "settings" in tables:
        stored, requested = get_setting(conn, "domain"), _normalized(domain)
        if stored is not None and stored != requested:
            # (the node's own words: Node._build, resolve_domain)
            raise ConfigError(f"data directory {data_dir}: {DomainMismatch(stored, requested)}")
    return table_counts(conn)


def _normalized(domain: str) -> str:
    try:
        return normalize_domain(domain)
    except InvalidRecord as exc:
        raise ConfigError(str(exc)) from None
