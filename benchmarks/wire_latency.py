#!/usr/bin/env python3
"""What a server itself adds to latency, from the packets on the loopback interface.

SIPp's timestamps (the latency row) include SIPp's own scheduling: about 1 ms at 3,600 PUBLISH/s
on the bench VM, for Kamailio and for us alike.  This tool captures the UDP datagrams to and from
one port on ``lo`` with kernel timestamps (``SO_TIMESTAMPNS`` on an ``AF_PACKET`` socket, so
it needs root or CAP_NET_RAW), pairs each request with its final answer by Call-ID and CSeq,
and prints the server-side latency and how bursty the arrivals were.  The same pairing on both
sides of a hop gives the hop's added latency (the gateway rows of the next wave).

Usage, while a load runs against that port (a ``benchmarks/run.py`` step, a SIPp scenario)::

    sudo .venv/bin/python benchmarks/wire_latency.py --port 15070 --seconds 5

Loopback only, never another interface: it reads what the machine sends itself.
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness.samples import percentile

SO_TIMESTAMPNS = 35  # Linux <asm-generic/socket.h>; not exported by the socket module
SO_RCVBUFFORCE = 33  # the same, past net.core.rmem_max (root)
SOL_PACKET = 263
PACKET_STATISTICS = 6  # struct tpacket_stats: packets, drops (read and reset)
RECEIVE_BUFFER = 64 << 20
ETH_P_ALL = 0x0003
ETHERNET_HEADER = 14
ETHERTYPE_IPV4 = b"\x08\x00"
UDP = 17


@dataclass(frozen=True, slots=True)
class Datagram:
    """One SIP datagram seen on ``lo``: when, which way, what (the fields the pairing needs)."""

    at: float
    """Kernel receive timestamp (seconds since the epoch)."""
    inbound: bool
    """Sent to the watched port (a request to the server, or an answer to its own request)."""
    first_line: bytes
    call_id: bytes
    cseq: bytes


def sip_fields(payload: bytes) -> tuple[bytes, bytes, bytes]:
    """(start line, Call-ID, CSeq) of a SIP datagram; empty values when a header is missing.

    Compact forms (``i:``) are recognised; header values are stripped."""
    head = payload.split(b"\r\n\r\n", 1)[0]
    lines = head.split(b"\r\n")
    call_id = cseq = b""
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name in (b"call-id", b"i"):
            call_id = value.strip()
        elif name == b"cseq":
            cseq = value.strip()
    return lines[0], call_id, cseq


def udp_payload(frame: bytes, port: int) -> tuple[bool, bytes] | None:
    """(inbound, payload) of an IPv4 UDP frame to or from ``port``; None for anything else."""
    if len(frame) < ETHERNET_HEADER + 28 or frame[12:14] != ETHERTYPE_IPV4:
        return None
    ip = ETHERNET_HEADER
    if frame[ip + 9] != UDP:
        return None
    udp = ip + (frame[ip] & 0x0F) * 4
    source, destination = struct.unpack_from("!HH", frame, udp)
    if port not in (source, destination):
        return None
    return destination == port, frame[udp + 8 :]


def capture(port: int, seconds: float) -> tuple[list[Datagram], int]:
    """Datagrams to and from ``port`` on ``lo`` for ``seconds``, and how many frames the kernel
    dropped because this process did not read them in time."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        sock.bind(("lo", 0))
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)  # reset the counters
        sock.settimeout(0.2)
        seen: list[Datagram] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                frame, ancillary, _, address = sock.recvmsg(65535, 64)
            except TimeoutError:
                continue
            if address[2] == socket.PACKET_OUTGOING:  # lo shows each frame twice
                continue
            found = udp_payload(frame, port)
            if found is None:
                continue
            inbound, payload = found
            at = _timestamp(ancillary)
            seen.append(Datagram(at, inbound, *sip_fields(payload)))
        _, drops = struct.unpack("II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        return seen, drops
    finally:
        sock.close()


def _timestamp(ancillary: Iterable[tuple[int, int, bytes]]) -> float:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            seconds, nanoseconds = struct.unpack_from("qq", data)
            return float(seconds) + float(nanoseconds) / 1e9
    return time.time()


def server_latencies(datagrams: Iterable[Datagram]) -> Iterator[float]:
    """Seconds from each request in to its first final answer out (1xx skipped).

    Pairs by (Call-ID, CSeq): a retransmitted request keeps the time of its first copy."""
    arrived: dict[tuple[bytes, bytes], float] = {}
    for d in datagrams:
        key = (d.call_id, d.cseq)
        if d.inbound and not d.first_line.startswith(b"SIP/2.0 "):
            arrived.setdefault(key, d.at)
        elif not d.inbound and _is_final(d.first_line) and key in arrived:
            yield d.at - arrived.pop(key)


def _is_final(first_line: bytes) -> bool:
    return first_line.startswith(b"SIP/2.0 ") and first_line[8:9] in (b"2", b"3", b"4", b"5", b"6")


def report(datagrams: list[Datagram], drops: int = 0) -> str:
    latencies = sorted(server_latencies(datagrams))
    if not latencies:
        return "no request was answered on that port"
    ms = [x * 1000 for x in latencies]
    lines = [
        f"frames dropped by the capture: {drops}" + (" (incomplete pairs)" if drops else ""),
        f"server-side latency of {len(ms):,} requests: p50 {percentile(ms, 0.5):.2f} ms, "
        f"p90 {percentile(ms, 0.9):.2f} ms, p99 {percentile(ms, 0.99):.2f} ms, "
        f"max {ms[-1]:.2f} ms",
    ]
    arrivals = sorted(
        d.at for d in datagrams if d.inbound and not d.first_line.startswith(b"SIP/2.0 ")
    )
    if len(arrivals) > 1:
        first = int(arrivals[0] * 1000)
        per_ms = Counter(int(t * 1000) - first for t in arrivals)
        span = max(per_ms) + 1
        counts = sorted(per_ms.get(i, 0) for i in range(span))
        lines.append(
            f"requests per millisecond: mean {len(arrivals) / span:.1f}, "
            f"p99 {percentile(counts, 0.99)}, max {counts[-1]}; "
            f"{counts.count(0) / span:.0%} of milliseconds had none"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True, help="the server's UDP port")
    parser.add_argument("--seconds", type=float, default=5.0, help="capture time")
    args = parser.parse_args()
    try:
        datagrams, drops = capture(args.port, args.seconds)
    except PermissionError:
        print("wire_latency: needs root or CAP_NET_RAW (an AF_PACKET socket)", file=sys.stderr)
        return 2
    print(report(datagrams, drops))
    return 0


if __name__ == "__main__":
    sys.exit(main())
