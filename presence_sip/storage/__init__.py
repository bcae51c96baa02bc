"""Storage: SQLite (WAL, one file per network) and in-memory implementations of the core's ports.

``database`` opens a network's ``presence.sqlite`` and runs per-component migrations; each
``sqlite_*`` module implements one port on it, each ``memory_*`` module the same port for tests.

Durability (issue 8): a node's presence and registrar stores write through ``group_commit``:
publications, subscriptions, NOTIFY CSeq blocks and bindings are committed together at most
every 30 ms, off the request path (by a commit thread with its own connection), so the 200
may leave up to ~30 ms before its change is on disk.  A clean stop (SIGTERM/SIGINT) flushes
first and loses nothing; a crash can lose that window.  The HSS store (``sqlite_hss``) still
commits every write before returning.
"""

from __future__ import annotations

from presence_sip.storage.database import (
    DATABASE_NAME,
    connect,
    database_path,
    migrate,
    open_network_database,
    register_migrations,
    transaction,
)
from presence_sip.storage.memory_hss import MemorySubscriberStore
from presence_sip.storage.sqlite_hss import SqliteSubscriberStore

__all__ = [
    "DATABASE_NAME",
    "MemorySubscriberStore",
    "SqliteSubscriberStore",
    "connect",
    "database_path",
    "migrate",
    "open_network_database",
    "register_migrations",
    "transaction",
]
