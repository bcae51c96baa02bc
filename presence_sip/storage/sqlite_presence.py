"""SQLite storage of the presence server: publications and subscriptions survive a restart.

Tables ``presence_publications`` and ``presence_subscriptions`` live in the network's
``presence.sqlite`` (migration component ``presence``). Rows are written on every change; the
NOTIFY CSeq of a subscription is written in blocks (``cseq_reserved``), so a restarted node
continues above every CSeq it may have sent. Loading deletes expired rows in SQL first and never
reads them.
"""

from __future__ import annotations

import json
import sqlite3

from presence_sip.presence.publications import PublicationRecord
from presence_sip.presence.subscriptions import SubscriptionRecord
from presence_sip.storage.database import map_errors, migrate, register_migrations, transaction

__all__ = ["COMPONENT", "Connection", "SqlitePresenceStore"]

Connection = sqlite3.Connection
"""The database connection type, for core modules that may not import sqlite3 themselves."""

COMPONENT = "presence"

register_migrations(
    COMPONENT,
    (
        """
        CREATE TABLE presence_publications (
            etag TEXT PRIMARY KEY,
            presentity TEXT NOT NULL,
            expires_at REAL NOT NULL,
            body BLOB NOT NULL,
            seq INTEGER NOT NULL
        );
        CREATE INDEX presence_publications_expiry ON presence_publications (expires_at);
        CREATE TABLE presence_subscriptions (
            id TEXT PRIMARY KEY,
            presentity TEXT NOT NULL,
            entity TEXT NOT NULL,
            event TEXT NOT NULL,
            watcher TEXT NOT NULL,
            call_id TEXT NOT NULL,
            remote_tag TEXT NOT NULL,
            local_uri TEXT NOT NULL,
            remote_uri TEXT NOT NULL,
            remote_target TEXT NOT NULL,
            route_set TEXT NOT NULL,
            local_contact TEXT NOT NULL,
            source TEXT NOT NULL,
            remote_cseq INTEGER NOT NULL,
            cseq_reserved INTEGER NOT NULL,
            expires_at REAL NOT NULL,
            created_at REAL NOT NULL,
            state TEXT NOT NULL,
            polite INTEGER NOT NULL,
            accept_diff INTEGER NOT NULL,
            event_id TEXT,
            display_name TEXT
        );
        CREATE INDEX presence_subscriptions_expiry ON presence_subscriptions (expires_at);
        """,
    ),
)

_SUB_COLUMNS = (
    "id, presentity, entity, event, watcher, call_id, remote_tag, local_uri, remote_uri,"
    " remote_target, route_set, local_contact, source, remote_cseq, cseq_reserved, expires_at,"
    " created_at, state, polite, accept_diff, event_id, display_name"
)
# Built from the constant column list above only (no outside text): not an injection vector.
_SUB_INSERT = (
    "INSERT OR REPLACE INTO presence_subscriptions (" + _SUB_COLUMNS + ")"  # noqa: S608
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_SUB_SELECT = "SELECT " + _SUB_COLUMNS + " FROM presence_subscriptions"  # noqa: S608


class SqlitePresenceStore:
    """Publications and subscriptions in the network database (both store Protocols)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        migrate(conn, COMPONENT)

    # --- publications -------------------------------------------------------------------------

    def load_publications(self, now: float) -> list[PublicationRecord]:
        with transaction(self.conn) as conn:
            conn.execute("DELETE FROM presence_publications WHERE expires_at <= ?", (now,))
            rows = conn.execute(
                "SELECT presentity, etag, expires_at, body, seq FROM presence_publications"
                " ORDER BY seq"
            ).fetchall()
        return [PublicationRecord(r[0], r[1], r[2], bytes(r[3]), r[4]) for r in rows]

    def save_publication(self, record: PublicationRecord, replaces: str | None) -> None:
        with transaction(self.conn) as conn:
            if replaces is not None:
                conn.execute("DELETE FROM presence_publications WHERE etag = ?", (replaces,))
            conn.execute(
                "INSERT OR REPLACE INTO presence_publications (etag, presentity, expires_at, body,"
                " seq) VALUES (?, ?, ?, ?, ?)",
                (record.etag, record.presentity, record.expires_at, record.body, record.seq),
            )

    def delete_publication(self, etag: str) -> None:
        with transaction(self.conn) as conn:
            conn.execute("DELETE FROM presence_publications WHERE etag = ?", (etag,))

    # --- subscriptions ------------------------------------------------------------------------

    def load_subscriptions(self, now: float) -> list[SubscriptionRecord]:
        with transaction(self.conn) as conn:
            conn.execute("DELETE FROM presence_subscriptions WHERE expires_at <= ?", (now,))
            rows = conn.execute(_SUB_SELECT).fetchall()
        return [_subscription(row) for row in rows]

    def save_subscription(self, record: SubscriptionRecord) -> None:
        r = record
        with transaction(self.conn) as conn:
            conn.execute(
                _SUB_INSERT,
                (
                    r.id, r.presentity, r.entity, r.event, r.watcher, r.call_id, r.remote_tag,
                    r.local_uri, r.remote_uri, r.remote_target, json.dumps(list(r.route_set)),
                    r.local_contact, r.source, r.remote_cseq, r.cseq_reserved, r.expires_at,
                    r.created_at, r.state, int(r.polite), int(r.accept_diff), r.event_id,
                    r.display_name,
                ),
            )

    def save_cseq(self, subscription_id: str, cseq_reserved: int) -> None:
        with transaction(self.conn) as conn:
            conn.execute(
                "UPDATE presence_subscriptions SET cseq_reserved = ? WHERE id = ?",
                (cseq_reserved, subscription_id),
            )

    def delete_subscription(self, subscription_id: str) -> None:
        with transaction(self.conn) as conn:
            conn.execute("DELETE FROM presence_subscriptions WHERE id = ?", (subscription_id,))

    def counts(self) -> tuple[int, int]:
        """(publications, subscriptions) rows, for operators and tests."""
        with map_errors("cannot count presence rows"):
            pubs = self.conn.execute("SELECT count(*) FROM presence_publications").fetchone()[0]
            subs = self.conn.execute("SELECT count(*) FROM presence_subscriptions").fetchone()[0]
        return int(pubs), int(subs)


def _subscription(row: tuple[object, ...]) -> SubscriptionRecord:
    (sid, presentity, entity, event, watcher, call_id, remote_tag, local_uri, remote_uri,
     remote_target, route_set, local_contact, source, remote_cseq, cseq_reserved, expires_at,
     created_at, state, polite, accept_diff, event_id, display_name) = row
    return SubscriptionRecord(
        id=str(sid),
        presentity=str(presentity),
        entity=str(entity),
        event=str(event),
        watcher=str(watcher),
        call_id=str(call_id),
        remote_tag=str(remote_tag),
        local_uri=str(local_uri),
        remote_uri=str(remote_uri),
        remote_target=str(remote_target),
        route_set=tuple(str(x) for x in json.loads(str(route_set))),
        local_contact=str(local_contact),
        source=str(source),
        remote_cseq=int(str(remote_cseq)),
        cseq_reserved=int(str(cseq_reserved)),
        expires_at=float(str(expires_at)),
        created_at=float(str(created_at)),
        state=str(state),
        polite=bool(polite),
        accept_diff=bool(accept_diff),
        event_id=None if event_id is None else str(event_id),
        display_name=None if display_name is None else str(display_name),
    )
