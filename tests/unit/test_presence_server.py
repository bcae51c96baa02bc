"""The presence server end to end through the real Endpoint, sans-IO, on a virtual clock.

Byte-exact SUBSCRIBE / PUBLISH / REGISTER requests go in with ``endpoint.receive``; what comes out
of ``endpoint.outbox()`` is parsed back and asserted on (RFC 3856 §8, RFC 3903 §10, RFC 3863).
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from presence_sip.auth.digest import DigestAuthenticator, build_authorization
from presence_sip.auth.guard import RequestGuard
from presence_sip.endpoint import Endpoint
from presence_sip.ids import CountingIdSource
from presence_sip.presence.pidf import documents_equivalent, parse_pidf
from presence_sip.presence.pidf_diff import apply_diff, diff_version
from presence_sip.presence.role import PresenceRole
from presence_sip.presence.role import _entity_key as role_entity_key
from presence_sip.presence.server import PresenceSettings
from presence_sip.presence.watcherinfo import parse_watcherinfo, parse_watcherinfo_document
from presence_sip.registrar.bindings import MemoryBindingStore
from presence_sip.registrar.registrar import Registrar
from presence_sip.registrar.role import RegistrarRole
from presence_sip.sip import Request, Response, parse_message, to_bytes
from presence_sip.sip.message import parse_cseq
from presence_sip.sip.peer import Peer
from presence_sip.sip.uri import parse_uri, parse_via
from presence_sip.storage import database
from presence_sip.storage.database import connect, migrate
from presence_sip.storage.group_commit import GroupCommit
from presence_sip.storage.memory_hss import MemorySubscriberStore
from presence_sip.storage.memory_presence import MemoryPresenceStore
from presence_sip.storage.sqlite_presence import SqlitePresenceStore

DOMAIN = "net-b.test"
PS = "127.0.2.11"
BOB = "+447700900123"
ALICE = "+447700900001"
CAROL = "+447700900002"
DAVE = "+447700900003"
WATCHER = Peer("udp", "127.0.0.1", 5070)
PUBLISHER = Peer("udp", "127.0.0.1", 5080)
PHONE = Peer("udp", "127.0.0.1", 5090)
T0 = 1_700_000_000.0
PIDF_TYPES = "application/pidf+xml, application/pidf-diff+xml"
WINFO_TYPE = "application/watcherinfo+xml"
WINFO = "presence.winfo"

PIDF_OPEN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:+447700900123@net-b.test">\n'
    b'<tuple id="sg89ae"><status><basic>open</basic></status>'
    b'<contact priority="0.8">tel:+447700900123</contact></tuple>\n</presence>\n'
)
PIDF_CLOSED = PIDF_OPEN.replace(b"<basic>open</basic>", b"<basic>closed</basic>")
DESK = (
    b'<tuple id="desk"><status><basic>closed</basic></status>'
    b"<contact>sip:+447700900123@desk.net-b.test</contact>"
    b"<note>Desk phone, third floor, room 3.14: calls are forwarded after six rings</note>"
    b"</tuple>\n</presence>\n"
)
PIDF_TWO_OPEN = PIDF_OPEN.replace(b"</presence>\n", DESK)
"""Two tuples: a change of one is a pidf-diff smaller than the document (RFC 5263)."""
PIDF_TWO_CLOSED = PIDF_CLOSED.replace(b"</presence>\n", DESK)


class Node:
    """One presence server (+ registrar) node on a virtual clock."""

    def __init__(
        self,
        *,
        policy: str = "allow",
        store: object | None = None,
        hss: MemorySubscriberStore | None = None,
        auth: bool = False,
        now: float = T0,
        settings: PresenceSettings | None = None,
        ids: CountingIdSource | None = None,
        bindings: MemoryBindingStore | None = None,
    ) -> None:
        self.now = now
        self.ids = ids or CountingIdSource()
        self.endpoint = Endpoint(ids=self.ids)
        if hss is None:
            hss = MemorySubscriberStore(DOMAIN)
            for msisdn in (BOB, ALICE, CAROL):
                hss.add_subscriber(msisdn, "secret")
        self.hss = hss
        if bindings is None:
            bindings = MemoryBindingStore()
        self.registrar = Registrar(bindings, now=now)
        authenticator = DigestAuthenticator(DOMAIN, b"k" * 32) if auth else None
        self.guard = RequestGuard(
            authenticator, lambda user, alg: hss.get_ha1(user, alg.base.value)
        )
        self.store = store if store is not None else MemoryPresenceStore()
        self.role = PresenceRole(
            endpoint=self.endpoint,
            hss=hss,
            registrar=self.registrar,
            guard=self.guard,
            domains=frozenset({DOMAIN, PS}),
            default_policy=policy,
            now=now,
            store=self.store,  # type: ignore[arg-type]
            settings=settings,
        )
        self.registrar.listeners.append(self.role.registration_changed)
        registrar_role = RegistrarRole(
            self.registrar, self.guard, hss, frozenset({DOMAIN, PS}), now=now
        )
        self.endpoint.register("REGISTER", registrar_role.handle)
        self.endpoint.add_role(self.registrar)
        self.endpoint.add_role(registrar_role)
        self.endpoint.add_role(self.role)
        self.sent: list[tuple[Request | Response, Peer]] = []

    def receive(self, data: bytes, source: Peer = WATCHER) -> list[Request | Response]:
        self.endpoint.receive(data, source, self.now)
        return self.drain()

    def drain(self) -> list[Request | Response]:
        out = []
        for data, peer in self.endpoint.outbox():
            message = parse_message(data)
            self.sent.append((message, peer))
            out.append(message)
        return out

    def advance(self, seconds: float, *, answer: int | None = 200) -> list[Request | Response]:
        """Move the clock, firing every timer that falls due on the way; new NOTIFYs are
        answered with ``answer`` (None: left unanswered, so they are retransmitted)."""
        end = self.now + seconds
        out: list[Request | Response] = []
        seen: set[tuple[str, int]] = set()
        while True:
            timer = self.endpoint.get_timer()
            if timer is None or timer > end:
                break
            self.now = max(self.now, timer)
            self.endpoint.handle_timer(self.now)
            for message in self.drain():
                if isinstance(message, Request):
                    key = (message.call_id, message.cseq.seq)
                    if key in seen:
                        continue
                    seen.add(key)
                    if answer is not None:
                        self.answer(message, answer)
                out.append(message)
        self.now = end
        return out

    def answer(self, notify: Request, status: int = 200, source: Peer = WATCHER) -> None:
        """The watcher answers a NOTIFY."""
        reply = Response(status, "OK" if status == 200 else "Failed")
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            for value in notify.headers.get_all(name):
                reply.headers.add(name, value)
        reply.headers.add("Content-Length", "0")
        self.endpoint.receive(to_bytes(reply), source, self.now)
        self.drain()


def sip(lines: list[str], body: bytes = b"") -> bytes:
    head = "\r\n".join([*lines, f"Content-Length: {len(body)}", "", ""])
    return head.encode() + body


_counter = iter(range(1, 1_000_000))


def subscribe(
    *,
    watcher: str = ALICE,
    target: str = f"sip:{BOB}@{DOMAIN};user=phone",
    event: str = "presence",
    expires: int | None = 600,
    accept: str | None = "application/pidf+xml",
    call_id: str | None = None,
    to_tag: str | None = None,
    cseq: int = 1,
    ruri: str | None = None,
    contact: str = "<sip:alice@127.0.0.1:5070>",
    extra: tuple[str, ...] = (),
    port: int = 5070,
    from_tag: str | None = None,
) -> bytes:
    n = next(_counter)
    to = f"<{target}>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"SUBSCRIBE {ruri or target} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKsub{n}",
        "Max-Forwards: 70",
        f'From: "Alice" <sip:{watcher}@net-a.test;user=phone>;tag={from_tag or f"w{n}"}',
        f"To: {to}",
        f"Call-ID: {call_id or f'sub{n}@127.0.0.1'}",
        f"CSeq: {cseq} SUBSCRIBE",
        f"Contact: {contact}",
        f"Event: {event}",
    ]
    if accept is not None:
        lines.append(f"Accept: {accept}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    lines.extend(extra)
    return sip(lines)


def publish(
    body: bytes = PIDF_OPEN,
    *,
    presentity: str = BOB,
    etag: str | None = None,
    expires: int | None = 3600,
    content_type: str | None = "application/pidf+xml",
    event: str | None = "presence",
    extra: tuple[str, ...] = (),
) -> bytes:
    n = next(_counter)
    lines = [
        f"PUBLISH sip:{presentity}@{DOMAIN};user=phone SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKpub{n}",
        "Max-Forwards: 70",
        f"From: <sip:{presentity}@{DOMAIN};user=phone>;tag=p{n}",
        f"To: <sip:{presentity}@{DOMAIN};user=phone>",
        f"Call-ID: pub{n}@127.0.0.1",
        f"CSeq: {n} PUBLISH",
    ]
    if event is not None:
        lines.append(f"Event: {event}")
    if etag is not None:
        lines.append(f"SIP-If-Match: {etag}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if content_type is not None and body:
        lines.append(f"Content-Type: {content_type}")
    lines.extend(extra)
    return sip(lines, body)


def register(
    msisdn: str = BOB,
    expires: int = 3600,
    *,
    aor: str | None = None,
    contact: str = "<sip:bob@127.0.0.1:5090>",
) -> bytes:
    n = next(_counter)
    aor = aor or f"sip:{msisdn}@{DOMAIN};user=phone"
    return sip(
        [
            f"REGISTER sip:{DOMAIN} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKreg{n}",
            "Max-Forwards: 70",
            f"From: <{aor}>;tag=r{n}",
            f"To: <{aor}>",
            f"Call-ID: reg{msisdn}@127.0.0.1",
            f"CSeq: {n} REGISTER",
            f"Contact: {contact}",
            f"Expires: {expires}",
        ]
    )


def responses(messages: list[Request | Response]) -> list[Response]:
    return [m for m in messages if isinstance(m, Response)]


def notifies(messages: list[Request | Response]) -> list[Request]:
    return [m for m in messages if isinstance(m, Request) and m.method == "NOTIFY"]


def only_response(messages: list[Request | Response]) -> Response:
    found = responses(messages)
    assert len(found) == 1, messages
    return found[0]


def basic(notify: Request) -> str | None:
    return parse_pidf(notify.body).basic


def sub_state(notify: Request) -> tuple[str, int | None, str | None]:
    state = notify.subscription_state
    assert state is not None
    return state.state, state.expires, state.reason


# --- the smoke path: SUBSCRIBE -> 200 then NOTIFY ------------------------------------------------


def test_subscribe_gets_200_then_notify_with_registration_state() -> None:
    node = Node()
    out = node.receive(subscribe())
    assert [type(m).__name__ for m in out] == ["Response", "Request"]  # 200 first, then NOTIFY
    ok, notify = out[0], out[1]
    assert isinstance(ok, Response)
    assert ok.status == 200
    assert ok.expires == 600
    assert ok.to.tag
    assert isinstance(notify, Request)
    assert notify.method == "NOTIFY"
    assert notify.from_.tag == ok.to.tag
    assert notify.to.tag == ok.from_.tag
    assert notify.call_id == ok.call_id
    assert sub_state(notify) == ("active", 600, None)
    assert notify.headers.get("Event") == "presence"
    assert notify.headers.get("Content-Type") == "application/pidf+xml"
    assert basic(notify) == "closed"  # not registered, nothing published
    assert notify.uri == "sip:alice@127.0.0.1:5070"
    assert node.sent[-1][1] == Peer("udp", "127.0.0.1", 5070)


def test_notify_via_and_cseq_are_given_as_parsing_would_give_them() -> None:
    """The NOTIFY's typed top Via and CSeq are set when it is built (the transaction layer reads
    them): they must be exactly what parsing its header text gives."""
    node = Node()
    built: list[Request] = []
    send = node.role.server.notifier.send

    def keep(request: Request, *rest: object) -> None:
        built.append(request)
        send(request, *rest)  # type: ignore[arg-type]

    node.role.server.notifier.send = keep
    tcp = subscribe(contact="<sip:alice@127.0.0.1:5070;transport=tcp>", call_id="c-tcp")
    node.receive(tcp.replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP"), Peer("tcp", "127.0.0.1", 4000, 3))
    subscribed(node)
    assert len(built) == 2
    for request in built:
        assert request.top_via == parse_via(request.headers.get("Via") or "")
        assert request.cseq == parse_cseq(request.headers.get("CSeq") or "")
        assert request.top_via.branch
        assert request.top_via.rport is True


def subscribed(node: Node, **kwargs: object) -> tuple[Response, Request]:
    out = node.receive(subscribe(**kwargs))  # type: ignore[arg-type]
    ok = only_response(out)
    assert ok.status == 200, (ok.status, ok.reason)
    found = notifies(out)
    assert len(found) == 1
    node.answer(found[0], source=WATCHER)
    return ok, found[0]


def published(
    node: Node, body: bytes = PIDF_OPEN, **kwargs: object
) -> tuple[Response, list[Request]]:
    out = node.receive(publish(body, **kwargs), PUBLISHER)  # type: ignore[arg-type]
    ok = only_response(out)
    for notify in notifies(out):
        node.answer(notify)
    return ok, notifies(out)


def in_dialog(
    ok: Response, notify: Request, *, expires: int, cseq: int = 2, event: str = "presence"
) -> bytes:
    """A re-SUBSCRIBE to the NOTIFY's Contact with the notifier's tag (as SIPp does)."""
    contact = notify.contacts[0].uri
    return subscribe(
        ruri=str(contact),
        to_tag=ok.to.tag,
        call_id=ok.call_id,
        cseq=cseq,
        expires=expires,
        event=event,
        from_tag=notify.to.tag,
    )


# --- RFC 3903 §10: PUBLISH initial, refresh, modify, remove -------------------------------------


def test_publish_lifecycle_rfc3903() -> None:
    node = Node()
    _, first = subscribed(node)
    assert basic(first) == "closed"
    ok, sent = published(node, PIDF_OPEN, expires=3600)
    assert ok.status == 200
    etag1 = ok.sip_etag
    assert etag1
    assert ok.expires == 3600
    assert len(sent) == 1
    assert basic(sent[0]) == "open"
    assert sent[0].cseq.seq == first.cseq.seq + 1
    # refresh: SIP-If-Match, no body -> new ETag, no NOTIFY (nothing changed)
    ok, sent = published(node, b"", etag=etag1, expires=1800, content_type=None)
    etag2 = ok.sip_etag
    assert ok.status == 200
    assert etag2
    assert etag2 != etag1
    assert ok.expires == 1800
    assert sent == []
    # the old ETag is gone
    ok, _ = published(node, b"", etag=etag1, content_type=None)
    assert ok.status == 412
    # modify: SIP-If-Match and a body
    ok, sent = published(node, PIDF_CLOSED, etag=etag2)
    etag3 = ok.sip_etag
    assert ok.status == 200
    assert etag3 not in (etag1, etag2)
    assert len(sent) == 1
    assert basic(sent[0]) == "closed"
    assert parse_pidf(sent[0].body).tuple_ids == ("sg89ae",)
    # remove: Expires 0 -> back to the registration-derived document
    ok, sent = published(node, b"", etag=etag3, expires=0, content_type=None)
    assert ok.status == 200
    assert ok.expires == 0
    assert ok.sip_etag == etag3  # RFC 3903 §6 step 6: the 200 names the publication removed
    assert len(sent) == 1
    assert parse_pidf(sent[0].body).tuple_ids == ("reg",)
    assert node.store.publications == {}  # type: ignore[attr-defined]


def test_publish_with_identity_content_encoding_is_accepted() -> None:
    node = Node()
    ok, _ = published(node, PIDF_OPEN, extra=("e: identity",))  # compact form of the header
    assert ok.status == 200


def test_publication_expires_on_timer_and_watchers_hear_it() -> None:
    node = Node()
    subscribed(node, expires=3600)
    ok, _ = published(node, PIDF_OPEN, expires=60)
    assert ok.expires == 60
    out = node.advance(61)
    sent = notifies(out)
    assert len(sent) == 1
    assert parse_pidf(sent[0].body).tuple_ids == ("reg",)
    assert node.store.publications == {}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kwargs", "status", "header"),
    [
        ({"etag": "nosuchetag", "body": b"", "content_type": None}, 412, None),
        ({"expires": 10}, 423, ("Min-Expires", "60")),
        ({"event": "dialog"}, 489, ("Allow-Events", "presence")),
        ({"event": None}, 489, ("Allow-Events", "presence")),  # RFC 3903 §6 step 2
        ({"event": "Presence"}, 489, ("Allow-Events", "presence")),  # byte by byte
        ({"content_type": "text/plain"}, 415, ("Accept", PIDF_TYPES)),
        ({"extra": ("Content-Encoding: gzip",)}, 415, ("Accept-Encoding", "identity")),
        ({"body": b"<presence"}, 400, None),
        ({"body": b""}, 400, None),
        ({"body": PIDF_OPEN.replace(b"+447700900123@", b"+447700900001@")}, 400, None),
        ({"body": PIDF_OPEN.replace(b">open<", b">maybe<")}, 400, None),
    ],
    ids=[
        "412",
        "423",
        "489",
        "489-no-event",
        "489-case",
        "415",
        "415-encoding",
        "400-xml",
        "400-nobody",
        "400-entity",
        "400-basic",
    ],
)
def test_publish_errors(
    kwargs: dict[str, object], status: int, header: tuple[str, str] | None
) -> None:
    node = Node()
    body = kwargs.pop("body", PIDF_OPEN)
    ok, sent = published(node, body, **kwargs)  # type: ignore[arg-type]
    assert ok.status == status, ok.reason
    if header is not None:
        assert ok.headers.get(header[0]) == header[1]
    assert sent == []
    assert node.store.publications == {}  # type: ignore[attr-defined]


XXE = (
    b'<?xml version="1.0"?>\n<!DOCTYPE presence [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
    b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:+447700900123@net-b.test">'
    b'<tuple id="a"><status><basic>open</basic></status><note>&xxe;</note></tuple></presence>'
)
LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
    b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:+447700900123@net-b.test">'
    b'<tuple id="a"><status><basic>open</basic></status><note>&lol3;</note></tuple></presence>'
)


@pytest.mark.parametrize("body", [XXE, LAUGHS], ids=["external-entity", "billion-laughs"])
def test_hostile_pidf_is_refused_and_nothing_stored(body: bytes) -> None:
    node = Node()
    _, _first = subscribed(node)
    ok, sent = published(node, body)
    assert ok.status == 400
    assert "Invalid PIDF" in ok.reason
    assert sent == []
    assert node.store.publications == {}  # type: ignore[attr-defined]
    assert node.role.server.compositor.document(BOB) is None


def test_publish_for_someone_elses_presentity_is_refused_when_authenticated() -> None:
    node = Node(auth=True)
    out = node.receive(publish(PIDF_OPEN), PUBLISHER)
    challenge = only_response(out)
    assert challenge.status == 401
    assert challenge.headers.get("WWW-Authenticate")
    # Alice authenticates and publishes for Bob: 403
    data = authorized(publish(PIDF_OPEN), challenge, ALICE)
    ok = only_response(node.receive(data, PUBLISHER))
    assert ok.status == 403
    assert node.store.publications == {}  # type: ignore[attr-defined]
    # Bob may
    ok = only_response(node.receive(authorized(publish(PIDF_OPEN), challenge, BOB), PUBLISHER))
    assert ok.status == 200
    assert ok.sip_etag


@pytest.mark.parametrize(
    ("uri", "status"),
    [
        (f"sip:{BOB}@elsewhere.test;user=phone", 400),  # computed for another resource
        (f"SIP:{BOB}@NET-B.test;user=phone", 200),  # the same URI: scheme and host any case
        ("sip:127.0.0.1:5060", 200),  # this node's own address, as SIPp puts it
        ("sip:127.0.0.2:5060", 400),  # another node's
    ],
)
def test_the_digest_must_name_the_request_uri(uri: str, status: int) -> None:
    """RFC 7616 §3.4.6: credentials computed for another URI are refused (400), not used."""
    node = Node(auth=True)
    node.guard.hosts = frozenset({DOMAIN, "127.0.0.1"})  # what serve gives it
    challenge = only_response(node.receive(publish(PIDF_OPEN), PUBLISHER))
    request = parse_message(publish(PIDF_OPEN))
    assert isinstance(request, Request)
    value = challenge.headers.get_all("WWW-Authenticate")[-1]
    credentials = build_authorization(
        value, username=BOB, password="secret", method="PUBLISH", uri=uri, cnonce="c1", nc=1
    )
    request.headers.add("Authorization", credentials)
    reply = only_response(node.receive(to_bytes(request), PUBLISHER))
    assert reply.status == status, reply.reason
    if status == 400:
        assert reply.reason == "Digest uri does not match the Request-URI"
        assert node.store.publications == {}  # type: ignore[attr-defined]


def authorized(data: bytes, challenge: Response, user: str) -> bytes:
    request = parse_message(data)
    assert isinstance(request, Request)
    value = challenge.headers.get_all("WWW-Authenticate")[-1]
    credentials = build_authorization(
        value,
        username=user,
        password="secret",
        method=request.method,
        uri=request.uri,
        cnonce=f"c{next(_counter)}",
        nc=next(_counter),
        body=request.body,
    )
    request.headers.add("Authorization", credentials)
    via = request.headers.get("Via") or ""
    request.headers.set("Via", via.replace(";branch=z9hG4bK", f";branch=z9hG4bKa{next(_counter)}"))
    return to_bytes(request)


# --- SUBSCRIBE errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "status", "header"),
    [
        ({"event": "dialog"}, 489, ("Allow-Events", "presence, presence.winfo")),
        ({"event": "PRESENCE"}, 489, ("Allow-Events", "presence, presence.winfo")),
        ({"accept": "text/plain"}, 406, ("Accept", PIDF_TYPES)),
        ({"accept": ""}, 406, ("Accept", PIDF_TYPES)),  # RFC 3261 §20.1: nothing acceptable
        ({"accept": "application/pidf+xml;q=0"}, 406, ("Accept", PIDF_TYPES)),
        ({"expires": 30}, 423, ("Min-Expires", "60")),
        ({"target": f"sip:+447700999999@{DOMAIN};user=phone"}, 404, None),
        ({"target": "sip:+447700900123@elsewhere.test;user=phone"}, 403, None),
        ({"to_tag": "nosuchdialog"}, 481, None),
        ({"contact": "<tel:+447700900001>"}, 400, None),
        ({"event": "presence.winfo", "accept": None}, 403, None),  # not Bob: no watcher list
        ({"event": WINFO, "accept": "application/pidf+xml"}, 406, ("Accept", WINFO_TYPE)),
    ],
    ids=[
        "489",
        "489-case",
        "406",
        "406-empty",
        "406-q0",
        "423",
        "404",
        "403-domain",
        "481",
        "400-contact",
        "403-winfo",
        "406-winfo",
    ],
)
def test_subscribe_errors(
    kwargs: dict[str, object], status: int, header: tuple[str, str] | None
) -> None:
    node = Node()
    out = node.receive(subscribe(**kwargs))  # type: ignore[arg-type]
    reply = only_response(out)
    assert reply.status == status, reply.reason
    if header is not None:
        assert reply.headers.get(header[0]) == header[1]
    assert notifies(out) == []
    assert len(node.role.server.subscriptions) == 0


def test_the_200_that_makes_the_dialog_carries_record_route_in_order() -> None:
    """RFC 3261 §12.1.1; a refresh's 200 does not (the route set is fixed by then)."""
    node = Node()
    routes = ("Record-Route: <sip:127.0.0.9:5060;lr>", "Record-Route: <sip:127.0.0.10;lr>")
    out = node.receive(subscribe(extra=routes))
    ok = only_response(out)
    assert ok.headers.get_all("Record-Route") == ["<sip:127.0.0.9:5060;lr>", "<sip:127.0.0.10;lr>"]
    (notify,) = notifies(out)
    # The notifier's route set is the Record-Route in the order received (RFC 3261 §12.1.1).
    assert notify.headers.get_all("Route") == ["<sip:127.0.0.9:5060;lr>", "<sip:127.0.0.10;lr>"]
    node.answer(notify)
    refreshed = only_response(node.receive(in_dialog(ok, notify, expires=600)))
    assert refreshed.status == 200
    assert refreshed.headers.get_all("Record-Route") == []


