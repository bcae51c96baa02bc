"""The test harness's port choice: never a port the kernel may give another socket meanwhile."""

from __future__ import annotations

import secrets
import socket

import loopback
import pytest
from loopback import LOOPBACK, free_port


def test_a_chosen_port_is_below_the_ephemeral_range_and_free_for_udp_and_tcp() -> None:
    low = loopback._ephemeral_low()
    for _ in range(20):
        port = free_port()
        assert loopback._LOWEST_CHOSEN <= port < low
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((LOOPBACK, port))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((LOOPBACK, port))


def test_a_port_taken_for_udp_only_is_not_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((LOOPBACK, free_port()))
        taken_port = taken.getsockname()[1]
        other = free_port()
        draws = iter([taken_port - loopback._LOWEST_CHOSEN, other - loopback._LOWEST_CHOSEN])
        monkeypatch.setattr(secrets, "randbelow", lambda bound: next(draws))
        assert free_port() == other


def test_without_room_below_the_range_the_kernel_chooses(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel_low = loopback._ephemeral_low()
    monkeypatch.setattr(loopback, "_ephemeral_low", lambda: loopback._LOWEST_CHOSEN + 500)
    port = free_port()
    assert port >= kernel_low
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind((LOOPBACK, port))
