"""The sans-IO core of the presence server (DESIGN.md steps 8 and 10).

It owns the presentities being watched, their watchers (RFC 6665 / RFC 3856 subscriptions), the
event state compositor (RFC 3903), authorization (RFC 5025 semantics over the HSS rules) and
watcherinfo (RFC 3857/3858), and decides every NOTIFY:

* a presentity's document is composed once per change (publications, else its registration:
  registered = ``open``), and the same bytes go to every watcher;
* NOTIFYs are queued and sent by :meth:`PresenceServer.flush`, so the caller answers the SUBSCRIBE
  first, at most one state NOTIFY per ``min_notify_interval`` (first, refresh and final NOTIFYs
  are never delayed), their CSeqs rising across restarts: :mod:`presence_sip.presence.notifier`;
* subscriptions and publications expire from heaps, at most ``purge_batch`` per timer call,
  and a flush sends at most ``purge_batch`` NOTIFYs: a presentity with more watchers than that
  notifies them over several timer calls, a loop iteration apart, so that one PUBLISH does not
  hold the node (1,000 NOTIFYs take ~65 ms of a slow CPU).
The SIP side (parsing SUBSCRIBE/PUBLISH, answering them) is :mod:`presence_sip.presence.role`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Container, Mapping
from typing import Final, Protocol

from presence_sip.deadlines import DeadlineHeap
from presence_sip.dialog.dialog import Dialog
from presence_sip.ids import IdSource
from presence_sip.presence.notifier import (
    END_REASONS,
    NOTIFY_ENDS_SUBSCRIPTION,
    WINFO,
    Notifier,
    NotifySender,
    RegistrationFlow,
)
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
from presence_sip.presence.watcherinfo import WatcherEntry
from presence_sip.presence.watchers import (
    PresenceSettings,
    Presentity,
    Subscription,
    decide_action,
    display_name,
    peer_from_text,
    restore_subscription,
)
from presence_sip.sharded import ShardedDict
from presence_sip.sip.errors import LocalProtocolError, SipError
from presence_sip.sip.message import Request, Response
from presence_sip.sip.peer import Peer

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

_AUTH_INPUT: Final = {
    Action.ALLOW: Input.AUTH_ALLOW,
    Action.POLITE_BLOCK: Input.AUTH_POLITE_BLOCK,
    Action.CONFIRM: Input.AUTH_CONFIRM,
    Action.BLOCK: Input.AUTH_BLOCK,
}

ENDED_WATCHERS_KEPT: Final = 256
"""Ended watchers kept per winfo subscription until its next document lists them."""
INTERNED_STRINGS: Final = 100_000
"""Strings :meth:`PresenceServer._intern` keeps before it starts over."""


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
        registration_flow: RegistrationFlow | None = None,
    ) -> None:
        self.settings = settings or PresenceSettings()
        self.store = store
        self.ids = ids
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
        s = self.settings
        self.notifier = Notifier(
            self,
            settings=s,
            store=store,
            new_branch=new_branch,
            send=send,
            connections=connections,
            domain=domain,
            registration_flow=registration_flow,
        )
        self.compositor = Compositor(
            store,
            ids,
            entity_key,
            entity_of=self.presentity_entity,
            min_expires=s.min_expires,
            max_expires=s.max_expires,
            default_expires=s.default_expires,
            partial=s.partial_publication,
            max_publications=s.max_publications,
            now=now,
        )
        self.subscriptions: ShardedDict[str, Subscription] = ShardedDict()
        self._presentities: dict[str, Presentity] = {}
        self._expiry: DeadlineHeap[str] = DeadlineHeap()
        """Subscription id -> its expiry."""
        self._held: dict[str, int] = {}
        """Subscriptions held by each watcher (:attr:`Subscription.watcher_key`)."""
        self.subscriptions_refused = 0
        """SUBSCRIBEs refused for ``max_subscriptions``."""
        self._strings: dict[str, str] = {}
        self.intern_limit = INTERNED_STRINGS
        """Strings interned before the table starts over (see :meth:`_intern`)."""
        self._next_poll = now
        self._last_now = now
        self._reauth: list[str] = []
        self._ended_watchers: dict[str, list[WatcherEntry]] = {}
        """Winfo subscription id -> the watchers ended since its last document, listed once as
        ``terminated`` with the event that ended them (RFC 3857 §3.2, RFC 3858 §4)."""
        self._data_version: int | None = None
        """The HSS write counter at the last poll; None: not read yet, so the first poll (the
        first timer call) counts as a change and evaluates every restored watcher again: the
        HSS or the default policy may have changed while the node was down."""
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
        return self._peek(key).registration_document(self.is_registered(key, now))

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

    def over_subscription_cap(self, watcher_key: str) -> bool:
        """Whether the watcher ``watcher_key`` holds ``max_subscriptions`` already, so that a
        new subscription of its is to be refused (counted in :attr:`subscriptions_refused`)."""
        if self._held.get(watcher_key, 0) < self.settings.max_subscriptions:
            return False
        self.subscriptions_refused += 1
        return True

    def subscribe(
        self,
        request: Request,
        *,
        presentity: str,
        event: str,
        watcher: str,
        watcher_key: str,
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
            watcher_key=watcher_key,
            dialog=dialog,
            expires_at=now + expires,
            created_at=now,
            accept_diff=accept_diff and self.settings.partial_notification,
            event_id=event_header.id if event_header else None,
            display_name=display_name(request),
            cseq_reserved=self.settings.cseq_block,
            via_sent_by=self.notifier.sent_by(local_contact),
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
            self.notifier.queue(sub)
            return sub
        self._install(sub)
        self.store.save_subscription(sub)
        self.notifier.queue(sub)
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
        held = self._held
        held[sub.watcher_key] = held.get(sub.watcher_key, 0) + 1

    def _restore(self, record: SubscriptionRecord) -> None:
        sub = restore_subscription(
            record,
            cseq_block=self.settings.cseq_block,
            intern=self._intern,
            via_sent_by=self.notifier.sent_by(record.local_contact),
            watcher_key=self.entity_key(record.watcher) or record.watcher,
        )
        # The new block is written before any of it is used (a second crash must not go back).
        self.store.save_cseq(sub.id, sub.cseq_reserved)
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
            sub.winfo_event = END_REASONS.get(effect, "giveup") if effect else "giveup"
            self._end(sub, now)
            if effect is not None:
                self.notifier.queue(sub)
            return
        if sub.state is not before:
            sub.winfo_event = "approved" if sub.state is State.ACTIVE else "subscribe"
            self.store.save_subscription(sub)
            self._winfo_changed(sub.presentity, now)
        if effect is SideEffect.NOTIFY:
            if immediate:
                self.notifier.queue(sub)
            else:
                self.notifier.changed(sub, now)

    def _terminate(self, sub: Subscription, event: Input, now: float) -> None:
        self._apply(sub, event, now, immediate=True)

    def _end(self, sub: Subscription, now: float) -> None:
        """Remove a terminated subscription from the indexes and the store."""
        if self.subscriptions.pop(sub.id) is None:
            return
        self._release(sub.watcher_key)
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

    def _release(self, watcher_key: str) -> None:
        """One subscription fewer held by ``watcher_key``."""
        held = self._held
        left = held.get(watcher_key, 0) - 1
        if left > 0:
            held[watcher_key] = left
        else:
            held.pop(watcher_key, None)

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
                self.notifier.changed(sub, now)

    def reconfigure(self, settings: PresenceSettings, default_policy: Action, now: float) -> None:
        """New settings and default policy (a configuration reloaded).  Subscriptions and
        publications keep the lifetimes they were given (a refresh gets the new limits); the
        next NOTIFY of a throttled subscription keeps its time; a watcher over a lowered
        ``max_subscriptions`` keeps what it holds, and is refused new ones until under it.  A
        new default policy re-evaluates every watcher, as an HSS rule change does: one with no
        rule that was pending becomes active (or ends ``rejected``)."""
        self.settings = settings
        self.notifier.settings = settings
        compositor = self.compositor
        compositor.min_expires = settings.min_expires
        compositor.max_expires = settings.max_expires
        compositor.default_expires = settings.default_expires
        compositor.partial = settings.partial_publication
        compositor.max_publications = settings.max_publications
        if default_policy is not self.default_policy:
            self.default_policy = default_policy
            self._reauth = []  # start over: every watcher under the new policy
            self.reauthorize(now, settings.purge_batch)

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

    # --- NOTIFYs ------------------------------------------------------------------------------

    def flush(self, now: float) -> None:
        """Send the queued NOTIFYs, ``purge_batch`` at most (call after answering the request
        that caused them); the others go at the next timer call, which is due at once."""
        self.notifier.flush(now, self.settings.purge_batch)

    def send_waiting(self, now: float) -> int:
        """Send every NOTIFY still waiting, at once: the slices of a large fan-out not sent
        yet, and those the rate limit holds back (the node is stopping: after its restart they
        would wait for the presentity's next change or the watcher's refresh). Returns how
        many were sent."""
        self.notifier.release_throttled(math.inf, self.subscriptions)
        count = self.notifier.queued_count()
        self.notifier.flush(now, count)
        return count

    def offline_document(self, sub: Subscription) -> bytes:
        """The presentity as neither registered nor publishing, for a politely blocked watcher."""
        return self._peek(sub.presentity, sub.entity).registration_document(False)

    def watcher_entries(self, sub: Subscription, now: float) -> list[WatcherEntry]:
        """What the next watcherinfo document of winfo subscription ``sub`` lists: the
        presentity's watchers, and those ended since the last one (listed this once)."""
        presentity = self._presentities.get(sub.presentity)
        watchers = (
            []
            if presentity is None
            else [w.watcher_entry(now) for w in presentity.watchers.values()]
        )
        watchers.extend(self._ended_watchers.pop(sub.id, ()))
        return watchers

    def answered(self, sid: str, response: Response | None, now: float) -> None:
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
        if response is not None and response.status not in NOTIFY_ENDS_SUBSCRIPTION:
            sub.last_body = None  # the watcher missed that state: full state next time
            log.debug("NOTIFY of %s answered %d: subscription kept", sid, response.status)
            return
        if response is None and self.notifier.retry_elsewhere(sub, now):
            self.flush(now)
            return
        # INFO, not DEBUG: the watcher cannot be told (it learns at its next refresh, 481), so
        # this line is all an operator has when a watcher stops getting updates (a TCP/TLS
        # watcher whose Contact is its closed connection's port that has not registered again).
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
        deadline = self._last_now if self._reauth or self.notifier.pending else self._next_poll
        expiry = self._expiry.next_deadline()
        if expiry is not None and expiry < deadline:
            deadline = expiry
        throttled = self.notifier.next_throttled()
        if throttled is not None and throttled < deadline:
            deadline = throttled
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
        self.notifier.release_throttled(now, self.subscriptions)
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

    def close(self) -> None:
        """Everything is written through; nothing to release."""
        self.notifier.clear()