def test_a_refresh_must_name_the_same_event_id() -> None:
    """RFC 6665 §8.2.1: an Event with an id never matches one without, nor another id."""
    node = Node()
    ok, notify = subscribed(node, event="presence;id=a1")
    assert notify.headers.get("Event") == "presence;id=a1"
    for event in ("presence", "presence;id=b2"):
        data = in_dialog(ok, notify, expires=600, event=event)
        assert only_response(node.receive(data)).status == 481
    assert (
        only_response(
            node.receive(in_dialog(ok, notify, expires=600, event="presence;id=a1"))
        ).status
        == 200
    )


def test_missing_contact_is_400_and_missing_event_is_400() -> None:
    node = Node()
    data = subscribe().replace(b"Contact: <sip:alice@127.0.0.1:5070>\r\n", b"")
    assert only_response(node.receive(data)).status == 400
    data = subscribe().replace(b"Event: presence\r\n", b"")
    assert only_response(node.receive(data)).status == 400


def test_a_type_with_q_zero_is_not_used() -> None:
    node = Node()
    published(node, PIDF_OPEN)
    _ok, notify = subscribed(
        node, accept="application/pidf-diff+xml;q=0, application/pidf+xml;q=0.5"
    )
    assert notify.headers.get("Content-Type") == "application/pidf+xml"


def test_expires_is_clamped_and_defaults() -> None:
    node = Node()
    ok, notify = subscribed(node, expires=7200)
    assert ok.expires == 3600
    assert sub_state(notify) == ("active", 3600, None)
    ok, notify = subscribed(node, expires=None)
    assert ok.expires == 3600  # RFC 3856 §6.4 default


def test_missing_accept_means_pidf_and_three_uri_forms_are_one_presentity() -> None:
    node = Node()
    node.receive(register(BOB))
    bodies = []
    for target in (f"sip:{BOB}@{DOMAIN};user=phone", f"sip:{BOB[1:]}@{DOMAIN}", f"tel:{BOB}"):
        ruri = None if not target.startswith("tel:") else target
        _, notify = subscribed(node, target=target, ruri=ruri, accept=None)
        assert notify.headers.get("Content-Type") == "application/pidf+xml"
        bodies.append(notify.body)
        assert basic(notify) == "open"
    assert bodies[0] == bodies[1] == bodies[2]
    assert len(node.role.server.watchers_of(BOB)) == 3


def test_subscribe_needs_authentication_before_404() -> None:
    node = Node(auth=True)
    unknown = subscribe(target=f"sip:+447700999999@{DOMAIN};user=phone")
    challenge = only_response(node.receive(unknown))
    assert challenge.status == 401  # no presentity enumeration without credentials
    reply = only_response(node.receive(authorized(unknown, challenge, ALICE)))
    assert reply.status == 404
    ok = only_response(node.receive(authorized(subscribe(), challenge, ALICE)))
    assert ok.status == 200
    # an authenticated user cannot subscribe in someone else's name
    spoof = subscribe(watcher=CAROL)
    assert only_response(node.receive(authorized(spoof, challenge, ALICE))).status == 403


