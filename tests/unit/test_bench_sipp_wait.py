"""benchmarks/harness/sipp.py: a rate step whose failures already exceed what a passing step
allows stops SIPp at once, and the run says so; a step that stays under the limit runs out."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from benchmarks.harness.config import MAX_FAILED
from benchmarks.harness.sipp import Sipp, SippRun, _failed_calls

COLUMNS = "StartTime;OutgoingCall(C);SuccessfulCall(C);FailedCall(C);CallRate(C)"

# A stand-in for SIPp: one statistics row per 0.2 s, FailedCall(C) growing by `step` a row,
# for `rows` rows, then exit 0 (as SIPp does when its calls are done).
STAND_IN = """
import sys, time
step, rows = int(sys.argv[1]), int(sys.argv[2])
with open("stat.csv", "w") as f:
    f.write("{columns}\\n")
    for i in range(1, rows + 1):
        f.write(f"t;{{100 * i}};{{100 * i - step * i}};{{step * i}};500\\n")
        f.flush()
        time.sleep(0.2)
"""


def start(tmp_path: Path, step: int, rows: int) -> tuple[subprocess.Popen[bytes], SippRun]:
    rundir = tmp_path / "run"
    rundir.mkdir()
    code = STAND_IN.format(columns=COLUMNS)
    proc = subprocess.Popen([sys.executable, "-c", code, str(step), str(rows)], cwd=rundir)
    return proc, SippRun("cycle.xml", rate=500, asked_calls=10_000, workdir=rundir)


def test_failed_calls_reads_the_newest_row_and_tolerates_a_partial_one(tmp_path: Path) -> None:
    stat = tmp_path / "stat.csv"
    assert _failed_calls(stat) == 0  # not written yet
    stat.write_text(f"{COLUMNS}\nt;100;90;10;500\nt;200;170;30;500\n")
    assert _failed_calls(stat) == 30
    stat.write_text(f"{COLUMNS}\nt;100;90;10;500\nt;200;17")  # SIPp midway through a row
    assert _failed_calls(stat) == 0


def test_a_step_that_has_failed_is_stopped_early(tmp_path: Path) -> None:
    # 25 failed calls a row: over 0.1 % of 10,000 (10) from the first row on.
    proc, run = start(tmp_path, step=25, rows=100)
    started = time.monotonic()
    run = Sipp(tmp_path, []).wait(proc, run, 30.0, started, stop_failed_over=MAX_FAILED)
    assert run.rc == -15  # SIGTERM, not its own exit
    assert 0 < run.stopped_at < 5.0
    assert run.failed > 10
    assert run.failed_ratio == run.failed / 10_000
    assert run.verdict().startswith("failed")
    assert "stopped at" in run.describe()


def test_a_step_under_the_limit_runs_to_its_end(tmp_path: Path) -> None:
    # 1 failed call a row for 5 rows: 5 of 10,000, under 0.1 %.
    proc, run = start(tmp_path, step=1, rows=5)
    run = Sipp(tmp_path, []).wait(proc, run, 30.0, time.monotonic(), stop_failed_over=MAX_FAILED)
    assert proc.returncode == 0
    assert run.stopped_at == 0.0
    assert run.failed == 5
    assert "stopped at" not in run.describe()
