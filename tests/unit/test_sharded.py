"""ShardedDict: the dict interface the big tables use, over many small dicts chosen by hash."""

from __future__ import annotations

import random

import pytest

from presence_sip.sharded import SHARDS, SPLIT_AT, ShardedDict


@pytest.mark.parametrize("preloaded", [0, SPLIT_AT - 100])
def test_behaves_like_a_dict_under_random_operations(preloaded: int) -> None:
    """Small (one dict), and crossing SPLIT_AT while the operations run (split)."""
    rng = random.Random(8)
    table: ShardedDict[str, int] = ShardedDict()
    model: dict[str, int] = {}
    for n in range(preloaded):
        table[f"p{n}"] = model[f"p{n}"] = n
    keys = [f"k{n}" for n in range(3000)]
    for step in range(40_000):
        key = rng.choice(keys)
        operation = rng.randrange(6)
        if operation == 0:
            table[key] = model[key] = step
        elif operation == 1:
            assert table.pop(key) == model.pop(key, None)
        elif operation == 2 and key in model:
            del table[key]
            del model[key]
        elif operation == 3:
            assert table.setdefault(key, step) == model.setdefault(key, step)
        elif operation == 4:
            assert table.get(key) == model.get(key)
        else:
            assert (key in table) == (key in model)
        assert len(table) == len(model)
    assert sorted(table) == sorted(model)
    assert sorted(table[key] for key in table) == sorted(model.values())
    assert all(table[key] == value for key, value in model.items())


def test_a_missing_key_raises_or_answers_none() -> None:
    table: ShardedDict[tuple[str, str, str], bytes] = ShardedDict()
    key = ("z9hG4bK1", "PUBLISH", "127.0.0.1:5060")
    with pytest.raises(KeyError):
        table[key]
    with pytest.raises(KeyError):
        del table[key]
    assert table.get(key) is None
    assert table.pop(key) is None
    assert len(table) == 0


def test_overwriting_a_key_keeps_the_count() -> None:
    table: ShardedDict[str, int] = ShardedDict()
    table["a"] = 1
    table["a"] = 2
    assert table.setdefault("a", 3) == 2
    assert len(table) == 1
    assert table["a"] == 2


def test_clear_empties_every_shard() -> None:
    table: ShardedDict[int, int] = ShardedDict()
    for n in range(1000):
        table[n] = n
    table.clear()
    assert len(table) == 0
    assert list(table) == []
    assert 5 not in table


def test_entries_spread_over_the_shards() -> None:
    """What bounds the cost of one insertion: no shard holds much more than its share, so a
    shard that grows copies a few hundred entries, not the table (tuple keys as the transaction
    layer's, str keys as entity-tags)."""
    count = 200_000
    branches: ShardedDict[tuple[str, str, str], int] = ShardedDict()
    etags: ShardedDict[str, int] = ShardedDict()
    for n in range(count):
        branches[(f"z9hG4bK-4242-{n}-0", "PUBLISH", "127.0.0.1:5061")] = n
        etags[f"e69465a0b.{n:08x}"] = n
    share = count / SHARDS
    for table in (branches, etags):
        sizes = [len(shard) for shard in table._shards]
        assert sum(sizes) == len(table) == count
        assert max(sizes) < 1.3 * share
        assert min(sizes) > 0.7 * share


def test_get_and_pop_answer_the_default_for_a_missing_key() -> None:
    table: ShardedDict[str, str | None] = ShardedDict()
    table["not a presentity"] = None  # a cached "no key": None is a value like any other
    assert table.get("not a presentity", "missing") is None
    assert table.get("unknown", "missing") == "missing"
    assert table.pop("unknown", "missing") == "missing"
    assert len(table) == 1
    assert table.pop("not a presentity", "missing") is None
    assert len(table) == 0


def test_a_bounded_cache_drops_one_shard_at_a_time() -> None:
    limit = 8 * SHARDS  # under SPLIT_AT: put_bounded splits the table itself
    cache: ShardedDict[str, int] = ShardedDict()
    smallest_when_full = limit
    for n in range(20 * limit):
        assert cache.put_bounded(f"sip:w{n}@example.test", n, limit) == n
        assert len(cache) <= limit * 1.25  # (unequal shares right after the split)
        if n >= limit:
            smallest_when_full = min(smallest_when_full, len(cache))
    assert len(cache._shards) == SHARDS  # full at limit: split, though limit < SPLIT_AT
    assert len(cache) == sum(len(shard) for shard in cache._shards)
    # Each insertion into a full shard drops that shard's ~8 entries, never the table: a
    # shard cycles between 1 and its share, so a full cache holds about half of its limit
    # (emptying the whole table would leave 1 entry).
    assert smallest_when_full > limit // 3
    assert len(cache) <= limit  # every fuller shard has been written again since
    assert cache.get(f"sip:w{20 * limit - 1}@example.test") == 20 * limit - 1


def test_a_small_bounded_cache_stays_one_dict() -> None:
    cache: ShardedDict[int, int] = ShardedDict()
    for n in range(1000):
        cache.put_bounded(n, n, 100)
        assert len(cache) <= 100
    assert len(cache._shards) == 1


def test_a_table_splits_once_it_is_big_and_keeps_every_entry() -> None:
    table: ShardedDict[str, int] = ShardedDict()
    for n in range(SPLIT_AT - 1):
        table[f"e{n}"] = n
    assert len(table._shards) == 1
    table["last"] = -1
    assert len(table._shards) == SHARDS
    assert len(table) == SPLIT_AT
    assert all(table[f"e{n}"] == n for n in range(SPLIT_AT - 1))
    assert table.pop("last") == -1
    table.clear()
    assert len(table._shards) == 1
    assert len(table) == 0