# --- refresh, unsubscribe, expiry, fetch ----------------------------------------------------------


def test_refresh_and_unsubscribe_in_dialog() -> None:
    node = Node()
    ok, first = subscribed(node, expires=600)
    node.advance(100)
    out = node.receive(in_dialog(ok, first, expires=900))
    reply = only_response(out)
    assert reply.status == 200
    assert reply.expires == 900
    assert reply.to.tag == ok.to.tag
    (refresh_notify,) = notifies(out)
    assert sub_state(refresh_notify) == ("active", 900, None)
    assert refresh_notify.cseq.seq == first.cseq.seq + 1
    node.answer(refresh_notify)
    out = node.receive(in_dialog(ok, first, expires=0, cseq=3))
    assert only_response(out).status == 200
    (last,) = notifies(out)
    assert sub_state(last) == ("terminated", None, "timeout")
    assert last.cseq.seq == refresh_notify.cseq.seq + 1
    assert len(node.role.server.subscriptions) == 0
    assert len(node.store.subscriptions) == 0  # type: ignore[attr-defined]
    # the dialog is gone: 481
    assert only_response(node.receive(in_dialog(ok, first, expires=600, cseq=4))).status == 481


def test_out_of_order_refresh_is_500() -> None:
    node = Node()
    ok, first = subscribed(node)
    assert only_response(node.receive(in_dialog(ok, first, expires=600, cseq=5))).status == 200
    node.drain()
    assert only_response(node.receive(in_dialog(ok, first, expires=600, cseq=3))).status == 500


def test_subscription_expires_with_timeout_notify() -> None:
    node = Node()
    subscribed(node, expires=60)
    out = node.advance(59)
    assert notifies(out) == []
    out = node.advance(2)
    (last,) = notifies(out)
    assert sub_state(last) == ("terminated", None, "timeout")
    assert len(node.role.server.subscriptions) == 0
    assert len(node.store.subscriptions) == 0  # type: ignore[attr-defined]


def test_fetch_gets_one_notify_then_nothing() -> None:
    node = Node()
    node.receive(register(BOB))
    out = node.receive(subscribe(expires=0))
    ok = only_response(out)
    assert ok.status == 200
    assert ok.expires == 0
    (notify,) = notifies(out)
    assert sub_state(notify) == ("terminated", None, "timeout")
    assert basic(notify) == "open"  # "is B attached?" answered
    node.answer(notify)
    assert len(node.role.server.subscriptions) == 0
    assert len(node.store.subscriptions) == 0  # type: ignore[attr-defined]
    _, sent = published(node, PIDF_CLOSED)
    assert sent == []


# --- NOTIFY failures (RFC 6665 §4.2.2) ------------------------------------------------------------


@pytest.mark.parametrize("status", [481, 408, 489, 404, 501])
def test_failed_notify_ends_the_subscription(status: int) -> None:
    node = Node()
    out = node.receive(subscribe())
    (notify,) = notifies(out)
    node.answer(notify, status)
    assert len(node.role.server.subscriptions) == 0
    assert len(node.store.subscriptions) == 0  # type: ignore[attr-defined]
    _, sent = published(node, PIDF_OPEN)
    assert sent == []


@pytest.mark.parametrize("status", [500, 503, 486, 403])
def test_notify_failing_its_transaction_only_keeps_the_subscription(status: int) -> None:
    """RFC 5057 §5.1: these answers end the NOTIFY's transaction, not the subscription."""
    node = Node()
    out = node.receive(subscribe())
    (notify,) = notifies(out)
    node.answer(notify, status)
    assert len(node.role.server.subscriptions) == 1
    assert len(node.store.subscriptions) == 1  # type: ignore[attr-defined]
    _, sent = published(node, PIDF_OPEN)
    assert [basic(n) for n in sent] == ["open"]


def test_notify_timeout_ends_the_subscription() -> None:
    node = Node()
    node.receive(subscribe())
    assert len(node.role.server.subscriptions) == 1
    node.advance(40, answer=None)  # Timer F = 64*T1 = 32 s
    assert len(node.role.server.subscriptions) == 0


def test_notify_after_the_watchers_connection_closed_goes_to_its_contact() -> None:
    """RFC 3261 §12.2.1.1: with the subscriber's connection gone, the NOTIFY goes by the
    remote target over a connection of ours; only when that fails too does the subscription
    end."""
    node = Node()
    flow = Peer("tcp", "127.0.0.1", 40001, 7)
    node.endpoint.connection_made(flow, None, node.now)  # (the driver says so first)
    contact = "<sip:alice@127.0.0.1:5070;transport=tcp>"
    out = node.receive(subscribe(contact=contact), flow)
    (notify,) = notifies(out)
    assert node.sent[-1][1] == flow  # back over the subscriber's connection
    node.answer(notify, source=flow)
    node.receive(publish(PIDF_CLOSED), PUBLISHER)
    assert node.sent[-1][1] == flow
    node.endpoint.connection_lost(flow, node.now)
    (retry,) = notifies(node.drain())
    assert node.sent[-1][1] == Peer("tcp", "127.0.0.1", 5070)
    assert basic(retry) == "closed"
    assert len(node.role.server.subscriptions) == 1
    node.endpoint.connection_lost(Peer("tcp", "127.0.0.1", 5070, 9), node.now)  # no one there
    node.drain()
    assert len(node.role.server.subscriptions) == 0


def subscribe_over_a_connection_that_closes(node: Node, port: int, *, ob: str = "") -> None:
    """Alice subscribes over TCP from ``port`` with that port as her Contact (pjsua's
    ``contactUseSrcPort``; ``ob=";ob"``: asking for her flow, RFC 5626, pjsua's default), gets
    her first NOTIFY over it, then the connection closes."""
    first = Peer("tcp", "127.0.0.1", port, 7)
    node.endpoint.connection_made(first, None, node.now)
    contact = f"<sip:alice@127.0.0.1:{port};transport=tcp{ob}>"
    (notify,) = notifies(node.receive(subscribe(contact=contact), first))
    node.answer(notify, source=first)
    node.endpoint.connection_lost(first, node.now)


def register_over_a_connection(
    node: Node, port: int, connection: int, *, contact_port: int | None = None
) -> Peer:
    """Alice registers over a new TCP connection from ``port``, that port (or ``contact_port``:
    pjsua keeps its first one) as her Contact."""
    peer = Peer("tcp", "127.0.0.1", port, connection)
    node.endpoint.connection_made(peer, None, node.now)
    contact = f"<sip:alice@127.0.0.1:{contact_port or port};transport=tcp;ob>"
    (ok,) = responses(node.receive(register(ALICE, contact=contact), peer))
    assert ok.status == 200
    return peer


def test_a_notify_its_contact_refuses_goes_over_the_connection_the_watcher_registered_from() -> (
    None
):
    """pjsua over TCP: its Contact is its connection's own port.  With that connection gone
    and the Contact refusing, the NOTIFY goes over the connection the watcher registered from
    since (registrar/flows.py), and the subscription stays; when that one fails too and no
    other registration is left, the subscription ends."""
    node = Node()
    subscribe_over_a_connection_that_closes(node, 40001)
    second = register_over_a_connection(node, 40002, 8)
    (changed,) = notifies(node.receive(publish(PIDF_CLOSED), PUBLISHER))
    assert node.sent[-1][1] == Peer("tcp", "127.0.0.1", 40001)  # the Contact first
    node.endpoint.connection_lost(Peer("tcp", "127.0.0.1", 40001, 9), node.now)  # refused
    (retry,) = notifies(node.drain())
    assert node.sent[-1][1] == Peer("tcp", "127.0.0.1", 40002)
    assert (retry.call_id, retry.cseq.seq) == (changed.call_id, changed.cseq.seq + 1)
    assert basic(retry) == "closed"
    node.answer(retry, source=second)
    (later,) = notifies(node.receive(publish(PIDF_OPEN), PUBLISHER))
    assert node.sent[-1][1] == Peer("tcp", "127.0.0.1", 40002)  # the dialog keeps that way
    assert basic(later) == "open"
    node.endpoint.connection_lost(second, node.now)
    node.drain()
    assert len(node.role.server.subscriptions) == 0


def test_a_second_connection_of_the_registrations_address_closing_leaves_its_way_up() -> None:
    """Two connections with one peer address (a user agent that connects from the port it
    listens on, SO_REUSEPORT, and is connected to by the node as well): the newer one closing
    leaves the registration's connection up, and the NOTIFY its Contact refuses goes over it."""
    node = Node()
    subscribe_over_a_connection_that_closes(node, 40001)
    registered = register_over_a_connection(node, 40002, 8)
    other = Peer("tcp", "127.0.0.1", 40002, 11)
    node.endpoint.connection_made(other, None, node.now)
    node.endpoint.connection_lost(other, node.now)
    notifies(node.receive(publish(PIDF_CLOSED), PUBLISHER))
    node.endpoint.connection_lost(Peer("tcp", "127.0.0.1", 40001, 10), node.now)  # refused
    (retry,) = notifies(node.drain())
    assert node.sent[-1][1] == Peer("tcp", "127.0.0.1", 40002)  # by address: the one up
    assert basic(retry) == "closed"
    node.endpoint.connection_lost(registered, node.now)
    node.endpoint.connection_lost(registered, node.now)  # (reported twice: counted once)
    assert not node.endpoint.is_connected(registered)


def test_a_registration_whose_connection_closed_is_not_a_way_to_the_watcher() -> None:
    """Two connection losses in one registration's lifetime (pjsua after two restarts, its
    removal of the old Contact refused while the node was down): the binding of the closed
    connection is left out, the one of the connection up is taken."""
    node = Node()
    subscribe_over_a_connection_that_closes(node, 40001)
    earlier = register_over_a_connection(node, 40002, 8)
    node.endpoint.connection_lost(earlier, node.now)  # its binding stays
    register_over_a_connection(node, 40003, 9)
    assert len(node.registrar.bindings(ALICE, node.now)) == 2
    notifies(node.receive(publish(PIDF_CLOSED), PUBLISHER))
    node.endpoint.connection_lost(Peer("tcp", "127.0.0.1", 40001, 10), node.now)  # refused
    (retry,) = notifies(node.drain())
    assert node.sent[-1][1] == Peer("tcp", "127.0.0.1", 40003)
    assert basic(retry) == "closed"


def test_a_watcher_that_asked_for_its_flow_is_sent_its_new_flow_at_once() -> None:
    """RFC 5626 ``ob``: its Contact names the closed connection's own port, so the NOTIFY goes
    over the connection it registered from since without trying the Contact first (pjsua 2.15:
    a refused connect per restart, and behind a NAT a connect that waits 10 s)."""
    node = Node()
    subscribe_over_a_connection_that_closes(node, 40001, ob=";ob")
    register_over_a_connection(node, 40002, 8, contact_port=40001)
    (changed,) = notifies(node.receive(publish(PIDF_CLOSED), PUBLISHER))
    assert node.sent[-1] == (changed, Peer("tcp", "127.0.0.1", 40002))
    assert changed.uri == "sip:alice@127.0.0.1:40001;transport=tcp;ob"
    assert basic(changed) == "closed"


def test_two_registrations_of_one_host_the_one_with_the_dialogs_contact_is_taken() -> None:
    """Two user agents of one user on one host, both registered over connections up: the one
    whose Contact is the dialog's remote target is the watcher (pjsua keeps its Contact)."""
    node = Node()
    subscribe_over_a_connection_that_closes(node, 40001, ob=";ob")
    register_over_a_connection(node, 40005, 9)  # the other user agent
    register_over_a_connection(node, 40002, 8, contact_port=40001)
    notifies(node.receive(publish(PIDF_CLOSED), PUBLISHER))
    assert node.sent[-1][1] == Peer("tcp", "127.0.0.1", 40002)


def test_a_notify_after_the_connection_closed_goes_to_the_contact_at_once() -> None:
    """The connection closed while no NOTIFY was in flight: the next goes by the remote
    target straight away, not by a new connection to the port the old one came from, which
    takes none (Twinkle audit: a refused connect and a warning per vanished watcher)."""
    node = Node()
    flow = Peer("tcp", "127.0.0.1", 40002, 8)
    node.endpoint.connection_made(flow, None, node.now)
    out = node.receive(subscribe(contact="<sip:alice@127.0.0.1:5070;transport=tcp>"), flow)
    (notify,) = notifies(out)
    node.answer(notify, source=flow)
    node.endpoint.connection_lost(flow, node.now)
    assert node.drain() == []  # nothing was in flight
    (changed,) = notifies(node.receive(publish(PIDF_CLOSED), PUBLISHER))
    assert node.sent[-1][1] == Peer("tcp", "127.0.0.1", 5070)
    assert basic(changed) == "closed"


def test_stray_notify_is_481() -> None:
    node = Node()
    data = sip(
        [
            f"NOTIFY sip:{PS} SIP/2.0",
            "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKstray",
            "Max-Forwards: 70",
            "From: <sip:x@net-a.test>;tag=a",
            "To: <sip:y@net-b.test>;tag=b",
            "Call-ID: stray@x",
            "CSeq: 1 NOTIFY",
            "Event: presence",
            "Subscription-State: active",
        ]
    )
    assert only_response(node.receive(data)).status == 481


def test_options_advertises_events_and_types() -> None:
    node = Node()
    data = sip(
        [
            f"OPTIONS sip:{PS} SIP/2.0",
            "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKopt",
            "Max-Forwards: 70",
            "From: <sip:x@net-a.test>;tag=a",
            f"To: <sip:{PS}>",
            "Call-ID: opt@x",
            "CSeq: 1 OPTIONS",
        ]
    )
    reply = only_response(node.receive(data))
    assert reply.headers.get("Allow-Events") == "presence, presence.winfo"
    assert "application/pidf+xml" in (reply.headers.get("Accept") or "")
    assert "SUBSCRIBE" in (reply.headers.get("Allow") or "")


