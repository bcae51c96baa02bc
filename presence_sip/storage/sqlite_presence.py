"""SQLite storage of the presence server: publications and subscriptions survive a restart.

Tables ``presence_publications`` and ``presence_subscriptions`` live in the network's
``presence.sqlite`` (migration component ``presence``). Rows are written on every change; the
NOTIFY CSeq of a subscription is written in blocks (``cseq_reserved``), so a restarted node
continues above every CSeq it may have sent. Loading deletes expired subscriptions in SQL first
and never reads them; expired publications are read, for the compositor to expire as a running
node would (their watchers hear of it).  Several nodes of one network share the file: each row
names the node that wrote it (``node``), and a node reads, expires and deletes only its own.

A node writes through a :class:`~presence_sip.storage.group_commit.GroupCommit` (issue 8):
changes are coalesced per row and committed together at most every 30 ms, off the request
path; a clean stop flushes them, a crash may lose that last window (see ``group_commit``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3

from presence_sip.presence.publications import PublicationRecord
from presence_sip.presence.subscriptions import SavedSubscription, SubscriptionRecord
from presence_sip.storage.database import (
    map_errors,
    migrate,
    register_migrations,
    transaction,
)
from presence_sip.storage.group_commit import GroupCommit, Statement

__all__ = ["COMPONENT", "Connection", "SqlitePresenceStore"]

Connection = sqlite3.Connection
"""The database connection type, for core modules that may not import sqlite3 themselves."""

COMPONENT = "presence"

log = logging.getLogger(__name__)

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
        # Issue 8: the expiry indexes only served the purge at start-up (one scan is fine there),
        # yet every row written, on every PUBLISH and SUBSCRIBE, updated them.
        """
        DROP INDEX presence_publications_expiry;
        DROP INDEX presence_subscriptions_expiry;
        """,
        # Several nodes of a network share the file: each loads, expires and deletes only its
        # own rows ('' = rows written before, claimed by the first node to start).
        """
        ALTER TABLE presence_publications ADD COLUMN node TEXT NOT NULL DEFAULT '';
        ALTER TABLE presence_subscriptions ADD COLUMN node TEXT NOT NULL DEFAULT '';
        """,
        # RFC 5626: a watcher that asked for its NOTIFYs over the flow it subscribed on keeps
        # them there after a restart.
        """
        ALTER TABLE presence_subscriptions ADD COLUMN flow INTEGER NOT NULL DEFAULT 0;
        """,
    ),
)

_SUB_COLUMNS = (
    "id, presentity, entity, event, watcher, call_id, remote_tag, local_uri, remote_uri,"
    " remote_target, route_set, local_contact, source, remote_cseq, cseq_reserved, expires_at,"
    " created_at, state, polite, accept_diff, event_id, display_name, flow"
)
# Built from the constant column list above only (no outside text): not an injection vector.
_SUB_SELECT = "SELECT " + _SUB_COLUMNS + " FROM presence_subscriptions WHERE node = ?"  # noqa: S608
_SUB_INSERT = (
    "INSERT OR REPLACE INTO presence_subscriptions (" + _SUB_COLUMNS + ", node)"  # noqa: S608
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


class SqlitePresenceStore:
    """Publications and subscriptions in the network database (both store Protocols).

    Without ``group`` every change is its own transaction (write-through).  With a
    :class:`~presence_sip.storage.group_commit.GroupCommit` changes are coalesced per row in
    memory and written by the group's next commit (see that module for the durability window).
    """

    def __init__(
        self, conn: sqlite3.Connection, group: GroupCommit | None = None, *, node: str = ""
    ) -> None:
        self.conn = conn
        self.group = group
        self.node = node
        """The node whose rows these are: those of the other nodes sharing the file are
        neither read nor expired nor deleted."""
        migrate(conn, COMPONENT)
        self._publications: dict[str, PublicationRecord | None] = {}
        """Pending rows by entity-tag: the record to write, or None to delete."""
        self._subscriptions: dict[str, SavedSubscription | None] = {}
        """Pending rows by subscription id: the subscription to write (its row is built at
        commit time, with its state then), or None to delete."""
        self._cseqs: dict[str, int] = {}
        """Pending CSeq blocks of subscriptions whose row is not pending itself."""
        if group is not None:
            group.register(self)

    # --- publications -------------------------------------------------------------------------

    def load_publications(self, now: float) -> list[PublicationRecord]:
        self._flush()
        node = self.node
        with transaction(self.conn) as conn:
            _claim(conn, "presence_publications", node)
            rows = conn.execute(
                "SELECT presentity, etag, expires_at, body, seq FROM presence_publications"
                " WHERE node = ? ORDER BY seq",
                (node,),
            ).fetchall()
        return [PublicationRecord(r[0], r[1], r[2], bytes(r[3]), r[4]) for r in rows]

    def save_publication(self, record: PublicationRecord, replaces: str | None) -> None:
        if self.group is None:
            with transaction(self.conn) as conn:
                if replaces is not None:
                    conn.execute(_PUB_DELETE, (replaces, self.node))
                conn.execute(_PUB_INSERT, (*record, self.node))
            return
        if replaces is not None:
            self._publications[replaces] = None
        self._publications[record.etag] = record
        self.group.mark()

    def delete_publication(self, etag: str) -> None:
        if self.group is None:
            with transaction(self.conn) as conn:
                conn.execute(_PUB_DELETE, (etag, self.node))
            return
        self._publications[etag] = None
        self.group.mark()

    # --- subscriptions ------------------------------------------------------------------------

    def load_subscriptions(self, now: float) -> list[SubscriptionRecord]:
        self._flush()
        node = self.node
        with transaction(self.conn) as conn:
            _claim(conn, "presence_subscriptions", node)
            conn.execute(
                "DELETE FROM presence_subscriptions WHERE node = ? AND expires_at <= ?", (node, now)
            )
            rows = conn.execute(_SUB_SELECT, (node,)).fetchall()
        return [_subscription(row) for row in rows]

    def save_subscription(self, subscription: SavedSubscription) -> None:
        if self.group is None:
            with transaction(self.conn) as conn:
                conn.execute(_SUB_INSERT, _subscription_row(subscription.record(), self.node))
            return
        self._subscriptions[subscription.id] = subscription
        self._cseqs.pop(subscription.id, None)
        self.group.mark()

    def save_cseq(self, subscription_id: str, cseq_reserved: int) -> None:
        if self.group is None:
            with transaction(self.conn) as conn:
                conn.execute(_SUB_CSEQ, (cseq_reserved, subscription_id, self.node))
            return
        if subscription_id in self._subscriptions:
            pending = self._subscriptions[subscription_id]
            # A live subscription's row is built at commit time, with the new block already; a
            # record saved as such is written with the new block.
            if isinstance(pending, SubscriptionRecord):
                self._subscriptions[subscription_id] = dataclasses.replace(
                    pending, cseq_reserved=cseq_reserved
                )
            return
        self._cseqs[subscription_id] = cseq_reserved
        self.group.mark()

    def delete_subscription(self, subscription_id: str) -> None:
        if self.group is None:
            with transaction(self.conn) as conn:
                conn.execute(_SUB_DELETE, (subscription_id, self.node))
            return
        self._subscriptions[subscription_id] = None
        self._cseqs.pop(subscription_id, None)
        self.group.mark()

    def counts(self) -> tuple[int, int]:
        """(publications, subscriptions) rows of this node, for operators and tests (pending
        ones written)."""
        self._flush()
        node = (self.node,)
        with map_errors("cannot count presence rows"):
            pubs = self.conn.execute(
                "SELECT count(*) FROM presence_publications WHERE node = ?", node
            ).fetchone()[0]
            subs = self.conn.execute(
                "SELECT count(*) FROM presence_subscriptions WHERE node = ?", node
            ).fetchone()[0]
        return int(pubs), int(subs)

    # --- group commit -------------------------------------------------------------------------

    def pending_statements(self) -> list[Statement]:
        """The statements of the pending changes (the group commit runs them in its transaction);
        a live subscription's row is built now, with its state now."""
        statements: list[Statement] = []
        node = self.node
        pubs = self._publications
        if pubs:
            deleted = [(k, node) for k, r in pubs.items() if r is None]
            if deleted:
                statements.append((_PUB_DELETE, deleted))
            statements.append((_PUB_INSERT, [(*r, node) for r in pubs.values() if r]))
        subs = self._subscriptions
        if subs:
            deleted = [(k, node) for k, s in subs.items() if s is None]
            if deleted:
                statements.append((_SUB_DELETE, deleted))
            saved = [_subscription_row(s.record(), node) for s in subs.values() if s]
            if saved:
                statements.append((_SUB_INSERT, saved))
        if self._cseqs:
            statements.append((_SUB_CSEQ, [(c, k, node) for k, c in self._cseqs.items()]))
        return statements

    def clear_pending(self) -> None:
        self._publications.clear()
        self._subscriptions.clear()
        self._cseqs.clear()

    def _flush(self) -> None:
        if self.group is not None:
            self.group.flush()


