"""``presence-sip show [WHO]``: what a network's nodes hold, read from its database while they run.

The operator's question when a watcher does not see a change: is the presentity registered, and
where from; what has it published; who watches it, and over what; what does the watcher itself
hold (``max_subscriptions``).  Kamailio answers it with ``kamctl ul show`` and the presence
module's RPC commands; here every node writes its bindings, publications and subscriptions to
the network's database (group commit: a change is there within milliseconds), so one read-only
query answers for every node at once, without a control socket.

Without ``WHO``: the figures per node, and the watchers holding the most subscriptions and the
presentities with the most watchers.  With ``WHO`` (an MSISDN, a digest username, a SIP or tel
URI, or ``user@host``; an extra identity stands for its subscriber, as at the nodes): its
bindings, publications, watchers and subscriptions, one line each.  ``--json`` gives the same as
one JSON object.  Expiries are shown as seconds left by this machine's clock; a row past its time
is one a node has not purged yet (the node is down, or its timer is about to).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from presence_sip.hss.msisdn import canonical_identity, msisdn_from_identity
from presence_sip.registrar.outbound import binding_flow
from presence_sip.registrar.registrar import aor_key
from presence_sip.sip.errors import ConfigError, SipError
from presence_sip.sip.uri import parse_uri
from presence_sip.storage.database import connect_without_trace, database_path, map_errors
from presence_sip.storage.sqlite_bindings import BINDING_COLUMNS, binding_from_row
from presence_sip.storage.sqlite_hss import extra_identities

TOP = 5
"""Watchers and presentities listed in the summary."""


@dataclass(frozen=True, slots=True)
class BindingRow:
    node: str
    aor: str
    contact: str
    expires_in: int
    source: str
    user_agent: str
    path: list[str]
    """The Path header values (RFC 3327): the proxies between the node and the phone."""
    instance: str | None
    """The ``+sip.instance`` of an RFC 5626 flow, with its ``reg-id`` (None: RFC 3261)."""


@dataclass(frozen=True, slots=True)
class PublicationRow:
    node: str
    presentity: str
    etag: str
    expires_in: int
    size: int


@dataclass(frozen=True, slots=True)
class SubscriptionRow:
    id: str
    """The node's dialog tag, which its log lines name (``NOTIFY of ID: ...``)."""
    node: str
    presentity: str
    event: str
    watcher: str
    watcher_key: str
    state: str
    expires_in: int
    remote_target: str
    source: str


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    show = subparsers.add_parser(
        "show",
        help="what the nodes hold: bindings, publications, subscriptions (read-only)",
        description="Read DATA/presence.sqlite while the nodes run (nothing is written): "
        "without WHO the figures per node and the busiest watchers and presentities; with WHO "
        "(MSISDN, username, SIP/tel URI or user@host) its bindings, publications, watchers "
        "and subscriptions.",
    )
    show.add_argument("who", metavar="WHO", nargs="?", help="a subscriber or address of record")
    show.add_argument(
        "--data", metavar="DIR", default="data", help="the network's data directory (./data)"
    )
    show.add_argument("--json", action="store_true", help="one JSON object")
    show.set_defaults(func=run_show)


def run_show(args: argparse.Namespace) -> int:
    path = database_path(args.data)
    if not path.is_file():
        raise ConfigError(f"no database at {path} (a data directory a node has served from?)")
    conn = connect_without_trace(path)
    try:
        with map_errors(f"cannot read database {path}"):
            state = NetworkState.read(conn, time.time())
    finally:
        conn.close()
    if args.who is None:
        _print(state.summary(), as_json=args.json)
        return 0
    key = state.key_of(args.who)
    if key is None:
        raise ConfigError(
            f"not an address of record: {args.who!r} (expected e.g. +447700900123,"
            " sip:alice@net-b.test)"
        )
    _print(state.about(key), as_json=args.json)
    return 0