# --- fan-out, registration, rate limit ------------------------------------------------------------


def test_fan_out_one_publish_many_notifies_with_shared_bytes() -> None:
    node = Node()
    for i in range(20):
        subscribed(node, contact=f"<sip:w{i}@127.0.0.1:{6000 + i}>")
    out = node.receive(publish(PIDF_OPEN), PUBLISHER)
    assert only_response(out).status == 200
    sent = notifies(out)
    assert len(sent) == 20
    assert len({n.body for n in sent}) == 1
    assert {n.uri for n in sent} == {f"sip:w{i}@127.0.0.1:{6000 + i}" for i in range(20)}
    assert {p.port for m, p in node.sent[-20:]} == {6000 + i for i in range(20)}


def _fan_out_past_purge_batch() -> tuple[Node, list[str]]:
    """12 watchers of one presentity on a node whose flush sends 5 NOTIFYs at most, after a
    PUBLISH whose 200 left with the first five; the node and the watchers' Contacts."""
    node = Node(settings=PresenceSettings(purge_batch=5))
    targets = [f"sip:w{i}@127.0.0.1:{6000 + i}" for i in range(12)]
    for target in targets:
        subscribed(node, contact=f"<{target}>")
    out = node.receive(publish(PIDF_OPEN), PUBLISHER)
    assert only_response(out).status == 200
    assert [n.uri for n in notifies(out)] == targets[:5]
    return node, targets


def test_a_fan_out_past_purge_batch_goes_over_timer_calls_due_at_once() -> None:
    # A flush sends purge_batch NOTIFYs at most: the PUBLISH's 200 and the first five leave
    # with it, the rest at the next timer calls, due at once, in the watchers' order.
    node, targets = _fan_out_past_purge_batch()
    timer = node.endpoint.get_timer()
    assert timer is not None
    assert timer <= node.now
    rest = notifies(node.advance(0))
    assert [n.uri for n in rest] == targets[5:]
    assert {basic(n) for n in rest} == {"open"}
    timer = node.endpoint.get_timer()
    assert timer is not None
    assert timer > node.now  # nothing left to send


def test_send_waiting_sends_the_slices_of_a_fan_out_not_sent_yet() -> None:
    # The node is stopping: what a flush left queued leaves now, in the watchers' order, each
    # once, and nothing is queued after it.
    node, targets = _fan_out_past_purge_batch()
    assert node.role.server.send_waiting(node.now) == 7
    rest = notifies(node.drain())
    assert [n.uri for n in rest] == targets[5:]
    assert {basic(n) for n in rest} == {"open"}
    assert node.role.server.send_waiting(node.now) == 0
    assert node.drain() == []


def test_send_waiting_sends_what_the_rate_limit_holds_back() -> None:
    node = Node(settings=PresenceSettings(min_notify_interval=5.0))
    subscribed(node)
    _, sent = published(node, PIDF_OPEN)
    assert sent == []  # held back by the rate limit
    assert node.role.server.send_waiting(node.now) == 1
    (notify,) = notifies(node.drain())
    assert basic(notify) == "open"
    node.answer(notify)
    assert notifies(node.advance(10)) == []  # the held-back one is not sent twice


def test_a_watcher_that_ends_while_its_notify_waits_gets_the_final_one_only() -> None:
    node = Node(settings=PresenceSettings(purge_batch=1))
    first_ok, _ = subscribed(node, contact="<sip:w0@127.0.0.1:6000>")
    last_ok, last_notify = subscribed(node, contact="<sip:w1@127.0.0.1:6001>")
    out = node.receive(publish(PIDF_OPEN), PUBLISHER)
    (sent,) = notifies(out)
    assert sent.call_id == first_ok.call_id
    node.answer(sent)
    out = node.receive(in_dialog(last_ok, last_notify, expires=0))
    assert only_response(out).status == 200
    (final,) = notifies(out) + notifies(node.advance(0))
    assert final.call_id == last_ok.call_id
    assert sub_state(final)[0] == "terminated"
    assert basic(final) == "open"  # the newest state, once


def test_registration_drives_presence_when_nothing_is_published() -> None:
    node = Node()
    _, first = subscribed(node)
    assert basic(first) == "closed"
    out = node.receive(register(BOB), Peer("udp", "127.0.0.1", 5090))
    (notify,) = notifies(out)
    assert basic(notify) == "open"
    node.answer(notify)
    out = node.receive(register(BOB, expires=0), Peer("udp", "127.0.0.1", 5090))
    (notify,) = notifies(out)
    assert basic(notify) == "closed"
    node.answer(notify)
    # a publication hides the registration state
    published(node, PIDF_CLOSED)
    out = node.receive(register(BOB), Peer("udp", "127.0.0.1", 5090))
    assert notifies(out) == []


def test_rate_limit_newest_state_wins() -> None:
    node = Node(settings=PresenceSettings(min_notify_interval=5.0))
    subscribed(node)
    _, sent = published(node, PIDF_OPEN)
    assert sent == []  # the first NOTIFY left just now: wait
    node.advance(1)
    _ok, sent = published(node, PIDF_CLOSED, etag=None)
    assert sent == []
    out = node.advance(3.9)
    assert notifies(out) == []
    out = node.advance(0.2)
    (notify,) = notifies(out)
    # newest state wins: both publications carry tuple sg89ae, the later (closed) replaces it
    assert basic(notify) == "closed"
    assert parse_pidf(notify.body).tuple_ids == ("sg89ae",)
    out = node.advance(10)
    assert notifies(out) == []


# --- max_subscriptions: what one watcher may hold -------------------------------------------------


def _capped(max_subscriptions: int, **kwargs: object) -> Node:
    settings = PresenceSettings(max_subscriptions=max_subscriptions)
    return Node(settings=settings, **kwargs)  # type: ignore[arg-type]


def test_a_watcher_past_max_subscriptions_is_refused_until_one_of_its_own_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each subscription one SUBSCRIBE, each a dialog: one account cannot hold without end.
    Another watcher, a fetch (holds nothing) and a refresh are not refused."""
    node = _capped(2)
    node.receive(register(BOB))
    first = subscribed(node)
    subscribed(node, target=f"sip:{CAROL}@{DOMAIN};user=phone")
    with caplog.at_level("WARNING", logger="presence_sip.presence.role"):
        out = node.receive(subscribe())
        again = node.receive(subscribe(target=f"sip:{CAROL}@{DOMAIN};user=phone"))
    refused = only_response(out)
    assert (refused.status, refused.reason) == (403, "Too many subscriptions")
    assert notifies(out) == []
    assert only_response(again).status == 403
    (line,) = [r.getMessage() for r in caplog.records]  # one line a minute, not one a refusal
    assert line.startswith(f"{ALICE} holds 2 subscriptions (max_subscriptions)"), line
    assert node.role.server.subscriptions_refused == 2
    assert len(node.role.server.subscriptions) == 2

    _ok, notify = subscribed(node, watcher=CAROL, contact="<sip:carol@127.0.0.1:5071>")
    assert basic(notify) == "open"
    fetch = node.receive(subscribe(expires=0))
    assert only_response(fetch).status == 200
    (fetched,) = notifies(fetch)
    assert sub_state(fetched) == ("terminated", None, "timeout")
    node.answer(fetched)
    ok, notify = first
    assert only_response(node.receive(in_dialog(ok, notify, expires=600))).status == 200

    gone = node.receive(in_dialog(ok, notify, expires=0, cseq=3))
    assert only_response(gone).status == 200
    node.answer(notifies(gone)[0])
    subscribed(node)  # room again
    assert only_response(node.receive(subscribe())).status == 403


def test_an_expired_subscription_makes_room() -> None:
    node = _capped(1)
    subscribed(node, expires=60)
    assert only_response(node.receive(subscribe())).status == 403
    node.advance(61)
    subscribed(node)


def test_max_subscriptions_counts_the_watchers_address_of_record_not_its_spelling() -> None:
    """``sip:+N@host;user=phone`` and ``tel:+N`` are one watcher; so is an extra identity and
    its subscriber: writing one's From another way is no way around the limit."""
    hss = MemorySubscriberStore(DOMAIN)
    hss.add_subscriber(ALICE, "secret", identities=[f"sip:alice@{DOMAIN}"])
    hss.add_subscriber(BOB, "secret")
    node = _capped(2, hss=hss)
    subscribed(node)
    sip_form = f'From: "Alice" <sip:{ALICE}@net-a.test;user=phone>'
    tel = subscribe().replace(sip_form.encode(), f"From: <tel:{ALICE}>".encode())
    assert b"From: <tel:" in tel
    ok = only_response(node.receive(tel))
    assert ok.status == 200
    alias = subscribe().replace(sip_form.encode(), f"From: <sip:alice@{DOMAIN}>".encode())
    refused = only_response(node.receive(alias))
    assert (refused.status, refused.reason) == (403, "Too many subscriptions")


def test_the_subscriptions_a_watcher_holds_are_counted_again_after_a_restart(
    tmp_path: Path,
) -> None:
    conn = connect(tmp_path / "presence.sqlite")
    migrate(conn, "core")
    node = _capped(2, store=SqlitePresenceStore(conn))
    subscribed(node, expires=600)
    subscribed(node, expires=900)
    node.role.close()
    node2 = _capped(
        2, store=SqlitePresenceStore(conn), now=node.now + 10, ids=CountingIdSource("r")
    )
    assert only_response(node2.receive(subscribe())).status == 403
    node2.advance(600)  # the first one expires
    subscribed(node2)
    conn.close()


# --- authorization (step 8) -----------------------------------------------------------------------


def test_blocked_watcher_gets_403() -> None:
    node = Node(policy="allow")
    node.hss.set_rule(BOB, f"tel:{ALICE}", "block")
    out = node.receive(subscribe())
    assert only_response(out).status == 403
    assert notifies(out) == []
    assert len(node.store.subscriptions) == 0  # type: ignore[attr-defined]


def test_default_policy_block_and_own_presence_is_always_allowed() -> None:
    node = Node(policy="block")
    assert only_response(node.receive(subscribe())).status == 403
    _ok, notify = subscribed(node, watcher=BOB)
    assert sub_state(notify)[0] == "active"


def test_polite_block_sees_neutral_closed_and_no_updates() -> None:
    node = Node(policy="allow")
    offline = subscribed(node, watcher=CAROL, contact="<sip:carol@127.0.0.1:5071>")[1]
    node.hss.set_rule(BOB, f"tel:{ALICE}", "polite-block")
    published(node, PIDF_OPEN)
    _ok, notify = subscribed(node)
    assert sub_state(notify) == ("active", 600, None)  # indistinguishable from allowed
    assert basic(notify) == "closed"
    # RFC 5025 §3.2.1: exactly what an allowed watcher saw of Bob offline, nothing to tell
    assert notify.body == offline.body
    _, sent = published(node, PIDF_CLOSED)
    assert [n.call_id for n in sent] == [offline.call_id]


def test_polite_block_answers_in_the_partial_notification_type_asked_for() -> None:
    node = Node(policy="allow")
    node.hss.set_rule(BOB, f"tel:{ALICE}", "polite-block")
    published(node, PIDF_OPEN)
    _ok, notify = subscribed(node, accept="application/pidf-diff+xml")
    assert notify.headers.get("Content-Type") == "application/pidf-diff+xml"
    assert b"<p:pidf-full " in notify.body
    assert parse_pidf(apply_diff(None, notify.body)).basic == "closed"


def test_confirm_is_pending_until_bob_allows_then_active_at_once() -> None:
    node = Node(policy="confirm")
    published(node, PIDF_OPEN)
    ok, notify = subscribed(node)
    assert ok.status == 200  # never 202 (RFC 6665)
    assert sub_state(notify) == ("pending", 600, None)
    assert notify.body == b""
    assert notify.headers.get("Content-Type") is None
    _, sent = published(node, PIDF_CLOSED)
    assert sent == []  # nothing leaks while pending
    node.hss.set_rule(BOB, f"sip:{ALICE}@net-a.test;user=phone", "allow")  # `presentity-sip hss`
    out = node.advance(1.0)
    (notify,) = notifies(out)
    assert sub_state(notify)[0] == "active"
    assert basic(notify) == "closed"
    assert node.store.subscriptions[ok.to.tag].state == "active"  # type: ignore[attr-defined]


def test_rule_change_to_block_terminates_with_rejected() -> None:
    node = Node(policy="allow")
    subscribed(node)
    node.hss.set_rule(BOB, f"tel:{ALICE}", "block")
    out = node.advance(1.0)
    (notify,) = notifies(out)
    assert sub_state(notify) == ("terminated", None, "rejected")
    assert notify.body == b""
    assert len(node.role.server.subscriptions) == 0


# --- a configuration reloaded (SIGHUP): PresenceRole.reconfigure ------------------------------


def test_a_new_default_policy_reevaluates_watchers_without_a_rule_at_once() -> None:
    """``default_policy`` confirm -> allow: a pending watcher with no rule becomes active with
    the state it was not shown; a rule still wins over the new policy; -> block ends them."""
    node = Node(policy="confirm")
    published(node, PIDF_OPEN)
    ok, pending = subscribed(node)
    assert sub_state(pending)[0] == "pending"
    node.hss.set_rule(BOB, f"tel:{CAROL}", "block")
    node.advance(1.0)
    carol = {"watcher": CAROL, "contact": "<sip:carol@127.0.0.1:5071>"}
    assert only_response(node.receive(subscribe(**carol))).status == 403  # type: ignore[arg-type]

    node.role.reconfigure(None, "allow", node.now)
    (notify,) = notifies(node.drain())
    node.answer(notify)
    assert notify.call_id == pending.call_id
    assert sub_state(notify)[0] == "active"
    assert basic(notify) == "open"
    assert node.store.subscriptions[ok.to.tag].state == "active"  # type: ignore[attr-defined]
    assert only_response(node.receive(subscribe(**carol))).status == 403  # type: ignore[arg-type]

    node.role.reconfigure(None, "block", node.now)
    (ended,) = notifies(node.drain())
    assert ended.call_id == pending.call_id
    assert sub_state(ended) == ("terminated", None, "rejected")
    assert len(node.role.server.subscriptions) == 0


