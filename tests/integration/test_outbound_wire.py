"""RFC 5626 (outbound) on the wire, against a real ``presence-sip serve`` process on 127.0.0.1.

* A REGISTER with ``+sip.instance``, ``reg-id`` and ``Supported: outbound`` is answered
  ``Require: outbound``, and the same instance's REGISTER over a new connection (a new ephemeral
  port in its Contact, as pjsua sends after its connection closed) replaces the binding instead
  of adding one; ``Require: outbound`` is not refused 420.
* A UDP watcher whose Contact names an address its NAT does not forward (here: a second socket
  of the test, which must get nothing) but has ``ob`` gets its NOTIFYs at the address its
  SUBSCRIBE came from; without ``ob`` they go to the Contact, as before.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from serve_process import (
    LOOPBACK,
    ServeProcess,
    TcpClient,
    UdpClient,
    answer_bytes,
    build_request,
)

from presence_sip.sip import Request, Response, parse_message
from presence_sip.storage.sqlite_hss import SqliteSubscriberStore

DOMAIN = "example.test"
WATCHER = "+447700900501"
PRESENTITY_NAT = "+447700900502"
PRESENTITY_PLAIN = "+447700900503"
INSTANCE = '"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"'


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    data = tmp_path_factory.mktemp("outbound") / "data"
    data.mkdir(parents=True)
    store = SqliteSubscriberStore.open(data, DOMAIN)
    try:
        for msisdn in (WATCHER, PRESENTITY_NAT, PRESENTITY_PLAIN):
            store.add_subscriber(msisdn, "secret-pw")
    finally:
        store.close()
    args = ["--default-policy", "allow"]
    with ServeProcess(data, auth="none", extra_args=args, log_level="DEBUG") as served:
        yield served


def uri(msisdn: str) -> str:
    return f"sip:{msisdn}@{DOMAIN}"


def register_flow(client: TcpClient, *, cseq: int = 1, call_id: str | None = None) -> Response:
    """pjsua's outbound REGISTER: its connection's port in the Contact, ``ob``, the instance."""
    aor = f"<{uri(WATCHER)}>"
    contact = (
        f"<sip:{WATCHER}@{client.host}:{client.port};transport=tcp;ob>"
        f";reg-id=1;+sip.instance={INSTANCE}"
    )
    request = build_request(
        "REGISTER", f"sip:{DOMAIN}", client, transport="TCP", from_=aor, to=aor, cseq=cseq,
        call_id=call_id,
        headers=[("Supported", "outbound, path"), ("Contact", contact), ("Expires", "600")],
    )  # fmt: skip
    client.sock.sendall(request)
    answer = parse_message(client.read_message() or b"")
    assert isinstance(answer, Response), answer
    return answer


def test_a_register_over_a_new_flow_replaces_the_old_flow(node: ServeProcess) -> None:
    first = TcpClient(node)
    answer = register_flow(first, call_id="flow-a")
    assert answer.status == 200
    assert answer.headers.get_all("Require") == ["outbound"]
    first.close()
    second = TcpClient(node)
    answer = register_flow(second, call_id="flow-b")
    assert answer.status == 200
    assert answer.headers.get_all("Require") == ["outbound"]
    contacts = answer.headers.get_all("Contact")
    assert len(contacts) == 1, contacts  # RFC 3261 alone would list the dead flow too
    assert f"{LOOPBACK}:{second.port};transport=tcp;ob>" in contacts[0]
    assert "reg-id=1" in contacts[0]
    second.close()


def test_require_outbound_is_understood_and_options_say_so(node: ServeProcess) -> None:
    with UdpClient() as client:
        aor = f"<{uri(WATCHER)}>"
        request = build_request(
            "REGISTER", f"sip:{DOMAIN}", client, from_=aor, to=aor,
            headers=[("Require", "outbound"), ("Supported", "outbound"),
                     ("Contact", f"<sip:w@{client.host}:{client.port};ob>;reg-id=2;"
                                 f"+sip.instance={INSTANCE}"),
                     ("Expires", "0")],
        )  # fmt: skip
        answer = client.request(request, node)
        assert answer.status == 200, answer.reason
        assert answer.headers.get_all("Require") == ["outbound"]
        options = client.request(build_request("OPTIONS", f"sip:{DOMAIN}", client), node)
        assert options.status == 200
        supported = [t.strip() for t in (options.headers.get("Supported") or "").split(",")]
        assert "outbound" in supported


def publish(presentity: str, basic: str, node: ServeProcess) -> None:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="{uri(presentity)}">'
        f'<tuple id="t1"><status><basic>{basic}</basic></status></tuple></presence>'
    ).encode()
    with UdpClient() as publisher:
        request = build_request(
            "PUBLISH", uri(presentity), publisher, body=body,
            headers=[("Event", "presence"), ("Expires", "600"),
                     ("Content-Type", "application/pidf+xml")],
        )  # fmt: skip
        assert publisher.request(request, node).status == 200


def subscribe(
    client: UdpClient, presentity: str, contact: str, node: ServeProcess
) -> tuple[Response, list[Request]]:
    """SUBSCRIBE from ``client``'s socket: its final response, and the NOTIFYs that reached the
    socket before it (answered 200)."""
    request = build_request(
        "SUBSCRIBE", uri(presentity), client, from_=f"<{uri(WATCHER)}>",
        headers=[("Contact", contact), ("Event", "presence"), ("Expires", "600"),
                 ("Accept", "application/pidf+xml")],
    )  # fmt: skip
    client.send(request, node)
    early: list[Request] = []
    while (raw := client.recv(5.0)) is not None:
        message = parse_message(raw)
        if isinstance(message, Request):
            client.send(answer_bytes(message), node)
            early.append(message)
        elif message.status >= 200:
            return message, early
    raise AssertionError("no final response to the SUBSCRIBE")


def notify_at(client: UdpClient, node: ServeProcess, timeout: float) -> Request | None:
    """The next NOTIFY that reaches ``client``'s socket, answered 200; None after ``timeout``."""
    while (raw := client.recv(timeout)) is not None:
        message = parse_message(raw)
        if isinstance(message, Request) and message.method == "NOTIFY":
            client.send(answer_bytes(message), node)
            return message
    return None


