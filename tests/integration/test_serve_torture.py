"""Every RFC 4475 torture message, sent over UDP to a running ``presence-sip serve``.

The node serves ``example.com`` with ``--auth none``, so the vectors' Request-URIs at
``example.com`` are its own and REGISTERs reach the registrar unchallenged (RFC 4475 §3.3.7: a
registrar that does not authenticate ignores an Authorization it does not understand).

Before sending, the sent-by of the top Via is rewritten to the test's own socket (nothing else in
the message changes), so the node's answer comes back here and nothing is ever sent towards the
vectors' 192.0.2.x / example hosts.  In responses every Via, and in ``mpart01`` the Route, point at
a trap socket that must never receive anything (a node drops responses and never forwards).

``EXPECTED`` is the answer of a registrar/presence node per message, derived from the torture
README (``/work/shared/torture/README.md``): invalid -> 400 (505 for ``badvers``, 501 for
``mismatch02``), responses dropped, semantic ones as the README names them for an endpoint or a
registrar.  A request for a domain the node does not serve gets 403 (never an open relay,
DESIGN.md): the README's "a proxy forwards or rejects by Request-URI" (wsinv, esc01, esc02,
mpart01).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from serve_process import LOOPBACK, ServeProcess, UdpClient, build_request, parse_response

from presence_sip.sip import Response

DOMAIN = "example.com"
_TESTS = Path(__file__).resolve().parents[1]
VECTOR_DIRS = (_TESTS / "vectors" / "rfc4475", Path("/work/shared/torture/rfc4475"))
VECTORS = next((d for d in VECTOR_DIRS if d.is_dir()), VECTOR_DIRS[0])

DROP = None
"""No answer at all (responses, and a request no response can be addressed for)."""

# name -> (expected status or DROP, why)
EXPECTED: dict[str, tuple[int | None, str]] = {
    # RFC 4475 §3.1.1: valid messages
    "wsinv": (403, "valid INVITE for chair-dnrc.example.com: not ours, never relayed"),
    "intmeth": (501, "unknown method at an endpoint: 501 with Allow"),
    "esc01": (403, "valid INVITE for example.net: not ours"),
    "escnull": (200, "REGISTER of two distinct contacts"),
    "esc02": (403, "unknown method RE%47IST%45R for registrar.example.com: rejected by R-URI"),
    "lwsdisp": (200, "OPTIONS, accepted as well formed"),
    "longreq": (405, "INVITE for us: not a presence method"),
    "dblreq": (200, "the REGISTER is handled, the trailing INVITE ignored (RFC 3261 §18.3)"),
    "semiuri": (200, "OPTIONS for user;par=u%40example.net@example.com"),
    "transports": (200, "OPTIONS, unknown transports in lower Vias"),
    "mpart01": (403, "MESSAGE for example.org: not ours, the Route is not followed"),
    "unreason": (DROP, "a response (no transaction)"),
    "noreason": (DROP, "a response (no transaction)"),
    # RFC 4475 §3.1.2: invalid messages
    "badinv01": (400, "empty Via/Contact items"),
    "clerr": (400, "Content-Length larger than the datagram"),
    "ncl": (400, "negative Content-Length"),
    "scalar02": (400, "CSeq over 2**32-1"),
    "scalarlg": (DROP, "a response with overlarge values: discard silently"),
    "quotbal": (400, "unterminated quoted string"),
    "ltgtruri": (400, "<> around the Request-URI"),
    "lwsruri": (400, "LWS inside the Request-URI"),
    "lwsstart": (400, "several SP in the Request-Line"),
    "trws": (400, "SP after SIP/2.0 in the Request-Line"),
    "escruri": (400, "escaped headers in the Request-URI"),
    "baddate": (400, "non-GMT Date (rejecting is acceptable)"),
    "regbadct": (400, "Contact URI with headers not in <>"),
    "badaspec": (400, "spaces inside an addr-spec"),
    "baddn": (400, "non-token characters in an unquoted display name"),
    "badvers": (505, "SIP/7.0"),
    "mismatch01": (400, "CSeq method differs from the Request-Line"),
    "mismatch02": (501, "unknown method, CSeq mismatch: 501 is better"),
    "bigcode": (DROP, "a response code over 699: drop silently"),
    # RFC 4475 §3.2-3.4: semantic tests
    "badbranch": (200, "branch=z9hG4bK alone: RFC 2543 matching, then OPTIONS 200"),
    "insuf": (DROP, "no Call-ID, From, To: no response can be built (STYLE.md §4)"),
    "unkscm": (416, "unknown Request-URI scheme"),
    "novelsc": (416, "soap.beep: scheme never meaningful here"),
    "unksm2": (400, "REGISTER whose To is not a SIP/SIPS AOR"),
    "bext01": (420, "Require with unknown options, Unsupported lists them"),
    "invut": (405, "INVITE: the method is refused before the content"),
    "regaut01": (200, "unknown Authorization scheme ignored without authentication"),
    "multi01": (400, "several Call-ID/To/From/CSeq values"),
    "mcl01": (400, "conflicting Content-Length values"),
    "bcast": (DROP, "a response: an endpoint discards it"),
    "zeromf": (200, "Max-Forwards 0 for us: served"),
    "cparam01": (200, "contact-param kept outside the URI"),
    "cparam02": (200, "url-parameter kept inside the URI"),
    "regescrt": (200, "escaped Route kept in the contact URI"),
    "sdp01": (405, "INVITE: not a presence method"),
    "inv2543": (405, "RFC 2543 INVITE accepted, then refused as INVITE"),
}


def contacts(response: Response) -> list[str]:
    return [value.strip() for value in response.headers.values("Contact")]


def _escnull(response: Response) -> None:
    uris = {c.split(">")[0] for c in contacts(response)}
    assert uris == {"<sip:%00@host5.example.com", "<sip:%00%00@host5.example.com"}, uris


def _cparam01(response: Response) -> None:
    assert any(
        c.startswith("<sip:+19725552222@gw1.example.net>;unknownparam") for c in contacts(response)
    ), contacts(response)


def _cparam02(response: Response) -> None:
    assert any(
        c.startswith("<sip:+19725552222@gw1.example.net;unknownparam>") for c in contacts(response)
    ), contacts(response)


def _regescrt(response: Response) -> None:
    assert any(
        c.startswith("<sip:user@example.com?Route=%3Csip:sip.example.com%3E>")
        for c in contacts(response)
    ), contacts(response)


def _allow(response: Response) -> None:
    assert "OPTIONS" in (response.headers.get("Allow") or ""), response.headers.get("Allow")


def _bext01(response: Response) -> None:
    offered = {t.strip() for t in (response.headers.get("Unsupported") or "").split(",")}
    assert offered == {"nothingSupportsThis", "nothingSupportsThisEither"}, offered


CHECKS: dict[str, Callable[[Response], None]] = {
    "escnull": _escnull,
    "cparam01": _cparam01,
    "cparam02": _cparam02,
    "regescrt": _regescrt,
    "intmeth": _allow,
    "longreq": _allow,
    "bext01": _bext01,
}

# -- rewriting ----------------------------------------------------------------------------------

_VIA_NAME = re.compile(rb"(?im)^(?:via|v)[ \t]*:")
_LWS = rb"[ \t\r\n]*"
_SENT_BY = re.compile(
    rb"SIP" + _LWS + rb"/" + _LWS + rb"\d+\.\d+" + _LWS + rb"/" + _LWS + rb"[^ \t\r\n;,]+"
    rb"[ \t\r\n]+(?P<host>\[[^\]]*\]|[^ \t\r\n;,:]+)(?P<port>[ \t]*:[ \t]*\d+)?"
)
_ROUTE = re.compile(rb"(?im)^(Route:[ \t]*<sip:)[^>;]+")


def _replace_sent_by(head: bytes, start: int, port: int) -> tuple[bytes, int]:
    found = _SENT_BY.search(head, start)
    assert found is not None, head[start : start + 80]
    end = found.end("port") if found.group("port") else found.end("host")
    replacement = b"%s:%d" % (LOOPBACK.encode(), port)
    return head[: found.start("host")] + replacement + head[end:], found.start("host")


def rewrite(data: bytes, port: int, trap_port: int) -> bytes:
    """Top Via sent-by -> 127.0.0.1:port; in a response every Via -> the trap; Route -> trap."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    is_response = head.startswith(b"SIP/")
    names = list(_VIA_NAME.finditer(head))
    assert names, "no Via to rewrite"
    position = names[0].end()
    head, position = _replace_sent_by(head, position, trap_port if is_response else port)
    while is_response:
        following = _VIA_NAME.search(head, position)
        if following is None:
            break
        head, position = _replace_sent_by(head, following.end(), trap_port)
    head = _ROUTE.sub(rb"\g<1>" + b"%s:%d" % (LOOPBACK.encode(), trap_port), head)
    return head + sep + rest