_PUB_DELETE = "DELETE FROM presence_publications WHERE etag = ? AND node = ?"
_PUB_INSERT = (  # the field order of PublicationRecord, then the node
    "INSERT OR REPLACE INTO presence_publications (presentity, etag, expires_at, body, seq, node)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_SUB_DELETE = "DELETE FROM presence_subscriptions WHERE id = ? AND node = ?"
_SUB_CSEQ = "UPDATE presence_subscriptions SET cseq_reserved = ? WHERE id = ? AND node = ?"


_CLAIM = {
    table: f"UPDATE {table} SET node = ? WHERE node = ''"  # noqa: S608 (two names of ours)
    for table in ("presence_publications", "presence_subscriptions")
}


def _claim(conn: sqlite3.Connection, table: str, node: str) -> None:
    """Take the rows of ``table`` written before nodes owned rows (``node = ''``)."""
    claimed = conn.execute(_CLAIM[table], (node,)).rowcount
    if claimed:
        log.info("node %r took %d rows of %s stored before nodes owned rows", node, claimed, table)


def _subscription_row(r: SubscriptionRecord, node: str) -> tuple[object, ...]:
    return (
        r.id,
        r.presentity,
        r.entity,
        r.event,
        r.watcher,
        r.call_id,
        r.remote_tag,
        r.local_uri,
        r.remote_uri,
        r.remote_target,
        json.dumps(list(r.route_set)),
        r.local_contact,
        r.source,
        r.remote_cseq,
        r.cseq_reserved,
        r.expires_at,
        r.created_at,
        r.state,
        int(r.polite),
        int(r.accept_diff),
        r.event_id,
        r.display_name,
        int(r.flow),
        node,
    )


def _subscription(row: tuple[object, ...]) -> SubscriptionRecord:
    (
        sid,
        presentity,
        entity,
        event,
        watcher,
        call_id,
        remote_tag,
        local_uri,
        remote_uri,
        remote_target,
        route_set,
        local_contact,
        source,
        remote_cseq,
        cseq_reserved,
        expires_at,
        created_at,
        state,
        polite,
        accept_diff,
        event_id,
        display_name,
        flow,
    ) = row
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
        flow=bool(flow),
    )
