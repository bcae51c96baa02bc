"""A UAS-side dialog (RFC 3261 §12) as a notifier holds it for one subscription.

The dialog is created from the dialog-creating request (a SUBSCRIBE, RFC 6665 §4.1.2) and the
local tag we put in the 2xx. It keeps the route set (Record-Route, in order, §12.1.1), the remote
target (Contact), a local CSeq that only rises (§12.2.1.1) and the remote CSeq (§12.2.2), and builds
in-dialog requests (NOTIFY) with the right Request-URI and Route headers for loose and strict
routers.

Where an in-dialog request goes (:meth:`Dialog.destination`) is decided without DNS:

1. The SUBSCRIBE came over TCP/TLS and its connection is known: the request goes back over that
   connection (connection reuse; the first hop is the peer that sent the SUBSCRIBE, RFC 3261
   §18.2.1/RFC 5923 style), which also serves watchers whose Contact is not reachable.  Once
   that connection is gone (:meth:`Dialog.forget_connection`), 2 and 3 apply, until the
   subscriber's next request brings a connection again.  Not when the SUBSCRIBE came through a
   proxy that did not Record-Route (more than one Via, no route set): the far end of that
   connection is the proxy, not the next hop, which is the remote target (§12.2.1.1; a
   Kamailio there answers such a NOTIFY 404, having no Route naming it).
   Over UDP the same holds when the watcher asked for it (RFC 5626 §5.3-§5.4: ``ob`` in its
   Contact URI, the SUBSCRIBE straight from it, no route set; :attr:`Dialog.flow`): in-dialog
   requests go to the address and port its requests come from (its NAT binding, kept open by its
   keep-alives), not to its Contact (an address behind a NAT).
2. Otherwise the next hop URI (first route, else the remote target): an IP host gives the
   :class:`Peer` directly (``transport=`` parameter, ``sips`` = TLS, default UDP; default port 5060,
   5061 for TLS).
3. A host name falls back to the peer the SUBSCRIBE arrived from (this node never resolves names
   in the core; a gateway hop is always configured by address).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from presence_sip.sip.errors import RemoteProtocolError
from presence_sip.sip.headers import Headers
from presence_sip.sip.memo import remember
from presence_sip.sip.message import CSeq, Request
from presence_sip.sip.peer import Peer
from presence_sip.sip.uri import NameAddr, SipUri, Via, is_ip, parse_name_addr

MAX_CSEQ: Final = 2**31 - 1
"""RFC 3261 §8.1.1.5: CSeq values we generate stay below 2**31."""


FORMER_CONNECTION: Final = -1
"""The id of a connection a dialog's requests came on before the node restarted: never one up
now (ids count from 1), so the first in-dialog request finds it gone."""


_DIALOG_KEYS: Final = ("from", "to", "call-id", "cseq", "contact")
"""Lookup keys of the dialog fields every in-dialog request carries, in order."""


class DialogError(RemoteProtocolError):
    """A dialog-creating or in-dialog request that cannot be accepted (carries the status)."""


@dataclass(slots=True)
class Dialog:
    """Mutable dialog state (RFC 3261 §12); ``local_cseq`` is the CSeq of the last request sent."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    """Our URI (the SUBSCRIBE's To URI, without tag)."""
    remote_uri: str
    """The peer's URI: the SUBSCRIBE's From as a name-addr without tag, or only its URI when the
    From held nothing else (no ``<``; then the text can be shared with the watcher's URI, issue 8).
    :meth:`request` writes either as the To header's name-addr."""
    remote_target: str
    """The Contact URI of the last target-refresh request."""
    route_set: tuple[str, ...]
    """Record-Route values of the dialog-creating request, in order (§12.1.1)."""
    local_cseq: int
    remote_cseq: int
    source: Peer
    """Where the dialog-creating (or last refreshing) request came from."""
    local_contact: str
    """Our Contact URI for this dialog."""
    flow: bool = False
    """The watcher's requests come straight from it and its Contact URI has ``ob`` (RFC 5626
    §5.3): in-dialog requests go back the way they come (see the module docstring)."""
    next_hop: Peer | None = field(default=None, repr=False, compare=False)
    """Cache of :meth:`destination` (cleared when the target or source changes)."""
    routing: tuple[str, list[str]] | None = field(default=None, repr=False, compare=False)
    """Cache of :meth:`request_uri_and_routes` (cleared on target refresh)."""

    @classmethod
    def from_request(
        cls,
        request: Request,
        *,
        local_tag: str,
        source: Peer,
        local_contact: str,
        local_cseq: int = 0,
    ) -> Dialog:
        """The UAS dialog of a dialog-creating request (§12.1.1); raises :class:`DialogError`."""
        remote_tag = request.from_.tag
        if not remote_tag:
            raise DialogError("Missing From tag", 400)  # RFC 3261 §8.1.1.3: From MUST have a tag
        target = _contact(request)
        route_set = tuple(request.headers.values("Record-Route"))
        dialog = cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_uri=str(request.to.uri),
            remote_uri=_remote_uri(request.from_),
            remote_target=str(target),
            route_set=route_set,
            local_cseq=local_cseq,
            remote_cseq=request.cseq.seq,
            source=shared_peer(reusable_source(request, source, route_set)),
            local_contact=local_contact,
            flow=asks_for_flow(request, target, route_set),
        )
        if not dialog.route_set:
            # The first NOTIFY goes to the Contact just parsed: no second parse of it (issue 8).
            # Both possible answers (the shared source, a next_hop_peer) are shared Peers already.
            dialog.next_hop = dialog._destination(target)
        return dialog

    @property
    def id(self) -> tuple[str, str, str]:
        """(Call-ID, local tag, remote tag), §12."""
        return (self.call_id, self.local_tag, self.remote_tag)

    def matches(self, request: Request) -> bool:
        """Is ``request`` in this dialog (§12.2.2: Call-ID, To tag = local, From tag = remote)?"""
        return (
            request.call_id == self.call_id
            and request.to.tag == self.local_tag
            and request.from_.tag == self.remote_tag
        )

    def receive_request(self, request: Request, source: Peer, *, target_refresh: bool) -> None:
        """Check and apply an in-dialog request (§12.2.2); raises :class:`DialogError` (500)."""
        seq = request.cseq.seq
        if seq <= self.remote_cseq:
            # RFC 3261 §12.2.2: lower (or equal: a retransmission got past the transaction) -> 500
            raise DialogError("Out of order request", 500)
        if target_refresh and not self._same_target(request):
            contact = _contact(request)  # RFC 3261 §12.2.2 target refresh
            target = str(contact)
            if target != self.remote_target:
                self.remote_target = target
                self.next_hop = None
                self.routing = None
            self.flow = asks_for_flow(request, contact, self.route_set)
        self.remote_cseq = seq
        source = reusable_source(request, source, self.route_set)
        if source != self.source:
            self.source = shared_peer(source)
            self.next_hop = None

    def forget_connection(self) -> bool:
        """The connection the subscriber's requests came on is gone: send the next in-dialog
        request by the route set or the remote target instead (RFC 3261 §12.2.1.1), over a
        connection of our own.  False when that leads back to the same address (nothing else
        to try), or when the requests came over UDP."""
        source = self.source
        if not (source.reliable and source.connection):
            return False
        self.source = shared_peer(source.without_connection())
        self.next_hop = None
        hop = self.destination()
        return (hop.transport, hop.host, hop.port) != (source.transport, source.host, source.port)

    def use_flow(self, peer: Peer) -> None:
        """Send the next in-dialog requests to ``peer``, a connection the subscriber registered
        over (:mod:`presence_sip.registrar.flows`), until its target or source changes."""
        self.next_hop = shared_peer(peer)

    def _same_target(self, request: Request) -> bool:
        """No Contact, or exactly one that is the current target verbatim: nothing to refresh
        (the common case, decided without parsing the Contact)."""
        contacts = request.headers.get_all("Contact")
        return not contacts or (len(contacts) == 1 and contacts[0] == f"<{self.remote_target}>")

    def next_cseq(self) -> int:
        """Advance the local CSeq (§12.2.1.1: strictly by one per request)."""
        if self.local_cseq >= MAX_CSEQ:
            raise DialogError("Local CSeq space exhausted", 500)
        self.local_cseq += 1
        return self.local_cseq

    def build_request(
        self,
        method: str,
        *,
        via: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        max_forwards: int = 70,
        parsed_via: Via | None = None,
    ) -> Request:
        """An in-dialog request with the next CSeq (§12.2.1.1).

        ``headers`` are more fields, with canonical names (``Event``, ``Content-Type``...).
        ``parsed_via``, when given, is ``via`` parsed: the request's ``top_via`` (and ``cseq``)
        are then known without parsing the text just built.
        Loose routing: Request-URI = remote target, Route = the route set. A first route without
        ``lr`` is a strict router: it becomes the Request-URI (parameters not allowed there
        dropped) and the remote target is appended as the last Route.
        """
        request_uri, routes = self.request_uri_and_routes()
        seq = self.next_cseq()
        items = [("Via", via), ("Max-Forwards", str(max_forwards))]
        keys = ["via", "max-forwards"]
        if routes:
            items.extend(("Route", route) for route in routes)
            keys.extend(["route"] * len(routes))
        items += [
            ("From", f"<{self.local_uri}>;tag={self.local_tag}"),
            ("To", self._to_header()),
            ("Call-ID", self.call_id),
            ("CSeq", f"{seq} {method}"),
            ("Contact", f"<{self.local_contact}>"),
        ]
        keys += _DIALOG_KEYS
        for item in headers:
            items.append(item)
            keys.append(item[0].lower())
        items.append(("Content-Length", str(len(body))))
        keys.append("content-length")
        # Every name is canonical (``headers`` too, see above): build the multimap directly.
        out = Headers._from_canonical(items, keys)
        request = Request._parsed(method, request_uri, out, body)
        request.seed(cseq=CSeq(seq, method), top_via=parsed_via)
        return request

    def _to_header(self) -> str:
        remote = self.remote_uri
        if "<" in remote:
            return f"{remote};tag={self.remote_tag}"
        return f"<{remote}>;tag={self.remote_tag}"

    def request_uri_and_routes(self) -> tuple[str, list[str]]:
        """Request-URI and Route values of the next in-dialog request (§12.2.1.1)."""
        if not self.route_set:
            return self.remote_target, []  # nothing to cache (issue 8: memory per dialog)
        if self.routing is None:
            self.routing = self._routing()
        return self.routing

    def _routing(self) -> tuple[str, list[str]]:
        if not self.route_set:
            return self.remote_target, []
        first = parse_name_addr(self.route_set[0], "Route")
        if isinstance(first.uri, SipUri) and first.uri.param("lr") is None:
            strict_uri = first.uri.with_params(
                tuple(p for p in first.uri.params if p[0].lower() not in ("method", "ttl", "maddr"))
            )
            return str(strict_uri), [*self.route_set[1:], f"<{self.remote_target}>"]
        return self.remote_target, list(self.route_set)

    def destination(self) -> Peer:
        """Where the next in-dialog request is sent; see the module docstring."""
        if self.next_hop is None:
            self.next_hop = shared_peer(self._destination())
        return self.next_hop

    def _destination(self, target: SipUri | None = None) -> Peer:
        """``target``: the remote target already parsed (only when there is no route set)."""
        source = self.source
        if source.connection if source.reliable else self.flow:
            return source  # the connection it came on / (UDP, RFC 5626) the address it came from
        if target is not None:
            return next_hop_peer(target, source)
        hop = self.route_set[0] if self.route_set else f"<{self.remote_target}>"
        try:
            uri = parse_name_addr(hop, "Route").uri
        except RemoteProtocolError:
            return source
        return next_hop_peer(uri, source)