class NetworkState:
    """The rows of one network's database, as of one read."""

    def __init__(
        self,
        bindings: list[BindingRow],
        publications: list[PublicationRow],
        subscriptions: list[SubscriptionRow],
        identities: dict[str, str],
    ) -> None:
        self.bindings = bindings
        self.publications = publications
        self.subscriptions = subscriptions
        self.identities = identities
        """Extra identity (canonical form) -> its subscriber's MSISDN."""

    @classmethod
    def read(cls, conn: sqlite3.Connection, now: float) -> NetworkState:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        identities = extra_identities(conn) if "hss_identities" in tables else {}
        state = cls([], [], [], identities)
        for node, *row in _rows(conn, tables, "bindings", f"node, {BINDING_COLUMNS}"):
            b = binding_from_row(row)
            flow = binding_flow(b)
            state.bindings.append(
                BindingRow(
                    node, b.aor, b.contact, _left(b.expires_at, now), b.source, b.user_agent,
                    list(b.path), None if flow is None else f"{flow.instance} reg-id {flow.reg_id}",
                )
            )  # fmt: skip
        for node, presentity, etag, expires_at, size in _rows(
            conn, tables, "presence_publications",
            "node, presentity, etag, expires_at, length(body)",
        ):  # fmt: skip
            state.publications.append(
                PublicationRow(node, presentity, etag, _left(expires_at, now), size)
            )
        keys: dict[str, str] = {}
        for node, presentity, sid, event, watcher, sub_state, expires_at, target, source in _rows(
            conn, tables, "presence_subscriptions",
            "node, presentity, id, event, watcher, state, expires_at, remote_target, source",
        ):  # fmt: skip
            key = keys.get(watcher)
            if key is None:  # (a watcher's subscriptions share its From: parse it once)
                key = keys[watcher] = state.key_of(watcher) or watcher
            state.subscriptions.append(
                SubscriptionRow(
                    sid, node, presentity, event, watcher, key,
                    sub_state, _left(expires_at, now), target, source,
                )
            )  # fmt: skip
        return state

    def key_of(self, text: str) -> str | None:
        """The key the nodes keep ``text``'s state under (``aor_key``, an extra identity as
        its subscriber's MSISDN), or None when it names no address of record."""
        text = text.strip()
        msisdn = msisdn_from_identity(text)
        if msisdn is not None:
            return msisdn
        try:
            uri = parse_uri(text if ":" in text else f"sip:{text}")
        except SipError:
            return None
        key = aor_key(uri)
        if key is None or key.startswith("+"):
            return key
        try:
            return self.identities.get(canonical_identity(key), key)
        except ValueError:
            return key

    def summary(self) -> Summary:
        nodes = sorted(
            {r.node for r in self.bindings}
            | {r.node for r in self.publications}
            | {r.node for r in self.subscriptions}
        )
        figures = []
        for node in nodes:
            bindings = [b for b in self.bindings if b.node == node]
            subs = [s for s in self.subscriptions if s.node == node]
            pubs = [p for p in self.publications if p.node == node]
            figures.append(
                NodeFigures(
                    node=node or "(unnamed)",
                    aors=len({b.aor for b in bindings}),
                    bindings=len(bindings),
                    subscriptions=len(subs),
                    by_event=dict(sorted(Counter(s.event for s in subs).items())),
                    by_state=dict(sorted(Counter(s.state for s in subs).items())),
                    publications=len(pubs),
                    published=len({p.presentity for p in pubs}),
                )
            )
        watchers = Counter(s.watcher_key for s in self.subscriptions)
        watched = Counter(s.presentity for s in self.subscriptions if s.event == "presence")
        return Summary(figures, _top(watchers), _top(watched))

    def about(self, key: str) -> About:
        return About(
            key=key,
            bindings=[b for b in self.bindings if b.aor == key],
            publications=[p for p in self.publications if p.presentity == key],
            watched_by=[s for s in self.subscriptions if s.presentity == key],
            watching=[s for s in self.subscriptions if s.watcher_key == key],
        )


