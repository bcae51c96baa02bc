"""Atheris harness: whole nodes (registrar + presence server) fed arbitrary datagrams.

Run (atheris is not a test dependency; ``make fuzz`` installs it)::

    pip install atheris
    python fuzz/fuzz_endpoint.py -max_total_time=300 [CORPUS_DIR] [--compiled]

Two nodes, built as ``presence-sip serve`` builds them, live for the whole run: one with
``--auth none --default-policy allow`` (inputs reach the presence server without a challenge)
and one with digest authentication and a provisioned subscriber (inputs reach the challenge and
the parsing and checking of credentials); SQLite in ``build/fuzz-node/PID``.  Sans-IO: each input is
one datagram to both nodes' ``Endpoint.receive`` from a fixed peer, and to the open node also
everything a TCP connection of its own carries (framed as the driver frames a stream); the
clock moves 50 ms per input and the due timers fire.  Nothing is ever sent: the outboxes are
only read.  The invariants, for each node, any breach being a finding:

* ``receive`` and ``handle_timer`` never raise (the endpoint logs and carries on, STYLE.md);
* every datagram the node would send parses with our own strict parser, but for the answers to
  a datagram that does not parse itself: those copy its From, To, Call-ID, CSeq and Vias as they
  came (RFC 3261 §8.2.6.2), so a malformed header there is the sender's; they are remembered, as
  their retransmissions are byte for byte the same; and the answer to a STUN datagram (RFC 5626
  §8 keep-alive): a STUN response with its transaction ID and a FINGERPRINT that checks out;
* after every input the node still answers an OPTIONS with 200.

Seeds: every test vector, a STUN Binding request, and a PUBLISH, SUBSCRIBE (also asking for its
flow, RFC 5626 ``ob``), in-dialog unSUBSCRIBE, REGISTER (also with digest credentials, and of an
RFC 5626 flow) and NOTIFY of the nodes' domain, so
mutations start from requests the roles act on.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import zlib
from pathlib import Path
from typing import Any

from _harness import ROOT, fuzz, vector_seeds

DOMAIN = "example.com"
"""The node's domain: the one of the RFC 3856/3903 vectors."""
SERVER = ("127.0.0.1", 5060)
CLIENT = ("127.0.0.1", 5070)
STEP = 0.05
"""Seconds the clock moves per input."""
DATA_DIR = ROOT / "build" / "fuzz-node" / str(os.getpid())
"""The nodes' data directories are in it: one per process, so that harnesses running side by
side (``--compiled`` beside the default) do not share a database (emptied at every start)."""
SUBSCRIBER = "+447700900123"
PASSWORD = "fuzz-secret"  # noqa: S105 (a test subscriber of a throwaway HSS)
"""The subscriber provisioned in the digest node's HSS."""

nodes: list[Any] = []
"""The nodes under test (``presence_sip.node.Node``), built by :func:`setup`."""
sip: Any = None
"""``presence_sip.sip``, once the harness imported it."""
stun: Any = None
"""``presence_sip.stun``, once the harness imported it."""
peer: Any = None
"""The UDP peer every datagram comes from."""
peer_type: Any = None
"""``presence_sip.sip.peer.Peer``, once the harness imported it."""
now = 1.8e9
probes = itertools.count()
connections = itertools.count(1)
"""Connection ids of the TCP inputs (one connection per input)."""
echoes: set[bytes] = set()
"""Answers to datagrams that did not parse (see the module docstring)."""
ECHOES_KEPT = 10_000


def setup(data_dir: Path = DATA_DIR) -> None:
    """Build the nodes, their data in ``data_dir`` (emptied first)."""
    global sip, peer, peer_type, stun
    import presence_sip.sip
    import presence_sip.stun
    from presence_sip.node import Node, NodeConfig
    from presence_sip.sip.peer import Peer
    from presence_sip.transport.listen import ListenSpec

    shutil.rmtree(data_dir, ignore_errors=True)
    sip = presence_sip.sip
    stun = presence_sip.stun
    peer_type = Peer
    peer = Peer("udp", *CLIENT)
    nodes.clear()
    for auth, policy in (("none", "allow"), ("digest", "confirm")):
        node = Node(
            NodeConfig(
                domain=DOMAIN,
                listen=(ListenSpec("udp", *SERVER),),
                data_dir=str(data_dir / auth),
                auth=auth,
                default_policy=policy,
            )
        )
        node.route_for(node.config.listen)
        if auth == "digest":
            node.hss.add_subscriber(SUBSCRIBER, PASSWORD)
        nodes.append(node)


