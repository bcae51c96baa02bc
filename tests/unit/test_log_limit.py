"""LogLimit: count every occurrence, log at most once per interval; LogBurst: a few lines per
interval, the others counted."""

from __future__ import annotations

from presence_sip.log_limit import LogBurst, LogLimit


def test_counts_each_time_and_is_due_once_per_interval() -> None:
    limit = LogLimit(interval=60.0)
    assert [limit.due(t) for t in (0.0, 1.0, 59.9, 60.0, 61.0, 200.0)] == [
        True, False, False, True, False, True,
    ]  # fmt: skip
    assert limit.count == 6


def test_a_burst_logs_a_few_lines_per_interval_and_counts_the_others() -> None:
    burst = LogBurst(lines=3, interval=60.0)
    assert [burst.due(t) for t in (10.0, 11.0, 12.0, 13.0, 14.0, 69.9)] == [
        True, True, True, False, False, False,
    ]  # fmt: skip
    assert (burst.unlogged, burst.ends) == (3, 70.0)
    assert burst.take_unlogged() == 3
    assert burst.unlogged == 0
    # The interval is over: the next occurrence starts another, logged again.
    assert [burst.due(t) for t in (70.0, 71.0, 72.0, 73.0)] == [True, True, True, False]
    assert (burst.take_unlogged(), burst.ends) == (1, 130.0)
