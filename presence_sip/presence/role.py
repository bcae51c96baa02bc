"""The presence server role on an :class:`~presence_sip.endpoint.Endpoint` (DESIGN.md steps 8, 10).

SIP in front of :class:`~presence_sip.presence.server.PresenceServer`: checks SUBSCRIBE and
PUBLISH in the order the RFCs give (event package, dialog, Accept, Expires, domain,
authentication, presentity, ownership, authorization), answers, and only then lets the server
send the NOTIFYs the request caused (the 200 always leaves before the first NOTIFY).

Digest authentication applies to every SUBSCRIBE and PUBLISH except those from a trusted peer
(``trusted``; by default one whose TLS certificate was verified, i.e. a gateway or another node).

Our Contact (and Via sent-by) for a dialog is the ``contact_address`` given to the role, else the
Request-URI's host and port when the Request-URI is an IP address, else the first IP literal
among ``domains`` (node.py adds the listen addresses) on the default port.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Final

from presence_sip.auth.guard import RequestGuard, Verdict
from presence_sip.endpoint import Endpoint, Incoming, ResponseCallback
from presence_sip.hss.msisdn import canonical_identity, identity_in_domain
from presence_sip.hss.store import SubscriberStore
from presence_sip.log_limit import LogLimit
from presence_sip.presence.pidf import (
    PIDF_CONTENT_TYPE,
    PIDF_DIFF_CONTENT_TYPE,
    WATCHERINFO_CONTENT_TYPE,
)
from presence_sip.presence.rules import Action, parse_action
from presence_sip.presence.server import (
    PRESENCE,
    WINFO,
    PresenceServer,
    PresenceSettings,
    PresenceStore,
    Subscription,
)
from presence_sip.registrar.flows import registration_flow
from presence_sip.registrar.registrar import Registrar, aor_key
from presence_sip.sharded import ShardedDict
from presence_sip.sip.errors import RemoteProtocolError, SipError
from presence_sip.sip.message import Request, Response
from presence_sip.sip.peer import Peer
from presence_sip.sip.responses import make_response
from presence_sip.sip.uri import SipUri, TelUri, Uri, hostport, is_ip, parse_uri
from presence_sip.storage.sqlite_presence import Connection, SqlitePresenceStore

log = logging.getLogger(__name__)

__all__ = ["EVENTS", "PresenceRole"]

EVENTS = (PRESENCE, WINFO)
"""Event packages served (RFC 3856, RFC 3857)."""
_PIDF_TYPES: Final = frozenset({PIDF_CONTENT_TYPE, PIDF_DIFF_CONTENT_TYPE, "*/*", "application/*"})
_WINFO_TYPES: Final = frozenset({WATCHERINFO_CONTENT_TYPE, "*/*", "application/*"})

Headers = tuple[tuple[str, str], ...]

_NO_RULES: Final[Mapping[str, str]] = MappingProxyType({})
_LET_THROUGH: Final = Verdict(None)
"""The verdict on a request that is not authenticated (trusted peer, or authentication off)."""

_KEY_CACHE_SIZE: Final = 65536
"""URIs whose presentity key is remembered, and Contacts (about; a full shard starts over)."""
_UNCACHED: Final = ""
"""Not in a key cache (no key is empty: a key is None or a non-empty string)."""


class _Refusal(Exception):
    """A request answered with an error (raised inside the checks, turned into a response)."""

    def __init__(
        self, status: int, reason: str | None = None, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = tuple(headers)


class PresenceRole:
    """PUBLISH and SUBSCRIBE handlers of a node; ``get_timer``/``handle_timer`` for the endpoint."""

    def __init__(
        self,
        *,
        endpoint: Endpoint,
        conn: Connection | None = None,
        hss: SubscriberStore,
        registrar: Registrar,
        guard: RequestGuard,
        domains: frozenset[str],
        default_policy: str = "confirm",
        now: float,
        store: PresenceStore | None = None,
        settings: PresenceSettings | None = None,
        contact_address: tuple[str, int] | None = None,
        trusted: Callable[[Incoming], bool] | None = None,
    ) -> None:
        if store is None:
            if conn is None:
                raise ValueError("PresenceRole needs a database connection or a store")
            store = SqlitePresenceStore(conn)
        self.endpoint = endpoint
        self.hss = hss
        self.registrar = registrar
        self.guard = guard
        self.domains = frozenset(d.lower() for d in domains)
        self.contact_address = contact_address
        self.trusted = trusted or _verified_peer
        literals = sorted(d for d in self.domains if is_ip(d))
        self._fallback_host = literals[0] if literals else hss.domain
        self._keys: ShardedDict[str, str | None] = ShardedDict()
        """Presentity key by Request-URI text (watchers and publishers repeat the same URIs)."""
        self._entity_keys: ShardedDict[str, str | None] = ShardedDict()
        """Presentity key by URI text of watchers (From) and PIDF entities (issue 8)."""
        self._over_cap = LogLimit()
        """SUBSCRIBEs refused for ``max_subscriptions``: a WARNING line a minute at most."""
        self._aliases = hss.extra_identities()
        """Extra identities of subscribers (canonical form -> MSISDN), reread on HSS changes."""
        self._home = hss.domain.lower()
        """The network domain the HSS keys extra identities under."""
        self._subscribers: ShardedDict[str, bool] = ShardedDict()
        """Whether a ``+MSISDN`` key is an HSS subscriber, until the HSS changes."""
        self._contacts: ShardedDict[tuple[str, tuple[str, int] | None, str | None], str] = (
            ShardedDict()
        )
        """Our Contact by (transport, listen address, Request-URI when it decides the host)."""
        self.server = PresenceServer(
            store=store,
            ids=endpoint.ids,
            new_branch=endpoint.new_branch,
            send=self._send,
            is_registered=registrar.is_registered,
            rules_for=self._rules_for,
            data_version=hss.data_version,
            entity_key=self._entity_key,
            hss_changed=self._forget_keys,
            exists=self._exists,
            domain=hss.domain,
            default_policy=parse_action(default_policy),
            settings=settings,
            now=now,
            connections=endpoint.connections,
            registration_flow=self._registration_flow,
        )
        endpoint.register("SUBSCRIBE", self.handle_subscribe)
        endpoint.register("PUBLISH", self.handle_publish)
        endpoint.register("NOTIFY", self.handle_notify)
        for event in EVENTS:
            if event not in endpoint.allow_events:
                endpoint.allow_events.append(event)
        for mime in (*self.server.compositor.accepted_types, WATCHERINFO_CONTENT_TYPE):
            if mime not in endpoint.accept:
                endpoint.accept.append(mime)

    # --- endpoint plumbing --------------------------------------------------------------------

    def get_timer(self) -> float | None:
        return self.server.get_timer()

    def handle_timer(self, now: float) -> None:
        self.server.handle_timer(now)

    def reconfigure(
        self, settings: PresenceSettings | None, default_policy: str, now: float
    ) -> None:
        """A configuration reloaded: see :meth:`PresenceServer.reconfigure`."""
        self.server.reconfigure(settings or PresenceSettings(), parse_action(default_policy), now)
        self.server.flush(now)

    def registration_changed(self, aor: str, registered: bool, now: float) -> None:
        """Registrar listener (node.py appends it)."""
        self.server.registration_changed(aor, registered, now)
        self.server.flush(now)

    def close(self) -> None:
        self.server.close()

    def _send(
        self, request: Request, destination: Peer, now: float, callback: ResponseCallback
    ) -> None:
        self.endpoint.send_request(request, destination, now, callback)

    def _answer(self, incoming: Incoming, response: Response, now: float) -> None:
        """Respond first, then let the NOTIFYs this request caused go out."""
        self.endpoint.respond(incoming.key, response, now)
        self.server.flush(now)

    def _handle(
        self, incoming: Incoming, now: float, body: Callable[[Incoming, float], Response]
    ) -> Response | None:
        request = incoming.request
        try:
            response = body(incoming, now)
        except _Refusal as refusal:
            return make_response(
                request,
                refusal.status,
                refusal.reason,
                to_tag=self.endpoint.response_tag(),
                headers=refusal.headers,
            )
        except RemoteProtocolError as exc:
            return make_response(
                request,
                exc.status,
                exc.reason,
                to_tag=self.endpoint.response_tag(),
                headers=getattr(exc, "headers", ()),
            )
        self._answer(incoming, response, now)
        return None

    # --- SUBSCRIBE (RFC 6665 §4.2.1, RFC 3856 §6) ---------------------------------------------

    def handle_subscribe(self, incoming: Incoming, now: float) -> Response | None:
        return self._handle(incoming, now, self._subscribe)

    def _subscribe(self, incoming: Incoming, now: float) -> Response:
        request = incoming.request
        event = self._event(request)
        if request.to.tag:
            return self._resubscribe(incoming, event, now)
        accept_diff = self._check_accept(request, event)
        expires = self._expires(request)
        self._check_domain(request)
        verdict = self._authenticate(incoming, now)
        key = self._presentity_key(request)
        if not self._known(key, now):
            raise _Refusal(404, "Unknown presentity")  # only after authentication
        from_uri = request.from_.uri
        watcher = str(from_uri)
        # cached from the parsed URI: no second parse
        watcher_key = self._entity_key(watcher, from_uri) or watcher
        self._check_watcher(verdict, watcher)
        if expires and self.server.over_subscription_cap(watcher_key):
            self._refuse_over_cap(watcher_key, now)
        if event == WINFO:
            self._check_owner(verdict, key, watcher)  # RFC 3857 §5.2: the presentity only
            action = Action.ALLOW
        else:
            action = self.server.authorize(key, watcher)
        contact = self._local_contact(request, incoming.source)
        sub = self.server.subscribe(
            request,
            presentity=key,
            event=event,
            watcher=watcher,
            watcher_key=watcher_key,
            source=incoming.source,
            local_contact=contact,
            expires=expires,
            accept_diff=accept_diff,
            action=action,
            now=now,
        )
        if sub is None:
            raise _Refusal(403, "Subscription refused by the presentity")  # RFC 3856 §6.6
        return self._subscribe_ok(request, sub, expires)

    def _refuse_over_cap(self, watcher_key: str, now: float) -> None:
        """403 for a new subscription past ``max_subscriptions`` (a fetch holds nothing and
        is answered; a refresh keeps its subscription)."""
        limit = self.server.settings.max_subscriptions
        if self._over_cap.due(now):
            log.warning(
                "%s holds %d subscriptions (max_subscriptions): a new one is refused with 403;"
                " %d refused so far",
                watcher_key,
                limit,
                self._over_cap.count,
            )
        raise _Refusal(403, "Too many subscriptions")

    def _resubscribe(self, incoming: Incoming, event: str, now: float) -> Response:
        request = incoming.request
        sub = self.server.find(request)
        if sub is None or sub.event != event or sub.event_id != _event_id(request):
            # RFC 6665 §8.2.1: package and id match byte by byte, and an Event with an id never
            # matches one without.
            raise _Refusal(481, "Subscription does not exist")  # RFC 6665 §4.2.1.2
        expires = self._expires(request)
        self._authenticate(incoming, now)
        self.server.refresh(sub, request, incoming.source, expires, now)
        return self._subscribe_ok(request, sub, expires)

    def _subscribe_ok(self, request: Request, sub: Subscription, expires: int) -> Response:
        # RFC 6665 §4.2.1.1: 200 (never 202) with the granted Expires; our Contact (target).
        headers = [("Expires", str(expires)), ("Contact", f"<{sub.dialog.local_contact}>")]
        if not request.to.tag:
            # RFC 3261 §12.1.1: the answer that makes the dialog carries the request's
            # Record-Route, in order, or the watcher's refreshes would bypass those proxies.
            headers.extend(
                ("Record-Route", value) for value in request.headers.get_all("Record-Route")
            )
        return make_response(request, 200, to_tag=sub.id, headers=headers)

    def _event(self, request: Request) -> str:
        if request.headers.get("Event") == PRESENCE:
            return PRESENCE  # the common case, decided without parsing the header (issue 8)
        event = request.event
        publish = request.method == "PUBLISH"
        if event is None and not publish:
            raise _Refusal(400, "Missing Event")  # mandatory in a SUBSCRIBE (RFC 6665 §8.2.1)
        # Event packages are compared byte by byte (RFC 6665 §8.2.1): "PRESENCE" is not ours,
        # and our NOTIFYs could not carry it as sent. A PUBLISH without Event is a 489 too (RFC
        # 3903 §6 step 2).
        package = None if event is None else event.package
        if package not in EVENTS or (publish and package != PRESENCE):
            allowed = PRESENCE if publish else ", ".join(EVENTS)
            raise _Refusal(489, None, [("Allow-Events", allowed)])  # RFC 6665 §8.3.2
        return PRESENCE if package == PRESENCE else WINFO  # the constants: one string each

    def _check_accept(self, request: Request, event: str) -> bool:
        """RFC 3856 §6.7: no Accept means PIDF; 406 when nothing we send is acceptable.

        Returns True when partial notification (RFC 5263) may be used."""
        fields = request.headers.get_all("Accept")
        # One field holding just PIDF, compared before splitting it at commas (issue 8).
        if not fields or (event == PRESENCE and fields == _JUST_PIDF):
            return False  # the common cases, decided without building sets (issue 8)
        # RFC 3261 §20.1: an empty Accept means nothing is acceptable; a type with q=0 is
        # refused (RFC 7231 §5.3.1), so neither counts as offered.
        offered = {
            item.split(";", 1)[0].strip().lower()
            for item in request.headers.values("Accept")
            if not _refused_by_q(item)
        }
        offered.discard("")
        wanted = _WINFO_TYPES if event == WINFO else _PIDF_TYPES
        if not offered & wanted:
            ours = (
                WATCHERINFO_CONTENT_TYPE
                if event == WINFO
                else ", ".join(self.server.compositor.accepted_types)
            )
            raise _Refusal(406, None, [("Accept", ours)])
        return event == PRESENCE and PIDF_DIFF_CONTENT_TYPE in offered

    def _expires(self, request: Request) -> int:
        """RFC 6665 §4.2.1.1: default, 423 + Min-Expires below the minimum, cut to the maximum."""
        settings = self.server.settings
        expires = request.expires
        if expires is None:
            return settings.default_expires
        if 0 < expires < settings.min_expires:
            raise _Refusal(423, None, [("Min-Expires", str(settings.min_expires))])
        return min(expires, settings.max_expires)

    # --- PUBLISH (RFC 3903 §6) ----------------------------------------------------------------

    def handle_publish(self, incoming: Incoming, now: float) -> Response | None:
        return self._handle(incoming, now, self._publish)

    def _publish(self, incoming: Incoming, now: float) -> Response:
        request = incoming.request
        self._event(request)
        self._check_domain(request)
        verdict = self._authenticate(incoming, now)
        _check_content_encoding(request)
        key = self._presentity_key(request)
        if verdict.username is not None:
            self._check_owner(verdict, key, None)
        outcome = self.server.publish(
            key,
            if_match=request.sip_if_match,
            expires=request.expires,
            content_type=_mime(request),
            body=request.body,
            now=now,
        )
        headers = [("Expires", str(outcome.expires))]
        if outcome.etag is not None:
            headers.insert(0, ("SIP-ETag", outcome.etag))
        return make_response(request, 200, to_tag=self.endpoint.response_tag(), headers=headers)

    # --- NOTIFY -------------------------------------------------------------------------------

    def handle_notify(self, incoming: Incoming, now: float) -> Response:
        """We subscribe to nothing: a NOTIFY matches no subscription of ours (RFC 6665 §4.1.3)."""
        request = incoming.request
        return make_response(
            request, 481, "Subscription does not exist", to_tag=self.endpoint.response_tag()
        )

    # --- shared checks ------------------------------------------------------------------------

    def _check_domain(self, request: Request) -> None:
        uri = request.request_uri
        if isinstance(uri, SipUri) and uri.host.lower() not in self.domains:
            raise _Refusal(403, "Domain not served here")  # never an open relay (DESIGN.md)

    def _authenticate(self, incoming: Incoming, now: float) -> Verdict:
        """Digest (RFC 3261 §22) unless the request comes from a trusted node."""
        if not self.guard.enabled or self.trusted(incoming):
            return _LET_THROUGH
        verdict = self.guard.check(incoming.request, now, incoming.source)
        if verdict.status:
            raise _Refusal(verdict.status, verdict.reason or None, verdict.challenge_headers)
        return verdict

    def _presentity_key(self, request: Request) -> str:
        keys = self._keys
        # get() with a sentinel, not [] and KeyError: a raise out of a compiled method builds
        # a traceback (thousands of instructions per miss).
        key = keys.get(request.uri, _UNCACHED)
        if key == _UNCACHED:
            key = self._subscriber_of(aor_key(request.request_uri))
            keys.put_bounded(request.uri, key, _KEY_CACHE_SIZE)
        if key is None:
            raise _Refusal(404, "Unknown presentity")
        return key

    def _subscriber_of(self, key: str | None) -> str | None:
        """A ``sip:user@host`` key that is an extra identity of a subscriber (`presence-sip hss
        subscriber add --identity`) stands for that subscriber: its MSISDN key, so that its
        rules, its watchers and its state are the same whichever of its URIs is addressed.
        Resolved in memory: a store query on the request path waits for the group commit's
        transaction (the p99 of the PUBLISH row rose from 2.27 to 2.55 ms with one per new
        presentity)."""
        if key is None or key.startswith("+") or not self._aliases:
            return key
        try:
            identity = canonical_identity(key)
        except ValueError:
            return key
        owner = self._aliases.get(identity)
        if owner is None:
            # The identity written with another host of ours (Twinkle with the node's address
            # as its domain): the one the HSS knows.
            moved = identity_in_domain(identity, self.domains, self._home)
            owner = self._aliases.get(moved) if moved is not None else None
        return key if owner is None else owner

    def _forget_keys(self) -> None:
        """The HSS changed (an identity may have been added or removed): resolve URIs anew."""
        self._aliases = self.hss.extra_identities()
        self._keys = ShardedDict()
        self._entity_keys = ShardedDict()
        self._subscribers = ShardedDict()
        self.server.compositor.forget_entity_keys()  # its cache holds keys made by _entity_key

    def _entity_key(self, uri_text: str, parsed: Uri | None = None) -> str | None:
        """:func:`_entity_key` with a cache: watchers subscribe again and again, to many.

        ``parsed``, when given, is ``uri_text`` already parsed (a From URI): a new entry is then
        made from it instead of parsing the text again (issue 8)."""
        cache = self._entity_keys
        key = cache.get(uri_text, _UNCACHED)
        if key != _UNCACHED:
            return key
        key = aor_key(parsed) if isinstance(parsed, SipUri | TelUri) else _entity_key(uri_text)
        # An extra identity is its subscriber, as in _presentity_key: Linphone publishes a PIDF
        # entity of sip:alice@d to sip:alice@d, which is the number's own presence.
        key = self._subscriber_of(key)
        if key == uri_text:
            key = uri_text  # the usual watcher URI is its own key: one string, not two
        return cache.put_bounded(uri_text, key, _KEY_CACHE_SIZE)

    def _registration_flow(self, sub: Subscription, now: float, failed: Peer) -> Peer | None:
        """A connection the watcher of ``sub`` registered over at this node that reaches it
        where ``failed`` did not (no route set: else the next hop is a proxy's)."""
        dialog = sub.dialog
        if dialog.route_set:
            return None
        key = self._entity_key(sub.watcher)
        if key is None:
            return None
        bindings = self.registrar.bindings(key, now)
        return registration_flow(
            bindings,
            dialog.remote_target,
            dialog.source,
            failed,
            self.endpoint.is_connected,
        )

    def _rules_for(self, key: str) -> Mapping[str, str]:
        """The HSS rules of a presentity: only a subscriber (key ``+MSISDN``) has any, so a
        ``sip:user@host`` key is answered without asking the HSS."""
        return self.hss.rules_for(key) if key.startswith("+") else _NO_RULES

    def _known(self, key: str, now: float) -> bool:
        """A presentity of ours: in the HSS, or (lab mode) registered or publishing."""
        if self.guard.enabled and key.startswith("+"):
            # With authentication only subscribers register or publish: a number removed from
            # the HSS is unknown at once, whatever bindings or publications it left behind.
            return self._is_subscriber(key)
        if self.server.compositor.has_document(key) or self.registrar.is_registered(key, now):
            return True  # in memory: no HSS query (issue 8: one SQLite read per SUBSCRIBE)
        # A number: in the HSS (cached until it changes). Any other key: an extra identity was
        # already resolved to its number (_presentity_key), so no subscriber has this one.
        return key.startswith("+") and self._is_subscriber(key)

    def _is_subscriber(self, key: str) -> bool:
        """``+MSISDN`` is in the HSS (cached until the HSS changes: one read per number)."""
        cached = self._subscribers.get(key)
        if cached is None:
            found = self.hss.get_subscriber(key) is not None
            cached = self._subscribers.put_bounded(key, found, _KEY_CACHE_SIZE)
        return cached

    def _exists(self, key: str) -> bool:
        """For the server after an HSS change: is this watched presentity still ours?"""
        return not (self.guard.enabled and key.startswith("+")) or self._is_subscriber(key)

    def _subscriber_key(self, verdict: Verdict) -> str | None:
        if verdict.username is None:
            return None
        found = self.hss.find_by_identity(verdict.username)
        return None if found is None else found.msisdn

    def _check_watcher(self, verdict: Verdict, watcher: str) -> None:
        """An authenticated watcher subscribes as itself (From = its own identity)."""
        if verdict.username is None:
            return
        own = self._subscriber_key(verdict)
        if own is None:
            raise _Refusal(403, "From does not match the credentials")
        key = self._entity_key(watcher)
        if key != own and self._subscriber_of(key) != own:  # From: one of its extra identities
            raise _Refusal(403, "From does not match the credentials")

    def _check_owner(self, verdict: Verdict, key: str, watcher: str | None) -> None:
        """PUBLISH and presence.winfo are for the presentity itself (403 otherwise)."""
        if verdict.username is not None:
            owner = self._subscriber_key(verdict)
        else:
            owner = self._entity_key(watcher) if watcher is not None else key
        if owner != key:
            raise _Refusal(403, "Not the owner of this presentity")

    def _local_contact(self, request: Request, source: Peer) -> str:
        """Our Contact for a new dialog (see the module docstring), cached by what decides it."""
        local = self.endpoint.local_address(source.transport)
        by_uri = local is None and self.contact_address is None
        key = (source.transport, local, request.uri if by_uri else None)
        contact = self._contacts.get(key)
        if contact is None:
            contact = self._make_contact(request, source, local)
            self._contacts.put_bounded(key, contact, _KEY_CACHE_SIZE)
        return contact

    def _make_contact(self, request: Request, source: Peer, local: tuple[str, int] | None) -> str:
        host: str | None = None
        port: int | None = None
        if self.contact_address is not None:
            host, port = self.contact_address
        elif local is not None:
            host, port = local  # where the node really listens (set by node.py at start)
        else:
            uri = request.request_uri
            if isinstance(uri, SipUri) and is_ip(uri.host):
                host, port = uri.host, uri.port
            else:
                host = self._fallback_host
        transport = "" if source.transport == "udp" else f";transport={source.transport}"
        return f"sip:{hostport(host, port)}{transport}"


def _entity_key(uri_text: str) -> str | None:
    """The presentity key of a URI (``aor_key``); None for anything that is not an address."""
    text = uri_text.strip()
    if text[:5].lower() == "pres:":
        text = "sip:" + text[5:]  # RFC 3859 pres: URIs name the same presentity
    try:
        uri = parse_uri(text)
    except SipError:
        return None
    if not isinstance(uri, SipUri | TelUri):
        return None
    return aor_key(uri)


def _refused_by_q(item: str) -> bool:
    """An Accept item whose q-value is zero (``q=0``, ``q=0.0``, ...)."""
    for param in item.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value) == 0.0
            except ValueError:
                return False
    return False