def test_new_presence_settings_apply_to_the_next_request_and_keep_what_is_held() -> None:
    """Lowered ``max_subscriptions``: the watcher keeps both, the next is refused; a raised
    ``min_expires`` refuses a short SUBSCRIBE and PUBLISH; ``max_publications`` and
    ``min_notify_interval`` are the new ones too."""
    node = _capped(5)
    node.receive(register(BOB))
    subscribed(node)
    subscribed(node, target=f"sip:{CAROL}@{DOMAIN};user=phone")
    settings = PresenceSettings(
        max_subscriptions=1, min_expires=300, min_notify_interval=5.0, max_publications=1
    )
    node.role.reconfigure(settings, "allow", node.now)
    assert len(node.role.server.subscriptions) == 2
    refused = only_response(node.receive(subscribe(target=f"sip:{ALICE}@{DOMAIN};user=phone")))
    assert (refused.status, refused.reason) == (403, "Too many subscriptions")
    short = only_response(node.receive(subscribe(watcher=CAROL, expires=120)))
    assert (short.status, short.headers.get("Min-Expires")) == (423, "300")
    short = only_response(node.receive(publish(expires=120)))
    assert (short.status, short.headers.get("Min-Expires")) == (423, "300")
    assert node.role.server.notifier.settings.min_notify_interval == 5.0
    assert node.role.server.compositor.max_publications == 1


def test_an_extra_identity_stands_for_its_subscriber_rules_included() -> None:
    """A watcher Bob blocked cannot read him through another of his URIs (RFC 5025 §3.2.1):
    an extra identity of a subscriber is that subscriber."""
    hss = MemorySubscriberStore(DOMAIN)
    hss.add_subscriber(BOB, "secret", identities=[f"sip:bob@{DOMAIN}"])
    for msisdn in (ALICE, CAROL):
        hss.add_subscriber(msisdn, "secret")
    hss.set_rule(BOB, f"tel:{ALICE}", "block")
    node = Node(policy="allow", hss=hss)
    published(node, PIDF_OPEN)
    alias = f"sip:bob@{DOMAIN}"
    reply = only_response(node.receive(subscribe(target=alias)))
    assert reply.status == 403
    _ok, notify = subscribed(
        node, watcher=CAROL, target=alias, contact="<sip:carol@127.0.0.1:5071>"
    )
    assert basic(notify) == "open"  # the number's own state
    assert [w.watcher for w in node.role.server.watchers_of(BOB)] == [
        f"sip:{CAROL}@net-a.test;user=phone"
    ]


def _bob_with_an_extra_identity() -> Node:
    """A node with digest auth: Bob with the extra identity ``sip:bob@DOMAIN``, and Alice."""
    hss = MemorySubscriberStore(DOMAIN)
    hss.add_subscriber(BOB, "secret", identities=[f"sip:bob@{DOMAIN}"])
    hss.add_subscriber(ALICE, "secret")
    return Node(auth=True, hss=hss)


def _register_bob_as(node: Node, aor: str) -> tuple[bytes, Response]:
    """Bob registers ``aor`` with digest; it must bind his number. The REGISTER and the
    challenge it got."""
    data = register(aor=aor)
    challenge = only_response(node.receive(data))
    assert challenge.status == 401
    assert only_response(node.receive(authorized(data, challenge, BOB))).status == 200
    assert node.registrar.is_registered(BOB, node.now)
    return data, challenge


def test_a_subscriber_registers_with_an_extra_identity_as_its_number() -> None:
    """RFC 3261 §10.3 step 6: the identity is the subscriber's own, so it may register it; the
    binding is the number's (presence and routing look there)."""
    node = _bob_with_an_extra_identity()
    data, challenge = _register_bob_as(node, f"sip:bob@{DOMAIN}")
    refused = only_response(node.receive(authorized(data, challenge, ALICE)))
    assert refused.status == 403  # not Alice's identity


def test_an_extra_identity_at_the_nodes_own_address_is_the_subscriber() -> None:
    """Twinkle 1.10 set up with the node's address as its domain writes ``sip:bob@<node IP>``.
    The node serves that host as its own (RFC 3261 §10.3 step 1), and a number at it is the
    number already: an extra identity at it is the subscriber too (it got 403 "Not allowed to
    register this AOR" and 404 "Unknown presentity"; Kamailio's default use_domain=0 ignores
    the host). Another domain stays another domain's, and an unknown user at our address 404."""
    node = _bob_with_an_extra_identity()
    _register_bob_as(node, f"sip:bob@{PS}")
    watch = subscribe(target=f"sip:bob@{PS}")
    challenge = only_response(node.receive(watch))
    out = node.receive(authorized(watch, challenge, ALICE))
    assert only_response(out).status == 200
    (notify,) = notifies(out)
    assert basic(notify) == "open"  # the number's registration
    assert len(node.role.server.watchers_of(BOB)) == 1
    assert only_response(node.receive(subscribe(target="sip:bob@net-a.test"))).status == 403
    stranger = subscribe(target=f"sip:eve@{PS}")  # nobody's identity, at our address
    challenge = only_response(node.receive(stranger))
    assert only_response(node.receive(authorized(stranger, challenge, ALICE))).status == 404


def test_an_identity_added_to_the_hss_is_resolved_anew() -> None:
    node = Node(policy="allow")
    dave = f"sip:dave@{DOMAIN}"
    assert only_response(node.receive(subscribe(target=dave))).status == 404
    node.hss.add_subscriber("+447700900777", "secret", identities=[dave])
    node.advance(node.role.server.settings.rules_poll_interval + 0.1)
    assert only_response(node.receive(subscribe(target=dave))).status == 200
    assert len(node.role.server.watchers_of("+447700900777")) == 1


def _linphone_publish(alias: str) -> bytes:
    """A PUBLISH as Linphone 5.1 sends it: to its identity, with that identity as PIDF entity."""
    body = PIDF_OPEN.replace(b"sip:+447700900123@net-b.test", alias.encode())
    return publish(body).replace(f"sip:{BOB}@{DOMAIN};user=phone".encode(), alias.encode())


def test_publish_to_an_extra_identity_with_it_as_entity_is_the_numbers() -> None:
    """RFC 3903 §6 / RFC 3863 §4.1.1: the entity names the presentity; an extra identity of a
    subscriber is that subscriber, in the PIDF as in the Request-URI (Linphone 5.1 got 400
    "PIDF entity does not match the presentity")."""
    hss = MemorySubscriberStore(DOMAIN)
    hss.add_subscriber(BOB, "secret", identities=[f"sip:bob@{DOMAIN}"])
    hss.add_subscriber(ALICE, "secret")
    node = Node(policy="allow", hss=hss)
    _ok, notify = subscribed(node)
    assert basic(notify) == "closed"
    out = node.receive(_linphone_publish(f"sip:bob@{DOMAIN}"), PUBLISHER)
    assert only_response(out).status == 200
    (notify,) = notifies(out)
    assert basic(notify) == "open"
    other = _linphone_publish(f"sip:bob@{DOMAIN}").replace(b'entity="sip:bob@', b'entity="sip:eve@')
    assert only_response(node.receive(other, PUBLISHER)).status == 400  # still checked


def test_an_identity_added_to_the_hss_is_a_pidf_entity_anew() -> None:
    node = Node(policy="allow")
    alias = f"sip:bob@{DOMAIN}"
    body = PIDF_OPEN.replace(b"sip:+447700900123@net-b.test", alias.encode())
    assert only_response(node.receive(publish(body), PUBLISHER)).status == 400  # not his yet
    node.hss.update_subscriber(BOB, add_identities=[alias])
    node.advance(node.role.server.settings.rules_poll_interval + 0.1)
    assert only_response(node.receive(publish(body), PUBLISHER)).status == 200


def test_a_subscriber_removed_from_the_hss_is_gone_for_its_watchers() -> None:
    """RFC 6665 §4.1.3: its watchers end with noresource (no body), and a new SUBSCRIBE is 404
    although its publication is still in memory."""
    node = Node(auth=True)
    challenge = only_response(node.receive(publish(PIDF_OPEN), PUBLISHER))
    published_ok = node.receive(authorized(publish(PIDF_OPEN), challenge, BOB), PUBLISHER)
    assert only_response(published_ok).status == 200
    challenge = only_response(node.receive(subscribe()))
    out = node.receive(authorized(subscribe(), challenge, ALICE))
    assert only_response(out).status == 200
    (notify,) = notifies(out)
    assert basic(notify) == "open"
    node.answer(notify)
    node.hss.remove_subscriber(BOB)
    (final,) = notifies(node.advance(node.role.server.settings.rules_poll_interval + 0.1))
    assert sub_state(final) == ("terminated", None, "noresource")
    assert final.body == b""
    assert len(node.role.server.subscriptions) == 0
    again = node.receive(authorized(subscribe(), challenge, ALICE))
    assert only_response(again).status == 404


def test_a_subscriber_removed_from_the_hss_loses_its_bindings_at_once() -> None:
    """Its bindings could not be refreshed (no HA1 left), but would show it registered (and
    route to it) until they expired: they go at the next HSS poll; others' stay."""
    node = Node(auth=True)
    for msisdn in (BOB, ALICE):
        challenge = only_response(node.receive(register(msisdn), PHONE))
        answer = node.receive(authorized(register(msisdn), challenge, msisdn), PHONE)
        assert only_response(answer).status == 200
    assert node.registrar.is_registered(BOB, node.now)
    node.hss.remove_subscriber(BOB)
    node.advance(0.5)
    assert node.registrar.is_registered(BOB, node.now)  # not polled yet
    node.advance(1.0)
    assert not node.registrar.is_registered(BOB, node.now)
    assert node.registrar.bindings(ALICE, node.now)
    assert node.registrar.aors() == [ALICE]


def test_a_subscriber_removed_while_the_node_was_down_loses_its_restored_bindings() -> None:
    """The bindings a node restores at start are checked against the HSS at its first poll."""
    bindings = MemoryBindingStore()
    node = Node(auth=True, bindings=bindings)
    for msisdn in (BOB, ALICE):
        challenge = only_response(node.receive(register(msisdn), PHONE))
        answer = node.receive(authorized(register(msisdn), challenge, msisdn), PHONE)
        assert only_response(answer).status == 200
    node.hss.remove_subscriber(BOB)
    restarted = Node(auth=True, bindings=bindings, hss=node.hss, now=node.now + 10)
    assert restarted.registrar.is_registered(BOB, restarted.now)  # restored
    restarted.advance(1.1)  # the first poll
    assert not restarted.registrar.is_registered(BOB, restarted.now)
    assert restarted.registrar.aors() == [ALICE]


def test_domain_rule_applies_to_sip_watchers() -> None:
    node = Node(policy="block")
    node.hss.set_rule(BOB, "sip:*@net-a.test", "allow")
    assert only_response(node.receive(subscribe())).status == 200


# --- watcherinfo (RFC 3857/3858) ------------------------------------------------------------------


def test_winfo_lists_watchers_including_pending_and_follows_changes() -> None:
    node = Node(policy="confirm")
    subscribed(node, watcher=CAROL, contact="<sip:carol@127.0.0.1:5071>")
    _ok, notify = subscribed(
        node,
        watcher=BOB,
        event="presence.winfo",
        accept="application/watcherinfo+xml",
        contact="<sip:bob@127.0.0.1:5090>",
    )
    assert notify.headers.get("Content-Type") == "application/watcherinfo+xml"
    assert notify.headers.get("Event") == "presence.winfo"
    (entry,) = parse_watcherinfo(notify.body)
    assert (entry.status, entry.event) == ("pending", "subscribe")
    assert entry.uri == f"sip:{CAROL}@net-a.test;user=phone"
    # a new watcher appears
    out = node.receive(subscribe())
    sent = notifies(out)
    winfo = [n for n in sent if n.headers.get("Event") == "presence.winfo"]
    assert len(winfo) == 1
    assert len(parse_watcherinfo(winfo[0].body)) == 2
    for n in sent:
        node.answer(n)
    # Bob allows Carol: her state changes, Bob hears it
    node.hss.set_rule(BOB, f"tel:{CAROL}", "allow")
    out = node.advance(1.0)
    winfo = [n for n in notifies(out) if n.headers.get("Event") == "presence.winfo"]
    assert winfo
    statuses = {e.uri: (e.status, e.event) for e in parse_watcherinfo(winfo[-1].body)}
    assert statuses[f"sip:{CAROL}@net-a.test;user=phone"] == ("active", "approved")
    assert statuses[f"sip:{ALICE}@net-a.test;user=phone"] == ("pending", "subscribe")


