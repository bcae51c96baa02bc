"""Bad and refused presence requests on the wire, against a real ``presence-sip serve`` process.

Two nodes per module, both on 127.0.0.1 (``serve_process.ServeProcess``):

* ``open_node``: ``--auth none --default-policy allow``; its HSS holds the presentities and the
  owner's rules (block, polite-block, confirm) for named watchers;
* ``digest_node``: ``--auth digest``, for ownership (403) and unknown presentity (404 after the
  401 challenge).

Requests come from the project's scripted :class:`~presence_sip.runtime.agent.SipAgent` (UDP,
retransmitting on Timer E); every response code and header the RFCs name is asserted as it
arrives.  Each test uses its own presentity, so the tests do not see each other's state.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from serve_process import (
    LOOPBACK,
    ServeProcess,
    TcpClient,
    answer_bytes,
    answered_notify,
    build_request,
    register_over,
    serve_command,
)

from presence_sip.runtime.agent import Dialog, SipAgent
from presence_sip.sip import Request, Response, parse_message
from presence_sip.storage.sqlite_hss import SqliteSubscriberStore

DOMAIN = "example.test"
PASSWORD = "secret-pw"
PIDF = "application/pidf+xml"

# open_node presentities (one per test that changes state)
OWNER = "+447700900201"  # has the rules below; publishes open
P_412 = "+447700900202"
P_HOSTILE = "+447700900203"
P_MISC = "+447700900204"
P_TCP = "+447700900205"
P_LARGE_TCP = "+447700900206"
P_LARGE_UDP = "+447700900207"
P_FLOW = "+447700900208"
W_FLOW = "+447700900209"  # a watcher whose Contact is its connection's own port (pjsua)
BLOCKED = f"sip:blocked@{DOMAIN}"
POLITE = f"sip:polite@{DOMAIN}"
CONFIRM = f"sip:confirm@{DOMAIN}"
# digest_node subscribers
ALICE = "+447700900301"
BOB = "+447700900302"
UNKNOWN = "+447700900399"  # in no HSS


def provision(
    data: Path, subscribers: Sequence[str], rules: Sequence[tuple[str, str, str]] = ()
) -> None:
    """Subscribers and rules straight into the HSS store (what ``presence-sip hss`` calls)."""
    data.mkdir(parents=True, exist_ok=True)
    store = SqliteSubscriberStore.open(data, DOMAIN)
    try:
        for msisdn in subscribers:
            store.add_subscriber(msisdn, PASSWORD)
        for owner, watcher, action in rules:
            store.set_rule(owner, watcher, action)
    finally:
        store.close()


@pytest.fixture(scope="module")
def open_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("open") / "data"
    provision(
        data,
        [OWNER, P_412, P_HOSTILE, P_MISC, P_TCP, P_LARGE_TCP, P_LARGE_UDP, P_FLOW, W_FLOW],
        rules=[(OWNER, BLOCKED, "block"), (OWNER, POLITE, "polite-block"),
               (OWNER, CONFIRM, "confirm")],
    )  # fmt: skip
    return data


@pytest.fixture(scope="module")
def open_node(open_data: Path) -> Iterator[ServeProcess]:
    args = ["--default-policy", "allow", "--udp-mtu", "1300"]  # (RFC 3261 §18.1.1 tests)
    with ServeProcess(open_data, auth="none", extra_args=args, log_level="DEBUG") as node:
        yield node


@pytest.fixture(scope="module")
def digest_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    data = tmp_path_factory.mktemp("digest") / "data"
    provision(data, [ALICE, BOB])
    with ServeProcess(data, auth="digest", extra_args=["--default-policy", "allow"]) as node:
        yield node


# --- helpers ------------------------------------------------------------------------------------


def pidf(presentity: str, basic: str = "open", note: str = "here", *, doctype: str = "") -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n{doctype}'
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:{presentity}@{DOMAIN}">'
        f'<tuple id="t1"><status><basic>{basic}</basic></status><note>{note}</note></tuple>'
        "</presence>"
    ).encode()


def uri(presentity: str) -> str:
    return f"sip:{presentity}@{DOMAIN}"


async def publish(
    agent: SipAgent,
    node: ServeProcess,
    presentity: str,
    body: bytes = b"",
    *,
    content_type: str | None = PIDF,
    expires: str | None = "600",
    event: str = "presence",
    if_match: str | None = None,
    password: str | None = None,
) -> Response:
    headers = [("Event", event)]
    if expires is not None:
        headers.append(("Expires", expires))
    if if_match is not None:
        headers.append(("SIP-If-Match", if_match))
    if body and content_type is not None:
        headers.append(("Content-Type", content_type))
    return await agent.request(
        "PUBLISH", uri(presentity), node.address, headers=headers, body=body,
        password=password, timeout=10,
    )  # fmt: skip


async def subscribe(
    agent: SipAgent,
    node: ServeProcess,
    presentity: str,
    *,
    expires: str = "600",
    event: str = "presence",
    dialog: Dialog | None = None,
    password: str | None = None,
) -> Response:
    return await agent.request(
        "SUBSCRIBE", uri(presentity), node.address, dialog=dialog, password=password,
        headers=[("Event", event), ("Expires", expires), ("Accept", PIDF)], timeout=10,
    )  # fmt: skip


async def fetch(node: ServeProcess, presentity: str) -> Request:
    """A one-shot query (Expires: 0): the single NOTIFY, asserted terminated."""
    async with SipAgent("fetcher", DOMAIN) as agent:
        answer = await subscribe(agent, node, presentity, expires="0")
        assert answer.status == 200, answer
        notify = await agent.next_request("NOTIFY", timeout=5)
    assert (notify.headers.get("Subscription-State") or "").startswith("terminated")
    return notify


def basic_of(notify: Request) -> list[str]:
    return [b.decode() for b in re.findall(rb"<basic>(\w+)</basic>", notify.body)]


def state_of(notify: Request) -> str:
    return (notify.headers.get("Subscription-State") or "").split(";")[0].strip()


# --- PUBLISH errors (RFC 3903 section 6) --------------------------------------------------------


async def test_publish_with_an_unknown_entity_tag_is_412(open_node: ServeProcess) -> None:
    async with SipAgent(P_412, DOMAIN) as agent:
        refresh = await publish(agent, open_node, P_412, if_match="no-such-etag")
        modify = await publish(agent, open_node, P_412, pidf(P_412), if_match="no-such-etag")
    assert refresh.status == 412
    assert modify.status == 412


@pytest.mark.parametrize("method", ["PUBLISH", "SUBSCRIBE"])
async def test_too_short_expires_is_423_with_min_expires(
    open_node: ServeProcess, method: str
) -> None:
    async with SipAgent(P_MISC, DOMAIN) as agent:
        if method == "PUBLISH":
            answer = await publish(agent, open_node, P_MISC, pidf(P_MISC), expires="1")
        else:
            answer = await subscribe(agent, open_node, P_MISC, expires="1")
    assert answer.status == 423
    min_expires = answer.headers.get("Min-Expires")
    assert min_expires is not None
    assert int(min_expires) > 1


async def test_unknown_event_package_is_489(open_node: ServeProcess) -> None:
    async with SipAgent(P_MISC, DOMAIN) as agent:
        published = await publish(agent, open_node, P_MISC, pidf(P_MISC), event="foo")
        subscribed = await subscribe(agent, open_node, P_MISC, event="foo")
    assert published.status == 489
    assert subscribed.status == 489
    allow_events = subscribed.headers.get("Allow-Events") or ""
    assert "presence" in [e.strip() for e in allow_events.split(",")]  # RFC 6665 section 8.3.2


async def test_publish_that_is_not_pidf_is_415_with_accept(open_node: ServeProcess) -> None:
    async with SipAgent(P_MISC, DOMAIN) as agent:
        answer = await publish(agent, open_node, P_MISC, b"I am here", content_type="text/plain")
    assert answer.status == 415
    assert PIDF in (answer.headers.get("Accept") or "")


BAD_PIDF = {
    "not well-formed": pidf(P_MISC)[:-5],
    "wrong namespace": pidf(P_MISC).replace(b"urn:ietf:params:xml:ns:pidf", b"urn:example:x"),
    "bad basic": pidf(P_MISC, basic="maybe"),
    "tuple without id": pidf(P_MISC).replace(b' id="t1"', b""),
    "no entity": pidf(P_MISC).replace(f' entity="sip:{P_MISC}@{DOMAIN}"'.encode(), b""),
}


@pytest.mark.parametrize("defect", sorted(BAD_PIDF))
async def test_bad_pidf_is_400(open_node: ServeProcess, defect: str) -> None:
    async with SipAgent(P_MISC, DOMAIN) as agent:
        answer = await publish(agent, open_node, P_MISC, BAD_PIDF[defect])
    assert answer.status == 400, (defect, answer)


XXE = '<!DOCTYPE presence [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
LAUGHS = (
    '<!DOCTYPE presence [<!ENTITY lol "lol">'
    + "".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'
        for i in range(1, 10)
    )
    + "]>\n"
)


async def test_hostile_pidf_is_400_and_nothing_is_stored(open_node: ServeProcess) -> None:
    async with SipAgent(P_HOSTILE, DOMAIN) as agent:
        first = await publish(agent, open_node, P_HOSTILE, pidf(P_HOSTILE, "open", "before"))
        assert first.status == 200
        etag = first.headers.get("SIP-ETag")
        hostile = {
            "external entity": pidf(P_HOSTILE, "closed", "&xxe;", doctype=XXE),
            "billion laughs": pidf(P_HOSTILE, "closed", "&lol9;", doctype=LAUGHS),
        }
        for name, body in hostile.items():
            started = time.monotonic()
            initial = await publish(agent, open_node, P_HOSTILE, body)
            modify = await publish(agent, open_node, P_HOSTILE, body, if_match=etag)
            assert (initial.status, modify.status) == (400, 400), name
            assert b"root:" not in initial.body + modify.body, name
            assert time.monotonic() - started < 5, name  # not expanded
    notify = await fetch(open_node, P_HOSTILE)
    assert basic_of(notify) == ["open"]
    assert b"<note>before</note>" in notify.body
    assert b"root:" not in notify.body
    assert b"lol" not in notify.body
    assert open_node.exited_early is False


# --- SUBSCRIBE errors and authorization (RFC 6665, RFC 3856 section 6.6, RFC 5025) -------------


async def test_in_dialog_subscribe_with_an_unknown_to_tag_is_481(open_node: ServeProcess) -> None:
    async with SipAgent("stranger", DOMAIN) as agent:
        dialog = agent.new_dialog()
        dialog.remote_tag = "no-such-dialog"
        answer = await subscribe(agent, open_node, OWNER, dialog=dialog)
    assert answer.status == 481


async def test_blocked_watcher_is_403(open_node: ServeProcess) -> None:
    async with SipAgent("blocked", DOMAIN) as agent:
        answer = await subscribe(agent, open_node, OWNER)
        assert answer.status == 403
        with pytest.raises(TimeoutError):
            await agent.next_request("NOTIFY", timeout=0.5)


async def test_polite_blocked_watcher_sees_closed(open_node: ServeProcess) -> None:
    async with SipAgent(OWNER, DOMAIN) as owner:
        assert (await publish(owner, open_node, OWNER, pidf(OWNER, "open", "secret"))).status == 200
    async with SipAgent("polite", DOMAIN) as agent:
        dialog = agent.new_dialog()
        answer = await subscribe(agent, open_node, OWNER, dialog=dialog)
        assert answer.status == 200
        notify = await agent.next_request("NOTIFY", timeout=5)
        await subscribe(agent, open_node, OWNER, dialog=dialog, expires="0")
    assert state_of(notify) == "active"
    assert basic_of(notify) == ["closed"]
    assert b"secret" not in notify.body


async def test_confirm_is_pending_until_the_owner_allows(
    open_node: ServeProcess, open_data: Path
) -> None:
    async with SipAgent(OWNER, DOMAIN) as owner:
        assert (await publish(owner, open_node, OWNER, pidf(OWNER, "open", "hello"))).status == 200
    async with SipAgent("confirm", DOMAIN) as agent:
        dialog = agent.new_dialog()
        answer = await subscribe(agent, open_node, OWNER, dialog=dialog)
        assert answer.status == 200  # RFC 6665: never 202
        pending = await agent.next_request("NOTIFY", timeout=5)
        assert state_of(pending) == "pending"
        assert basic_of(pending) == []  # RFC 3856 section 6.6.2: no state while pending

        argv = [*serve_command(), "hss", "--data", str(open_data),
                "rule", "add", OWNER, CONFIRM, "allow"]  # fmt: skip
        done = await asyncio.to_thread(
            subprocess.run, argv, capture_output=True, text=True, timeout=30, check=False
        )
        assert done.returncode == 0, done.stderr
        allowed_at = time.monotonic()
        active = await agent.next_request("NOTIFY", timeout=5)
        waited = time.monotonic() - allowed_at
        await subscribe(agent, open_node, OWNER, dialog=dialog, expires="0")
    assert state_of(active) == "active"
    assert basic_of(active) == ["open"]
    assert waited < 2.5, f"the pending watcher was activated {waited:.1f}s after the rule change"


# --- digest node: ownership and unknown presentities ---------------------------------------------


async def test_publish_for_someone_else_is_403(digest_node: ServeProcess) -> None:
    async with SipAgent(ALICE, DOMAIN) as alice:
        challenge = await publish(alice, digest_node, ALICE, pidf(ALICE))
        own = await publish(alice, digest_node, ALICE, pidf(ALICE), password=PASSWORD)
        other = await publish(alice, digest_node, BOB, pidf(BOB), password=PASSWORD)
    assert challenge.status in (401, 407)  # authentication is required at all
    assert own.status == 200  # the credentials are good ...
    assert other.status == 403  # ... but Bob's presence is Bob's to publish


async def test_subscribe_to_an_unknown_presentity_is_404_after_auth(
    digest_node: ServeProcess,
) -> None:
    async with SipAgent(ALICE, DOMAIN) as alice:
        challenge = await subscribe(alice, digest_node, UNKNOWN)
        unknown = await subscribe(alice, digest_node, UNKNOWN, password=PASSWORD)
        known = await subscribe(alice, digest_node, BOB, password=PASSWORD, expires="0")
    assert challenge.status in (401, 407)  # nothing is revealed before authentication
    assert unknown.status == 404
    assert known.status == 200


# --- a watcher over TCP whose connection closes (RFC 3261 §12.2.1.1) ----------------------------


async def test_notify_goes_to_the_contact_once_the_watchers_connection_closed(
    open_node: ServeProcess,
) -> None:
    """The NOTIFY after the subscriber's connection closed comes over a connection the node
    opens to the subscriber's Contact (it used to go to the closed connection's port, fail,
    and end the subscription)."""
    async with SipAgent("publisher", DOMAIN) as agent:
        assert (await publish(agent, open_node, P_TCP, pidf(P_TCP))).status == 200
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen(1)
        contact_port = listener.getsockname()[1]
        watcher = TcpClient(open_node)
        subscribe_request = build_request(
            "SUBSCRIBE", uri(P_TCP), watcher, transport="TCP",
            headers=[("Contact", f"<sip:w@{LOOPBACK}:{contact_port};transport=tcp>"),
                     ("Event", "presence"), ("Expires", "600"), ("Accept", PIDF)],
        )  # fmt: skip
        watcher.sock.sendall(subscribe_request)
        answers = [parse_message(watcher.read_message() or b"") for _ in range(2)]
        (ok,) = [m for m in answers if isinstance(m, Response)]
        (first,) = [m for m in answers if isinstance(m, Request)]
        assert ok.status == 200
        assert basic_of(first) == ["open"]
        watcher.sock.sendall(answer_bytes(first))
        watcher.close()
        await asyncio.sleep(0.2)  # the node sees the connection close
        async with SipAgent("publisher", DOMAIN) as agent:
            changed = await publish(agent, open_node, P_TCP, pidf(P_TCP, "closed"))
            assert changed.status == 200
        listener.settimeout(10)
        accepted, _ = await asyncio.to_thread(listener.accept)
        contact = TcpClient(sock=accepted)
        raw = await asyncio.to_thread(contact.read_message, 10.0)
        assert raw is not None, "the node closed the connection to the Contact"
        notify = parse_message(raw)
        assert isinstance(notify, Request)
        assert notify.method == "NOTIFY"
        assert state_of(notify) == "active"
        assert basic_of(notify) == ["closed"]
        contact.sock.sendall(answer_bytes(notify))
        contact.close()


def flow_contact(client: TcpClient, msisdn: str) -> str:
    """A Contact that is ``client``'s own connection's port (pjsua's ``contactUseSrcPort``)."""
    return f"sip:{msisdn}@{LOOPBACK}:{client.port};transport=tcp;ob"


async def test_a_watcher_whose_contact_was_its_closed_connection_gets_notify_over_its_new_one(
    open_node: ServeProcess,
) -> None:
    """pjsua over TCP/TLS puts its connection's own port in its Contact.  Once that connection
    closes, the Contact reaches nothing (the connect is refused); the watcher registers again
    over a new connection, and the NOTIFY goes over that one instead of ending the
    subscription (registrar/flows.py)."""
    async with SipAgent("publisher", DOMAIN) as agent:
        assert (await publish(agent, open_node, P_FLOW, pidf(P_FLOW))).status == 200
    first = TcpClient(open_node)
    assert register_over(first, uri(W_FLOW), flow_contact(first, W_FLOW)).status == 200
    subscribe_request = build_request(
        "SUBSCRIBE", uri(P_FLOW), first, transport="TCP", from_=f"<{uri(W_FLOW)}>",
        headers=[("Contact", f"<{flow_contact(first, W_FLOW)}>"), ("Event", "presence"),
                 ("Expires", "600"), ("Accept", PIDF)],
    )  # fmt: skip
    first.sock.sendall(subscribe_request)
    answers = [parse_message(first.read_message() or b"") for _ in range(2)]
    assert [m.status for m in answers if isinstance(m, Response)] == [200]
    (initial,) = [m for m in answers if isinstance(m, Request)]
    first.sock.sendall(answer_bytes(initial))
    first.close()
    second = TcpClient(open_node)
    assert register_over(second, uri(W_FLOW), flow_contact(second, W_FLOW)).status == 200
    await asyncio.sleep(0.2)  # the node sees the first connection close
    async with SipAgent("publisher", DOMAIN) as agent:
        assert (await publish(agent, open_node, P_FLOW, pidf(P_FLOW, "closed"))).status == 200
        notify = await answered_notify(second)
        assert state_of(notify) == "active"
        assert basic_of(notify) == ["closed"]
        assert notify.call_id == initial.call_id
        assert str(notify.uri) == flow_contact(first, W_FLOW)  # the dialog's remote target
        # The subscription lives on, over the same connection.
        assert (await publish(agent, open_node, P_FLOW, pidf(P_FLOW, "open"))).status == 200
        again = await answered_notify(second)
        assert basic_of(again) == ["open"]
    second.close()
    log = open_node.log_text()
    # Its Contact asks for its flow (ob): the new one at once, the dead Contact never dialled.
    assert f"flow tcp:{LOOPBACK}:{first.port} gone, by its new one tcp:{LOOPBACK}:" in log
    assert f"cannot connect to tcp:{LOOPBACK}:{first.port}" not in log


# --- a NOTIFY over the UDP size limit (RFC 3261 §18.1.1) -----------------------------------------

LONG_NOTE = "n" * 1500
"""A note that makes the document, and so the NOTIFY, larger than 1300 bytes."""


async def test_a_notify_over_1300_bytes_comes_over_tcp_to_a_udp_watcher_that_takes_tcp(
    open_node: ServeProcess,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((LOOPBACK, 0))  # TCP first (a port a connection may hold), then UDP on it
        listener.listen(1)
        listener.settimeout(10)
        port = listener.getsockname()[1]
        async with (
            SipAgent("publisher", DOMAIN) as publisher,
            SipAgent("watcher", DOMAIN, port=port) as watcher,
        ):
            assert (
                await publish(publisher, open_node, P_LARGE_TCP, pidf(P_LARGE_TCP))
            ).status == 200
            assert (await subscribe(watcher, open_node, P_LARGE_TCP)).status == 200
            small = await watcher.next_request("NOTIFY", timeout=5)
            assert small.top_via.transport == "UDP"
            large = pidf(P_LARGE_TCP, note=LONG_NOTE)
            assert (await publish(publisher, open_node, P_LARGE_TCP, large)).status == 200
            accepted, _ = await asyncio.to_thread(listener.accept)
            connection = TcpClient(sock=accepted)
            raw = await asyncio.to_thread(connection.read_message, 10.0)
            assert raw is not None
            assert len(raw) > 1300
            notify = parse_message(raw)
            assert isinstance(notify, Request)
            assert notify.method == "NOTIFY"
            assert notify.top_via.transport == "TCP"
            assert (notify.top_via.host, notify.top_via.port) == open_node.address
            assert LONG_NOTE.encode() in notify.body
            connection.sock.sendall(answer_bytes(notify))
            # The subscription lives on, and a small NOTIFY goes over UDP again.
            closed = pidf(P_LARGE_TCP, "closed")
            assert (await publish(publisher, open_node, P_LARGE_TCP, closed)).status == 200
            after = await watcher.next_request("NOTIFY", timeout=5)
            assert state_of(after) == "active"
            assert basic_of(after) == ["closed"]
            assert after.top_via.transport == "UDP"
            connection.close()


async def test_a_notify_over_1300_bytes_comes_over_udp_when_the_watcher_takes_no_tcp(
    open_node: ServeProcess,
) -> None:
    """RFC 3261 §18.1.1: the connection is refused (a reset), so the NOTIFY goes over UDP."""
    async with SipAgent("publisher", DOMAIN) as publisher, SipAgent("watcher", DOMAIN) as watcher:
        assert (await publish(publisher, open_node, P_LARGE_UDP, pidf(P_LARGE_UDP))).status == 200
        assert (await subscribe(watcher, open_node, P_LARGE_UDP)).status == 200
        await watcher.next_request("NOTIFY", timeout=5)
        large = pidf(P_LARGE_UDP, note=LONG_NOTE)
        assert (await publish(publisher, open_node, P_LARGE_UDP, large)).status == 200
        notify = await watcher.next_request("NOTIFY", timeout=5)
        assert notify.top_via.transport == "UDP"
        assert LONG_NOTE.encode() in notify.body
        assert state_of(notify) == "active"
    assert f"no TCP connection to tcp:{LOOPBACK}:{watcher.port}" in open_node.log_text()
