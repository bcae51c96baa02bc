"""Identifier sources: random ones are 64-bit hex from a buffered os.urandom pool."""

from __future__ import annotations

import re

from presence_sip import ids
from presence_sip.ids import CountingIdSource, RandomIdSource


def test_random_ids_are_fresh_hex_with_the_prefix() -> None:
    source = RandomIdSource()
    made = [source.new_id("t") for _ in range(3 * ids._POOL_BYTES // 8)]  # several refills
    assert len(set(made)) == len(made)
    assert all(re.fullmatch(r"t[0-9a-f]{16}", value) for value in made)


def test_pool_reset_after_fork_forgets_buffered_digits() -> None:
    source = RandomIdSource()
    source.new_id()
    buffered = ids._POOL.digits
    ids._POOL.reset()
    assert source.new_id() not in buffered


def test_counting_ids() -> None:
    source = CountingIdSource("x")
    assert [source.new_id("p"), source.new_id()] == ["px1", "x2"]
