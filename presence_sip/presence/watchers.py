"""What the presence server holds per watcher and per presentity, and its settings.

:class:`Subscription` is one watcher's subscription (dialog, machine, pacing state);
:class:`Presentity` groups the watchers of one presentity with its cached documents.
:func:`restore_subscription` makes one again from its stored record after a restart.
:func:`decide_action` maps the HSS rules onto RFC 5025 sub-handling for one watcher.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from presence_sip.dialog.dialog import FORMER_CONNECTION, Dialog
from presence_sip.hss.msisdn import canonical_identity
from presence_sip.presence.pidf_compose import status_document
from presence_sip.presence.publications import MAX_PUBLICATIONS
from presence_sip.presence.rules import Action, decide, most_permissive
from presence_sip.presence.subscriptions import (
    SideEffect,
    State,
    SubscriptionMachine,
    SubscriptionRecord,
)
from presence_sip.presence.watcherinfo import WatcherEntry
from presence_sip.sip.message import Request
from presence_sip.sip.peer import Peer, peer_from_text

__all__ = [
    "MAX_SUBSCRIPTIONS",
    "PresenceSettings",
    "Presentity",
    "Subscription",
    "decide_action",
    "display_name",
    "peer_from_text",
    "restore_subscription",
]

MAX_SUBSCRIPTIONS: Final = 10_000
"""Subscriptions one watcher holds at once (``max_subscriptions``, by default).  Far above a
buddy list on a few devices, each buddy one subscription (no resource lists here), and low
enough that one account cannot take the node's memory (about 1.8 KiB a subscription) or have
one presentity's change sent to it thousands of times.  Kamailio and OpenSIPS set no limit."""


@dataclass(frozen=True, slots=True)
class PresenceSettings:
    """Limits and pacing of the presence server."""

    min_expires: int = 60
    """Shortest subscription/publication accepted (shorter: 423 + Min-Expires)."""
    max_expires: int = 3600
    """Longer requested lifetimes are cut to this."""
    default_expires: int = 3600
    """Lifetime when the request has no Expires (RFC 3856 §6.4)."""
    min_notify_interval: float = 0.0
    """At most one state NOTIFY per subscription per this many seconds (RFC 3856 §6.10)."""
    rules_poll_interval: float = 1.0
    """How often the HSS data version is checked for rule changes."""
    cseq_block: int = 100
    """NOTIFY CSeqs reserved per store write."""
    purge_batch: int = 1000
    """Most expiries handled per timer call (the rest on the next, immediate, call)."""
    partial_publication: bool = True
    """Accept application/pidf-diff+xml PUBLISH bodies (RFC 5264)."""
    partial_notification: bool = True
    """Send application/pidf-diff+xml to watchers that accept it (RFC 5263)."""
    max_publications: int = MAX_PUBLICATIONS
    """Publications one presentity keeps; a new one past that ends the one sent least
    recently."""
    max_subscriptions: int = MAX_SUBSCRIPTIONS
    """Subscriptions one watcher (its address of record) holds at once, to every presentity
    and event package; one more is refused (403) until one of them ends."""


_NEVER: Final = float("-inf")


