"""LogLimit: count every occurrence, log at most once per interval; SourceBurst: a few lines
per interval by source, with a bound for all and on the sources it remembers, the others
counted."""

from __future__ import annotations

import pytest

from presence_sip.log_limit import LogLimit, SourceBurst, Unlogged


def test_counts_each_time_and_is_due_once_per_interval() -> None:
    limit = LogLimit(interval=60.0)
    assert [limit.due(t) for t in (0.0, 1.0, 59.9, 60.0, 61.0, 200.0)] == [
        True, False, False, True, False, True,
    ]  # fmt: skip
    assert limit.count == 6


def test_a_source_burst_logs_a_few_lines_per_source_so_a_flood_hides_no_other_source() -> None:
    """One source failing again and again takes its own few lines, not the others': a phone
    after a flood from one address still gets its line."""
    burst = SourceBurst(lines=5, per_source=2, sources=8, interval=60.0)
    flood = [burst.due("203.0.113.5", 10.0 + i / 100, f"flood {i}") for i in range(50)]
    assert flood == [True, True] + [False] * 48
    assert burst.due("198.51.100.7", 11.0, "phone") is True
    assert burst.unlogged == 48
    assert burst.take_unlogged() == Unlogged(48, 1, False, "203.0.113.5", 48, "flood 49")
    assert (burst.unlogged, burst.take_unlogged()) == (0, None)


def test_a_source_burst_keeps_a_bound_for_all_sources_and_names_the_one_with_the_most() -> None:
    burst = SourceBurst(lines=5, per_source=2, sources=8, interval=60.0)
    due = [burst.due(source, 1.0, source + " why") for source in "aabbccddee"]
    assert due == [True, True, True, True, True] + [False] * 5  # 5 in all: c's second is not
    burst.due("d", 2.0, "d again")
    assert burst.take_unlogged() == Unlogged(6, 3, False, "d", 3, "d again")
    # The interval is over: every source and the total start again.
    assert [burst.due(s, 61.0) for s in "aaab"] == [True, True, False, True]
    assert burst.ends == 121.0
    assert burst.take_unlogged() == Unlogged(1, 1, False, "a", 1, "")


def test_a_source_burst_remembers_a_bounded_number_of_sources() -> None:
    """A flood from many addresses: the sources counted stay at the bound (memory), the total
    stays exact, and the line can say there were more sources than it names."""
    burst = SourceBurst(lines=3, per_source=1, sources=16, interval=60.0)
    for n in range(100_000):
        burst.due(f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}", 1.0, "scan")
    for _ in range(4):  # the most from one source counted before the bound
        burst.due("10.0.0.5", 1.0, "again")
    assert burst.take_unlogged() == Unlogged(100_000 - 3 + 4, 16, True, "10.0.0.5", 5, "again")


def test_a_source_burst_counts_at_least_one_source() -> None:
    with pytest.raises(ValueError, match="at least 1 source, not 0"):
        SourceBurst(lines=3, per_source=1, sources=0)
