"""LogLimit: count every occurrence, log at most once per interval."""

from __future__ import annotations

from presence_sip.log_limit import LogLimit


def test_counts_each_time_and_is_due_once_per_interval() -> None:
    limit = LogLimit(interval=60.0)
    assert [limit.due(t) for t in (0.0, 1.0, 59.9, 60.0, 61.0, 200.0)] == [
        True, False, False, True, False, True,
    ]  # fmt: skip
    assert limit.count == 6