class Subscription(SubscriptionMachine):
    """One watcher's subscription (mutable; ``id`` is our dialog tag).

    It is its own RFC 6665 machine (a subclass: one object per subscription, issue 8)."""

    __slots__ = (
        "accept_diff",
        "action",
        "created_at",
        "cseq_reserved",
        "dialog",
        "diff_version",
        "display_name",
        "entity",
        "event",
        "event_id",
        "expires_at",
        "final",
        "id",
        "last_body",
        "last_notify_at",
        "presentity",
        "queued",
        "throttled",
        "via_sent_by",
        "watcher",
        "watcher_key",
        "winfo_event",
        "winfo_version",
    )

    def __init__(
        self,
        *,
        id: str,
        presentity: str,
        entity: str,
        event: str,
        watcher: str,
        watcher_key: str,
        dialog: Dialog,
        expires_at: float,
        created_at: float,
        accept_diff: bool,
        event_id: str | None,
        display_name: str | None,
        cseq_reserved: int,
        via_sent_by: str,
    ) -> None:
        super().__init__()
        self.id = id
        self.presentity = presentity
        self.entity = entity
        self.event = event
        self.watcher = watcher
        self.watcher_key = watcher_key
        """Whose subscription this is, for ``max_subscriptions``: the watcher's address of
        record (its subscriber for an extra identity), as it was when the subscription began."""
        self.dialog = dialog
        self.expires_at = expires_at
        self.created_at = created_at
        self.accept_diff = accept_diff
        self.event_id = event_id
        self.display_name = display_name
        self.cseq_reserved = cseq_reserved
        self.via_sent_by = via_sent_by
        self.action: Action | None = None
        self.final: SideEffect | None = None
        self.last_body: bytes | None = None
        self.last_notify_at = _NEVER
        self.queued = False
        self.throttled = False
        self.diff_version = 0
        self.winfo_version = 0
        self.winfo_event = "subscribe"

    @property
    def polite(self) -> bool:
        return self.action is Action.POLITE_BLOCK

    def record(self) -> SubscriptionRecord:
        d = self.dialog
        return SubscriptionRecord(
            id=self.id,
            presentity=self.presentity,
            entity=self.entity,
            event=self.event,
            watcher=self.watcher,
            call_id=d.call_id,
            remote_tag=d.remote_tag,
            local_uri=d.local_uri,
            remote_uri=d.remote_uri,
            remote_target=d.remote_target,
            route_set=d.route_set,
            local_contact=d.local_contact,
            source=str(d.source),
            remote_cseq=d.remote_cseq,
            cseq_reserved=self.cseq_reserved,
            expires_at=self.expires_at,
            created_at=self.created_at,
            state=self.state.value,
            polite=self.polite,
            accept_diff=self.accept_diff,
            event_id=self.event_id,
            display_name=self.display_name,
            flow=d.flow,
        )

    def watcher_entry(self, now: float) -> WatcherEntry:
        """This subscription as an RFC 3858 ``<watcher>``."""
        return WatcherEntry(
            id=self.id,
            uri=self.watcher,
            status=self.state.value,
            event=self.winfo_event,
            display_name=self.display_name,
            duration_subscribed=max(0, int(now - self.created_at)),
            expiration=max(0, int(self.expires_at - now + 0.5)),
        )

    def ended_entry(self, now: float) -> WatcherEntry:
        """This ended subscription as a ``terminated`` ``<watcher>``: the event says why
        (``timeout`` also for an unsubscribe, ``rejected``, ``giveup``, ``noresource``)."""
        return WatcherEntry(
            id=self.id,
            uri=self.watcher,
            status="terminated",
            event=self.winfo_event,
            display_name=self.display_name,
            duration_subscribed=max(0, int(now - self.created_at)),
        )


def restore_subscription(
    record: SubscriptionRecord,
    *,
    cseq_block: int,
    intern: Callable[[str], str],
    via_sent_by: str,
    watcher_key: str,
) -> Subscription:
    """The subscription ``record`` was saved from, in its state (active or pending), with a new
    block of NOTIFY CSeqs reserved (``cseq_reserved``: the caller stores it before any is used,
    so that a second crash does not go back).

    The stored block was reserved when a NOTIFY first went past the one before, and is written
    by the group commit after that NOTIFY left: a crash in between leaves the previous block on
    disk while CSeqs of the new one were used.  One block further is past every CSeq sent
    (RFC 3261 §12.2.1.1: the local CSeq only rises)."""
    start = record.cseq_reserved + cseq_block
    dialog = Dialog(
        call_id=record.call_id,
        local_tag=record.id,
        remote_tag=record.remote_tag,
        local_uri=intern(record.local_uri),
        remote_uri=_shared_remote_uri(record),
        remote_target=record.remote_target,
        route_set=record.route_set,
        local_cseq=start,
        remote_cseq=record.remote_cseq,
        source=_restored_source(record),
        local_contact=intern(record.local_contact),
        flow=record.flow,
    )
    sub = Subscription(
        id=record.id,
        presentity=record.presentity,
        entity=record.entity,
        event=record.event,
        watcher=record.watcher,
        watcher_key=watcher_key,
        dialog=dialog,
        expires_at=record.expires_at,
        created_at=record.created_at,
        accept_diff=record.accept_diff,
        event_id=record.event_id,
        display_name=record.display_name,
        cseq_reserved=start + cseq_block - 1,
        via_sent_by=via_sent_by,
    )
    # Document versions must keep rising in the dialog (RFC 3858 §4: a watcher discards a
    # watcherinfo document not newer than its copy; RFC 5263 §4.4).  They were not stored, but
    # each NOTIFY raised the version by at most one and the CSeq by one, from 0 both: ``start``
    # is above every version sent (a full document may jump ahead).
    sub.diff_version = sub.winfo_version = start
    active = record.state == State.ACTIVE.value
    sub.action = (
        Action.POLITE_BLOCK if record.polite else (Action.ALLOW if active else Action.CONFIRM)
    )
    sub.state = State.ACTIVE if active else State.PENDING
    sub.winfo_event = "approved" if active else "subscribe"
    return sub


