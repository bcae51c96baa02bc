"""Stateless pieces of RFC 3261 §16 proxying: checks, route processing, the forwarded copy."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from presence_sip.sip.headers import Headers
from presence_sip.sip.message import Request, Response
from presence_sip.sip.uri import SipUri, parse_name_addr


@dataclass(frozen=True, slots=True)
class LocalIdentity:
    """How a node recognises itself in URIs and Vias."""

    domains: frozenset[str]
    """Domains served here (lower case)."""
    addresses: frozenset[tuple[str, int]]
    """(host, port) pairs the node listens on."""

    def is_ours(self, uri: SipUri) -> bool:
        host = uri.host.lower().strip("[]")
        if uri.port is None:
            return host in self.domains or any(h == host for h, _ in self.addresses)
        return (host, uri.port) in self.addresses or (
            host in self.domains and uri.port in (5060, 5061)
        )


def loop_hash(request: Request) -> str:
    """RFC 3261 §16.6 step 8: a hash of what identifies this request, for loop detection.

    The topmost Via is left out on purpose: a request that comes back to us carries another top
    Via, so including it would hide every loop; the Request-URI in the hash keeps spirals apart.
    """
    parts = (
        request.uri,
        request.from_.tag or "",
        request.to.tag or "",
        request.call_id,
        str(request.cseq.seq),
        request.headers.get("Proxy-Require") or "",
    )
    return hashlib.sha1("\x00".join(parts).encode(), usedforsecurity=False).hexdigest()[:16]


def is_loop(request: Request, identity: LocalIdentity) -> bool:
    """RFC 3261 §16.3 step 4: one of our Vias carries the same loop hash -> loop (482).

    The same request coming back with another Request-URI is a spiral, which is fine.
    """
    digest = loop_hash(request)
    for via in request.vias:
        host = via.host.lower()
        if host.startswith("["):  # an IPv6 reference: the addresses hold it bare (hostport)
            host = host[1:-1]
        if (host, via.port or 5060) in identity.addresses:
            branch = via.branch or ""
            if branch.endswith("." + digest):
                return True
    return False


def process_routes(request: Request, identity: LocalIdentity) -> bool:
    """RFC 3261 §16.4: strict-router fix-up and removal of our own top Route(s).

    Returns True when a Route naming us was removed (the request was routed through us on purpose,
    e.g. an in-dialog NOTIFY following our Record-Route).
    """
    ruri = request.request_uri
    routes = request.headers.values("Route")
    removed = False
    if (
        isinstance(ruri, SipUri)
        and identity.is_ours(ruri)
        and routes
        and ruri.param("lr") is not None
    ):
        # The previous hop was a strict router: the real target is the last Route.
        last = parse_name_addr(routes[-1], "Route")
        request.uri = str(last.uri)
        request.headers.remove("Route")
        routes = routes[:-1]
        for value in routes:
            request.headers.add("Route", value)
        request.invalidate()
        # (The Request-URI was the first of a double Record-Route: the second, ours too, is
        # next; left there, the request went to this node again and was answered 482.)
        removed = True
    for route in routes:
        top = parse_name_addr(route, "Route").uri
        if not (isinstance(top, SipUri) and identity.is_ours(top)):
            break
        # (Every one of ours on top: a double Record-Route put two, RFC 5658.)
        request.headers.pop_first_value("Route")
        removed = True
    if removed:
        request.invalidate()
    return removed


def forwarded_copy(
    request: Request,
    *,
    target: str | None,
    via: str,
    record_route: str | None,
) -> Request:
    """RFC 3261 §16.6 steps 1-8: the request to send to the next hop."""
    headers = Headers()
    headers.add("Via", via)
    max_forwards_done = False
    record_route_done = record_route is None
    for name, value in request.headers:
        if name == "Max-Forwards":
            value = str(int(value.strip()) - 1)
            max_forwards_done = True
        elif name == "Record-Route" and not record_route_done:
            headers.add("Record-Route", record_route or "")
            record_route_done = True
        headers.add(name, value)
    if not max_forwards_done:
        headers.add("Max-Forwards", "69")
    if not record_route_done and record_route is not None:
        headers.add("Record-Route", record_route)
    uri = target if target is not None else request.uri
    return Request(request.method, uri, headers, request.body)


def next_hop_uri(request: Request) -> str:
    """Where a request goes after route processing: the top Route if any, else the Request-URI."""
    routes = request.headers.values("Route")
    if routes:
        return str(parse_name_addr(routes[0], "Route").uri)
    return request.uri


def relayed_response(response: Response) -> Response | None:
    """RFC 3261 §16.7 step 3: drop our top Via; None when no Via is left (the response was ours)."""
    headers = response.headers.copy()
    headers.pop_first_value("Via")
    if "Via" not in headers:
        return None
    return Response(response.status, response.reason, headers, response.body)


def strict_router_fixup(request: Request) -> None:
    """RFC 3261 §16.6 step 6: when the next hop (top Route) is a strict router (no ``lr``), it
    becomes the Request-URI and the old Request-URI goes to the end of the Route set."""
    routes = request.headers.values("Route")
    if not routes:
        return
    top = parse_name_addr(routes[0], "Route").uri
    if not isinstance(top, SipUri) or top.param("lr") is not None:
        return
    request.headers.remove("Route")
    for value in [*routes[1:], f"<{request.uri}>"]:
        request.headers.add("Route", value)
    request.uri = str(top)
    request.invalidate()