def _event_id(request: Request) -> str | None:
    """The ``id`` parameter of the Event header (checked by :meth:`PresenceRole._event`)."""
    if request.headers.get("Event") == PRESENCE:
        return None  # the common case, decided without parsing the header (issue 8)
    event = request.event
    return None if event is None else event.id


def _check_content_encoding(request: Request) -> None:
    """RFC 3261 §8.2.3: a body in an encoding we do not decode (we decode none) is a 415 that
    says what we accept, not a document to parse as it is."""
    if request.body and request.headers.get("Content-Encoding") is not None:
        codings = {value.strip().lower() for value in request.headers.values("Content-Encoding")}
        if codings - {"identity", ""}:
            raise _Refusal(415, None, [("Accept-Encoding", "identity")])


def _mime(request: Request) -> str | None:
    """The body's media type (lower case, no parameters)."""
    value = request.headers.get("Content-Type")
    if value in _PLAIN_PIDF_TYPES:
        return value  # the common case, decided without parsing the header (issue 8)
    content_type = request.content_type
    return content_type.mime if content_type else None


_JUST_PIDF: Final = [PIDF_CONTENT_TYPE]
"""``Accept: application/pidf+xml``: acceptable for presence, and no partial notification."""
_PLAIN_PIDF_TYPES: Final = frozenset({PIDF_CONTENT_TYPE, PIDF_DIFF_CONTENT_TYPE})


def _verified_peer(incoming: Incoming) -> bool:
    """Default trust: a request over mutual TLS from a verified node (a gateway that already
    authenticated the watcher and checked the peering, DESIGN.md step 4c) is not challenged."""
    return incoming.identity is not None
