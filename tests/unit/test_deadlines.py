"""DeadlineHeap: keys by deadline, earliest first, each held once, moved and removed in place."""

from __future__ import annotations

import random
from typing import TypeVar

from presence_sip.deadlines import DeadlineHeap

K = TypeVar("K")


def drain(heap: DeadlineHeap[K], now: float) -> list[K]:
    out: list[K] = []
    while (key := heap.pop_due(now)) is not None:
        out.append(key)
    return out


def test_due_keys_come_earliest_first_and_only_when_due() -> None:
    heap: DeadlineHeap[str] = DeadlineHeap()
    heap.set("b", 20.0)
    heap.set("a", 10.0)
    heap.set("c", 30.0)
    assert heap.next_deadline() == 10.0
    assert heap.pop_due(9.9) is None
    assert drain(heap, 25.0) == ["a", "b"]
    assert heap.next_deadline() == 30.0
    assert len(heap) == 1
    assert "a" not in heap
    assert "c" in heap


def test_a_key_is_held_once_and_moved_by_set() -> None:
    heap: DeadlineHeap[str] = DeadlineHeap()
    heap.set("refreshed", 10.0)
    heap.set("kept", 12.0)
    heap.set("refreshed", 50.0)  # later
    heap.set("kept", 11.0)  # earlier
    assert len(heap) == 2
    assert heap.deadline("refreshed") == 50.0
    assert drain(heap, 20.0) == ["kept"]
    assert drain(heap, 50.0) == ["refreshed"]
    assert heap.next_deadline() is None


def test_discard_removes_in_place() -> None:
    heap: DeadlineHeap[str] = DeadlineHeap()
    for i in range(10):
        heap.set(f"k{i}", float(i))
    heap.discard("k0")  # the root
    heap.discard("k9")  # the last entry
    heap.discard("k4")  # in the middle
    heap.discard("absent")
    assert len(heap) == 7
    assert heap.deadline("k4") is None
    assert drain(heap, 100.0) == ["k1", "k2", "k3", "k5", "k6", "k7", "k8"]


def test_churn_holds_only_the_live_keys() -> None:
    """Subscribe and unsubscribe forever, deadlines an hour away: nothing dead is kept (a plain
    heap with lazy deletion held one entry per cycle until its old deadline)."""
    heap: DeadlineHeap[str] = DeadlineHeap()
    for i in range(100):
        heap.set(f"stays{i}", 1e9 + i)
    for i in range(10_000):
        heap.set(f"churn{i}", 3600.0 + i)
        heap.discard(f"churn{i}")
    assert len(heap) == 100
    assert drain(heap, 2e9) == [f"stays{i}" for i in range(100)]


def test_random_operations_agree_with_a_sorted_model() -> None:
    """Sets (new and moved), discards and pops in random order against a dict model."""
    rng = random.Random(8)
    heap: DeadlineHeap[int] = DeadlineHeap()
    model: dict[int, float] = {}
    now = 0.0
    for _ in range(20_000):
        action = rng.random()
        key = rng.randrange(500)
        if action < 0.55:
            deadline = now + rng.choice([rng.uniform(0, 100), float(rng.randrange(5))])
            heap.set(key, deadline)
            model[key] = deadline
        elif action < 0.8:
            heap.discard(key)
            model.pop(key, None)
        else:
            now += rng.uniform(0, 5)
            popped = drain(heap, now)
            due = [k for k, d in model.items() if d <= now]
            assert sorted(popped) == sorted(due)
            assert [model[k] for k in popped] == sorted(model[k] for k in popped)
            for k in popped:
                del model[k]
        assert len(heap) == len(model)
        expected = min(model.values()) if model else None
        assert heap.next_deadline() == expected