def asks_for_flow(request: Request, contact: SipUri, route_set: tuple[str, ...]) -> bool:
    """RFC 5626 §5.3-§5.4: the user agent sent ``request`` to us directly (one Via, no route set)
    and wants the requests of the dialog over the same flow (``ob`` in its Contact URI)."""
    return (
        not route_set
        and contact.param("ob") is not None
        and len(request.headers.values("Via")) == 1
    )


def reusable_source(request: Request, source: Peer, route_set: tuple[str, ...]) -> Peer:
    """``source`` with its connection only where in-dialog requests may go back over it: the
    request came straight from the UA (one Via), or there is a route set (as before: its first
    hop is normally the proxy at the far end of that connection).  With several Vias and no route
    set the far end is a proxy that did not Record-Route: the remote target is the next hop."""
    if not source.connection or route_set or len(request.headers.values("Via")) == 1:
        return source
    return source.without_connection()


_PEERS: Final[dict[Peer, Peer]] = {}


def shared_peer(peer: Peer) -> Peer:
    """One :class:`Peer` object per address: dialogs of watchers behind the same address (a
    gateway, a proxy, a load generator) share it instead of holding one each (issue 8)."""
    found = _PEERS.get(peer)
    if found is None:
        found = remember(_PEERS, peer, peer)
    return found