def _restored_source(record: SubscriptionRecord) -> Peer:
    """Where the watcher's requests came from.  A watcher bound to its TCP/TLS flow (RFC 5626
    ``ob``) sent them over a connection: one of before the restart (:data:`FORMER_CONNECTION`),
    found gone when the first NOTIFY leaves, so that its new flow is looked for first."""
    source = peer_from_text(record.source)
    if record.flow and source.reliable:
        return Peer(source.transport, source.host, source.port, FORMER_CONNECTION)
    return source


def _shared_remote_uri(record: SubscriptionRecord) -> str:
    """A stored remote URI that is the watcher's URI, alone or in ``<>`` (as rows written before
    2026-11-27 have it), as the watcher's string: one string per subscription, not two."""
    remote, watcher = record.remote_uri, record.watcher
    if remote == watcher or (remote[1:-1] == watcher and remote[:1] == "<" and remote[-1:] == ">"):
        return watcher
    return remote


class Presentity:
    """A watched presentity: its watchers and cached documents."""

    __slots__ = ("entity", "key", "reg_docs", "watchers", "winfo")

    def __init__(self, key: str, entity: str) -> None:
        self.key = key
        self.entity = entity
        self.watchers: dict[str, Subscription] = {}
        self.winfo: dict[str, Subscription] = {}
        self.reg_docs: dict[str, bytes] = {}
        """The documents of presence derived from registration, by ``<basic>`` value."""

    def registration_document(self, registered: bool) -> bytes:
        """Presence derived from registration (``open`` when registered), made once per
        state."""
        basic = "open" if registered else "closed"
        doc = self.reg_docs.get(basic)
        if doc is None:
            note = "registered" if registered else "not registered"
            doc = status_document(self.entity, basic, tuple_id="reg", note=note)
            self.reg_docs[basic] = doc
        return doc


def decide_action(
    rules: Mapping[str, str],
    watcher_uri: str,
    default: Action,
    names_watcher: Callable[[str], bool] | None = None,
) -> Action:
    """The HSS rules' action for a watcher: exact identity rules first, then domain rules
    (``*@host``); unknown action text counts as no rule.

    An exact rule is the watcher's own ``canonical_identity``, or any rule key for which
    ``names_watcher`` says yes: a rule written for one identity of a subscriber (its number,
    ``tel:+44...``) applies when it watches under another (``sip:bob@net-b.test``), as RFC 4745
    §5.1 matches the watcher, not the text it wrote.  Several exact rules combine to the most
    permissive (RFC 4745 §10.2)."""
    if not rules:
        return default  # the common case: nothing to parse (issue 8)
    try:
        canonical = canonical_identity(watcher_uri)
    except ValueError:
        canonical = None
    exact = [
        action
        for key, text in rules.items()
        if (key == canonical or (names_watcher is not None and names_watcher(key)))
        and (action := _action(text)) is not None
    ]
    if exact:
        return most_permissive(exact)
    parsed = {key: a for key, text in rules.items() if (a := _action(text)) is not None}
    return decide(parsed, watcher_uri, default)


def _action(text: str) -> Action | None:
    try:
        return Action(text)
    except ValueError:
        return None


_QUOTED_PAIR: Final = re.compile(r"\\(.)", re.DOTALL)


def display_name(request: Request) -> str | None:
    """The From display name as text: a quoted-string's quotes and quoted-pairs (``\\"``,
    RFC 3261 §25.1) undone, for the watcherinfo document (RFC 3858 display-name)."""
    name = request.from_.display_name
    if name is None:
        return None
    if not (len(name) >= 2 and name.startswith('"') and name.endswith('"')):
        return name
    inner = name[1:-1]
    return _QUOTED_PAIR.sub(r"\1", inner) if "\\" in inner else inner
