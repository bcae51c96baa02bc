"""The bounded memo tables shared by the parsers and the driver."""

from __future__ import annotations

from presence_sip.sip import memo
from presence_sip.sip.uri import _URI_CACHE, parse_uri


def test_remember_stores_and_returns_the_value() -> None:
    table: dict[str, int] = {}
    assert memo.remember(table, "a", 1) == 1
    assert table == {"a": 1}


def test_a_full_table_drops_its_oldest_eighth_before_the_next_entry() -> None:
    table = {str(i): i for i in range(memo.MEMO_LIMIT)}
    memo.remember(table, "new", -1)
    assert len(table) == memo.MEMO_LIMIT - memo.MEMO_DROP + 1
    assert "0" not in table
    assert str(memo.MEMO_DROP - 1) not in table
    assert table[str(memo.MEMO_DROP)] == memo.MEMO_DROP  # the rest stays, in order
    assert list(table)[-2:] == [str(memo.MEMO_LIMIT - 1), "new"]


def test_a_table_filled_again_and_again_stays_bounded() -> None:
    table: dict[int, int] = {}
    for i in range(5 * memo.MEMO_LIMIT):
        memo.remember(table, i, i)
    assert memo.MEMO_LIMIT - memo.MEMO_DROP < len(table) <= memo.MEMO_LIMIT
    assert 5 * memo.MEMO_LIMIT - 1 in table


def test_parsed_uris_are_shared_and_the_table_stays_bounded() -> None:
    first = parse_uri("sip:alice@127.0.0.1")
    assert parse_uri("sip:alice@127.0.0.1") is first
    for i in range(memo.MEMO_LIMIT + 10):
        parse_uri(f"sip:u{i}@127.0.0.1")
    assert len(_URI_CACHE) <= memo.MEMO_LIMIT
