"""Keep-alives on a real node's SIP UDP port (``presence-sip serve`` as a subprocess, loopback).

RFC 5626 §8: a STUN Binding request sent to the SIP port over the same flow as SIP gets a
Binding success response whose XOR-MAPPED-ADDRESS is the address the node saw; SIP from that
socket is served as before.  A bare CRLF datagram (pjsua's default UDP keep-alive) gets nothing
back and no log line above DEBUG.
"""

from __future__ import annotations

import ipaddress
import secrets
import struct
import zlib
from collections.abc import Callable

from serve_process import ServeProcess, UdpClient, build_request

DOMAIN = "example.test"
COOKIE = 0x2112A442


def binding_request(transaction_id: bytes) -> bytes:
    return struct.pack("!HHI", 0x0001, 0, COOKIE) + transaction_id


def decode_success(answer: bytes, transaction_id: bytes) -> tuple[str, int]:
    """Check a Binding success response to ``transaction_id`` (RFC 5389 §6, §15.2, §15.5) and
    give its XOR-MAPPED-ADDRESS, decoded here without the project's codec."""
    kind, length, cookie = struct.unpack_from("!HHI", answer)
    assert (kind, cookie, length) == (0x0101, COOKIE, len(answer) - 20)
    assert answer[8:20] == transaction_id
    found: dict[int, bytes] = {}
    position = 20
    while position < len(answer):
        attr, size = struct.unpack_from("!HH", answer, position)
        found[attr] = answer[position + 4 : position + 4 + size]
        if attr == 0x8028:
            assert position + 8 == len(answer)  # FINGERPRINT last
            crc = zlib.crc32(answer[:position]) ^ 0x5354554E
            assert int.from_bytes(found[attr], "big") == crc
        position += 4 + size + (-size % 4)
    assert 0x8028 in found
    value = found[0x0020]
    assert value[1] == 0x01  # IPv4
    port = int.from_bytes(value[2:4], "big") ^ (COOKIE >> 16)
    address = ipaddress.IPv4Address(int.from_bytes(value[4:8], "big") ^ COOKIE)
    return str(address), port


def test_a_stun_binding_request_gets_the_source_address_and_sip_goes_on(
    serve_factory: Callable[..., ServeProcess],
) -> None:
    node = serve_factory(domain=DOMAIN, log_level="DEBUG")
    with UdpClient() as client:
        transaction_id = secrets.token_bytes(12)
        client.send(binding_request(transaction_id), node)
        answer = client.recv(5.0)
        assert answer is not None, "no answer to a STUN Binding request"
        assert decode_success(answer, transaction_id) == (client.host, client.port)
        options = build_request("OPTIONS", f"sip:{DOMAIN}", client, call_id="after-stun")
        assert client.request(options, node).status == 200
    node.stop()
    assert " WARNING " not in node.log_text()


def test_a_crlf_keepalive_gets_nothing_and_no_warning(
    serve_factory: Callable[..., ServeProcess],
) -> None:
    node = serve_factory(domain=DOMAIN, log_level="DEBUG")
    with UdpClient() as client:
        for keepalive in (b"\r\n", b"\r\n\r\n"):
            client.send(keepalive, node)
        assert client.recv_all(0.5) == []
        client.send(binding_request(secrets.token_bytes(12)), node)
        assert client.recv(5.0) is not None
        options = build_request("OPTIONS", f"sip:{DOMAIN}", client, call_id="after-crlf")
        assert client.request(options, node).status == 200
    assert node.status_line().endswith(", 3 UDP keep-alives (1 STUN); storage ok")  # 2 CRLF
    node.stop()
    log = node.log_text()
    assert " WARNING " not in log
    assert "dropped from" not in log  # (not even the DEBUG line of a malformed message)
