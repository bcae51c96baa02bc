"""SQLite implementation of ``SubscriberStore`` (tables ``hss_*`` in the network's database).

Every write is one ``BEGIN IMMEDIATE`` transaction that validates, writes and bumps
``hss_state.data_version``; a failing check raises before anything is written, and any exception
rolls the transaction back.  Safe for several processes sharing the file (WAL, busy timeout).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from presence_sip.gateway.numbering import candidate_prefixes
from presence_sip.hss.msisdn import (
    canonical_identity,
    msisdn_from_identity,
    msisdn_from_username,
    normalize_msisdn,
    normalize_prefix,
)
from presence_sip.hss.records import (
    PlanEntry,
    PortEntry,
    PresenceServerRecord,
    Rule,
    RuleAction,
    Subscriber,
    SubscriberField,
    canonical_watcher,
    check_credit,
    make_subscriber,
    normalize_algorithm,
    normalize_domain,
    with_identities,
    with_password,
)
from presence_sip.hss.store import (
    DuplicateRecord,
    InsufficientCredit,
    UnknownRecord,
    last_prefix_in_use,
)
from presence_sip.sip.errors import StoreError
from presence_sip.storage.database import (
    check_domain,
    check_recorded_domain,
    connect_read_only,
    database_path,
    map_errors,
    migrate,
    open_network_database,
    register_migrations,
    resolve_domain,
    transaction,
)
from presence_sip.storage.sqlite_import import (
    import_rows,
    insert_subscribers,
    overwrite_subscribers,
    write_import,
)

__all__ = ["HSS_MIGRATIONS", "SqliteSubscriberStore", "extra_identities"]

HSS_MIGRATIONS = (
    """
    CREATE TABLE hss_presence_servers (
        name TEXT PRIMARY KEY,
        uri  TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE hss_subscribers (
        msisdn            TEXT PRIMARY KEY,
        ha1_md5           TEXT NOT NULL,
        ha1_sha256        TEXT NOT NULL,
        ha1_md5_digits    TEXT NOT NULL,
        ha1_sha256_digits TEXT NOT NULL,
        presence_server   TEXT REFERENCES hss_presence_servers (name),
        credit            INTEGER NOT NULL CHECK (credit >= 0)
    ) WITHOUT ROWID;
    CREATE INDEX hss_subscribers_by_server ON hss_subscribers (presence_server);
    CREATE TABLE hss_identities (
        uri      TEXT PRIMARY KEY,
        msisdn   TEXT NOT NULL REFERENCES hss_subscribers (msisdn) ON DELETE CASCADE,
        position INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX hss_identities_by_msisdn ON hss_identities (msisdn, position);
    CREATE TABLE hss_rules (
        owner       TEXT NOT NULL REFERENCES hss_subscribers (msisdn) ON DELETE CASCADE,
        watcher_uri TEXT NOT NULL,
        action      TEXT NOT NULL
                    CHECK (action IN ('allow', 'block', 'polite-block', 'confirm')),
        PRIMARY KEY (owner, watcher_uri)
    ) WITHOUT ROWID;
    CREATE TABLE hss_number_plan (
        prefix  TEXT PRIMARY KEY,
        network TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX hss_number_plan_by_network ON hss_number_plan (network);
    CREATE TABLE hss_ported_numbers (
        msisdn  TEXT PRIMARY KEY,
        network TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE hss_state (
        id           INTEGER PRIMARY KEY CHECK (id = 1),
        data_version INTEGER NOT NULL
    );
    INSERT INTO hss_state (id, data_version) VALUES (1, 0);
    """,
)
"""Schema history of the ``hss`` component (append only)."""

register_migrations("hss", HSS_MIGRATIONS)

_SUBSCRIBER_COLUMNS = (
    "SELECT s.msisdn, s.ha1_md5, s.ha1_sha256, s.ha1_md5_digits, s.ha1_sha256_digits,"
    " s.presence_server, s.credit,"
    " (SELECT group_concat(uri, char(10)) FROM"
    "   (SELECT uri FROM hss_identities i WHERE i.msisdn = s.msisdn ORDER BY position))"
    " FROM hss_subscribers s"
)


_HA1_COLUMN = {
    (True, True): "ha1_md5",
    (True, False): "ha1_md5_digits",
    (False, True): "ha1_sha256",
    (False, False): "ha1_sha256_digits",
}
"""The HA1 column for (MD5, username written with ``+``)."""


def _subscriber(row: Sequence[Any]) -> Subscriber:
    identities = tuple(str(row[7]).split("\n")) if row[7] else ()
    return Subscriber(
        msisdn=row[0],
        identities=identities,
        ha1_md5=row[1],
        ha1_sha256=row[2],
        presence_server=row[5],
        credit=int(row[6]),
        ha1_md5_digits=row[3],
        ha1_sha256_digits=row[4],
    )


class SqliteSubscriberStore:
    """``SubscriberStore`` on a SQLite connection (see :mod:`presence_sip.storage.database`).

    *domain* is checked against (or, on a new database, recorded as) the network domain; a new
    database needs one (``DomainNotRecorded``: it is the realm of every HA1 stored).
    """

    def __init__(
        self, conn: sqlite3.Connection, *, domain: str | None = None, owns_connection: bool = False
    ) -> None:
        requested = None if domain is None else normalize_domain(domain)
        self._conn = conn
        self._owns_connection = owns_connection
        check_domain(conn, requested)  # (a refusal writes nothing)
        migrate(conn, "core")
        migrate(conn, "hss")
        self._domain = resolve_domain(conn, requested)

    @classmethod
    def open(
        cls, data_dir: str | Path, domain: str | None = None, *, read_only: bool = False
    ) -> SqliteSubscriberStore:
        """Open ``DATA_DIR/presence.sqlite`` (created if missing, which needs *domain*: else
        ``DomainNotRecorded`` and nothing made); :meth:`close` closes it.

        ``read_only``: an existing database this user may not write (its schema must be
        current: nothing is migrated)."""
        path = database_path(data_dir)  # (its domain first: a refusal writes nothing)
        check_recorded_domain(path, None if domain is None else normalize_domain(domain))
        conn = connect_read_only(path) if read_only else None
        if conn is None:
            conn = open_network_database(data_dir)
        try:
            return cls(conn, domain=domain, owns_connection=True)
        except BaseException:
            conn.close()
            raise

    @property
    def domain(self) -> str:
        """The network domain and digest realm."""
        return self._domain

    def close(self) -> None:
        """Close the connection if this store opened it."""
        if self._owns_connection:
            self._conn.close()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """One SQLite transaction around the changes inside (each one a savepoint in it): all
        of them committed at the end, or none when the block raises; a running node sees them
        at once, when it is committed."""
        with transaction(self._conn):
            yield

    # -- subscribers -------------------------------------------------------------------------

    def get_subscriber(self, msisdn: str) -> Subscriber | None:
        """The subscriber with this MSISDN, or ``None``."""
        return self._load(normalize_msisdn(msisdn))

    def extra_identities(self) -> dict[str, str]:
        """Extra identity -> its subscriber's MSISDN (:func:`extra_identities`)."""
        return extra_identities(self._conn)

    def find_by_identity(self, uri_or_user: str) -> Subscriber | None:
        """The subscriber an AOR, extra identity or digest username designates."""
        msisdn = msisdn_from_identity(uri_or_user)
        if msisdn is not None:
            return self._load(msisdn)
        try:
            identity = canonical_identity(uri_or_user)
        except ValueError:
            return None
        with map_errors("cannot read identities"):
            row = self._conn.execute(
                "SELECT msisdn FROM hss_identities WHERE uri = ?", (identity,)
            ).fetchone()
        return None if row is None else self._load(row[0])

    def add_subscriber(
        self,
        msisdn: str,
        password: str,
        *,
        credit: int = 0,
        presence_server: str | None = None,
        identities: Sequence[str] = (),
    ) -> Subscriber:
        """Create a subscriber with default identities plus *identities*."""
        record = make_subscriber(
            normalize_msisdn(msisdn),
            password,
            self._domain,
            credit=credit,
            presence_server=presence_server,
            identities=identities,
        )
        with transaction(self._conn) as conn:
            if self._load(record.msisdn) is not None:
                raise DuplicateRecord(f"subscriber {record.msisdn} already exists")
            self._check_server(presence_server)
            insert_subscribers(conn, [record])
            self._insert_identities(record)
            self._bump()
        return record

    def import_subscribers(
        self,
        new: Sequence[Subscriber],
        replacing: Sequence[Subscriber] = (),
        *,
        fields: Collection[SubscriberField] = (),
    ) -> None:
        """Add *new* and overwrite the subscribers *replacing* names (their password and
        *fields*), in one transaction that only writes (:func:`write_import`): all or none."""
        if new or replacing:
            rows = import_rows(new, replacing, fields)  # before the write lock is taken
            with transaction(self._conn) as conn:
                write_import(conn, rows)
                self._bump()

    def update_subscriber(
        self,
        msisdn: str,
        *,
        password: str | None = None,
        credit: int | None = None,
        presence_server: str | None = None,
        add_identities: Sequence[str] = (),
        remove_identities: Sequence[str] = (),
    ) -> Subscriber:
        """Change the given fields and return the new record."""
        canonical = normalize_msisdn(msisdn)
        with transaction(self._conn) as conn:
            record = self._require(canonical)
            if add_identities or remove_identities:
                record = with_identities(record, add_identities, remove_identities)
                conn.execute("DELETE FROM hss_identities WHERE msisdn = ?", (canonical,))
                self._insert_identities(record)  # (another subscriber's: DuplicateRecord)
            if password is not None:
                record = with_password(record, password, self._domain)
            if credit is not None:
                record = dataclasses.replace(record, credit=check_credit(credit))
            if presence_server is not None:
                self._check_server(presence_server)
                record = dataclasses.replace(record, presence_server=presence_server)
            overwrite_subscribers(conn, [record])
            self._bump()
        return record

    def remove_subscriber(self, msisdn: str) -> None:
        """Delete a subscriber, its identities and its rules."""
        canonical = normalize_msisdn(msisdn)
        with transaction(self._conn) as conn:
            self._require(canonical)
            conn.execute("DELETE FROM hss_subscribers WHERE msisdn = ?", (canonical,))
            self._bump()

    def list_subscribers(self) -> list[Subscriber]:
        """All subscribers ordered by MSISDN."""
        with map_errors("cannot read subscribers"):
            rows = self._conn.execute(_SUBSCRIBER_COLUMNS + " ORDER BY s.msisdn").fetchall()
        return [_subscriber(row) for row in rows]

    def msisdns(self) -> set[str]:
        """The MSISDN of every subscriber."""
        with map_errors("cannot read subscribers"):
            return {row[0] for row in self._conn.execute("SELECT msisdn FROM hss_subscribers")}

    def get_ha1(self, username: str, algorithm_name: str) -> str | None:
        """The HA1 for a digest username (MSISDN, with or without ``+``) and algorithm."""
        algorithm = normalize_algorithm(algorithm_name)
        msisdn = msisdn_from_username(username)
        if algorithm is None or msisdn is None:
            return None
        # One column of one row, not the whole subscriber (_load reads its identities too):
        # a known user then costs what an unknown one does, within a microsecond (it cost
        # ~15 us more, which a scanner timing its 401s could tell apart).
        column = _HA1_COLUMN[(algorithm == "MD5", username.startswith("+"))]
        with map_errors("cannot read subscriber"):
            row = self._conn.execute(
                f"SELECT {column} FROM hss_subscribers WHERE msisdn = ?",  # noqa: S608
                (msisdn,),
            ).fetchone()
        return None if row is None else (row[0] or None)

    def debit_credit(self, msisdn: str, amount: int) -> int:
        """Atomically take *amount* from the credit; return the credit left."""
        canonical = normalize_msisdn(msisdn)
        check_credit(amount)
        with transaction(self._conn) as conn:
            row = conn.execute(
                "SELECT credit FROM hss_subscribers WHERE msisdn = ?", (canonical,)
            ).fetchone()
            if row is None:
                raise UnknownRecord(f"unknown subscriber {canonical}")
            if row[0] < amount:
                raise InsufficientCredit(f"credit of {canonical} is {row[0]}, {amount} needed")
            conn.execute(
                "UPDATE hss_subscribers SET credit = credit - ? WHERE msisdn = ?",
                (amount, canonical),
            )
            self._bump()
        return int(row[0]) - amount

    # -- presence rules ----------------------------------------------------------------------

    def rules_for(self, owner_msisdn: str) -> dict[str, str]:
        """``{canonical watcher: action}`` of *owner* (empty if unknown or malformed)."""
        owner = msisdn_from_identity(owner_msisdn)
        if owner is None:
            return {}
        with map_errors("cannot read rules"):
            rows = self._conn.execute(
                "SELECT watcher_uri, action FROM hss_rules WHERE owner = ?", (owner,)
            ).fetchall()
        return {str(watcher): str(action) for watcher, action in rows}

    def set_rule(self, owner: str, watcher_uri: str, action: RuleAction | str) -> Rule:
        """Create or replace *owner*'s rule about *watcher_uri*."""
        rule = Rule(
            owner=normalize_msisdn(owner),
            watcher_uri=canonical_watcher(watcher_uri),
            action=RuleAction.parse(action),
        )
        with transaction(self._conn) as conn:
            self._require(rule.owner)
            conn.execute(
                "INSERT INTO hss_rules (owner, watcher_uri, action) VALUES (?, ?, ?)"
                " ON CONFLICT (owner, watcher_uri) DO UPDATE SET action = excluded.action",
                (rule.owner, rule.watcher_uri, rule.action.value),
            )
            self._bump()
        return rule

    def remove_rule(self, owner: str, watcher_uri: str) -> None:
        """Delete *owner*'s rule about *watcher_uri*."""
        canonical_owner = normalize_msisdn(owner)
        watcher = canonical_watcher(watcher_uri)
        with transaction(self._conn) as conn:
            self._require(canonical_owner)
            cursor = conn.execute(
                "DELETE FROM hss_rules WHERE owner = ? AND watcher_uri = ?",
                (canonical_owner, watcher),
            )
            if cursor.rowcount == 0:
                raise UnknownRecord(f"no rule of {canonical_owner} about {watcher}")
            self._bump()

    def list_rules(self, owner: str) -> list[Rule]:
        """*owner*'s rules ordered by watcher."""
        canonical = normalize_msisdn(owner)
        self._require(canonical)
        with map_errors("cannot read rules"):
            rows = self._conn.execute(
                "SELECT watcher_uri, action FROM hss_rules WHERE owner = ? ORDER BY watcher_uri",
                (canonical,),
            ).fetchall()
        return [Rule(canonical, watcher, RuleAction(action)) for watcher, action in rows]

    # -- number plan and porting -------------------------------------------------------------

    def plan_add(self, prefix: str, network: str) -> PlanEntry:
        """Add a number-plan prefix."""
        entry = PlanEntry(normalize_prefix(prefix), normalize_domain(network))
        with transaction(self._conn) as conn:
            row = conn.execute(
                "SELECT network FROM hss_number_plan WHERE prefix = ?", (entry.prefix,)
            ).fetchone()
            if row is not None:
                raise DuplicateRecord(f"prefix {entry.prefix} is already in the plan ({row[0]})")
            conn.execute("INSERT INTO hss_number_plan VALUES (?, ?)", (entry.prefix, entry.network))
            self._bump()
        return entry

    def plan_list(self) -> list[PlanEntry]:
        """The number plan ordered by prefix."""
        with map_errors("cannot read number plan"):
            rows = self._conn.execute(
                "SELECT prefix, network FROM hss_number_plan ORDER BY prefix"
            ).fetchall()
        return [PlanEntry(prefix, network) for prefix, network in rows]

    def plan_remove(self, prefix: str) -> None:
        """Delete a prefix."""
        canonical = normalize_prefix(prefix)
        with transaction(self._conn) as conn:
            row = conn.execute(
                "SELECT network FROM hss_number_plan WHERE prefix = ?", (canonical,)
            ).fetchone()
            if row is None:
                raise UnknownRecord(f"prefix {canonical} is not in the plan")
            conn.execute("DELETE FROM hss_number_plan WHERE prefix = ?", (canonical,))
            network = row[0]
            if network != self._domain:
                still_planned = conn.execute(
                    "SELECT 1 FROM hss_number_plan WHERE network = ? LIMIT 1", (network,)
                ).fetchone()
                (ported,) = conn.execute(
                    "SELECT count(*) FROM hss_ported_numbers WHERE network = ?", (network,)
                ).fetchone()
                if still_planned is None and ported:
                    raise StoreError(last_prefix_in_use(canonical, network, ported))
            self._bump()

    def port_add(self, msisdn: str, network: str) -> PortEntry:
        """Record that *msisdn* was ported to *network* (a network the plan knows)."""
        entry = PortEntry(normalize_msisdn(msisdn), normalize_domain(network))
        with transaction(self._conn) as conn:
            known = conn.execute(
                "SELECT 1 FROM hss_number_plan WHERE network = ? LIMIT 1", (entry.network,)
            ).fetchone()
            if known is None and entry.network != self._domain:
                raise UnknownRecord(f"unknown network {entry.network} (not in the number plan)")
            row = conn.execute(
                "SELECT network FROM hss_ported_numbers WHERE msisdn = ?", (entry.msisdn,)
            ).fetchone()
            if row is not None:
                raise DuplicateRecord(f"{entry.msisdn} is already ported (to {row[0]})")
            conn.execute(
                "INSERT INTO hss_ported_numbers VALUES (?, ?)", (entry.msisdn, entry.network)
            )
            self._bump()
        return entry

    def port_list(self) -> list[PortEntry]:
        """Ported numbers ordered by MSISDN."""
        with map_errors("cannot read ported numbers"):
            rows = self._conn.execute(
                "SELECT msisdn, network FROM hss_ported_numbers ORDER BY msisdn"
            ).fetchall()
        return [PortEntry(msisdn, network) for msisdn, network in rows]

    def port_remove(self, msisdn: str) -> None:
        """Delete a porting override."""
        canonical = normalize_msisdn(msisdn)
        with transaction(self._conn) as conn:
            cursor = conn.execute("DELETE FROM hss_ported_numbers WHERE msisdn = ?", (canonical,))
            if cursor.rowcount == 0:
                raise UnknownRecord(f"{canonical} is not ported")
            self._bump()

    def network_for(self, msisdn: str) -> str | None:
        """Porting override first, then the longest matching prefix (``None`` if neither)."""
        canonical = msisdn_from_identity(msisdn)
        if canonical is None:
            return None
        # Longest prefix first; json_each keeps the lookup on the primary key index.
        prefixes = json.dumps(candidate_prefixes(canonical))
        with map_errors("cannot read number plan"):
            row = self._conn.execute(
                "SELECT network FROM hss_ported_numbers WHERE msisdn = ?", (canonical,)
            ).fetchone()
            if row is None:
                row = self._conn.execute(
                    "SELECT network FROM hss_number_plan"
                    " WHERE prefix IN (SELECT value FROM json_each(?))"
                    " ORDER BY length(prefix) DESC LIMIT 1",
                    (prefixes,),
                ).fetchone()
        return None if row is None else str(row[0])

    # -- presence servers --------------------------------------------------------------------

    def presence_servers(self) -> list[PresenceServerRecord]:
        """The network's presence servers ordered by name."""
        with map_errors("cannot read presence servers"):
            rows = self._conn.execute(
                "SELECT name, uri FROM hss_presence_servers ORDER BY name"
            ).fetchall()
        return [PresenceServerRecord(name, uri) for name, uri in rows]

    def add_presence_server(self, name: str, uri: str) -> PresenceServerRecord:
        """Add a presence server."""
        record = PresenceServerRecord(name.strip(), uri.strip())
        with transaction(self._conn) as conn:
            if self._server_exists(record.name):
                raise DuplicateRecord(f"presence server {record.name} already exists")
            conn.execute(
                "INSERT INTO hss_presence_servers VALUES (?, ?)", (record.name, record.uri)
            )
            self._bump()
        return record

    def remove_presence_server(self, name: str) -> None:
        """Delete a presence server no subscriber is assigned to."""
        with transaction(self._conn) as conn:
            if not self._server_exists(name):
                raise UnknownRecord(f"unknown presence server {name}")
            (users,) = conn.execute(
                "SELECT count(*) FROM hss_subscribers WHERE presence_server = ?", (name,)
            ).fetchone()
            if users:
                raise StoreError(f"presence server {name} still serves {users} subscriber(s)")
            conn.execute("DELETE FROM hss_presence_servers WHERE name = ?", (name,))
            self._bump()

    def data_version(self) -> int:
        """The write counter (bumped by every write of any process)."""
        with map_errors("cannot read data version"):
            row = self._conn.execute("SELECT data_version FROM hss_state WHERE id = 1").fetchone()
        return int(row[0])

    # -- helpers -----------------------------------------------------------------------------

    def _load(self, msisdn: str) -> Subscriber | None:
        with map_errors("cannot read subscriber"):
            row = self._conn.execute(
                _SUBSCRIBER_COLUMNS + " WHERE s.msisdn = ?", (msisdn,)
            ).fetchone()
        return None if row is None else _subscriber(row)

    def _require(self, msisdn: str) -> Subscriber:
        record = self._load(msisdn)
        if record is None:
            raise UnknownRecord(f"unknown subscriber {msisdn}")
        return record

    def _server_exists(self, name: str) -> bool:
        with map_errors("cannot read presence servers"):
            row = self._conn.execute(
                "SELECT 1 FROM hss_presence_servers WHERE name = ?", (name,)
            ).fetchone()
        return row is not None

    def _check_server(self, name: str | None) -> None:
        if name is not None and not self._server_exists(name):
            raise UnknownRecord(f"unknown presence server {name} (add it with `hss server add`)")

    def _insert_identities(self, record: Subscriber) -> None:
        for position, uri in enumerate(record.identities):
            owner = self._conn.execute(
                "SELECT msisdn FROM hss_identities WHERE uri = ?", (uri,)
            ).fetchone()
            if owner is not None:
                raise DuplicateRecord(f"identity {uri} already belongs to {owner[0]}")
            self._conn.execute(
                "INSERT INTO hss_identities VALUES (?, ?, ?)", (uri, record.msisdn, position)
            )

    def _bump(self) -> None:
        self._conn.execute("UPDATE hss_state SET data_version = data_version + 1 WHERE id = 1")


def extra_identities(conn: sqlite3.Connection) -> dict[str, str]:
    """Identities outside the number forms (``sip:+N...``, ``tel:...``), by canonical form, to
    their subscriber's MSISDN; read by ranges of the primary key: the number rows (two per
    subscriber) are skipped, not scanned."""
    with map_errors("cannot read identities"):
        rows = conn.execute(
            "SELECT uri, msisdn FROM hss_identities"
            " WHERE uri < 'sip:+' OR (uri >= 'sip:,' AND uri < 'tel:') OR uri >= 'tel;'"
        ).fetchall()
    return {uri: msisdn for uri, msisdn in rows if msisdn_from_identity(uri) is None}
