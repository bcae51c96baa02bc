"""Loopback addressing shared by every test helper: tests talk to 127.0.0.1 only."""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

LOOPBACK = "127.0.0.1"

_PORT_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST_CHOSEN = 10_000
"""Chosen ports start here: above the well-known ports and the usual fixed service ports."""


def _ephemeral_low() -> int:
    """The lowest port the kernel gives ``bind(0)`` and unbound sends (Linux; else its default)."""
    try:
        return int(_PORT_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _free_for_udp_and_tcp(host: str, port: int) -> bool:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
    ):
        try:
            tcp.bind((host, port))
            udp.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = LOOPBACK) -> int:
    """A port on ``host`` that is free for both UDP and TCP right now (SIP listens on both).

    It is chosen below the kernel's ephemeral range, so no other socket (a client's, another
    test's, the node's own ``bind(0)``) is given it by the kernel between this choice and the
    bind that uses it; only an explicit bind to the same port can take it.
    """
    low = _ephemeral_low()
    if low - _LOWEST_CHOSEN >= 1_000:
        for _ in range(50):
            port = _LOWEST_CHOSEN + secrets.randbelow(low - _LOWEST_CHOSEN)
            if _free_for_udp_and_tcp(host, port):
                return port
    for _ in range(50):  # no room below the range: a kernel-chosen port
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            port = int(probe.getsockname()[1])
        if _free_for_udp_and_tcp(host, port):
            return port
    raise RuntimeError(f"no port free for both UDP and TCP on {host}")