def drain(node: Any, *, echoing: bool = False, stun_request: bytes = b"") -> list[Any]:
    """Parse everything the node would send; an unparseable datagram raises, unless it is an
    answer to a malformed input (``echoing`` while the input did not parse, or one seen then),
    or the STUN response to ``stun_request`` (:func:`check_stun_answer`)."""
    messages = []
    for data, _ in node.endpoint.outbox():
        if data in echoes:
            continue
        if stun_request and stun.is_stun(data):
            check_stun_answer(data, stun_request)
            continue
        try:
            messages.append(sip.parse_message(data))
        except sip.SipParseError:
            if not (echoing and data.startswith(b"SIP/2.0 ")):
                raise
            if len(echoes) >= ECHOES_KEPT:
                echoes.clear()
            echoes.add(data)
    return messages


def check_stun_answer(answer: bytes, request: bytes) -> None:
    """A STUN success or error response to ``request``, with a FINGERPRINT that checks out."""
    if answer[:2] not in (b"\x01\x01", b"\x01\x11") or answer[8:20] != request[8:20]:
        raise AssertionError(f"not a STUN response to the request: {answer!r}")
    found = stun.attributes(answer)
    if not found or found[-1][0] != stun.FINGERPRINT:
        raise AssertionError(f"a STUN response without a valid FINGERPRINT: {answer!r}")


def run_timers(node: Any) -> None:
    endpoint = node.endpoint
    for _ in range(100):  # handle_timer may arm another due deadline
        due = endpoint.get_timer()
        if due is None or due > now:
            return
        endpoint.handle_timer(now)


