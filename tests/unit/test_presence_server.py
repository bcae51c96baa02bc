"""The presence server end to end through the real Endpoint, sans-IO, on a virtual clock.

Byte-exact SUBSCRIBE / PUBLISH / REGISTER requests go in with ``endpoint.receive``; what comes out
of ``endpoint.outbox()`` is parsed back and asserted on (RFC 3856 §8, RFC 3903 §10, RFC 3863).
"""

from __future__ import annotations

import sqlite3

import pytest

from presence_sip.auth.digest import DigestAlgorithm, DigestAuthenticator, build_authorization
from presence_sip.auth.guard import RequestGuard
from presence_sip.endpoint import Endpoint
from presence_sip.ids import CountingIdSource
from presence_sip.presence.pidf import parse_pidf
from presence_sip.presence.pidf_diff import apply_diff
from presence_sip.presence.role import PresenceRole
from presence_sip.presence.server import PresenceSettings
from presence_sip.presence.watcherinfo import parse_watcherinfo
from presence_sip.registrar.bindings import MemoryBindingStore
from presence_sip.registrar.registrar import Registrar
from presence_sip.registrar.role import RegistrarRole
from presence_sip.sip import Request, Response, parse_message, to_bytes
from presence_sip.sip.peer import Peer
from presence_sip.storage.database import connect, migrate
from presence_sip.storage.memory_hss import MemorySubscriberStore
from presence_sip.storage.memory_presence import MemoryPresenceStore
from presence_sip.storage.sqlite_presence import SqlitePresenceStore

DOMAIN = "net-b.test"
PS = "127.0.2.11"
BOB = "+447700900123"
ALICE = "+447700900001"
CAROL = "+447700900002"
WATCHER = Peer("udp", "127.0.0.1", 5070)
PUBLISHER = Peer("udp", "127.0.0.1", 5080)
T0 = 1_700_000_000.0