def test_winfo_lists_an_ended_watcher_once_as_terminated_with_why() -> None:
    """RFC 3857 §3.2 / RFC 3858 §4: a watcher whose subscription ends is listed once as
    ``terminated`` with the event that ended it (an unsubscribe is ``timeout``, a rule that
    now blocks it ``rejected``), then left out of the following full-state documents."""
    node = Node(policy="allow")
    carol_ok, carol_first = subscribed(node, watcher=CAROL, contact="<sip:carol@127.0.0.1:5071>")
    subscribed(node)  # Alice
    _ok, notify = subscribed(
        node, watcher=BOB, event=WINFO, accept=WINFO_TYPE, contact="<sip:bob@127.0.0.1:5090>"
    )
    assert {e.status for e in parse_watcherinfo(notify.body)} == {"active"}
    carol = f"sip:{CAROL}@net-a.test;user=phone"
    alice = f"sip:{ALICE}@net-a.test;user=phone"

    def next_winfo(out: list[Request | Response]) -> dict[str, tuple[str, str]]:
        (winfo,) = [n for n in notifies(out) if n.headers.get("Event") == WINFO]
        for n in notifies(out):
            node.answer(n)
        return {e.uri: (e.status, e.event) for e in parse_watcherinfo(winfo.body)}

    out = node.receive(in_dialog(carol_ok, carol_first, expires=0, cseq=2))
    assert next_winfo(out) == {carol: ("terminated", "timeout"), alice: ("active", "approved")}
    node.hss.set_rule(BOB, f"tel:{ALICE}", "block")
    out = node.advance(1.0)
    assert next_winfo(out) == {alice: ("terminated", "rejected")}  # Carol is gone for good
    out = node.receive(subscribe(watcher=DAVE, contact="<sip:dave@127.0.0.1:5073>", port=5073))
    assert next_winfo(out) == {f"sip:{DAVE}@net-a.test;user=phone": ("active", "approved")}


def test_winfo_display_name_is_the_text_of_the_quoted_string() -> None:
    node = Node(policy="allow")
    data = subscribe().replace(b'From: "Alice" ', b'From: "Alice \\"The\\" A\\\\B" ')
    out = node.receive(data)
    assert only_response(out).status == 200
    node.answer(notifies(out)[0])
    _ok, notify = subscribed(
        node, watcher=BOB, event=WINFO, accept=WINFO_TYPE, contact="<sip:bob@127.0.0.1:5090>"
    )
    (entry,) = parse_watcherinfo(notify.body)
    assert entry.display_name == 'Alice "The" A\\B'


def test_uris_watchers_write_do_not_grow_the_server_without_bound() -> None:
    """Soak audit: fetches to a To URI with a new parameter each time grew the intern table
    by ~110 B each, for good."""
    node = Node()
    server = node.role.server
    server.intern_limit = 50
    for n in range(200):
        target = f"sip:{BOB}@{DOMAIN};user=phone;x={n}"
        out = node.receive(subscribe(target=target, expires=0))
        assert only_response(out).status == 200
        for notify in notifies(out):
            node.answer(notify)
    assert len(server._strings) <= 50


def test_full_state_watchers_see_the_presentity_under_one_entity() -> None:
    """RFC 3863 §4.1.1: whichever way the publisher wrote the entity (here without
    ``;user=phone``), watchers see the URI of the presentity, as diff watchers do."""
    node = Node()
    _ok, plain = subscribed(node)
    _ok, diffs = subscribed(node, accept=PIDF_TYPES, watcher=CAROL, port=5071)
    _, sent = published(node, PIDF_OPEN)
    canonical = f"sip:{BOB}@{DOMAIN};user=phone"
    by_call = {n.call_id: n for n in sent}
    assert parse_pidf(by_call[plain.call_id].body).entity == canonical
    held = apply_diff(apply_diff(None, diffs.body), by_call[diffs.call_id].body)
    assert parse_pidf(held).entity == canonical


# --- partial notification and publication (RFC 5263, RFC 5264) ------------------------------------


def test_partial_notification_sends_full_state_when_a_diff_would_not_be_smaller() -> None:
    node = Node()
    published(node, PIDF_OPEN)  # one tuple: replacing it costs more than the document
    subscribed(node, accept=PIDF_TYPES)
    _, (change,) = published(node, PIDF_CLOSED)
    assert b"<p:pidf-full " in change.body
    assert b'version="2"' in change.body
    assert parse_pidf(apply_diff(None, change.body)).basic == "closed"


def test_a_person_of_one_publication_with_the_tuple_id_of_another_gets_a_new_id() -> None:
    """RFC 3863 §4.1.2 / RFC 4479 §4: ids are unique in the composed document too, and the
    partial-notification watcher still gets its NOTIFY."""
    node = Node()
    published(node, PIDF_OPEN)
    _ok, full_watcher = subscribed(node)
    _ok, diff_watcher = subscribed(node, accept=PIDF_TYPES, watcher=CAROL, port=5071)
    person = PIDF_OPEN.replace(
        b'<tuple id="sg89ae">',
        b'<tuple id="other"><status><basic>closed</basic></status></tuple>'
        b'<dm:person xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" id="sg89ae"/>'
        b'<tuple id="x">',
    )
    _, sent = published(node, person)
    assert len(sent) == 2
    by_call = {n.call_id: n for n in sent}
    composed = by_call[full_watcher.call_id].body
    document = parse_pidf(composed)  # valid: no duplicate id
    assert document.tuple_ids == ("sg89ae", "other", "x")
    assert document.person_ids == ("sg89ae-2",)
    diff = by_call[diff_watcher.call_id].body
    assert documents_equivalent(apply_diff(apply_diff(None, diff_watcher.body), diff), composed)


def test_partial_notification_full_then_diff() -> None:
    node = Node()
    published(node, PIDF_TWO_OPEN)
    ok, first = subscribed(node, accept="application/pidf+xml, application/pidf-diff+xml")
    assert first.headers.get("Content-Type") == "application/pidf-diff+xml"
    assert b"pidf-full" in first.body
    state = apply_diff(None, first.body)
    assert parse_pidf(state).basic == "open"
    _, sent = published(node, PIDF_TWO_CLOSED)
    (diff,) = sent
    assert diff.headers.get("Content-Type") == "application/pidf-diff+xml"
    assert b"<p:pidf-diff " in diff.body  # a diff, not a second full document
    assert b'version="2"' in diff.body
    assert len(diff.body) < len(PIDF_TWO_CLOSED)
    assert parse_pidf(apply_diff(state, diff.body)).basic == "closed"
    out = node.receive(in_dialog(ok, first, expires=600))
    (full,) = notifies(out)
    assert b"<p:pidf-full " in full.body  # a refresh brings full state again
    assert b'version="3"' in full.body


def test_partial_notification_versions_rise_by_one_even_when_nothing_changed() -> None:
    """RFC 5263: every NOTIFY's document has the next version, an empty diff too."""
    node = Node()
    published(node, PIDF_OPEN)
    accept = "application/pidf+xml, application/pidf-diff+xml"
    _ok, first = subscribed(node, accept=accept, expires=60)
    assert b'version="1"' in first.body
    (last,) = notifies(node.advance(61))  # expiry: terminated, nothing new to say
    assert sub_state(last) == ("terminated", None, "timeout")
    assert b"<p:pidf-diff " in last.body
    assert last.body.endswith(b'version="2"/>')
    state = apply_diff(apply_diff(None, first.body), last.body)
    assert parse_pidf(state).basic == "open"


def test_partial_notification_after_polite_block_starts_again_from_full_state() -> None:
    node = Node(policy="allow")
    published(node, PIDF_OPEN)
    _ok, first = subscribed(node, accept="application/pidf+xml, application/pidf-diff+xml")
    assert b"pidf-full" in first.body
    node.hss.set_rule(BOB, f"tel:{ALICE}", "polite-block")
    (neutral,) = notifies(node.advance(1.0))
    assert neutral.headers.get("Content-Type") == "application/pidf-diff+xml"
    held = apply_diff(apply_diff(None, first.body), neutral.body)
    assert parse_pidf(held).tuple_ids == ("reg",)
    node.answer(neutral)
    node.hss.set_rule(BOB, f"tel:{ALICE}", "allow")
    (again,) = notifies(node.advance(1.0))
    # from the neutral document the watcher holds, not from the state it never had
    assert parse_pidf(apply_diff(held, again.body)).basic == "open"
    assert b'version="3"' in again.body


def test_partial_notification_after_a_failed_notify_starts_again_from_full_state() -> None:
    node = Node()
    published(node, PIDF_TWO_OPEN)
    subscribed(node, accept="application/pidf+xml, application/pidf-diff+xml")
    out = node.receive(publish(PIDF_TWO_CLOSED))
    (missed,) = notifies(out)
    assert b"<p:pidf-diff " in missed.body
    node.answer(missed, 503)  # the watcher never applied it
    _, sent = published(node, PIDF_TWO_OPEN)
    (full,) = sent
    assert b"pidf-full" in full.body


def test_partial_publication() -> None:
    node = Node()
    ok, _ = published(node, PIDF_OPEN)
    diff = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<p:pidf-diff xmlns="urn:ietf:params:xml:ns:pidf" '
        b'xmlns:p="urn:ietf:params:xml:ns:pidf-diff" '
        b'entity="sip:+447700900123@net-b.test" version="1">'
        b'<p:add sel="*"><tuple id="t2"><status><basic>closed</basic></status></tuple></p:add>'
        b"</p:pidf-diff>"
    )
    _, _first = subscribed(node)
    ok2, sent = published(node, diff, etag=ok.sip_etag, content_type="application/pidf-diff+xml")
    assert ok2.status == 200
    (notify,) = sent
    assert parse_pidf(notify.body).tuple_ids == ("sg89ae", "t2")


# --- routing (RFC 3261 §12) -----------------------------------------------------------------------


def test_notify_follows_record_route_back_through_the_gateway() -> None:
    node = Node()
    rr = ("Record-Route: <sip:127.0.2.2:5061;transport=tls;lr>",)
    _ok, notify = subscribed(node, extra=rr)
    assert notify.headers.get_all("Route") == ["<sip:127.0.2.2:5061;transport=tls;lr>"]
    assert notify.uri == "sip:alice@127.0.0.1:5070"
    assert node.sent[-1][1] == Peer("tls", "127.0.2.2", 5061)


def test_tcp_subscription_reuses_the_connection() -> None:
    node = Node()
    conn = Peer("tcp", "127.0.0.1", 40000, connection=7)
    node.endpoint.connection_made(conn, None, node.now)  # (the driver says so first)
    data = subscribe(contact="<sip:alice@127.0.0.1:5070;transport=tcp>").replace(
        b"SIP/2.0/UDP", b"SIP/2.0/TCP"
    )
    node.endpoint.receive(data, conn, node.now)
    ok, notify = node.drain()
    assert isinstance(ok, Response)
    assert isinstance(notify, Request)
    assert node.sent[-1][1] == conn
    assert (notify.headers.get("Via") or "").startswith(f"SIP/2.0/TCP {PS};branch=")
    assert ok.headers.get("Contact") == f"<sip:{PS};transport=tcp>"
    assert notify.headers.get("Contact") == f"<sip:{PS};transport=tcp>"


# --- restart: state survives in SQLite ------------------------------------------------------------


def test_restart_reloads_subscriptions_and_publications_cseq_keeps_rising(
    tmp_path: Path,
) -> None:
    conn = connect(tmp_path / "presence.sqlite")
    migrate(conn, "core")
    node = Node(store=SqlitePresenceStore(conn))
    subs = [subscribed(node, contact=f"<sip:w{i}@127.0.0.1:{6000 + i}>") for i in range(5)]
    ok, sent = published(node, PIDF_OPEN)
    last_cseq = {n.call_id: n.cseq.seq for n in sent}
    node.role.close()
    # a new process: same database, new endpoint, ids continue elsewhere
    node2 = Node(store=SqlitePresenceStore(conn), now=node.now + 10, ids=CountingIdSource("r"))
    assert len(node2.role.server.subscriptions) == 5
    assert node2.role.server.compositor.document(BOB) is not None
    ok2, sent2 = published(node2, PIDF_CLOSED, etag=ok.sip_etag)
    assert ok2.status == 200  # the ETag survived too
    assert len(sent2) == 5
    for notify in sent2:
        assert notify.cseq.seq > last_cseq[notify.call_id]
        assert basic(notify) == "closed"
    assert {n.call_id for n in sent2} == {o.call_id for o, _ in subs}
    conn.close()


