"""DeadlineHeap: earliest live deadline first, dead entries skipped and compacted away."""

from __future__ import annotations

from presence_sip.deadlines import MIN_COMPACT_SIZE, DeadlineHeap


class Records:
    """An owner: key -> current deadline (a record refreshed or removed leaves a dead entry)."""

    def __init__(self) -> None:
        self.deadlines: dict[str, float] = {}
        self.heap: DeadlineHeap[str] = DeadlineHeap(self.is_current)

    def is_current(self, deadline: float, key: str) -> bool:
        return self.deadlines.get(key) == deadline

    def set(self, key: str, deadline: float) -> None:
        self.deadlines[key] = deadline
        self.heap.push(deadline, key)


def test_due_keys_come_earliest_first_and_only_when_due() -> None:
    records = Records()
    records.set("b", 20.0)
    records.set("a", 10.0)
    records.set("c", 30.0)
    assert records.heap.next_deadline() == 10.0
    assert records.heap.pop_due(9.9) is None
    assert records.heap.pop_due(25.0) == "a"
    assert records.heap.pop_due(25.0) == "b"
    assert records.heap.pop_due(25.0) is None
    assert records.heap.next_deadline() == 30.0


def test_refreshed_and_removed_records_are_skipped() -> None:
    records = Records()
    records.set("refreshed", 10.0)
    records.set("removed", 11.0)
    records.set("kept", 12.0)
    records.set("refreshed", 50.0)
    del records.deadlines["removed"]
    assert records.heap.pop_due(20.0) == "kept"
    assert records.heap.pop_due(20.0) is None
    assert records.heap.pop_due(50.0) == "refreshed"
    assert len(records.heap) == 0


def test_churn_keeps_the_heap_bounded() -> None:
    """Subscribe and unsubscribe forever, deadlines an hour away: the dead entries do not pile
    up (before the compaction, 100,000 cycles left 100,000 entries)."""
    records = Records()
    for i in range(100):
        records.set(f"stays{i}", 1e9 + i)
    for i in range(100_000):
        key = f"churn{i}"
        records.set(key, 3600.0 + i)
        del records.deadlines[key]
    assert len(records.heap) < MIN_COMPACT_SIZE
    assert [records.heap.pop_due(2e9) for _ in range(100)] == [f"stays{i}" for i in range(100)]


def test_a_growing_live_set_is_kept_whole() -> None:
    records = Records()
    for i in range(10 * MIN_COMPACT_SIZE):
        records.set(f"k{i}", float(i))
    assert len(records.heap) == 10 * MIN_COMPACT_SIZE
    due = [records.heap.pop_due(1e9) for _ in range(10 * MIN_COMPACT_SIZE)]
    assert due == [f"k{i}" for i in range(10 * MIN_COMPACT_SIZE)]


def test_refreshes_leave_at_most_twice_the_live_entries() -> None:
    records = Records()
    live = 3 * MIN_COMPACT_SIZE
    for round_ in range(10):
        for i in range(live):
            records.set(f"k{i}", 1000.0 * round_ + i)
        assert len(records.heap) <= 2 * live
    assert records.heap.pop_due(8999.0) is None
    assert records.heap.pop_due(9000.0) == "k0"
