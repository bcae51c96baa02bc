"""The stateful proxy role (RFC 3261 §16): decides local vs forwarded, forwards, relays, fails over.

It is consulted by the :class:`Endpoint` before any local handler.  A request is handled locally
when its Request-URI names this node or its domains; it is forwarded only when a configured route
covers the target domain, or when an in-dialog request (To tag) arrived with a Route naming us (it
follows our Record-Route, e.g. a NOTIFY).  Anything else is refused: a node is never an open relay
(a Route naming us on a request outside a dialog, "preloaded", does not make it one: 403 as
Kamailio's default configuration answers).  INVITE is not relayed (no INVITE client transaction):
405, as to an INVITE for us.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

from presence_sip.endpoint import LOCAL, Endpoint, Incoming, RouteDecision
from presence_sip.log_limit import LogLimit
from presence_sip.proxy.forward import (
    LocalIdentity,
    forwarded_copy,
    is_loop,
    loop_hash,
    next_hop_uri,
    process_routes,
    relayed_response,
    strict_router_fixup,
)
from presence_sip.proxy.routing import RouteTable, uri_peer
from presence_sip.sip import Request, Response, make_response, parse_uri
from presence_sip.sip.peer import Peer
from presence_sip.sip.uri import SipUri, TelUri, hostport

log = logging.getLogger(__name__)

BRANCH_TIMEOUT: Final = 5.0
"""Seconds a forwarded request waits for its final answer from one next hop while other records
remain, before it fails over to the next (Kamailio's ``fr_timer`` of a branch): the client's own
Timer F (32 s) would have ended long before ours, so waiting it out made failover useless over
UDP.  The last record gets the whole Timer F."""

DOWN_FOR: Final = 30.0
"""Seconds a next hop that timed out or could not be reached is tried after the other records
(Kamailio's ``dst_blocklist``), instead of costing each request the wait again."""

DOWN_MAX: Final = 1024
"""Next hops remembered as down at once; the oldest goes first."""


@dataclass(slots=True)
class _Forwarding:
    incoming: Incoming
    request: Request
    hops: list[Peer]
    current: Peer | None = None
    """The next hop of the attempt in flight."""
    records: bool = False
    """The hops are a domain's route records (not an in-dialog target, never marked down)."""


class Proxy:
    """Routing decision + stateful forwarding for one node."""

    def __init__(
        self,
        endpoint: Endpoint,
        identity: LocalIdentity,
        routes: RouteTable | None = None,
        *,
        record_route: bool = True,
    ) -> None:
        self.endpoint = endpoint
        self.identity = identity
        self.routes = routes or RouteTable()
        self.record_route = record_route
        self._down: dict[Peer, float] = {}
        """Next hops that timed out or could not be reached, until when (:data:`DOWN_FOR`)."""
        self._viasless = LogLimit()
        """Answers that carried no Via but ours (a next hop that copied only the top Via)."""
        self._failures = LogLimit()
        """Forwarded requests that got no answer from any next hop (one line a minute: while
        every next hop is down, that is every request)."""

    def route(self, incoming: Incoming, now: float) -> RouteDecision:
        request = incoming.request
        # Our Route on an in-dialog request is the Record-Route we put in: follow it.  On an
        # initial request it is only someone's say-so.
        follows_us = process_routes(request, self.identity) and bool(request.to.tag)
        if request.headers.get("Route") is not None:
            if not follows_us and not self._routable(parse_uri(next_hop_uri(request))):
                return make_response(request, 403, "Relaying denied")
            return self._forward(incoming, now)
        ruri = request.request_uri
        if isinstance(ruri, TelUri) or (isinstance(ruri, SipUri) and self.identity.is_ours(ruri)):
            return LOCAL
        if self._routable(ruri) or (follows_us and uri_peer(ruri) is not None):
            return self._forward(incoming, now)
        return make_response(request, 403, "Relaying denied")

    def _routable(self, uri: object) -> bool:
        return isinstance(uri, SipUri) and uri.host.lower() in self.routes

    def _hops(self, request: Request, now: float) -> tuple[list[Peer], bool]:
        """The next hops to try in order, and whether they are a domain's route records."""
        target = parse_uri(next_hop_uri(request))
        if isinstance(target, SipUri) and target.host.lower() in self.routes:
            peers = [hop.peer for hop in self.routes.hops(target.host)]
            # Records known to be down go last, in their order: still tried when all are.
            down = [peer for peer in peers if self._is_down(peer, now)]
            return [peer for peer in peers if peer not in down] + down, True
        peer = uri_peer(target)
        return ([peer] if peer is not None else []), False

    def _is_down(self, peer: Peer, now: float) -> bool:
        until = self._down.get(peer)
        if until is None:
            return False
        if until > now:
            return True
        del self._down[peer]
        return False

    def _went_down(self, peer: Peer, status: int, now: float) -> None:
        known = self._is_down(peer, now)  # (then each request still waiting on it says so too)
        if peer not in self._down and len(self._down) >= DOWN_MAX:
            del self._down[next(iter(self._down))]
        self._down[peer] = now + DOWN_FOR
        if known:
            return
        log.info(
            "next hop %s %s: tried after the others for %d s",
            peer,
            "timed out" if status == 408 else "unreachable",
            DOWN_FOR,
        )

    def _forward(self, incoming: Incoming, now: float) -> Response | None:
        request = incoming.request
        max_forwards = request.max_forwards
        if max_forwards == 0:
            return make_response(request, 483)  # RFC 3261 §16.3 step 3 (RFC 4475 zeromf)
        if is_loop(request, self.identity):
            return make_response(request, 482)  # RFC 3261 §16.3 step 4
        if "Proxy-Require" in request.headers:
            supported = self.endpoint.supported
            unknown = [o for o in request.token_list("Proxy-Require") if o not in supported]
            if unknown:  # RFC 3261 §16.3 step 5
                return make_response(request, 420, headers=[("Unsupported", ", ".join(unknown))])
        if request.method == "INVITE":
            return make_response(request, 405, headers=[("Allow", self.endpoint.allow)])
        strict_router_fixup(request)
        hops, records = self._hops(request, now)
        if not hops:
            return make_response(request, 404, "No route to destination")
        forwarding = _Forwarding(incoming, request, hops, records=records)
        self._try_next(forwarding, now)
        return None

    def _try_next(self, forwarding: _Forwarding, now: float) -> None:
        peer = forwarding.hops.pop(0)
        local = self.endpoint.local_address(peer.transport)
        if local is None:  # (a record of a transport this node does not listen on)
            if forwarding.hops:
                self._try_next(forwarding, now)
            else:
                self._give_up(forwarding, 500, "No transport to next hop", now)
            return
        forwarding.current = peer
        sent_by = hostport(*local)
        request = forwarding.request
        branch = f"{self.endpoint.new_branch()}.{loop_hash(request)}"
        via = f"SIP/2.0/{peer.transport.upper()} {sent_by};branch={branch};rport"
        record_route = None
        if self.record_route and request.method in ("SUBSCRIBE", "REFER", "INVITE"):
            record_route = self._record_route(forwarding.incoming.source, peer, sent_by)
        outgoing = forwarded_copy(request, target=None, via=via, record_route=record_route)

        def relay(response: Response | None, now: float) -> None:
            self._relay(forwarding, response, now)

        timeout = BRANCH_TIMEOUT if forwarding.hops else None
        self.endpoint.send_request(outgoing, peer, now, relay, synthesize=True, timeout=timeout)

    def _record_route(self, source: Peer, peer: Peer, sent_by: str) -> str:
        """Our Record-Route: the address the next hop reaches us at; when the request came in
        over another transport (a UDP phone, a TLS peer network), also the one the previous
        hop reaches us at, below it (RFC 5658 double Record-Route, as Kamailio's ``r2``): each
        side of the dialog then sends its in-dialog requests to us over its own transport."""
        outward = f"<sip:{sent_by};transport={peer.transport};lr>"
        inbound = self.endpoint.local_address(source.transport)
        if source.transport == peer.transport or inbound is None:
            return outward
        return f"{outward}, <sip:{hostport(*inbound)};transport={source.transport};lr>"

    def _relay(self, forwarding: _Forwarding, response: Response | None, now: float) -> None:
        assert response is not None  # sent with synthesize=True
        # A 408/503 the endpoint made for a timeout or a transport error (RFC 3261 §16.7 step
        # 6): ours, stamped as such (an in-dialog request's To-tag is in it: not a way to tell).
        ours = response is self.endpoint.made_here
        if ours and forwarding.records and forwarding.current is not None:
            self._went_down(forwarding.current, response.status, now)
        if response.status in (408, 503) and forwarding.hops:
            # RFC 3263 §4.3: a timeout, a transport error or a 503 fails over to the next record
            self._try_next(forwarding, now)
            return
        relayed = relayed_response(response)
        if relayed is None:
            # RFC 3261 §16.7 step 3: no Via left under ours, so the answer cannot go upstream
            # (the next hop copied only the top Via).  The server transaction still has to end,
            # or it would stay in the table for good: 502, the answer was unusable.
            if self._viasless.due(now):
                log.warning(
                    "%s answer to a forwarded %s from %s carries no Via but ours (%d so far): 502",
                    response.status,
                    forwarding.request.method,
                    forwarding.current,
                    self._viasless.count,
                )
            self.endpoint.reply(forwarding.incoming, 502, "Bad Gateway", now=now)
            return
        if relayed.status == 503:
            # RFC 3261 §16.7 step 6 (and §16.9 for a transport error): a 503 says the element
            # behind us is unavailable, not this proxy; when it is the only answer left, the
            # client gets a 500, so it does not take us for down and fail over or back off
            # from us for every domain (Kamailio's tm does the same).
            relayed = Response(500, "Server Internal Error", relayed.headers, relayed.body)
        if ours:
            self._log_failure(forwarding, response.status, response.reason, now)
            if response.status == 408:
                # RFC 4320 §4.2: no 408 to a non-INVITE request; the client's own transaction
                # has timed out by now (it started first), a late 408 would only be dropped.
                self.endpoint.abandon(forwarding.incoming.key, now)
                return
        self.endpoint.respond(forwarding.incoming.key, relayed, now, stamp=ours)

    def _give_up(self, forwarding: _Forwarding, status: int, reason: str, now: float) -> None:
        self._log_failure(forwarding, status, reason, now)
        self.endpoint.reply(forwarding.incoming, status, reason, now=now)

    def _log_failure(self, forwarding: _Forwarding, status: int, reason: str, now: float) -> None:
        if self._failures.due(now):
            hop = forwarding.current
            log.warning(
                "forwarding %s to %s failed: %d %s (%d forwarded requests failed so far)",
                forwarding.request.method,
                "its next hops" if hop is None else hop,
                status,
                reason,
                self._failures.count,
            )