@pytest.fixture
def presence_db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A migrated presence database, closed after the test."""
    conn = connect(tmp_path / "presence.sqlite")
    migrate(conn, "core")
    yield conn
    conn.close()


def _restarted(node: Node, conn: sqlite3.Connection, **kwargs: object) -> Node:
    """The node again (a new process) on the same database and HSS, 10 s later."""
    node.role.close()
    return Node(
        store=SqlitePresenceStore(conn),
        now=node.now + 10,
        ids=CountingIdSource("r"),
        hss=node.hss,
        **kwargs,  # type: ignore[arg-type]
    )


def test_a_rule_set_while_the_node_was_down_ends_the_restored_subscription(
    presence_db: sqlite3.Connection,
) -> None:
    """An HSS edit made while no node ran (``presence-sip hss`` works on the database alone)
    is applied to the subscriptions restored, as a running node applies one."""
    node = Node(store=SqlitePresenceStore(presence_db), policy="allow")
    subscribed(node)
    node.hss.set_rule(BOB, f"tel:{ALICE}", "block")
    node2 = _restarted(node, presence_db, policy="allow")
    assert len(node2.role.server.subscriptions) == 1
    (notify,) = notifies(node2.advance(0))
    assert sub_state(notify) == ("terminated", None, "rejected")
    assert notify.body == b""
    assert len(node2.role.server.subscriptions) == 0
    _, sent = published(node2, PIDF_OPEN)
    assert sent == []  # the blocked watcher learns nothing more


def test_a_watcher_allowed_while_the_node_was_down_gets_the_state_after_the_restart(
    presence_db: sqlite3.Connection,
) -> None:
    node = Node(store=SqlitePresenceStore(presence_db), policy="confirm")
    published(node, PIDF_OPEN)
    _, first = subscribed(node)
    assert sub_state(first)[0] == "pending"
    node.hss.set_rule(BOB, f"tel:{ALICE}", "allow")
    node2 = _restarted(node, presence_db, policy="confirm")
    (notify,) = notifies(node2.advance(0))
    assert sub_state(notify)[0] == "active"
    assert basic(notify) == "open"


def test_another_default_policy_after_a_restart_applies_to_the_restored_watchers(
    presence_db: sqlite3.Connection,
) -> None:
    node = Node(store=SqlitePresenceStore(presence_db), policy="allow")
    subscribed(node)
    node2 = _restarted(node, presence_db, policy="block")
    (notify,) = notifies(node2.advance(0))
    assert sub_state(notify) == ("terminated", None, "rejected")


def test_a_subscriber_removed_while_the_node_was_down_is_gone_for_its_restored_watchers(
    presence_db: sqlite3.Connection,
) -> None:
    node = Node(store=SqlitePresenceStore(presence_db), auth=True)
    challenge = only_response(node.receive(subscribe()))
    out = node.receive(authorized(subscribe(), challenge, ALICE))
    assert only_response(out).status == 200
    node.answer(notifies(out)[0])
    node.hss.remove_subscriber(BOB)
    node2 = _restarted(node, presence_db, auth=True)
    (final,) = notifies(node2.advance(0))
    assert sub_state(final) == ("terminated", None, "noresource")
    assert len(node2.role.server.subscriptions) == 0


def test_restored_watchers_whose_rules_did_not_change_get_no_notify(
    presence_db: sqlite3.Connection,
) -> None:
    node = Node(store=SqlitePresenceStore(presence_db), policy="allow")
    for i in range(3):
        subscribed(node, contact=f"<sip:w{i}@127.0.0.1:{6000 + i}>")
    node2 = _restarted(node, presence_db, policy="allow")
    assert notifies(node2.advance(1)) == []
    assert len(node2.role.server.subscriptions) == 3


def test_restart_keeps_document_versions_rising(tmp_path: Path) -> None:
    """RFC 3858 §4: a watcherinfo document not newer than the watcher's copy is discarded;
    RFC 5263: partial notification versions rise.  Neither restarts from 0 with the node."""
    conn = connect(tmp_path / "presence.sqlite")
    migrate(conn, "core")
    node = Node(store=SqlitePresenceStore(conn))
    _ok, diff = subscribed(node, accept=PIDF_TYPES)
    _ok, winfo = subscribed(
        node, watcher=BOB, event=WINFO, accept=WINFO_TYPE, contact="<sip:bob@127.0.0.1:5090>"
    )
    versions = {winfo.call_id: [winfo_version(winfo.body)], diff.call_id: [diff_version(diff.body)]}
    _, sent = published(node, PIDF_OPEN)
    for notify in sent:
        versions[notify.call_id].append(diff_version(notify.body))
    for notify in notifies(node.receive(subscribe(watcher=CAROL, port=5071))):
        node.answer(notify)
        if notify.call_id == winfo.call_id:
            versions[winfo.call_id].append(winfo_version(notify.body))
    node.role.close()
    node2 = Node(store=SqlitePresenceStore(conn), now=node.now + 10, ids=CountingIdSource("r"))
    out = node2.receive(subscribe(watcher=CAROL, port=5072))  # winfo changes: a NOTIFY
    _, sent = published(node2, PIDF_CLOSED)  # presence changes: a NOTIFY
    for notify in [*notifies(out), *sent]:
        node2.answer(notify)
        if notify.call_id == winfo.call_id:
            versions[winfo.call_id].append(winfo_version(notify.body))
        elif notify.call_id == diff.call_id:
            versions[diff.call_id].append(diff_version(notify.body))
    for call_id, seen in versions.items():
        assert len(seen) >= 3, (call_id, seen)
        assert seen == sorted(set(seen)), seen  # strictly rising across the restart
    conn.close()


def winfo_version(body: bytes) -> int:
    return parse_watcherinfo_document(body).version


def test_restart_reads_remote_uris_stored_in_brackets_and_bare(tmp_path: Path) -> None:
    conn = connect(tmp_path / "presence.sqlite")
    migrate(conn, "core")
    node = Node(store=SqlitePresenceStore(conn))
    for i in (1, 2):  # From: <sip:...>;tag=... (no display name)
        data = subscribe(contact=f"<sip:w{i}@127.0.0.1:600{i}>")
        out = node.receive(data.replace(b'From: "Alice" ', b"From: "))
        assert only_response(out).status == 200
        node.answer(notifies(out)[0], source=WATCHER)
    node.role.close()
    rows = conn.execute("SELECT id, watcher, remote_uri FROM presence_subscriptions").fetchall()
    assert len(rows) == 2
    assert [remote for _, _, remote in rows] == [watcher for _, watcher, _ in rows]  # bare now
    first_id, first_watcher, _ = rows[0]
    conn.execute(  # as rows were written before 2026-11-27
        "UPDATE presence_subscriptions SET remote_uri = ? WHERE id = ?",
        (f"<{first_watcher}>", first_id),
    )
    node2 = Node(store=SqlitePresenceStore(conn), now=node.now + 10, ids=CountingIdSource("r"))
    _, sent = published(node2, PIDF_CLOSED)
    assert len(sent) == 2
    for notify in sent:
        assert (notify.headers.get("To") or "").startswith(f"<{first_watcher}>;tag=w")
    conn.close()


def test_a_udp_watcher_behind_a_nat_keeps_its_flow_across_a_restart(tmp_path: Path) -> None:
    """RFC 5626 ``ob``: the NOTIFYs of a UDP watcher whose Contact names an address behind its
    NAT go to the address its SUBSCRIBE came from, before and after the node restarts."""
    natted = Peer("udp", "127.0.0.1", 40960)
    conn = connect(tmp_path / "presence.sqlite")
    migrate(conn, "core")
    node = Node(store=SqlitePresenceStore(conn))
    out = node.receive(subscribe(contact="<sip:alice@192.0.2.5:5060;ob>"), natted)
    assert only_response(out).status == 200
    (first,) = notifies(out)
    assert node.sent[-1] == (first, natted)
    node.answer(first, source=natted)
    node.role.close()
    node2 = Node(store=SqlitePresenceStore(conn), now=node.now + 10, ids=CountingIdSource("r"))
    _, sent = published(node2, PIDF_CLOSED)
    (notify,) = sent
    assert notify.uri == "sip:alice@192.0.2.5:5060;ob"
    assert [peer for message, peer in node2.sent if message is notify] == [natted]
    conn.close()


def test_a_tcp_watcher_that_asked_for_its_flow_gets_its_new_flow_after_a_restart(
    tmp_path: Path,
) -> None:
    """Restored, the dialog's connection is one of before the restart: the first NOTIFY goes
    over the connection the watcher registered from since, not first to its Contact (pjsua
    2.15 over TCP: a WARNING ``cannot connect`` per watcher per restart before this)."""
    conn = connect(tmp_path / "presence.sqlite")
    migrate(conn, "core")
    node = Node(store=SqlitePresenceStore(conn))
    subscribe_over_a_connection_that_closes(node, 40001, ob=";ob")
    node.role.close()
    node2 = Node(store=SqlitePresenceStore(conn), now=node.now + 10, ids=CountingIdSource("r"))
    register_over_a_connection(node2, 40002, 8, contact_port=40001)
    _, sent = published(node2, PIDF_CLOSED)
    (notify,) = sent
    assert [peer for message, peer in node2.sent if message is notify] == [
        Peer("tcp", "127.0.0.1", 40002)
    ]
    conn.close()


def test_cseq_block_is_written_before_it_is_used() -> None:
    store = MemoryPresenceStore()
    node = Node(store=store, settings=PresenceSettings(cseq_block=3))
    ok, first = subscribed(node)
    seqs = [first.cseq.seq]
    for i in range(7):
        _, sent = published(node, PIDF_OPEN if i % 2 else PIDF_CLOSED)
        seqs.append(sent[0].cseq.seq)
        assert store.subscriptions[ok.to.tag or ""].cseq_reserved >= seqs[-1]
    assert seqs == list(range(1, 9))


def test_cseq_keeps_rising_when_the_last_reservation_was_lost_in_a_crash() -> None:
    """The new block is written by the group commit after the NOTIFY that needed it left: a
    crash between the two leaves the previous block on disk (audit 2026-11-27)."""
    store = MemoryPresenceStore()
    node = Node(store=store, settings=PresenceSettings(cseq_block=3))
    ok, first = subscribed(node)
    sid = ok.to.tag or ""
    seqs = [first.cseq.seq]
    for body in (PIDF_CLOSED, PIDF_OPEN, PIDF_CLOSED):  # CSeq 4 needs the block 4-6
        seqs.append(published(node, body)[1][0].cseq.seq)
    assert seqs == [1, 2, 3, 4]
    store.subscriptions[sid] = dataclasses.replace(store.subscriptions[sid], cseq_reserved=3)
    node.role.close()
    node2 = Node(store=store, settings=PresenceSettings(cseq_block=3), now=node.now + 1)
    # The block it starts in is stored at once: a second crash cannot send CSeq 7 again.
    assert store.subscriptions[sid].cseq_reserved == 8  # CSeqs 7-8
    (after,) = published(node2, PIDF_OPEN)[1]
    assert after.cseq.seq == 7
    node2.role.close()
    node3 = Node(store=store, settings=PresenceSettings(cseq_block=3), now=node.now + 2)
    assert published(node3, PIDF_CLOSED)[1][0].cseq.seq > 7


def test_expired_subscriptions_are_not_loaded_expired_publications_expire_at_once() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn, "core")
    node = Node(store=SqlitePresenceStore(conn))
    subscribed(node, expires=60)
    published(node, PIDF_OPEN, expires=60)
    node2 = Node(store=SqlitePresenceStore(conn), now=node.now + 120)
    assert len(node2.role.server.subscriptions) == 0
    node2.advance(0)
    assert SqlitePresenceStore(conn).counts() == (0, 0)
    conn.close()


def test_watchers_hear_of_a_publication_that_expired_while_the_node_was_down() -> None:
    """Audit 2026-11-27: a publication (or registration) that expired while the node was down
    was dropped at start without a NOTIFY; its watchers kept the old state."""
    store = MemoryPresenceStore()
    node = Node(store=store)
    published(node, PIDF_OPEN, expires=60)
    _ok, watcher = subscribed(node)
    assert basic(watcher) == "open"
    node.role.close()
    later = Node(store=store, now=node.now + 300)
    (notify,) = notifies(later.advance(0))
    assert notify.call_id == watcher.call_id
    assert basic(notify) == "closed"
    assert parse_pidf(notify.body).tuple_ids == ("reg",)


def test_a_publication_expired_while_the_node_was_down_is_expired_at_max_publications() -> None:
    """At ``max_publications``, an initial PUBLISH ended the publication sent least recently,
    counting one that had expired while the node was down (loaded at start, the timer not run
    yet): the desk phone's live publication went, the expired one stayed in the watchers'
    document until the timer, which then sent one more NOTIFY.  Now the expired one goes as an
    expiry would, and the watcher's NOTIFY has the desk phone and the new publication."""
    store = MemoryPresenceStore()
    settings = PresenceSettings(max_publications=2)
    node = Node(store=store, settings=settings)
    desk, _ = published(node, PIDF_OPEN.replace(b'id="sg89ae"', b'id="desk"'), expires=3600)
    gone, _ = published(node, PIDF_OPEN, expires=60)
    _ok, watcher = subscribed(node)
    assert parse_pidf(watcher.body).tuple_ids == ("desk", "sg89ae")
    node.role.close()
    later = Node(store=store, now=node.now + 300, settings=settings, ids=CountingIdSource("r"))
    ok, sent = published(later, PIDF_OPEN.replace(b'id="sg89ae"', b'id="new"'), expires=3600)
    assert ok.status == 200
    (notify,) = sent
    assert notify.call_id == watcher.call_id
    assert parse_pidf(notify.body).tuple_ids == ("desk", "new")
    assert set(store.publications) == {desk.sip_etag, ok.sip_etag}
    assert gone.sip_etag not in store.publications
    assert later.role.server.compositor.evicted == 0  # no publication ended for the limit
    assert notifies(later.advance(0)) == []  # nothing left for the timer to expire


def test_version_1_database_keeps_its_rows_and_loses_the_expiry_indexes() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn, "core")
    database.register_migrations("test-presence-v1", database._MIGRATIONS["presence"][:1])
    migrate(conn, "test-presence-v1")
    conn.execute("INSERT INTO schema_versions (component, version) VALUES ('presence', 1)")
    conn.execute(
        "INSERT INTO presence_publications (etag, presentity, expires_at, body, seq)"
        " VALUES ('e1', 'sip:bob@x', ?, ?, 1)",
        (T0 + 600, PIDF_OPEN),
    )
    store = SqlitePresenceStore(conn, node="ps1")
    assert database.schema_version(conn, "presence") == 4
    indexes = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
    assert not [name for (name,) in indexes if name.endswith("_expiry")]
    assert [r.etag for r in store.load_publications(T0)] == ["e1"]  # claimed by ps1
    assert SqlitePresenceStore(conn, node="ps2").load_publications(T0) == []
    conn.close()


