"""SQLite :class:`BindingStore`: registrations survive a restart (issue 4)."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence
from typing import Any

from presence_sip.registrar.bindings import Binding
from presence_sip.storage.database import (
    map_errors,
    migrate,
    register_migrations,
    transaction,
)
from presence_sip.storage.group_commit import GroupCommit, Statement

COMPONENT = "registrar"

log = logging.getLogger(__name__)

register_migrations(
    COMPONENT,
    (
        """
        CREATE TABLE bindings (
            aor TEXT NOT NULL,
            contact TEXT NOT NULL,
            params TEXT NOT NULL,
            expires_at REAL NOT NULL,
            q REAL NOT NULL,
            call_id TEXT NOT NULL,
            cseq INTEGER NOT NULL,
            path TEXT NOT NULL,
            source TEXT NOT NULL,
            user_agent TEXT NOT NULL,
            PRIMARY KEY (aor, contact)
        );
        CREATE INDEX bindings_expiry ON bindings (expires_at);
        """,
        # Several nodes of a network share the file: each loads, expires and deletes only the
        # bindings it made ('' = rows written before, claimed by the first node to start).
        """
        ALTER TABLE bindings ADD COLUMN node TEXT NOT NULL DEFAULT '';
        """,
        # The same phone registered at two nodes (one Contact) is a binding of each: the node
        # joins the key, so that one node's write does not take the other's row.
        """
        CREATE TABLE bindings_by_node (
            node TEXT NOT NULL,
            aor TEXT NOT NULL,
            contact TEXT NOT NULL,
            params TEXT NOT NULL,
            expires_at REAL NOT NULL,
            q REAL NOT NULL,
            call_id TEXT NOT NULL,
            cseq INTEGER NOT NULL,
            path TEXT NOT NULL,
            source TEXT NOT NULL,
            user_agent TEXT NOT NULL,
            PRIMARY KEY (node, aor, contact)
        );
        INSERT INTO bindings_by_node
            SELECT node, aor, contact, params, expires_at, q, call_id, cseq, path, source,
                   user_agent
            FROM bindings;
        DROP TABLE bindings;
        ALTER TABLE bindings_by_node RENAME TO bindings;
        """,
    ),
)

BINDING_COLUMNS = "aor, contact, params, expires_at, q, call_id, cseq, path, source, user_agent"
"""The columns of a :class:`Binding`, in the order :func:`binding_from_row` takes them."""
_SELECT = f"SELECT {BINDING_COLUMNS} FROM bindings WHERE node = ?"  # noqa: S608 (constants)
_CLAIM = "UPDATE OR IGNORE bindings SET node = ? WHERE node = ''"
_UPSERT = (
    "INSERT OR REPLACE INTO bindings (aor, contact, params, expires_at, q, call_id, cseq, path,"
    " source, user_agent, node) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
)
_DELETE = "DELETE FROM bindings WHERE aor = ? AND contact = ? AND node = ?"


class SqliteBindingStore:
    """Bindings in the network's ``presence.sqlite`` (table ``bindings``).

    Without ``group`` each REGISTER's changes are one transaction (write-through); with a
    :class:`~presence_sip.storage.group_commit.GroupCommit` they are coalesced per
    (AOR, contact) and written by the group's next commit (durability window: see there).
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        group: GroupCommit | None = None,
        *,
        node: str = "",
        claim: bool = True,
    ) -> None:
        self.conn = conn
        self.group = group
        self.node = node
        """The node whose bindings these are (rows of other nodes are neither read, expired
        nor deleted)."""
        self.claim = claim
        """Take the rows written before nodes owned them (a node with the registrar role)."""
        migrate(conn, COMPONENT)
        self._pending: dict[tuple[str, str], Binding | None] = {}
        """Pending rows by (aor, contact): the binding to write, or None to delete."""
        if group is not None:
            group.register(self)

    def load_bindings(self) -> list[Binding]:
        if self.group is not None:
            self.group.flush()
        with transaction(self.conn) as conn, map_errors("cannot load bindings"):
            if self.claim and conn.execute(_CLAIM, (self.node,)).rowcount:
                log.info("node %r took the bindings stored before nodes owned rows", self.node)
            rows = conn.execute(_SELECT, (self.node,)).fetchall()
        return [binding_from_row(r) for r in rows]

    def save_bindings(self, aor: str, upserts: list[Binding], removed_contacts: list[str]) -> None:
        if self.group is None:
            with transaction(self.conn) as conn:
                conn.executemany(_DELETE, [(aor, c, self.node) for c in removed_contacts])
                conn.executemany(_UPSERT, [_row(b, self.node) for b in upserts])
            return
        for contact in removed_contacts:
            self._pending[(aor, contact)] = None
        for binding in upserts:
            self._pending[(aor, binding.contact)] = binding
        self.group.mark()

    def delete_expired(self, aor: str, contacts: list[str]) -> None:
        if self.group is None:
            with transaction(self.conn) as conn:
                conn.executemany(_DELETE, [(aor, c, self.node) for c in contacts])
            return
        for contact in contacts:
            self._pending[(aor, contact)] = None
        self.group.mark()

    def pending_statements(self) -> list[Statement]:
        """The statements of the pending changes (the group commit runs them in its transaction)."""
        if not self._pending:
            return []
        node = self.node
        return [
            (_DELETE, [(*key, node) for key, b in self._pending.items() if b is None]),
            (_UPSERT, [_row(b, node) for b in self._pending.values() if b is not None]),
        ]

    def clear_pending(self) -> None:
        self._pending.clear()


def binding_from_row(r: Sequence[Any]) -> Binding:
    """The binding a row of :data:`BINDING_COLUMNS` holds (its Path stored as JSON)."""
    return Binding(r[0], r[1], r[2], r[3], r[4], r[5], r[6], tuple(json.loads(r[7])), r[8], r[9])


def _row(b: Binding, node: str) -> tuple[object, ...]:
    return (
        b.aor,
        b.contact,
        b.params,
        b.expires_at,
        b.q,
        b.call_id,
        b.cseq,
        json.dumps(list(b.path)),
        b.source,
        b.user_agent,
        node,
    )
