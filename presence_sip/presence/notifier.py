"""The NOTIFYs of the presence server: when each leaves, and what it carries.

:class:`Notifier` keeps the NOTIFYs due (sent by :meth:`Notifier.flush`, after the request that
caused them is answered) and the RFC 3856 §6.10 rate limit (at most one state NOTIFY per
subscription per ``min_notify_interval``, the newest state winning), and builds each NOTIFY in
its dialog: Event and Subscription-State (RFC 6665 §4.1.3), the body for the watcher's content
type (PIDF, RFC 5263 pidf-diff, RFC 3858 watcherinfo, nothing while pending or for a refused
watcher), our Via, and the CSeq block the store keeps (NOTIFY CSeqs rise across restarts).

What the body says comes from the :class:`~presence_sip.presence.server.PresenceServer` that
owns it (the presentity's document, its watchers); the answer to each NOTIFY goes back to it.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Container
from typing import TYPE_CHECKING, Final, Protocol

from presence_sip.presence.pidf import (
    PIDF_CONTENT_TYPE,
    PIDF_DIFF_CONTENT_TYPE,
    WATCHERINFO_CONTENT_TYPE,
)
from presence_sip.presence.pidf_diff import make_diff
from presence_sip.presence.rules import Action
from presence_sip.presence.subscriptions import SideEffect, State
from presence_sip.presence.watcherinfo import compose_watcherinfo
from presence_sip.presence.watchers import PresenceSettings, Subscription
from presence_sip.sharded import ShardedDict
from presence_sip.sip.errors import SipError
from presence_sip.sip.message import Request, Response
from presence_sip.sip.peer import Peer
from presence_sip.sip.uri import SipUri, Via, parse_uri, parse_via

if TYPE_CHECKING:
    from presence_sip.presence.server import PresenceServer

# The presence server's logger: operators' log queries name it (this code was part of it).
log = logging.getLogger("presence_sip.presence.server")

__all__ = ["END_REASONS", "NOTIFY_ENDS_SUBSCRIPTION", "WINFO", "Notifier", "NotifySender"]

WINFO = "presence.winfo"

ResponseCallback = Callable[[Response | None, float], None]
NotifySender = Callable[[Request, Peer, float, ResponseCallback], None]
"""Sends one NOTIFY in a client transaction; the callback gets the final response or None."""
RegistrationFlow = Callable[[Subscription, float, Peer], Peer | None]
"""``(subscription, now, failed)``: another address that reaches a watcher where ``failed`` (its
dialog's destination, unanswered or its connection gone) did not: a connection it registered
over (:mod:`presence_sip.registrar.flows`), or None."""

END_REASONS: Final = {
    SideEffect.NOTIFY_REJECTED: "rejected",
    SideEffect.NOTIFY_TIMEOUT: "timeout",
    SideEffect.NOTIFY_NORESOURCE: "noresource",
}
"""The reason a final NOTIFY gives (and watcherinfo's event), by the side effect that ended the
subscription."""
NOTIFY_ENDS_SUBSCRIPTION: Final = frozenset(
    {404, 405, 408, 410, 416, 481, 482, 483, 484, 485, 489, 501, 502, 604}
)
"""Answers to a NOTIFY that remove the subscription: those that end the dialog or its usage
(RFC 5057 §5.1), and 408 as the Timer F timeout of RFC 6665 §4.2.2.  Any other failure (500,
503, 486, 401, ...) ends only that NOTIFY's transaction: the subscription stays and its next
NOTIFY carries the state of then (Kamailio and OpenSIPS remove on 481 and 408 only)."""
_TERMINATED: Final = {
    effect: f"terminated;reason={reason}" for effect, reason in END_REASONS.items()
}
"""Subscription-State of a final NOTIFY, by the side effect that ended the subscription."""
_NO_FINAL_STATE: Final = frozenset({SideEffect.NOTIFY_REJECTED, SideEffect.NOTIFY_NORESOURCE})
"""Final NOTIFYs without a body: a refused watcher learns nothing, a gone presentity has none."""
_EXPIRES_PREFIX: Final = {state: f"{state.value};expires=" for state in State}
"""Subscription-State up to the remaining seconds, by state (no Enum ``.value`` per NOTIFY)."""

SENT_BY_KEPT: Final = 10_000
"""Our Contacts whose Via sent-by is kept worked out (our own addresses: a handful)."""


class CSeqStore(Protocol):
    def save_cseq(self, subscription_id: str, cseq_reserved: int) -> None: ...


class _AllConnections:
    """Every connection counts as up (a server built without an endpoint's table)."""

    def __contains__(self, connection: object) -> bool:
        return True


_ANY: Final = _AllConnections()


def partial_body(old: bytes | None, new: bytes, entity: str) -> bytes:
    """The RFC 5263 body (version 0) taking a watcher from ``old`` to ``new``: a pidf-diff, or
    pidf-full when there is no ``old`` or the diff would not be smaller than the document
    (partial notification exists to make NOTIFYs smaller, RFC 5263 §1)."""
    if old is not None:
        body = make_diff(old, new, version=0, entity=entity)
        if len(body) < len(new):  # (the pidf-full would be the document and its wrapper)
            return body
    return make_diff(None, new, version=0, entity=entity)


class Notifier:
    """The presence server's NOTIFY queue, rate limit and NOTIFY building; see the module
    docstring."""

    def __init__(
        self,
        server: PresenceServer,
        *,
        settings: PresenceSettings,
        store: CSeqStore,
        new_branch: Callable[[], str],
        send: NotifySender,
        connections: Container[int] | None,
        domain: str,
        registration_flow: RegistrationFlow | None = None,
    ) -> None:
        self.server = server
        self.settings = settings
        self.store = store
        self.new_branch = new_branch
        self.send = send
        self.connections: Container[int] = connections if connections is not None else _ANY
        """Ids of the stream connections up now (the endpoint's): a dialog bound to one that
        has closed sends by its route set / Contact."""
        self.domain = domain
        self.registration_flow = registration_flow
        self._due: list[Subscription] = []
        self._throttle: list[tuple[float, str]] = []
        self._diffs: dict[tuple[bytes, bytes], bytes] = {}
        self._sent_by: dict[str, str] = {}
        self._via_heads: dict[tuple[str, str], tuple[str, str, tuple[str, int | None] | None]] = {}

    # --- when NOTIFYs leave -------------------------------------------------------------------

    def queue(self, sub: Subscription) -> None:
        """Send a NOTIFY to ``sub`` at the next :meth:`flush`, whatever the rate limit."""
        if not sub.queued:
            sub.queued = True
            self._due.append(sub)

    def changed(self, sub: Subscription, now: float) -> None:
        """RFC 3856 §6.10 rate limit: send now, or once the interval since the last one ends."""
        if sub.queued or sub.throttled:
            return  # the NOTIFY already planned will carry the newest state
        ready_at = sub.last_notify_at + self.settings.min_notify_interval
        if ready_at <= now:
            self.queue(sub)
            return
        sub.throttled = True
        heapq.heappush(self._throttle, (ready_at, sub.id))

    def next_throttled(self) -> float | None:
        """When the first NOTIFY held back by the rate limit may leave."""
        heap = self._throttle
        return heap[0][0] if heap else None

    def release_throttled(self, now: float, subscriptions: ShardedDict[str, Subscription]) -> None:
        """Queue the NOTIFYs whose interval has ended (of the subscriptions still there)."""
        heap = self._throttle
        while heap and heap[0][0] <= now:
            _, sid = heapq.heappop(heap)
            sub = subscriptions.get(sid)
            if sub is not None and sub.throttled:
                self.queue(sub)

    def flush(self, now: float, limit: int) -> None:
        """Send the queued NOTIFYs, ``limit`` at most: the others stay queued, in order, for the
        next flush (:attr:`pending`)."""
        due = self._due
        if len(due) > limit:
            self._due = due[limit:]
            del due[limit:]
        else:
            self._due = []
        for sub in due:
            sub.queued = False
            sub.throttled = False
            try:
                self._send_notify(sub, now)
            except SipError:
                log.exception("cannot build NOTIFY for subscription %s", sub.id)
        self._diffs.clear()

    @property
    def pending(self) -> bool:
        """Whether NOTIFYs are queued (a flush sent its ``limit`` and left the rest)."""
        return bool(self._due)

    def queued_count(self) -> int:
        """How many NOTIFYs are queued for the next flushes."""
        return len(self._due)

    def clear(self) -> None:
        """Forget the NOTIFYs due (the server is closing)."""
        self._due.clear()

    def retry_elsewhere(self, sub: Subscription, now: float) -> bool:
        """A NOTIFY of ``sub`` got no answer (timed out, or its connection failed): queue the
        state once more for another way to the watcher, if there is one (False: none).

        First, when it went over the watcher's own connection, by its route set / Contact (as
        a UA that sent no connection of its own would get); then, when that fails too, over a
        connection the watcher registered from (:mod:`presence_sip.registrar.flows`)."""
        dialog = sub.dialog
        failed = dialog.destination()
        if dialog.forget_connection():
            way = "connection gone"
        else:
            flow = (
                None if self.registration_flow is None else self.registration_flow(sub, now, failed)
            )
            if flow is None:
                return False
            dialog.use_flow(flow)
            way = f"{failed} unreachable, by the connection the watcher registered from"
        log.info("NOTIFY of %s: %s, trying %s", sub.id, way, dialog.destination())
        sub.last_body = None  # (the watcher may have missed that state: full state next)
        self.queue(sub)
        return True

    def _connection_gone(self, sub: Subscription, now: float) -> Peer:
        """The watcher's connection has closed (or the node restarted since it came): by its
        route set / Contact at once (RFC 3261 §12.2.1.1), not by a new connection to the port
        that one came from, which takes none (Twinkle audit: a refused connect per vanished
        watcher).  A watcher that asked for its flow (RFC 5626 ``ob``) names that connection's
        own port in its Contact (pjsua): its new flow, the connection it has registered over
        since, comes first (:mod:`presence_sip.registrar.flows`), else the Contact."""
        dialog = sub.dialog
        failed = dialog.destination()
        dialog.forget_connection()
        if dialog.flow and self.registration_flow is not None:
            flow = self.registration_flow(sub, now, failed)
            if flow is not None:
                dialog.use_flow(flow)
                log.info("NOTIFY of %s: flow %s gone, by its new one %s", sub.id, failed, flow)
        return dialog.destination()

    # --- what a NOTIFY carries ----------------------------------------------------------------

    def _send_notify(self, sub: Subscription, now: float) -> None:
        headers, content_type, body = self._content(sub, now)
        if content_type:
            headers.append(("Content-Type", content_type))
        destination = sub.dialog.destination()
        if destination.connection and destination.connection not in self.connections:
            destination = self._connection_gone(sub, now)
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
        server = self.server
        self.send(
            request, destination, now, lambda response, when: server.answered(sid, response, when)
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
            doc = self.server.offline_document(sub)
        else:
            doc = self.server.document(sub.presentity, now)
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
            template = self._diffs[key] = partial_body(old, doc, sub.entity)
        sub.diff_version += 1
        sub.last_body = doc
        # The root's version attribute, whether the root has children or not (an empty diff is
        # `<p:pidf-diff ... version="0"/>`); the XML declaration's is version='1.0'.
        return template.replace(b' version="0"', f' version="{sub.diff_version}"'.encode(), 1)

    def _winfo_body(self, sub: Subscription, now: float) -> bytes:
        watchers = self.server.watcher_entries(sub, now)
        body = compose_watcherinfo(sub.entity, watchers, version=sub.winfo_version)
        sub.winfo_version += 1  # RFC 3857 §5.4: +1 per document sent in this subscription
        return body

    # --- our Via ------------------------------------------------------------------------------

    def sent_by(self, local_contact: str) -> str:
        """Via sent-by of our NOTIFYs: host[:port] of our Contact for the dialog."""
        cached = self._sent_by.get(local_contact)
        if cached is None:
            try:
                uri = parse_uri(local_contact)
            except SipError:
                uri = None
            if isinstance(uri, SipUri):
                cached = uri.host if uri.port is None else f"{uri.host}:{uri.port}"
            else:
                cached = self.domain
            if len(self._sent_by) >= SENT_BY_KEPT:
                self._sent_by.clear()
            self._sent_by[local_contact] = cached
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
        head = (name, f"SIP/2.0/{name} {sent_by};branch=", _via_sent_by(sent_by))
        self._via_heads[transport, sent_by] = head
        return head


def _via_sent_by(sent_by: str) -> tuple[str, int | None] | None:
    """Host and port of a Via sent-by as the Via parser gives them (None: unparsable)."""
    try:
        via = parse_via(f"SIP/2.0/UDP {sent_by}")
    except SipError:
        return None
    return (via.host, via.port)
