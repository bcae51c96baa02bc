"""benchmarks/run.py's fan-out row: measured once more when SIPp completed every watcher call
(each completes only after answering the NOTIFY with the new state) but its log lost a NOTIFIED
line, and failed when a watcher really missed the new state."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.harness.config import QUICK, BenchError
from benchmarks.harness.servers import Ours
from benchmarks.harness.sipp import SippRun
from benchmarks.run import Bench

T0 = 1000.0


class Scripted(Bench):
    """A Bench whose fan-out runs return scripted (successful calls, stamps) in turn."""

    def __init__(self, tmp_path: Path, runs: list[tuple[int, int]]) -> None:
        super().__init__(Ours(tmp_path), QUICK, {}, tmp_path)
        self.runs = runs
        self.made = 0

    def _fanout_once(self, n: int) -> tuple[SippRun, list[float], float]:
        successful, stamps = self.runs[self.made]
        self.made += 1
        run = SippRun("fanout_watch.xml", rate=500, asked_calls=n, successful=successful)
        return run, [T0 + 0.001 * (i + 1) for i in range(stamps)], T0


def test_a_lost_log_line_is_measured_again_and_said(tmp_path: Path) -> None:
    n = QUICK.fanout_watchers
    bench = Scripted(tmp_path, [(n, n - 1), (n, n)])
    bench.fanout()
    assert bench.made == 2
    assert bench.result.fanout_rate == pytest.approx(n / (0.001 * n))
    assert f"measured twice: the first run's log had {n - 1}/{n} lines" in (
        bench.result.fanout_detail or ""
    )


def test_a_watcher_that_missed_the_new_state_fails_the_row(tmp_path: Path) -> None:
    n = QUICK.fanout_watchers
    bench = Scripted(tmp_path, [(n - 1, n - 1)])  # SIPp: a watcher call did not complete
    with pytest.raises(BenchError, match=f"only {n - 1}/{n} watchers got the new state"):
        bench.fanout()
    assert bench.made == 1


def test_a_second_lost_line_fails_the_row(tmp_path: Path) -> None:
    n = QUICK.fanout_watchers
    bench = Scripted(tmp_path, [(n, n - 1), (n, n - 1)])
    with pytest.raises(BenchError):
        bench.fanout()
    assert bench.made == 2