def probe(node: Any) -> None:
    """An OPTIONS of our own: the node must answer it 200."""
    n = next(probes)
    call_id = f"probe-{n}@fuzz"
    request = (
        f"OPTIONS sip:{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {CLIENT[0]}:{CLIENT[1]};branch=z9hG4bK-probe-{n}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:prober@{DOMAIN}>;tag=p{n}\r\n"
        f"To: <sip:{DOMAIN}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    node.endpoint.receive(request, peer, now)
    answers = [
        m
        for m in drain(node)
        if isinstance(m, sip.Response) and m.headers.get("Call-ID") == call_id
    ]
    if [m.status for m in answers] != [200]:
        raise AssertionError(f"the OPTIONS probe got {[m.status for m in answers]}")


def test_one_input(data: bytes) -> None:
    global now
    now += STEP
    malformed = not _parses(data, datagram=True)
    stun_request = data if stun.is_stun(data) else b""
    for node in nodes:
        node.endpoint.receive(data, peer, now)
        drain(node, echoing=malformed, stun_request=stun_request)
        run_timers(node)
        drain(node)
        probe(node)
    stream(nodes[0], data)


def stream(node: Any, data: bytes) -> None:
    """``data`` as everything a TCP connection of its own carries, framed as the driver frames a
    stream (a framing error ends the input, answered by ``receive_malformed``)."""
    connection = peer_type("tcp", *CLIENT, connection=next(connections))
    endpoint = node.endpoint
    endpoint.connection_made(connection, None, now)
    buffer = sip.StreamBuffer()
    buffer.feed(data)
    echoing = False
    while True:
        try:
            framed = buffer.next_message()
        except sip.SipParseError as error:
            endpoint.receive_malformed(data, error, connection, now)
            echoing = True
            break
        if framed is None:
            break
        echoing = echoing or not _parses(framed, datagram=False)
        endpoint.receive(framed, connection, now)
    drain(node, echoing=echoing)
    endpoint.connection_lost(connection, now)
    drain(node)


def _parses(data: bytes, *, datagram: bool) -> bool:
    try:
        sip.parse_message(data, datagram=datagram)
    except sip.SipParseError:
        return False
    return True


def seeds() -> dict[str, bytes]:
    out: dict[str, bytes] = vector_seeds()
    out.update(
        {
            "stun_binding": _stun_binding(),
            "own_publish": _publish(),
            "own_subscribe": _subscribe(expires=600),
            "own_unsubscribe": _subscribe(expires=0, to_tag="t1", cseq=2),
            "own_register": _request(
                "REGISTER",
                f"sip:{DOMAIN}",
                "alice",
                "alice",
                ["Contact: <sip:alice@127.0.0.1:5070>", "Expires: 600"],
            ),
            "own_register_outbound": _request(  # RFC 5626: a flow of an instance
                "REGISTER",
                f"sip:{DOMAIN}",
                "alice",
                "alice",
                [
                    'Contact: <sip:alice@127.0.0.1:5070;ob>;reg-id=1;+sip.instance="<urn:uuid:'
                    '00000000-0000-1000-8000-000000000001>"',
                    "Supported: path, outbound",
                    "Expires: 600",
                ],
                cseq=2,  # (after own_register: the same Call-ID, and the same Contact URI)
            ),
            "own_subscribe_ob": _subscribe(expires=600, contact="<sip:bob@127.0.0.1:5070;ob>"),
            "own_register_digest": _request(
                "REGISTER",
                f"sip:{DOMAIN}",
                SUBSCRIBER,
                SUBSCRIBER,
                [
                    f"Contact: <sip:{SUBSCRIBER}@127.0.0.1:5070>",
                    "Expires: 600",
                    f'Authorization: Digest username="{SUBSCRIBER}", realm="{DOMAIN}", '
                    f'nonce="bm9uY2U", uri="sip:{DOMAIN}", algorithm=MD5, qop=auth, '
                    'nc=00000001, cnonce="c0ffee", response="0123456789abcdef0123456789abcdef"',
                ],
            ),
            "own_notify": _request(
                "NOTIFY",
                f"sip:alice@{DOMAIN}",
                "bob",
                "alice",
                ["Event: presence", "Subscription-State: active;expires=600"],
            ),
        }
    )
    return out


def _request(
    method: str, uri: str, sender: str, target: str, extra: list[str], body: bytes = b"", *,
    cseq: int = 1, to_tag: str = "",
) -> bytes:  # fmt: skip
    to = f"<sip:{target}@{DOMAIN}>" + (f";tag={to_tag}" if to_tag else "")
    head = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {CLIENT[0]}:{CLIENT[1]};branch=z9hG4bK-seed-{method}-{cseq}",
        "Max-Forwards: 70",
        f"From: <sip:{sender}@{DOMAIN}>;tag=s1",
        f"To: {to}",
        f"Call-ID: seed-{sender}@fuzz",
        f"CSeq: {cseq} {method}",
        *extra,
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _stun_binding() -> bytes:
    """A STUN Binding request (RFC 5626 §8 keep-alive) with SOFTWARE and a FINGERPRINT."""
    head = bytes.fromhex("0001 0010 2112a442") + b"fuzz-seed-01"
    software = bytes.fromhex("8022 0004") + b"fuzz"
    crc = zlib.crc32(head + software) ^ 0x5354554E  # RFC 5389 §15.5
    return head + software + bytes.fromhex("8028 0004") + crc.to_bytes(4, "big")


def _publish() -> bytes:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\r\n'
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@{DOMAIN}">\r\n'
        '<tuple id="t1"><status><basic>open</basic></status><note>seed</note></tuple>\r\n'
        "</presence>\r\n"
    ).encode()
    extra = ["Event: presence", "Expires: 600", "Content-Type: application/pidf+xml"]
    return _request("PUBLISH", f"sip:alice@{DOMAIN}", "alice", "alice", extra, body)


def _subscribe(
    *, expires: int, to_tag: str = "", cseq: int = 1, contact: str = "<sip:bob@127.0.0.1:5070>"
) -> bytes:
    extra = [
        "Event: presence",
        "Accept: application/pidf+xml",
        f"Contact: {contact}",
        f"Expires: {expires}",
    ]
    return _request(
        "SUBSCRIBE", f"sip:alice@{DOMAIN}", "bob", "alice", extra, cseq=cseq, to_tag=to_tag
    )


if __name__ == "__main__":
    logging.disable(logging.CRITICAL)  # bad input is logged by design; the invariants judge
    fuzz(
        "endpoint",
        ["presence_sip.sip", "presence_sip.node"],
        setup,
        test_one_input,
        seeds,
    )
