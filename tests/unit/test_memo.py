"""The bounded memo tables shared by the parsers and the driver."""

from __future__ import annotations

from presence_sip.sip import memo
from presence_sip.sip.uri import _URI_CACHE, parse_uri


def test_remember_stores_and_returns_the_value() -> None:
    table: dict[str, int] = {}
    assert memo.remember(table, "a", 1) == 1
    assert table == {"a": 1}


def test_a_full_table_is_emptied_before_the_next_entry() -> None:
    table = {str(i): i for i in range(memo.MEMO_LIMIT)}
    memo.remember(table, "new", -1)
    assert table == {"new": -1}


def test_parsed_uris_are_shared_and_the_table_stays_bounded() -> None:
    first = parse_uri("sip:alice@127.0.0.1")
    assert parse_uri("sip:alice@127.0.0.1") is first
    for i in range(memo.MEMO_LIMIT + 10):
        parse_uri(f"sip:u{i}@127.0.0.1")
    assert len(_URI_CACHE) <= memo.MEMO_LIMIT