def next_hop_peer(uri: object, fallback: Peer) -> Peer:
    """The :class:`Peer` of a SIP URI whose host is an IP address; ``fallback`` otherwise."""
    if not isinstance(uri, SipUri) or not is_ip(uri.host):
        return fallback
    transport = uri.transport or ("tls" if uri.scheme == "sips" else "udp")
    if transport not in ("udp", "tcp", "tls"):
        return fallback
    port = uri.port if uri.port is not None else (5061 if transport == "tls" else 5060)
    key = (transport, uri.host, port)
    found = _HOPS.get(key)  # a tuple key hashes in C; a Peer is built and hashed in Python
    if found is None:
        found = remember(_HOPS, key, shared_peer(Peer(transport, uri.host.strip("[]"), port)))
    return found


_HOPS: Final[dict[tuple[str, str, int], Peer]] = {}
"""Shared next-hop Peers by (transport, URI host, port)."""


def _contact(request: Request) -> SipUri:
    contacts = request.contacts
    if len(contacts) != 1:
        raise DialogError("Missing Contact" if not contacts else "More than one Contact", 400)
    uri = contacts[0].uri
    if not isinstance(uri, SipUri):
        raise DialogError("Contact must be a SIP URI", 400)
    return uri


def _remote_uri(name_addr: NameAddr) -> str:
    """:attr:`Dialog.remote_uri` of a From: the name-addr without tag, or only the URI."""
    params = name_addr.params
    if len(params) == 1 and name_addr.display_name is None and params[0][0].lower() == "tag":
        return str(name_addr.uri)  # the usual From: nothing but the URI and the tag
    params = tuple(p for p in params if p[0].lower() != "tag")
    if not params and name_addr.display_name is None:
        return str(name_addr.uri)
    uri = name_addr.uri
    return str(NameAddr(uri, name_addr.display_name, params, True))