PIDF_OPEN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:+447700900123@net-b.test">\n'
    b'<tuple id="sg89ae"><status><basic>open</basic></status>'
    b"<contact priority=\"0.8\">tel:+447700900123</contact></tuple>\n</presence>\n"
)
PIDF_CLOSED = PIDF_OPEN.replace(b"<basic>open</basic>", b"<basic>closed</basic>")


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
    ) -> None:
        self.now = now
        self.ids = ids or CountingIdSource()
        self.endpoint = Endpoint(ids=self.ids)
        if hss is None:
            hss = MemorySubscriberStore(DOMAIN)
            for msisdn in (BOB, ALICE, CAROL):
                hss.add_subscriber(msisdn, "secret")
        self.hss = hss
        self.registrar = Registrar(MemoryBindingStore(), now=now)
        authenticator = DigestAuthenticator(DOMAIN, b"k" * 32) if auth else None
        self.guard = RequestGuard(authenticator, lambda user, alg: hss.get_ha1(user, alg.base.value))
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
        registrar_role = RegistrarRole(self.registrar, self.guard, hss, frozenset({DOMAIN, PS}))
        self.endpoint.register("REGISTER", registrar_role.handle)
        self.endpoint.add_role(self.registrar)
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

    def advance(self, seconds: float) -> list[Request | Response]:
        """Move the clock, firing every timer that falls due on the way."""
        end = self.now + seconds
        out: list[Request | Response] = []
        while True:
            timer = self.endpoint.get_timer()
            if timer is None or timer > end:
                break
            self.now = max(self.now, timer)
            self.endpoint.handle_timer(self.now)
            out.extend(self.drain())
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
) -> bytes:
    n = next(_counter)
    to = f"<{target}>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"SUBSCRIBE {ruri or target} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKsub{n}",
        "Max-Forwards: 70",
        f'From: "Alice" <sip:{watcher}@net-a.test;user=phone>;tag=w{call_id or n}',
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
    event: str = "presence",
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
        f"Event: {event}",
    ]
    if etag is not None:
        lines.append(f"SIP-If-Match: {etag}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if content_type is not None and body:
        lines.append(f"Content-Type: {content_type}")
    lines.extend(extra)
    return sip(lines, body)


def register(msisdn: str = BOB, expires: int = 3600) -> bytes:
    n = next(_counter)
    return sip([
        f"REGISTER sip:{DOMAIN} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKreg{n}",
        "Max-Forwards: 70",
        f"From: <sip:{msisdn}@{DOMAIN};user=phone>;tag=r{n}",
        f"To: <sip:{msisdn}@{DOMAIN};user=phone>",
        f"Call-ID: reg{msisdn}@127.0.0.1",
        f"CSeq: {n} REGISTER",
        "Contact: <sip:bob@127.0.0.1:5090>",
        f"Expires: {expires}",
    ])


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
    assert isinstance(ok, Response) and ok.status == 200
    assert ok.expires == 600
    assert ok.to.tag
    assert isinstance(notify, Request) and notify.method == "NOTIFY"
    assert notify.from_.tag == ok.to.tag
    assert notify.to.tag == "w" + notify.call_id.split("@")[0][3:] or notify.to.tag
    assert sub_state(notify) == ("active", 600, None)
    assert notify.headers.get("Event") == "presence"
    assert notify.headers.get("Content-Type") == "application/pidf+xml"
    assert basic(notify) == "closed"  # not registered, nothing published
    assert notify.uri == "sip:alice@127.0.0.1:5070"
    assert node.sent[-1][1] == Peer("udp", "127.0.0.1", 5070)


def subscribed(node: Node, **kwargs: object) -> tuple[Response, Request]:
    out = node.receive(subscribe(**kwargs))  # type: ignore[arg-type]
    ok = only_response(out)
    assert ok.status == 200, (ok.status, ok.reason)
    found = notifies(out)
    assert len(found) == 1
    node.answer(found[0], source=WATCHER)
    return ok, found[0]


def published(node: Node, body: bytes = PIDF_OPEN, **kwargs: object) -> tuple[Response, list[Request]]:
    out = node.receive(publish(body, **kwargs), PUBLISHER)  # type: ignore[arg-type]
    ok = only_response(out)
    for notify in notifies(out):
        node.answer(notify)
    return ok, notifies(out)


def in_dialog(ok: Response, notify: Request, *, expires: int, cseq: int = 2,
              event: str = "presence") -> bytes:
    """A re-SUBSCRIBE to the NOTIFY's Contact with the notifier's tag (as SIPp does)."""
    contact = notify.contacts[0].uri
    return subscribe(
        ruri=str(contact), to_tag=ok.to.tag, call_id=ok.call_id, cseq=cseq, expires=expires,
        event=event,
    )


# --- RFC 3903 §10: PUBLISH initial, refresh, modify, remove -------------------------------------


def test_publish_lifecycle_rfc3903() -> None:
    node = Node()
    _, first = subscribed(node)
    assert basic(first) == "closed"
    ok, sent = published(node, PIDF_OPEN, expires=3600)
    assert ok.status == 200
    etag1 = ok.sip_etag
    assert etag1 and ok.expires == 3600
    assert len(sent) == 1 and basic(sent[0]) == "open"
    assert sent[0].cseq.seq == first.cseq.seq + 1
    # refresh: SIP-If-Match, no body -> new ETag, no NOTIFY (nothing changed)
    ok, sent = published(node, b"", etag=etag1, expires=1800, content_type=None)
    etag2 = ok.sip_etag
    assert ok.status == 200 and etag2 and etag2 != etag1 and ok.expires == 1800
    assert sent == []
    # the old ETag is gone
    ok, _ = published(node, b"", etag=etag1, content_type=None)
    assert ok.status == 412
    # modify: SIP-If-Match and a body
    ok, sent = published(node, PIDF_CLOSED, etag=etag2)
    etag3 = ok.sip_etag
    assert ok.status == 200 and etag3 not in (etag1, etag2)
    assert len(sent) == 1 and basic(sent[0]) == "closed"
    assert parse_pidf(sent[0].body).tuple_ids == ("sg89ae",)
    # remove: Expires 0 -> back to the registration-derived document
    ok, sent = published(node, b"", etag=etag3, expires=0, content_type=None)
    assert ok.status == 200 and ok.expires == 0 and ok.sip_etag is None
    assert len(sent) == 1 and parse_pidf(sent[0].body).tuple_ids == ("reg",)
    assert node.store.publications == {}  # type: ignore[attr-defined]


def test_publication_expires_on_timer_and_watchers_hear_it() -> None:
    node = Node()
    subscribed(node, expires=3600)
    ok, _ = published(node, PIDF_OPEN, expires=60)
    assert ok.expires == 60
    out = node.advance(61)
    sent = notifies(out)
    assert len(sent) == 1 and parse_pidf(sent[0].body).tuple_ids == ("reg",)
    assert node.store.publications == {}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kwargs", "status", "header"),
    [
        ({"etag": "nosuchetag", "body": b"", "content_type": None}, 412, None),
        ({"expires": 10}, 423, ("Min-Expires", "60")),
        ({"event": "dialog"}, 489, ("Allow-Events", "presence")),
        ({"content_type": "text/plain"}, 415, ("Accept", "application/pidf+xml, application/pidf-diff+xml")),
        ({"body": b"<presence"}, 400, None),
        ({"body": b""}, 400, None),
        ({"body": PIDF_OPEN.replace(b"+447700900123@", b"+447700900001@")}, 400, None),
        ({"body": PIDF_OPEN.replace(b"<basic>open", b"<basic>maybe").replace(b"open</basic>", b"maybe</basic>")}, 400, None),
    ],
    ids=["412", "423", "489", "415", "400-xml", "400-nobody", "400-entity", "400-basic"],
)
def test_publish_errors(kwargs: dict[str, object], status: int, header: tuple[str, str] | None) -> None:
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
    _, first = subscribed(node)
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
    assert ok.status == 200 and ok.sip_etag


def authorized(data: bytes, challenge: Response, user: str) -> bytes:
    request = parse_message(data)
    assert isinstance(request, Request)
    value = challenge.headers.get_all("WWW-Authenticate")[-1]
    credentials = build_authorization(
        value, username=user, password="secret", method=request.method, uri=request.uri,
        cnonce=f"c{next(_counter)}", body=request.body,
    )
    request.headers.add("Authorization", credentials)
    request.headers.set("Via", request.headers.get("Via", ) + "x")  # type: ignore[operator]
    return to_bytes(request)
