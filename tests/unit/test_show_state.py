"""``presence-sip show`` reading rows as the nodes' stores write them (the schema made by the
real migrations): rows past their time, Path, a registrar-only database, and address spellings.
A real serving node read by the command is in ``tests/integration/test_cli_show.py``."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator

import pytest

import presence_sip.storage.sqlite_bindings
import presence_sip.storage.sqlite_presence
from presence_sip.cli.show import NetworkState
from presence_sip.storage.database import migrate

NOW = 1_800_000_000.0


@pytest.fixture
def database() -> Iterator[Callable[..., sqlite3.Connection]]:
    """Makes an in-memory network database with one expired binding; closed after the test."""
    opened: list[sqlite3.Connection] = []

    def make(*, presence: bool = True) -> sqlite3.Connection:
        conn = network_database(presence=presence)
        opened.append(conn)
        return conn

    yield make
    for conn in opened:
        conn.close()


def network_database(*, presence: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn, presence_sip.storage.sqlite_bindings.COMPONENT)
    if presence:
        migrate(conn, "presence")
    conn.execute(
        "INSERT INTO bindings (node, aor, contact, params, expires_at, q, call_id, cseq, path,"
        " source, user_agent) VALUES ('ps1', '+447700900123', 'sip:bob@192.0.2.7:5060', '',"
        " ?, 1.0, 'c1', 1, '[\"<sip:edge.example.com;lr>\"]', 'udp:127.0.0.1:5070', '')",
        (NOW - 30,),
    )
    return conn


def test_a_row_past_its_time_is_shown_as_expired_with_its_path(
    database: Callable[..., sqlite3.Connection],
) -> None:
    state = NetworkState.read(database(), NOW)
    about = state.about("+447700900123").lines()
    assert about == [
        "+447700900123",
        "  registered at ps1: <sip:bob@192.0.2.7:5060>, expired 30 s ago, from"
        " udp:127.0.0.1:5070, path <sip:edge.example.com;lr>",
    ]


def test_a_registrar_only_database_has_bindings_and_nothing_else(
    database: Callable[..., sqlite3.Connection],
) -> None:
    state = NetworkState.read(database(presence=False), NOW)
    assert state.summary().lines() == ["ps1: 1 AORs (1 bindings), 0 subscriptions, 0 publications"
                                       " of 0 presentities"]  # fmt: skip
    assert (state.subscriptions, state.publications) == ([], [])


def test_every_spelling_of_an_address_of_record_is_one_key() -> None:
    state = NetworkState([], [], [], {"sip:bob@net-b.test": "+447700900123"})
    for text in (
        "+447700900123",
        "447700900123",
        "tel:+447700900123",
        "sip:+447700900123@net-a.test;user=phone",
        "<sip:+447700900123@net-b.test>",
        "sip:bob@net-b.test",
        "sip:bob@NET-B.test;transport=tcp",
        "bob@net-b.test",
    ):
        assert state.key_of(text) == "+447700900123", text
    assert state.key_of("alice@net-b.test") == "sip:alice@net-b.test"
    assert state.key_of("sips:Alice@Net-B.test") == "sip:Alice@net-b.test"
    assert state.key_of("not a uri@@") is None
    assert state.key_of("http://example.com/") is None
