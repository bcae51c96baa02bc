"""A tiny blocking SIP client over UDP: readiness pings and single PUBLISHes outside SIPp."""

from __future__ import annotations

import re
import socket
import time
import uuid

from benchmarks.harness.config import DOMAIN, HOST, BenchError


def sip_transaction(port: int, request: str, timeout: float = 4.0) -> dict[str, str] | None:
    """Send one request over UDP to 127.0.0.1:``port`` and return the final response headers.

    Retransmits with RFC 3261 Timer E doubling (T1 = 0.5 s).  Returns None on timeout.  The
    returned dict has ``status`` plus lower-cased header names.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        lport = sock.getsockname()[1]
        data = request.replace("{lport}", str(lport)).encode()
        branch = re.search(r"branch=([^;\s]+)", request)
        deadline = time.monotonic() + timeout
        interval = 0.5
        sock.sendto(data, (HOST, port))
        next_send = time.monotonic() + interval
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, min(next_send, deadline) - time.monotonic()))
            try:
                raw, _ = sock.recvfrom(65535)
            except TimeoutError:
                interval = min(interval * 2, 4.0)
                next_send = time.monotonic() + interval
                sock.sendto(data, (HOST, port))
                continue
            headers = _parse_response(raw)
            if headers is None or (branch and branch.group(1) not in headers.get("via", "")):
                continue
            if int(headers["status"]) >= 200:
                return headers
    return None


def _parse_response(raw: bytes) -> dict[str, str] | None:
    text = raw.decode("utf-8", "replace")
    head = text.split("\r\n\r\n", 1)[0].split("\r\n")
    if not head or not head[0].startswith("SIP/2.0 "):
        return None
    out = {"status": head[0].split()[1]}
    for line in head[1:]:
        name, _, value = line.partition(":")
        out.setdefault(name.strip().lower(), value.strip())
    return out


def _request(method: str, ruri: str, user: str, extra: str = "", body: str = "") -> str:
    tag, branch, call_id = uuid.uuid4().hex[:10], uuid.uuid4().hex, uuid.uuid4().hex
    return (
        f"{method} {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:{{lport}};branch=z9hG4bK{branch};rport\r\n"
        f"From: <sip:{user}@{DOMAIN}>;tag={tag}\r\n"
        f"To: <sip:{user}@{DOMAIN}>\r\n"
        f"Call-ID: {call_id}@{HOST}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"Max-Forwards: 70\r\n"
        f"{extra}"
        f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
    )


def options_ping(port: int, timeout: float = 1.0) -> bool:
    """True when the server answers OPTIONS with 200."""
    resp = sip_transaction(port, _request("OPTIONS", f"sip:{DOMAIN}", "bench"), timeout)
    return resp is not None and resp["status"] == "200"


def publish(port: int, user: str, basic: str, note: str, etag: str | None = None) -> str:
    """PUBLISH (RFC 3903) a PIDF document for ``user``; returns the SIP-ETag of the 200."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\r\n'
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:{user}@{DOMAIN}">\r\n'
        f'<tuple id="fanout"><status><basic>{basic}</basic></status><note>{note}</note></tuple>\r\n'
        "</presence>\r\n"
    )
    extra = "Event: presence\r\nExpires: 3600\r\nContent-Type: application/pidf+xml\r\n"
    if etag:
        extra += f"SIP-If-Match: {etag}\r\n"
    resp = sip_transaction(port, _request("PUBLISH", f"sip:{user}@{DOMAIN}", user, extra, body))
    if resp is None or resp["status"] != "200":
        raise BenchError(f"PUBLISH {user} -> {resp and resp['status']}")
    return resp.get("sip-etag", "")
