"""The sans-IO core of the presence server (DESIGN.md steps 8 and 10).

It owns the presentities being watched, their watchers (RFC 6665 / RFC 3856 subscriptions), the
event state compositor (RFC 3903), authorization (RFC 5025 semantics over the HSS rules) and
watcherinfo (RFC 3857/3858), and decides every NOTIFY:

* a presentity's document is composed once per change (publications, else its registration:
  registered = ``open``), and the same bytes go to every watcher;
* NOTIFYs are queued and sent by :meth:`PresenceServer.flush`, so the caller answers the SUBSCRIBE
  first; each subscription gets at most one state NOTIFY per ``min_notify_interval`` (RFC 3856
  §6.10: the newest state wins when the interval ends); first, refresh and final NOTIFYs are never
  delayed;
* NOTIFY CSeqs rise strictly per dialog, across restarts too: the store keeps a reserved block;
* subscriptions and publications expire from heaps, at most ``purge_batch`` per timer call.

The SIP side (parsing SUBSCRIBE/PUBLISH, answering them) is :mod:`presence_sip.presence.role`.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Container, Mapping
from typing import Final, Protocol

from presence_sip.deadlines import DeadlineHeap
from presence_sip.dialog.dialog import Dialog
from presence_sip.ids import IdSource
from presence_sip.presence.pidf import (
    PIDF_CONTENT_TYPE,
    PIDF_DIFF_CONTENT_TYPE,
    WATCHERINFO_CONTENT_TYPE,
    status_document,
)
from presence_sip.presence.pidf_diff import make_diff
from presence_sip.presence.publications import (
    Compositor,
    EntityKey,
    PublicationStore,
    PublishOutcome,
)
from presence_sip.presence.rules import Action
from presence_sip.presence.subscriptions import (
    Input,
    SideEffect,
    State,
    SubscriptionRecord,
    SubscriptionStore,
)
from presence_sip.presence.watcherinfo import WatcherEntry, compose_watcherinfo
from presence_sip.presence.watchers import (
    PresenceSettings,
    Presentity,
    Subscription,
    decide_action,
    display_name,
    peer_from_text,
)
from presence_sip.sharded import ShardedDict
from presence_sip.sip.errors import LocalProtocolError, SipError
from presence_sip.sip.message import Request, Response
from presence_sip.sip.peer import Peer
from presence_sip.sip.uri import SipUri, Via, parse_uri, parse_via

log = logging.getLogger(__name__)

__all__ = [
    "PRESENCE",
    "WINFO",
    "NotifySender",
    "PresenceServer",
    "PresenceSettings",
    "PresenceStore",
    "Subscription",
    "peer_from_text",
]

PRESENCE = "presence"
WINFO = "presence.winfo"

ResponseCallback = Callable[[Response | None, float], None]
NotifySender = Callable[[Request, Peer, float, ResponseCallback], None]
"""Sends one NOTIFY in a client transaction; the callback gets the final response or None."""

_AUTH_INPUT: Final = {
    Action.ALLOW: Input.AUTH_ALLOW,
    Action.POLITE_BLOCK: Input.AUTH_POLITE_BLOCK,
    Action.CONFIRM: Input.AUTH_CONFIRM,
    Action.BLOCK: Input.AUTH_BLOCK,
}
_REASONS: Final = {
    SideEffect.NOTIFY_REJECTED: "rejected",
    SideEffect.NOTIFY_TIMEOUT: "timeout",
    SideEffect.NOTIFY_NORESOURCE: "noresource",
}
_TERMINATED: Final = {effect: f"terminated;reason={reason}" for effect, reason in _REASONS.items()}
"""Subscription-State of a final NOTIFY, by the side effect that ended the subscription."""
_NO_FINAL_STATE: Final = frozenset({SideEffect.NOTIFY_REJECTED, SideEffect.NOTIFY_NORESOURCE})
"""Final NOTIFYs without a body: a refused watcher learns nothing, a gone presentity has none."""
_NOTIFY_ENDS_SUBSCRIPTION: Final = frozenset(
    {404, 405, 408, 410, 416, 481, 482, 483, 484, 485, 489, 501, 502, 604}
)
"""Answers to a NOTIFY that remove the subscription: those that end the dialog or its usage
(RFC 5057 §5.1), and 408 as the Timer F timeout of RFC 6665 §4.2.2.  Any other failure (500,
503, 486, 401, ...) ends only that NOTIFY's transaction: the subscription stays and its next
NOTIFY carries the state of then (Kamailio and OpenSIPS remove on 481 and 408 only)."""

ENDED_WATCHERS_KEPT: Final = 256
"""Ended watchers kept per winfo subscription until its next document lists them."""
INTERNED_STRINGS: Final = 100_000
"""Strings :meth:`PresenceServer._intern` keeps before it starts over."""


class _AllConnections:
    """Every connection counts as up (a server built without an endpoint's table)."""

    def __contains__(self, connection: object) -> bool:
        return True


_ANY: Final = _AllConnections()

_EXPIRES_PREFIX: Final = {state: f"{state.value};expires=" for state in State}
"""Subscription-State up to the remaining seconds, by state (no Enum ``.value`` per NOTIFY)."""


def _shared_remote_uri(record: SubscriptionRecord) -> str:
    """A stored remote URI that is the watcher's URI, alone or in ``<>`` (as rows written before
    2026-11-27 have it), as the watcher's string: one string per subscription, not two."""
    remote, watcher = record.remote_uri, record.watcher
    if remote == watcher or (remote[1:-1] == watcher and remote[:1] == "<" and remote[-1:] == ">"):
        return watcher
    return remote


def _partial_body(old: bytes | None, new: bytes, entity: str) -> bytes:
    """The RFC 5263 body (version 0) taking a watcher from ``old`` to ``new``: a pidf-diff, or
    pidf-full when there is no ``old`` or the diff would not be smaller than the document
    (partial notification exists to make NOTIFYs smaller, RFC 5263 §1)."""
    if old is not None:
        body = make_diff(old, new, version=0, entity=entity)
        if len(body) < len(new):  # (the pidf-full would be the document and its wrapper)
            return body
    return make_diff(None, new, version=0, entity=entity)


class PresenceStore(SubscriptionStore, PublicationStore, Protocol):
    """Both stores in one (SQLite: ``storage.sqlite_presence.SqlitePresenceStore``)."""


class PresenceServer:
    """Presentities, watchers, publications and NOTIFY scheduling; see the module docstring."""

    def __init__(
        self,
        *,
        store: PresenceStore,
        ids: IdSource,
        new_branch: Callable[[], str],
        send: NotifySender,
        is_registered: Callable[[str, float], bool],
        rules_for: Callable[[str], Mapping[str, str]],
        data_version: Callable[[], int],
        entity_key: EntityKey,
        domain: str,
        hss_changed: Callable[[], None] | None = None,
        exists: Callable[[str], bool] | None = None,
        default_policy: Action = Action.CONFIRM,
        settings: PresenceSettings | None = None,
        now: float = 0.0,
        connections: Container[int] | None = None,
    ) -> None:
        self.settings = settings or PresenceSettings()
        self.store = store
        self.ids = ids
        self.new_branch = new_branch
        self.send = send
        self.is_registered = is_registered
        self.rules_for = rules_for
        self.data_version = data_version
        self.entity_key = entity_key
        self.hss_changed = hss_changed
        """Called when the HSS write counter moves, before the watchers are re-evaluated."""
        self.exists = exists
        """Whether a presentity still exists, asked when the HSS changes (None: always)."""
        self.domain = domain
        self.default_policy = default_policy
        self.connections: Container[int] = connections if connections is not None else _ANY
        """Ids of the stream connections up now (the endpoint's): a dialog bound to one that
        has closed sends by its route set / Contact."""
        s = self.settings
        self.compositor = Compositor(
            store,
            ids,
            entity_key,
            entity_of=self.presentity_entity,
            min_expires=s.min_expires,
            max_expires=s.max_expires,
            default_expires=s.default_expires,
            partial=s.partial_publication,
            now=now,
        )
        self.subscriptions: ShardedDict[str, Subscription] = ShardedDict()
        self._presentities: dict[str, Presentity] = {}
        self._expiry: DeadlineHeap[str] = DeadlineHeap()
        """Subscription id -> its expiry."""
        self._throttle: list[tuple[float, str]] = []
        self._due: list[Subscription] = []
        self._diffs: dict[tuple[bytes, bytes], bytes] = {}
        self._strings: dict[str, str] = {}
        self.intern_limit = INTERNED_STRINGS
        """Strings interned before the table starts over (see :meth:`_intern`)."""
        self._via_heads: dict[tuple[str, str], tuple[str, str, tuple[str, int | None] | None]] = {}
        self._next_poll = now
        self._last_now = now
        self._reauth: list[str] = []
        self._ended_watchers: dict[str, list[WatcherEntry]] = {}
        """Winfo subscription id -> the watchers ended since its last document, listed once as
        ``terminated`` with the event that ended them (RFC 3857 §3.2, RFC 3858 §4)."""
        self._data_version = self._read_data_version()
        for record in store.load_subscriptions(now):
            self._restore(record)
        self.compositor.watched = self._presentities.__contains__

    # --- presentities and documents -----------------------------------------------------------

    def presentity_entity(self, key: str) -> str:
        """The URI a presentity key stands for in documents (``sip:+N@domain;user=phone``)."""
        if key.startswith("+"):
            return f"sip:{key}@{self.domain};user=phone"
        return key

    def _presentity(self, key: str, entity: str | None = None) -> Presentity:
        """The watched presentity ``key`` (created and indexed when new)."""
        found = self._presentities.get(key)
        if found is None:
            found = Presentity(key, entity or self.presentity_entity(key))
            self._presentities[key] = found
        return found

    def _peek(self, key: str, entity: str | None = None) -> Presentity:
        """The presentity ``key``, or a transient one that is not indexed."""
        found = self._presentities.get(key)
        if found is None:
            found = Presentity(key, entity or self.presentity_entity(key))
        return found

    def _entity_of(self, key: str) -> str:
        """The entity of presentity ``key`` (no transient :class:`Presentity` made for it)."""
        found = self._presentities.get(key)
        return self.presentity_entity(key) if found is None else found.entity

    def _forget_if_idle(self, presentity: Presentity) -> None:
        if not presentity.watchers and not presentity.winfo:
            self._presentities.pop(presentity.key, None)

    def document(self, key: str, now: float) -> bytes:
        """The presentity's current PIDF: composed publications, else from its registration."""
        published = self.compositor.document(key)
        if published is not None:
            return published
        presentity = self._peek(key)
        return self._registration_doc(presentity, self.is_registered(key, now))

    @staticmethod
    def _registration_doc(presentity: Presentity, registered: bool) -> bytes:
        """Presence derived from registration, made once per presentity and state."""
        basic = "open" if registered else "closed"
        doc = presentity.reg_docs.get(basic)
        if doc is None:
            note = "registered" if registered else "not registered"
            doc = status_document(presentity.entity, basic, tuple_id="reg", note=note)
            presentity.reg_docs[basic] = doc
        return doc

    def watchers_of(self, key: str) -> list[Subscription]:
        presentity = self._presentities.get(key)
        return [] if presentity is None else list(presentity.watchers.values())

    # --- authorization ------------------------------------------------------------------------

    def authorize(self, presentity: str, watcher_uri: str) -> Action:
        """RFC 5025 sub-handling for ``watcher_uri``: own presence is always allowed."""
        watcher_key = self.entity_key(watcher_uri)
        if watcher_key == presentity:
            return Action.ALLOW
        return self._decide(self.rules_for(presentity), watcher_uri, watcher_key)

    def _decide(
        self, rules: Mapping[str, str], watcher_uri: str, watcher_key: str | None
    ) -> Action:
        """:func:`decide_action`, where a watcher that is a subscriber (key ``+MSISDN``) is
        named by a rule for any identity of that subscriber."""
        if not rules:
            return self.default_policy
        if watcher_key is None or not watcher_key.startswith("+"):
            return decide_action(rules, watcher_uri, self.default_policy)
        entity_key = self.entity_key
        return decide_action(
            rules, watcher_uri, self.default_policy, lambda key: entity_key(key) == watcher_key
        )

    # --- subscriptions ------------------------------------------------------------------------

    def find(self, request: Request) -> Subscription | None:
        """The subscription an in-dialog SUBSCRIBE belongs to (RFC 6665 §4.2.1.2), or None."""
        tag = request.to.tag
        sub = self.subscriptions.get(tag) if tag else None
        if sub is None or not sub.dialog.matches(request):
            return None
        return sub

    def subscribe(
        self,
        request: Request,
        *,
        presentity: str,
        event: str,
        watcher: str,
        source: Peer,
        local_contact: str,
        expires: int,
        accept_diff: bool,
        action: Action,
        now: float,
    ) -> Subscription | None:
        """Create a subscription (RFC 6665 §4.2.1); None when ``action`` blocks it (403).

        ``expires == 0`` is a fetch: one NOTIFY with the state, ``terminated;reason=timeout``.
        Queued NOTIFYs leave with :meth:`flush`, to be called once the 200 is sent.
        """
        local_tag = self.ids.new_id("s")
        dialog = Dialog.from_request(
            request, local_tag=local_tag, source=source, local_contact=self._intern(local_contact)
        )
        dialog.local_uri = self._intern(dialog.local_uri)
        if dialog.remote_uri == watcher:
            dialog.remote_uri = watcher  # one string for both (issue 8: ~75 B a subscription)
        # A bare package name (the common case) has no id parameter: no need to parse it.
        event_header = None if request.headers.get("Event") == event else request.event
        sub = Subscription(
            id=local_tag,
            presentity=presentity,
            entity=self._entity_of(presentity),
            event=event,
            watcher=watcher,
            dialog=dialog,
            expires_at=now + expires,
            created_at=now,
            accept_diff=accept_diff and self.settings.partial_notification,
            event_id=event_header.id if event_header else None,
            display_name=display_name(request),
            cseq_reserved=self.settings.cseq_block,
            via_sent_by=self._sent_by(local_contact),
        )
        sub.action = action
        effect = sub.process(_AUTH_INPUT[action])
        if effect is SideEffect.REJECT:
            return None
        sub.winfo_event = "approved" if sub.state is State.ACTIVE else "subscribe"
        if expires == 0:
            # RFC 3856 §6.3 / RFC 6665 §4.4.3: fetch = one NOTIFY, then the subscription is over
            sub.final = sub.process(Input.UNSUBSCRIBE)
            sub.winfo_event = "timeout"
            self._queue(sub)
            return sub
        self._install(sub)
        self.store.save_subscription(sub)
        self._queue(sub)
        self._winfo_changed(presentity, now)
        return sub

    def refresh(
        self, sub: Subscription, request: Request, source: Peer, expires: int, now: float
    ) -> None:
        """An in-dialog SUBSCRIBE (RFC 6665 §4.2.1.2); ``expires == 0`` unsubscribes.

        Raises :class:`~presence_sip.dialog.dialog.DialogError` (500) for an old CSeq."""
        sub.dialog.receive_request(request, source, target_refresh=True)
        if expires == 0:
            self._terminate(sub, Input.UNSUBSCRIBE, now)
            return
        sub.expires_at = now + expires
        self._expiry.set(sub.id, sub.expires_at)
        self.store.save_subscription(sub)
        sub.last_body = None  # RFC 6665 §4.2.1.2 / RFC 5263: full state after a refresh
        self._apply(sub, Input.REFRESH, now, immediate=True)

    def _install(self, sub: Subscription) -> None:
        self.subscriptions[sub.id] = sub
        presentity = self._presentity(sub.presentity)
        (presentity.winfo if sub.event == WINFO else presentity.watchers)[sub.id] = sub
        self._expiry.set(sub.id, sub.expires_at)

    def _restore(self, record: SubscriptionRecord) -> None:
        # The stored block of CSeqs was reserved when a NOTIFY first went past the one before,
        # and is written by the group commit after that NOTIFY left: a crash in between leaves
        # the previous block on disk while CSeqs of the new one were used.  One block further
        # is past every CSeq sent (RFC 3261 §12.2.1.1: the local CSeq only rises).
        start = record.cseq_reserved + self.settings.cseq_block
        dialog = Dialog(
            call_id=record.call_id,
            local_tag=record.id,
            remote_tag=record.remote_tag,
            local_uri=self._intern(record.local_uri),
            remote_uri=_shared_remote_uri(record),
            remote_target=record.remote_target,
            route_set=record.route_set,
            local_cseq=start,
            remote_cseq=record.remote_cseq,
            source=peer_from_text(record.source),
            local_contact=self._intern(record.local_contact),
        )
        sub = Subscription(
            id=record.id,
            presentity=record.presentity,
            entity=record.entity,
            event=record.event,
            watcher=record.watcher,
            dialog=dialog,
            expires_at=record.expires_at,
            created_at=record.created_at,
            accept_diff=record.accept_diff,
            event_id=record.event_id,
            display_name=record.display_name,
            cseq_reserved=start + self.settings.cseq_block - 1,
            via_sent_by=self._sent_by(record.local_contact),
        )
        # The new block is written before any of it is used (a second crash must not go back).
        self.store.save_cseq(sub.id, sub.cseq_reserved)
        # Document versions must keep rising in the dialog (RFC 3858 §4: a watcher discards a
        # watcherinfo document not newer than its copy; RFC 5263 §4.4).  They were not stored,
        # but each NOTIFY raised the version by at most one and the CSeq by one, from 0 both:
        # ``start`` is above every version sent (a full document may jump ahead).
        sub.diff_version = sub.winfo_version = start
        active = record.state == State.ACTIVE.value
        sub.action = (
            Action.POLITE_BLOCK if record.polite else (Action.ALLOW if active else Action.CONFIRM)
        )
        sub.state = State.ACTIVE if active else State.PENDING
        sub.winfo_event = "approved" if active else "subscribe"
        self._presentity(record.presentity, record.entity)
        self._install(sub)

    def _apply(self, sub: Subscription, event: Input, now: float, *, immediate: bool) -> None:
        """Feed ``event`` to the machine and act on its side effect."""
        before = sub.state
        try:
            effect = sub.process(event)
        except LocalProtocolError:
            log.exception("subscription %s", sub.id)
            effect = None
        if sub.state is State.TERMINATED:
            sub.final = effect
            sub.winfo_event = _REASONS.get(effect, "giveup") if effect else "giveup"
            self._end(sub, now)
            if effect is not None:
                self._queue(sub)
            return
        if sub.state is not before:
            sub.winfo_event = "approved" if sub.state is State.ACTIVE else "subscribe"
            self.store.save_subscription(sub)
            self._winfo_changed(sub.presentity, now)
        if effect is SideEffect.NOTIFY:
            if immediate:
                self._queue(sub)
            else:
                self._changed(sub, now)

    def _terminate(self, sub: Subscription, event: Input, now: float) -> None:
        self._apply(sub, event, now, immediate=True)

    def _end(self, sub: Subscription, now: float) -> None:
        """Remove a terminated subscription from the indexes and the store."""
        if self.subscriptions.pop(sub.id) is None:
            return
        self._expiry.discard(sub.id)
        self.store.delete_subscription(sub.id)
        presentity = self._presentities.get(sub.presentity)
        if presentity is None:
            return
        presentity.watchers.pop(sub.id, None)
        presentity.winfo.pop(sub.id, None)
        if sub.event == PRESENCE:
            if presentity.winfo:  # (no entry made on the usual path: nobody reads one)
                self._list_ended(presentity, sub.ended_entry(now))
            self._winfo_changed(sub.presentity, now)
        else:
            self._ended_watchers.pop(sub.id, None)
        self._forget_if_idle(presentity)

    def _list_ended(self, presentity: Presentity, entry: WatcherEntry) -> None:
        """Keep an ended watcher for the next document of each of the presentity's winfo
        subscriptions (at most :data:`ENDED_WATCHERS_KEPT` each: a full-state document that
        leaves a watcher out ends it too, RFC 3858 §4, only without saying why)."""
        for wid in presentity.winfo:
            ended = self._ended_watchers.setdefault(wid, [])
            if len(ended) >= ENDED_WATCHERS_KEPT:
                del ended[0]
            ended.append(entry)

    # --- changes ------------------------------------------------------------------------------

    def publish(
        self,
        presentity: str,
        *,
        if_match: str | None,
        expires: int | None,
        content_type: str | None,
        body: bytes,
        now: float,
    ) -> PublishOutcome:
        """Apply a PUBLISH (raises ``PublishRefused``/``PidfError``) and notify on change."""
        outcome = self.compositor.publish(
            presentity,
            if_match=if_match,
            expires=expires,
            content_type=content_type,
            body=body,
            now=now,
        )
        if outcome.changed:
            self.state_changed(presentity, now)
        return outcome

    def registration_changed(self, aor: str, registered: bool, now: float) -> None:
        """Registrar listener: registration-derived presence changed (when nothing is published)."""
        if aor in self._presentities and not self.compositor.has_document(aor):
            self.state_changed(aor, now)

    def state_changed(self, key: str, now: float) -> None:
        """The presentity's document changed: every non-polite watcher gets it (rate-limited)."""
        presentity = self._presentities.get(key)
        if presentity is None:
            return
        for sub in list(presentity.watchers.values()):
            if not sub.polite:
                self._apply(sub, Input.STATE_CHANGED, now, immediate=False)

    def _winfo_changed(self, key: str, now: float) -> None:
        presentity = self._presentities.get(key)
        if presentity is not None:
            for sub in presentity.winfo.values():
                self._changed(sub, now)

    def reauthorize(self, now: float, limit: int | None = None) -> None:
        """Re-evaluate watchers against the current rules (after an HSS change), at most
        ``limit`` presentities now; the rest on the next timer calls."""
        if not self._reauth:
            self._reauth = [key for key, p in self._presentities.items() if p.watchers or p.winfo]
        count = len(self._reauth) if limit is None else limit
        while self._reauth and count > 0:
            count -= 1
            presentity = self._presentities.get(self._reauth.pop())
            if presentity is not None and (presentity.watchers or presentity.winfo):
                self._reauthorize(presentity, now)

    def _reauthorize(self, presentity: Presentity, now: float) -> None:
        if self.exists is not None and not self.exists(presentity.key):
            # RFC 6665 §4.1.3: the resource is gone; its watchers (and its own watcher-info
            # subscriptions) end with noresource and need not subscribe again.
            for sub in [*presentity.watchers.values(), *presentity.winfo.values()]:
                self._apply(sub, Input.RESOURCE_GONE, now, immediate=True)
            return
        rules = self.rules_for(presentity.key)
        for sub in list(presentity.watchers.values()):
            watcher_key = self.entity_key(sub.watcher)
            if watcher_key == presentity.key:
                continue
            action = self._decide(rules, sub.watcher, watcher_key)
            if action is not sub.action:
                sub.action = action
                self._apply(sub, _AUTH_INPUT[action], now, immediate=True)

    # --- NOTIFY scheduling --------------------------------------------------------------------

    def _queue(self, sub: Subscription) -> None:
        if not sub.queued:
            sub.queued = True
            self._due.append(sub)

    def _changed(self, sub: Subscription, now: float) -> None:
        """RFC 3856 §6.10 rate limit: send now, or once the interval since the last one ends."""
        if sub.queued or sub.throttled:
            return  # the NOTIFY already planned will carry the newest state
        ready_at = sub.last_notify_at + self.settings.min_notify_interval
        if ready_at <= now:
            self._queue(sub)
            return
        sub.throttled = True
        heapq.heappush(self._throttle, (ready_at, sub.id))

    def flush(self, now: float) -> None:
        """Send every queued NOTIFY (call after answering the request that caused them)."""
        due, self._due = self._due, []
        for sub in due:
            sub.queued = False
            sub.throttled = False
            try:
                self._send_notify(sub, now)
            except SipError:
                log.exception("cannot build NOTIFY for subscription %s", sub.id)
        self._diffs.clear()

    def _send_notify(self, sub: Subscription, now: float) -> None:
        headers, content_type, body = self._content(sub, now)
        if content_type:
            headers.append(("Content-Type", content_type))
        destination = sub.dialog.destination()
        if destination.connection and destination.connection not in self.connections:
            # The watcher's connection has closed: by its route set / Contact at once (RFC 3261
            # §12.2.1.1), not by a new connection to the port that one came from, which takes
            # none (Twinkle audit: a refused connect per vanished watcher).
            sub.dialog.forget_connection()
            destination = sub.dialog.destination()
        transport, head, sent_by = self._via_head(destination.transport, sub.via_sent_by)
        branch = self.new_branch()
        via = f"{head}{branch};rport"
        params = (("branch", branch), ("rport", None))
        parsed = None if sent_by is None else Via(transport, *sent_by, params)
        request = sub.dialog.build_request(
            "NOTIFY", via=via, headers=headers, body=body, parsed_via=parsed
        )
        sub.last_notify_at = now
        if sub.final is None and sub.dialog.local_cseq > sub.cseq_reserved:
            sub.cseq_reserved = sub.dialog.local_cseq + self.settings.cseq_block - 1
            self.store.save_cseq(sub.id, sub.cseq_reserved)
        sid = sub.id
        self.send(
            request, destination, now, lambda response, when: self._answered(sid, response, when)
        )

    def _content(self, sub: Subscription, now: float) -> tuple[list[tuple[str, str]], str, bytes]:
        """Event, Subscription-State (RFC 6665 §4.1.3) and body of the next NOTIFY."""
        event = sub.event if sub.event_id is None else f"{sub.event};id={sub.event_id}"
        headers = [("Event", event)]
        if sub.final is not None:
            headers.append(("Subscription-State", _TERMINATED[sub.final]))
            if sub.final in _NO_FINAL_STATE or sub.action is Action.CONFIRM:
                return headers, "", b""  # RFC 5025: nothing is revealed to a refused watcher
        else:
            remaining = max(0, int(sub.expires_at - now + 0.5))
            headers.append(("Subscription-State", f"{_EXPIRES_PREFIX[sub.state]}{remaining}"))
            if sub.state is State.PENDING:
                return headers, "", b""  # RFC 3856 §6.6.2: no state while pending
        if sub.event == WINFO:
            return headers, WATCHERINFO_CONTENT_TYPE, self._winfo_body(sub, now)
        if sub.polite:
            # RFC 5025 §3.2.1: what an allowed watcher sees of the presentity offline (neither
            # registered nor publishing), so that it cannot tell it is blocked; in the content
            # type this watcher asked for (a diff watcher then holds that document).
            doc = self._registration_doc(self._peek(sub.presentity, sub.entity), False)
        else:
            doc = self.document(sub.presentity, now)
        if not sub.accept_diff:
            return headers, PIDF_CONTENT_TYPE, doc
        return headers, PIDF_DIFF_CONTENT_TYPE, self._diff_body(sub, doc)

    def _diff_body(self, sub: Subscription, doc: bytes) -> bytes:
        """RFC 5263: full state first (pidf-full), then pidf-diff; one diff per (old, new) pair.

        The watcher's copy (``last_body``) and version change only once the body is made."""
        old = sub.last_body
        key = (old or b"", doc)
        template = self._diffs.get(key)
        if template is None:
            template = self._diffs[key] = _partial_body(old, doc, sub.entity)
        sub.diff_version += 1
        sub.last_body = doc
        # The root's version attribute, whether the root has children or not (an empty diff is
        # `<p:pidf-diff ... version="0"/>`); the XML declaration's is version='1.0'.
        return template.replace(b' version="0"', f' version="{sub.diff_version}"'.encode(), 1)

    def _winfo_body(self, sub: Subscription, now: float) -> bytes:
        presentity = self._presentities.get(sub.presentity)
        watchers = (
            []
            if presentity is None
            else [w.watcher_entry(now) for w in presentity.watchers.values()]
        )
        watchers.extend(self._ended_watchers.pop(sub.id, ()))
        body = compose_watcherinfo(sub.entity, watchers, version=sub.winfo_version)
        sub.winfo_version += 1  # RFC 3857 §5.4: +1 per document sent in this subscription
        return body

    def _answered(self, sid: str, response: Response | None, now: float) -> None:
        """RFC 6665 §4.2.2: a NOTIFY that timed out, or whose answer ends the dialog or its
        usage, removes the subscription; other failures end only that NOTIFY's transaction."""
        if response is not None and response.status < 300:
            return  # the usual answer: nothing to look up
        sub = self.subscriptions.get(sid)
        if sub is None:  # the subscription has ended: this was its final NOTIFY
            log.debug(
                "final NOTIFY of %s failed (%s)",
                sid,
                "timeout" if response is None else response.status,
            )
            return
        if response is not None and response.status not in _NOTIFY_ENDS_SUBSCRIPTION:
            sub.last_body = None  # the watcher missed that state: full state next time
            log.debug("NOTIFY of %s answered %d: subscription kept", sid, response.status)
            return
        if response is None and sub.dialog.forget_connection():
            # The watcher's connection closed (or never answered on it): one more try by its
            # route set / Contact, as a UA that sent no connection of its own would get.
            log.info("NOTIFY of %s: connection gone, trying %s", sid, sub.dialog.destination())
            sub.last_body = None
            self._queue(sub)
            self.flush(now)
            return
        # INFO, not DEBUG: the watcher cannot be told (it learns at its next refresh, 481), so
        # this line is all an operator has when a watcher stops getting updates (a TCP/TLS
        # watcher whose Contact is its closed connection's port, after a restart).
        log.info(
            "NOTIFY of %s (%s watching %s) %s: subscription removed",
            sid,
            sub.watcher,
            sub.entity,
            f"got no answer from {sub.dialog.destination()} (timed out or unreachable)"
            if response is None
            else f"answered {response.status}",
        )
        self._apply(sub, Input.NOTIFY_FAILED, now, immediate=True)
        self.flush(now)

    # --- timers -------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        # Called after every datagram (the driver re-arms its timer): no allocation here.
        deadline = self._last_now if self._reauth else self._next_poll
        expiry = self._expiry.next_deadline()
        if expiry is not None and expiry < deadline:
            deadline = expiry
        if self._throttle and self._throttle[0][0] < deadline:
            deadline = self._throttle[0][0]
        publication = self.compositor.get_timer()
        if publication is not None and publication < deadline:
            deadline = publication
        return deadline

    def handle_timer(self, now: float) -> None:
        self._last_now = now
        batch = self.settings.purge_batch
        for key in self.compositor.handle_timer(now, batch):
            self.state_changed(key, now)
        while batch > 0:
            sid = self._expiry.pop_due(now)
            if sid is None:
                break
            batch -= 1
            self._apply(self.subscriptions[sid], Input.EXPIRE, now, immediate=True)
        heap = self._throttle
        while heap and heap[0][0] <= now:
            _, sid = heapq.heappop(heap)
            sub = self.subscriptions.get(sid)
            if sub is not None and sub.throttled:
                self._queue(sub)
        if now >= self._next_poll:
            self._next_poll = now + self.settings.rules_poll_interval
            self._poll_rules(now)
        elif self._reauth:
            self.reauthorize(now, self.settings.purge_batch)
        self.flush(now)

    def _read_data_version(self) -> int | None:
        try:
            return self.data_version()
        except SipError:
            log.warning("cannot read the HSS data version", exc_info=True)
            return None

    def _poll_rules(self, now: float) -> None:
        """A cheap check of the HSS write counter; any change re-evaluates the watchers."""
        version = self._read_data_version()
        if version is not None and version != self._data_version:
            self._data_version = version
            if self.hss_changed is not None:
                self.hss_changed()
            self._reauth = []  # start over: every watcher against the newest rules
            self.reauthorize(now, self.settings.purge_batch)

    # --- helpers ------------------------------------------------------------------------------

    def _intern(self, text: str) -> str:
        """One string object for the URIs many subscriptions repeat (issue 8: memory per
        subscription).  Bounded: watchers choose these texts (a To URI with parameters that
        change every time grew the table without end, soak audit of 2026-11-27); starting
        over costs only the sharing of the strings interned before."""
        strings = self._strings
        found = strings.get(text)
        if found is None:
            if len(strings) >= self.intern_limit:
                strings.clear()
            found = strings[text] = text
        return found

    def _sent_by(self, local_contact: str) -> str:
        """Via sent-by of our NOTIFYs: host[:port] of our Contact for the dialog."""
        cached = self._strings.get("via:" + local_contact)
        if cached is None:
            try:
                uri = parse_uri(local_contact)
            except SipError:
                uri = None
            if isinstance(uri, SipUri):
                cached = uri.host if uri.port is None else f"{uri.host}:{uri.port}"
            else:
                cached = self.domain
            self._strings["via:" + local_contact] = cached
        return cached

    def _via_head(
        self, transport: str, sent_by: str
    ) -> tuple[str, str, tuple[str, int | None] | None]:
        """Our Via's transport, its text up to the branch value, and the sent-by as the Via
        parser gives it (None: unparsable); worked out once per transport and sent-by."""
        try:
            return self._via_heads[transport, sent_by]
        except KeyError:
            pass
        name = transport.upper()
        head = (name, f"SIP/2.0/{name} {sent_by};branch=", self._via_sent_by(sent_by))
        self._via_heads[transport, sent_by] = head
        return head

    def _via_sent_by(self, sent_by: str) -> tuple[str, int | None] | None:
        """Host and port of a Via sent-by as the Via parser gives them (None: unparsable)."""
        try:
            via = parse_via(f"SIP/2.0/UDP {sent_by}")
        except SipError:
            return None
        return (via.host, via.port)

    def close(self) -> None:
        """Everything is written through; nothing to release."""
        self._due.clear()