@dataclass(frozen=True, slots=True)
class NodeFigures:
    node: str
    aors: int
    bindings: int
    subscriptions: int
    by_event: dict[str, int]
    by_state: dict[str, int]
    publications: int
    published: int
    """Presentities with a publication."""

    def line(self) -> str:
        detail = ""
        if self.subscriptions:
            events = ", ".join(f"{n} {event}" for event, n in self.by_event.items())
            states = ", ".join(f"{n} {state}" for state, n in self.by_state.items())
            detail = f" ({events}; {states})"
        return (
            f"{self.node}: {self.aors} AORs ({self.bindings} bindings), {self.subscriptions}"
            f" subscriptions{detail}, {self.publications} publications of {self.published}"
            " presentities"
        )


@dataclass(frozen=True, slots=True)
class Summary:
    nodes: list[NodeFigures]
    top_watchers: list[tuple[str, int]]
    """The watchers holding the most subscriptions, at every node (``max_subscriptions``)."""
    top_presentities: list[tuple[str, int]]
    """The presentities with the most presence watchers."""

    def lines(self) -> list[str]:
        out = [figures.line() for figures in self.nodes]
        if not out:
            out.append("no bindings, publications or subscriptions")
        for title, ranked in (
            ("watchers holding the most subscriptions", self.top_watchers),
            ("presentities with the most watchers", self.top_presentities),
        ):
            if ranked:
                out.append(f"{title}: " + ", ".join(f"{key} {n}" for key, n in ranked))
        return out


@dataclass(frozen=True, slots=True)
class About:
    key: str
    bindings: list[BindingRow]
    publications: list[PublicationRow]
    watched_by: list[SubscriptionRow]
    watching: list[SubscriptionRow]

    def lines(self) -> list[str]:
        out = [self.key]
        for b in self.bindings:
            agent = f', "{b.user_agent}"' if b.user_agent else ""
            flow = f", flow {b.instance}" if b.instance else ""
            path = f", path {', '.join(b.path)}" if b.path else ""
            out.append(
                f"  registered at {b.node}: <{b.contact}>, {_expiry(b.expires_in)},"
                f" from {b.source}{agent}{flow}{path}"
            )
        for p in self.publications:
            out.append(
                f"  published at {p.node}: etag {p.etag}, {p.size} bytes, {_expiry(p.expires_in)}"
            )
        out += [_subscription_line("watched by", s.watcher, s) for s in self.watched_by]
        out += [_subscription_line("watching", s.presentity, s) for s in self.watching]
        if len(out) == 1:
            out.append("  nothing held: not registered, nothing published, no subscription")
        return out


def _subscription_line(title: str, other: str, s: SubscriptionRow) -> str:
    return (
        f"  {title} {other} at {s.node} ({s.id}): {s.event} {s.state}, {_expiry(s.expires_in)},"
        f" NOTIFYs to <{s.remote_target}> (requests from {s.source})"
    )


def _rows(
    conn: sqlite3.Connection, tables: set[str], table: str, columns: str
) -> list[tuple[Any, ...]]:
    """The rows of ``table`` in a stable order, none when this database has no such table (a
    registrar-only network has no presence tables)."""
    if table not in tables:
        return []
    order = ", ".join(str(n + 1) for n in range(min(3, columns.count(",") + 1)))
    return conn.execute(f"SELECT {columns} FROM {table} ORDER BY {order}").fetchall()  # noqa: S608


def _left(expires_at: float, now: float) -> int:
    return round(expires_at - now)


def _top(counts: Counter[str]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:TOP]


def _print(found: Summary | About, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(asdict(found), indent=2))
    else:
        print("\n".join(found.lines()))


def _expiry(seconds: int) -> str:
    return f"expires in {seconds} s" if seconds >= 0 else f"expired {-seconds} s ago"


__all__ = ["About", "NetworkState", "Summary", "register", "run_show"]