def load(name: str) -> bytes:
    return (VECTORS / f"{name}.dat").read_bytes()


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trap() -> Iterator[socket.socket]:
    """Where every response Via and the mpart01 Route point: must stay silent."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, 0))
    sock.setblocking(False)
    yield sock
    sock.close()


@pytest.fixture(scope="module")
def node(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    failures_before = request.session.testsfailed
    data_dir = tmp_path_factory.mktemp("torture") / "data"
    with ServeProcess(data_dir, domain=DOMAIN, auth="none") as running:
        yield running
        if request.session.testsfailed > failures_before:
            running.dump_log("a torture test failed")


def trap_silent(trap: socket.socket) -> bool:
    try:
        trap.recvfrom(70_000)
    except BlockingIOError:
        return True
    return False


def send_vector(node: ServeProcess, trap: socket.socket, name: str) -> list[bytes]:
    """Send one vector from a fresh socket; every datagram that comes back."""
    expected, _ = EXPECTED[name]
    with UdpClient() as client:
        client.send(rewrite(load(name), client.port, trap.getsockname()[1]), node)
        first = client.recv(2.0 if expected is not DROP else 0.6)
        if first is None:
            return []
        # A second answer would be a bug (dblreq's INVITE must be ignored; no response doubles).
        return [first, *client.recv_all(quiet=0.3 if name == "dblreq" else 0.05)]


# -- tests --------------------------------------------------------------------------------------


def test_the_table_covers_every_vector() -> None:
    names = {path.stem for path in VECTORS.glob("*.dat")}
    assert len(names) == 49
    assert names == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_torture_message(node: ServeProcess, trap: socket.socket, name: str) -> None:
    expected, why = EXPECTED[name]
    answers = send_vector(node, trap, name)
    if expected is DROP:
        assert answers == [], f"{name} ({why}) was answered: {answers[0][:80]!r}"
    else:
        assert answers, f"{name} ({why}): no answer, expected {expected}"
        status_line = answers[0].split(b"\r\n", 1)[0].decode("utf-8", "replace")
        assert status_line.startswith(f"SIP/2.0 {expected} "), f"{name} ({why}): {status_line}"
        assert len(answers) == 1, f"{name}: {len(answers)} answers"
        if expected < 400:  # a well-formed request: its answer parses and carries our To-tag
            response = parse_response(answers[0])
            assert response.to.tag, f"{name}: no To-tag"
        check = CHECKS.get(name)
        if check is not None:
            check(parse_response(answers[0]))
    assert trap_silent(trap), f"{name}: something was sent to the trap (forwarded?)"
    assert "Traceback" not in node.log_text(), f"{name}: the node logged a traceback"


def test_registrar_keeps_contact_parameters_exactly_in_later_fetches(
    node: ServeProcess, trap: socket.socket
) -> None:
    """RFC 4475 §3.3.12-14: a later fetch shows the contact-param outside the URI (cparam01),
    the url-parameter inside it (cparam02) and the escaped Route header (regescrt).

    cparam01 and cparam02 bind URIs that are equivalent by RFC 3261 §19.1.4 (a parameter in
    only one of them is ignored), so cparam02 updates cparam01's binding (§10.3 step 7): each
    is fetched right after it was sent."""
    for name, aor, checks in (
        ("cparam01", "watson", (_cparam01,)),
        ("cparam02", "watson", (_cparam02, _one_binding)),
        ("regescrt", "user", (_regescrt,)),
    ):
        send_vector(node, trap, name)
        with UdpClient() as client:
            query = build_request(
                "REGISTER", f"sip:{DOMAIN}", client, to=f"<sip:{aor}@{DOMAIN}>",
                from_=f"<sip:{aor}@{DOMAIN}>",
            )  # fmt: skip
            response = client.request(query, node)
        assert response.status == 200
        for check in checks:
            check(response)
        assert not any(c.startswith("<sip:+19725552222@gw1.example.net;unknownparam>;unknownparam")
                       for c in contacts(response))  # fmt: skip


def _one_binding(response: Response) -> None:
    assert len(contacts(response)) == 1, contacts(response)


def test_node_still_answers_options_after_every_message(
    node: ServeProcess, trap: socket.socket
) -> None:
    with UdpClient() as client:
        for name in sorted(EXPECTED):
            client.send(rewrite(load(name), client.port, trap.getsockname()[1]), node)
        client.recv_all(quiet=0.5)
        options = build_request("OPTIONS", f"sip:{DOMAIN}", client)
        assert client.request(options, node).status == 200
    with socket.create_connection(node.address, timeout=5.0) as tcp:
        host, port = tcp.getsockname()[:2]
        stand_in = type("Addr", (), {"host": host, "port": port})()
        tcp.sendall(build_request("OPTIONS", f"sip:{DOMAIN}", stand_in, transport="TCP"))
        assert tcp.recv(65536).startswith(b"SIP/2.0 200 ")
    assert node.process is not None
    assert node.process.poll() is None
    assert trap_silent(trap)
    assert "Traceback" not in node.log_text()