def basic_of(notify: Request) -> str:
    return notify.body.decode().partition("<basic>")[2].partition("</basic>")[0]


def test_a_udp_watcher_with_ob_is_notified_where_its_requests_come_from(
    node: ServeProcess,
) -> None:
    publish(PRESENTITY_NAT, "open", node)
    with UdpClient() as nat, UdpClient() as behind:
        contact = f"<sip:w@{behind.host}:{behind.port};ob>"  # what its NAT does not forward
        answer, early = subscribe(nat, PRESENTITY_NAT, contact, node)
        assert answer.status == 200
        first = early[0] if early else notify_at(nat, node, 5.0)
        assert first is not None
        assert basic_of(first) == "open"
        assert str(first.uri) == f"sip:w@{behind.host}:{behind.port};ob"
        publish(PRESENTITY_NAT, "closed", node)
        change = notify_at(nat, node, 5.0)
        assert change is not None
        assert basic_of(change) == "closed"
        assert behind.recv(0.3) is None


def test_without_ob_a_udp_watcher_is_notified_at_its_contact(node: ServeProcess) -> None:
    publish(PRESENTITY_PLAIN, "open", node)
    with UdpClient() as nat, UdpClient() as behind:
        contact = f"<sip:w@{behind.host}:{behind.port}>"
        answer, early = subscribe(nat, PRESENTITY_PLAIN, contact, node)
        assert answer.status == 200
        assert early == []
        first = notify_at(behind, node, 5.0)
        assert first is not None
        assert basic_of(first) == "open"
        assert notify_at(nat, node, 0.3) is None