def test_nodes_sharing_a_database_neither_load_nor_expire_nor_delete_each_others_rows() -> None:
    """Audit 2026-11-27: a second node expired the first one's refreshed subscription (a
    false terminated;reason=timeout) and deleted its row."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn, "core")
    ps1 = Node(store=SqlitePresenceStore(conn, node="ps1"))
    _ok, notify = subscribed(ps1, expires=60)
    ok, _ = published(ps1, PIDF_OPEN)
    ps2 = Node(store=SqlitePresenceStore(conn, node="ps2"), now=ps1.now + 1)
    assert len(ps2.role.server.subscriptions) == 0
    assert ps2.role.server.compositor.document(BOB) is None
    assert notifies(ps2.advance(120)) == []  # nothing of ps1's to expire
    ps2.role.close()
    ps1_again = Node(store=SqlitePresenceStore(conn, node="ps1"), now=ps1.now + 2)
    assert list(ps1_again.role.server.subscriptions) == [notify.from_.tag]
    assert ps1_again.role.server.compositor.etags(BOB) == [ok.sip_etag]
    conn.close()


def test_expiry_is_purged_in_batches() -> None:
    node = Node(settings=PresenceSettings(purge_batch=3))
    for i in range(10):
        subscribed(node, expires=60, contact=f"<sip:w{i}@127.0.0.1:{6000 + i}>")
    server = node.role.server
    node.now += 61
    node.endpoint.handle_timer(node.now)
    assert len(server.subscriptions) == 7
    timer = server.get_timer()
    assert timer is not None
    assert timer <= node.now
    node.advance(0)
    assert len(server.subscriptions) == 0


def test_subscribe_unsubscribe_churn_does_not_pile_up_expiry_entries() -> None:
    """Watchers that subscribe and unsubscribe at once (the bench's cycle): the expiry of each
    ended subscription goes with it, not held until its old deadline (issue 8)."""
    node = Node()
    server = node.role.server
    subscribed(node, expires=3600, contact="<sip:keeper@127.0.0.1:5999>")
    for i in range(200):
        ok, notify = subscribed(node, expires=3600, contact=f"<sip:w{i}@127.0.0.1:6000>")
        out = node.receive(in_dialog(ok, notify, expires=0))
        assert only_response(out).status == 200
        node.answer(notifies(out)[0])
    assert len(server.subscriptions) == 1
    assert len(server._expiry) == 1  # the deadlines held: one per subscription
    node.advance(3601)
    assert len(server.subscriptions) == 0


@pytest.mark.parametrize(
    "uri",
    [
        f"sip:{ALICE}@net-a.test;user=phone",
        "sip:447700900001@net-a.test",
        f"tel:{ALICE}",
        "sips:Alice@NET-A.test:5061;transport=tls",
        "sip:net-a.test",
    ],
)
def test_watcher_key_from_the_parsed_from_is_the_key_of_its_text(uri: str) -> None:
    """A new watcher's key is taken from the From URI already parsed (no second parse); it
    must be what the text path gives."""
    role = Node().role
    role._entity_key(uri, parse_uri(uri))
    assert role._entity_keys[uri] == role_entity_key(uri)


def test_verified_tls_peer_is_not_challenged() -> None:
    node = Node(auth=True)
    gateway = Peer("tls", "127.0.2.2", 40100, connection=9)
    node.endpoint.connection_made(gateway, {"network": "net-a.test"}, node.now)
    data = subscribe(extra=("Record-Route: <sip:127.0.2.2:5061;transport=tls;lr>",)).replace(
        b"SIP/2.0/UDP", b"SIP/2.0/TLS"
    )
    node.endpoint.receive(data, gateway, node.now)
    ok, notify = node.drain()
    assert isinstance(ok, Response)
    assert ok.status == 200
    assert isinstance(notify, Request)
    assert notify.method == "NOTIFY"
    assert node.sent[-1][1] == gateway


def test_role_creates_its_tables_from_a_connection() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn, "core")
    endpoint = Endpoint(ids=CountingIdSource())
    hss = MemorySubscriberStore(DOMAIN)
    registrar = Registrar(MemoryBindingStore(), now=T0)
    role = PresenceRole(
        endpoint=endpoint,
        conn=conn,
        hss=hss,
        registrar=registrar,
        guard=RequestGuard(None, lambda user, alg: None),
        domains=frozenset({DOMAIN}),
        default_policy="block",
        now=T0,
    )
    assert SqlitePresenceStore(conn).counts() == (0, 0)
    assert "presence.winfo" in endpoint.allow_events
    assert endpoint.handlers["SUBSCRIBE"] == role.handle_subscribe
    role.close()
    with pytest.raises(ValueError, match="database connection"):
        PresenceRole(
            endpoint=endpoint,
            hss=hss,
            registrar=registrar,
            guard=RequestGuard(None, lambda user, alg: None),
            domains=frozenset({DOMAIN}),
            now=T0,
        )
    conn.close()


def test_group_commit_writes_the_subscription_as_it_is_when_it_commits() -> None:
    """Subscriptions are saved live: the row is built at commit time (newest CSeq block), and a
    subscription that ends before the commit leaves no row."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn, "core")
    group = GroupCommit(conn)
    store = SqlitePresenceStore(conn, group)
    node = Node(store=store, settings=PresenceSettings(cseq_block=2))
    ok, _ = subscribed(node, contact="<sip:w1@127.0.0.1:6001>")
    for body in (PIDF_CLOSED, PIDF_OPEN, PIDF_CLOSED):  # NOTIFY CSeqs 2..4: new blocks
        published(node, body)
    gone_ok, gone_notify = subscribed(
        node, contact="<sip:w2@127.0.0.1:6002>", call_id="gone", from_tag="g"
    )
    node.receive(in_dialog(gone_ok, gone_notify, expires=0))
    group.flush()
    rows = conn.execute("SELECT id, cseq_reserved FROM presence_subscriptions").fetchall()
    sub = node.role.server.subscriptions[ok.to.tag or ""]
    assert rows == [(sub.id, sub.cseq_reserved)]
    assert sub.cseq_reserved >= 4
    conn.close()


def test_entity_tags_are_tokens_that_sort_by_creation_time() -> None:
    node = Node(ids=CountingIdSource())
    first, _ = published(node, PIDF_OPEN)
    node.now += 2.0
    second, _ = published(node, PIDF_CLOSED, etag=first.sip_etag)
    assert first.sip_etag is not None
    assert second.sip_etag is not None
    assert first.sip_etag < second.sip_etag  # the time leads (issue 8: index locality)
    assert second.sip_etag.startswith(f"e{int(node.now):09x}.")


ALICE_ALIAS = "sip:alice@net-a.test"
"""An extra identity of Alice's, as the From of a phone that watches under it (Linphone)."""


def _alias_node(rule_key: str, action: str, policy: str) -> Node:
    hss = MemorySubscriberStore(DOMAIN)
    hss.add_subscriber(BOB, "secret")
    hss.add_subscriber(ALICE, "secret", identities=[ALICE_ALIAS])
    hss.set_rule(BOB, rule_key, action)
    node = Node(policy=policy, hss=hss)
    published(node, PIDF_OPEN)
    return node


@pytest.mark.parametrize(
    ("rule_key", "watcher"),
    [
        pytest.param(f"tel:{ALICE}", "alice", id="rule-for-the-number-watcher-as-alias"),
        pytest.param(ALICE_ALIAS, ALICE, id="rule-for-the-alias-watcher-as-number"),
    ],
)
def test_a_rule_for_one_identity_of_a_watcher_applies_under_another(
    rule_key: str, watcher: str
) -> None:
    """RFC 4745 §5.1 matches the watcher, not the URI text it wrote: a block written for Alice's
    number holds when she watches as sip:alice@... (Linphone audit of 2026-11-27: the blocked
    watcher saw everything under --default-policy allow)."""
    node = _alias_node(rule_key, "block", "allow")
    assert only_response(node.receive(subscribe(watcher=watcher))).status == 403
    allowed = _alias_node(rule_key, "allow", "confirm")
    _ok, notify = subscribed(allowed, watcher=watcher)
    assert (notify.headers.get("Subscription-State") or "").startswith("active")
    assert basic(notify) == "open"


def test_a_rule_added_for_the_number_ends_a_subscription_made_under_an_alias() -> None:
    node = _alias_node(f"tel:{CAROL}", "block", "allow")  # (a rule for someone else)
    _ok, notify = subscribed(node, watcher="alice")
    assert basic(notify) == "open"
    node.hss.set_rule(BOB, f"tel:{ALICE}", "block")
    out = node.advance(node.role.server.settings.rules_poll_interval + 0.1)
    [ended] = notifies(out)
    assert ended.headers.get("Subscription-State") == "terminated;reason=rejected"


def test_exact_rules_for_several_identities_combine_to_the_most_permissive() -> None:
    """RFC 4745 §10.2, as for rules that normalise alike."""
    node = _alias_node(f"tel:{ALICE}", "block", "confirm")
    node.hss.set_rule(BOB, ALICE_ALIAS, "polite-block")
    node.advance(node.role.server.settings.rules_poll_interval + 0.1)
    _ok, notify = subscribed(node, watcher=ALICE)
    assert (notify.headers.get("Subscription-State") or "").startswith("active")
    assert basic(notify) == "closed"  # polite-block: offline, whatever Bob published


def test_responses_outside_a_dialog_each_get_their_own_to_tag() -> None:
    """RFC 3261 §19.3: a tag MUST be globally unique (one per process for every PUBLISH 200 and
    every refusal broke the letter of it: Linphone and Twinkle audits); a retransmitted request
    still gets the very same response."""
    node = Node(policy="allow")
    first_data = publish(PIDF_OPEN)
    first = only_response(node.receive(first_data, PUBLISHER))
    second = only_response(node.receive(publish(PIDF_CLOSED), PUBLISHER))
    refused = only_response(node.receive(subscribe(event="dialog")))
    refused_too = only_response(node.receive(subscribe(event="dialog")))
    tags = [r.to.tag for r in (first, second, refused, refused_too)]
    assert all(tag is not None for tag in tags)
    assert len(set(tags)) == 4
    assert (first.status, refused.status) == (200, 489)
    again = only_response(node.receive(first_data, PUBLISHER))
    assert again.to.tag == first.to.tag


# --- PJSIP interop (pjsua2 2.15.1 audit) ----------------------------------------------------------

PJSUA_PUBLISH_UNESCAPED = (
    "PUBLISH sip:+447700900123@net-b.test SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5080;rport;branch=z9hG4bKPjxAtzR.0Yf.dz8-4uuQxc.gYtsGqyXoJZ\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:+447700900123@net-b.test>;tag=o4Gt33vIuXNDc4zbdufV4rxeQGqvoHN8\r\n"
    "To: <sip:+447700900123@net-b.test>\r\n"
    "Call-ID: D06DBW.bpK7FeECKq59Hx0gis6c3H2L3\r\n"
    "CSeq: 56853 PUBLISH\r\n"
    "Event: presence\r\n"
    "User-Agent: pjaudit-pjsua2/2.15.1\r\n"
    "Content-Type: application/pidf+xml\r\n"
    "Content-Length:   {length}\r\n"
    "\r\n"
    "{body}"
)
"""pjsua's PUBLISH for ``setOnlineStatus`` with the note ``Ünïcödé & <xml> "quotes"``: pjlib's
XML printer escapes nothing, so the body is not well-formed (a PJSIP bug, not ours)."""

PJSUA_PIDF_UNESCAPED = (
    '<?xml version="1.0" encoding="UTF-8"?>\r\n'
    '<presence entity="sip:+447700900123@net-b.test" xmlns="urn:ietf:params:xml:ns:pidf"'
    ' xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"'
    ' xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid">\r\n'
    ' <tuple id="pj7ynSyCwCmrAp6e0jMs5NywaKOXh1lWSt">\r\n'
    "  <status>\r\n"
    "   <basic>open</basic>\r\n"
    "  </status>\r\n"
    "  <timestamp>2026-11-27T16:45:10.644Z</timestamp>\r\n"
    '  <note>Ünïcödé & <xml> "quotes"</note>\r\n'
    " </tuple>\r\n"
    ' <dm:person id="pjBUVjN0IPGMO5hoEvDTZFVLsq4ApHfdqR">\r\n'
    "  <rpid:activities>\r\n"
    "   <rpid:busy />\r\n"
    "  </rpid:activities>\r\n"
    '  <dm:note>Ünïcödé & <xml> "quotes"</dm:note>\r\n'
    " </dm:person>\r\n"
    "</presence>\r\n"
)


def test_pjsua_unescaped_note_gets_400_with_a_clean_reason() -> None:
    """The 400 is right (RFC 3903 §6 step 5: the body must be valid); its reason phrase, which
    pjsua shows ("Client publication (PUBLISH) failed (400/...)"), carries libxml2's message
    without lxml's "(<string>, line 8)" after it."""
    node = Node()
    body = PJSUA_PIDF_UNESCAPED.encode()
    data = PJSUA_PUBLISH_UNESCAPED.format(length=len(body), body="").encode() + body
    node.endpoint.receive(data, PUBLISHER, node.now)
    ((raw, _),) = node.endpoint.outbox()
    assert raw.split(b"\r\n", 1)[0] == (
        b"SIP/2.0 400 Invalid PIDF: not well-formed XML"
        b" (xmlParseEntityRef: no name, line 8, column 18)"
    )
    assert node.store.publications == {}  # type: ignore[attr-defined]
    assert node.role.server.compositor.document(BOB) is None


def test_unanswered_notify_logs_the_subscription_it_removes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A watcher whose NOTIFY goes unanswered (timed out, or a TCP/TLS Contact nobody listens
    on, as pjsua's after the node restarted) cannot be told its subscription ended: the log
    must say which one went, at INFO (it said "failed (timeout)" at DEBUG)."""
    node = Node()
    out = node.receive(subscribe())
    sid = responses(out)[0].to.tag
    with caplog.at_level("INFO", logger="presence_sip.presence.server"):
        node.advance(40, answer=None)  # Timer F = 64*T1 = 32 s
    assert len(node.role.server.subscriptions) == 0
    (record,) = [r for r in caplog.records if "subscription removed" in r.getMessage()]
    assert record.levelname == "INFO"
    assert record.getMessage() == (
        f"NOTIFY of {sid} (sip:{ALICE}@net-a.test;user=phone watching"
        f" sip:{BOB}@{DOMAIN};user=phone) got no answer from udp:127.0.0.1:5070"
        " (timed out or unreachable): subscription removed"
    )
