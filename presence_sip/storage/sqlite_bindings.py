"""SQLite :class:`BindingStore`: registrations survive a restart (issue 4)."""

from __future__ import annotations

import json
import sqlite3

from presence_sip.registrar.bindings import Binding
from presence_sip.storage.database import map_errors, migrate, register_migrations, transaction

COMPONENT = "registrar"

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
    ),
)

_SELECT = (
    "SELECT aor, contact, params, expires_at, q, call_id, cseq, path, source, user_agent"
    " FROM bindings"
)
_UPSERT = (
    "INSERT OR REPLACE INTO bindings"
    " (aor, contact, params, expires_at, q, call_id, cseq, path, source, user_agent)"
    " VALUES (?,?,?,?,?,?,?,?,?,?)"
)


class SqliteBindingStore:
    """Bindings in the network's ``presence.sqlite`` (table ``bindings``)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        migrate(conn, COMPONENT)

    def load_bindings(self) -> list[Binding]:
        with map_errors("cannot load bindings"):
            rows = self.conn.execute(_SELECT).fetchall()
        return [
            Binding(r[0], r[1], r[2], r[3], r[4], r[5], r[6], tuple(json.loads(r[7])), r[8], r[9])
            for r in rows
        ]

    def save_bindings(self, aor: str, upserts: list[Binding], removed_contacts: list[str]) -> None:
        with transaction(self.conn) as conn:
            conn.executemany(
                "DELETE FROM bindings WHERE aor = ? AND contact = ?",
                [(aor, contact) for contact in removed_contacts],
            )
            conn.executemany(
                _UPSERT,
                [
                    (
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
                    )
                    for b in upserts
                ],
            )

    def delete_expired(self, aor: str, contacts: list[str]) -> None:
        with transaction(self.conn) as conn:
            conn.executemany(
                "DELETE FROM bindings WHERE aor = ? AND contact = ?", [(aor, c) for c in contacts]
            )
