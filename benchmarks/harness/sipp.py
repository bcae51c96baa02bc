"""SIPp runs: the command line of one job, its statistics, and the CSV files it injects.

SIPp is pinned to SIPP_CPU; each run gets its own directory with SIPp's statistics CSV, final
screen, error log and (with ``logs``) the ``<log>`` actions of the scenario.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import resource
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.harness.config import (
    HOST,
    MAX_FAILED,
    MAX_RETRANS,
    MIN_ACHIEVED,
    NICE,
    SCENARIOS,
    SIPP_BUFFER,
    SIPP_CPU,
    SIPP_PORT,
    BenchError,
    Settings,
)
from benchmarks.harness.processes import (
    REAPER,
    machine_busy_seconds,
    tree_cpu_seconds,
    udp_rcvbuf_errors,
)
from benchmarks.harness.servers import Server, check_port_free


@dataclass(slots=True)
class SippRun:
    """What one SIPp run did (from its statistics CSV and final screen)."""

    scenario: str
    rate: float
    asked_calls: int
    rc: int = -1
    created: int = 0
    successful: int = 0
    failed: int = 0
    achieved_rate: float = 0.0
    messages: int = 0
    retrans: int = 0
    wall: float = 0.0
    sipp_cpu: float = 0.0
    server_cpu: float = 0.0
    udp_drops: int = 0
    others_cpu: float = 0.0
    """CPU (in cores) used by processes other than the server and SIPp during the run."""
    stopped_at: float = 0.0
    """Seconds into the run at which SIPp was stopped because more calls had failed than a
    passing step allows (``SippJob.stop_failed_over``); 0 when it ran to its end."""
    workdir: Path = field(default_factory=Path)

    @property
    def failed_ratio(self) -> float:
        """Failed or unfinished calls over asked calls (of a stopped run: its failed calls, a
        lower bound)."""
        if self.stopped_at:
            return self.failed / max(1, self.asked_calls)
        return (self.asked_calls - self.successful) / max(1, self.asked_calls)

    @property
    def retrans_ratio(self) -> float:
        return self.retrans / max(1, self.messages)

    def verdict(self) -> str:
        """'' when the step passes, else why it failed."""
        why = []
        if self.failed_ratio > MAX_FAILED:
            why.append(f"failed {self.failed_ratio:.2%}")
        if self.retrans_ratio > MAX_RETRANS:
            why.append(f"retrans {self.retrans_ratio:.2%}")
        if self.achieved_rate < MIN_ACHIEVED * self.rate:
            why.append(f"achieved {self.achieved_rate:.0f}/s")
        return ", ".join(why)

    def describe(self, verdict: bool = True) -> str:
        """One log line: load, outcome, CPU use and, for rate steps, pass or why not."""
        outcome = f" -> {self.verdict() or 'pass'}" if verdict else ""
        if self.stopped_at:
            outcome = f" stopped at {self.stopped_at:.1f} s{outcome}"
        return (
            f"{self.scenario} r={self.rate:.0f}/s calls={self.asked_calls} ok={self.successful} "
            f"failed={self.failed_ratio:.3%} retrans={self.retrans}/{self.messages} "
            f"achieved={self.achieved_rate:.0f}/s sipp_cpu={self.sipp_cpu:.0%} "
            f"server_cpu={self.server_cpu:.0%} others_cpu={self.others_cpu:.0%} "
            f"udp_drops={self.udp_drops} rc={self.rc}{outcome}"
        )


_SCREEN_ROW = re.compile(r"^\s*\S+\s+(?:-+>|<-+)\s+(?:\S*RTD\S*\s+)?(\d+)\s+(\d+)")


def _parse_screen(path: Path) -> tuple[int, int]:
    """(messages, retransmissions) summed over the scenario screen."""
    messages = retrans = 0
    if not path.exists():
        return 0, 0
    for line in path.read_text(errors="replace").splitlines():
        if "Statistics Screen" in line:
            break
        m = _SCREEN_ROW.match(line)
        if m:
            messages += int(m.group(1))
            retrans += int(m.group(2))
    return messages, retrans


def _parse_stat(path: Path) -> dict[str, str]:
    """Last row of a SIPp -trace_stat CSV as {column: value}."""
    if not path.exists():
        return {}
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    if len(lines) < 2:
        return {}
    return dict(zip(lines[0].split(";"), lines[-1].split(";"), strict=False))


@dataclass(frozen=True, slots=True)
class SippJob:
    """One SIPp invocation: scenario file, load and injected values."""

    scenario: str
    rate: float
    calls: int
    limit: int
    csv: Path
    keys: dict[str, str]
    run_seconds: float
    """SIPp's own -timeout; the outer timeout adds 30 s."""
    recv_timeout_ms: int = 5000
    stop_failed_over: float | None = None
    """Stop SIPp as soon as more than this fraction of ``calls`` has failed (a rate step that
    has already failed need not wait for the timeouts of its remaining calls)."""
    logs: bool = False
    """Write <log> actions (-trace_logs) to actions.log."""
    local_port: int = SIPP_PORT
    transport: str = "u1"
    """SIPp -t: u1 (UDP), t1 (one TCP connection), tn (one per call)."""


class Sipp:
    """Runs SIPp (pinned to SIPP_CPU) against one server."""

    def __init__(self, workdir: Path, others: list[float]) -> None:
        self.workdir = workdir
        self.count = 0
        self.others = others

    def start(self, job: SippJob, port: int) -> tuple[subprocess.Popen[bytes], SippRun]:
        """Start SIPp in the background; finish with ``wait``."""
        self.count += 1
        rundir = self.workdir / f"sipp{self.count:03d}-{Path(job.scenario).stem}"
        rundir.mkdir(parents=True)
        check_port_free(job.local_port)
        argv = [
            *NICE, "taskset", "-c", SIPP_CPU, "sipp", f"{HOST}:{port}",
            "-sf", str(SCENARIOS / job.scenario), "-inf", str(job.csv), "-t", job.transport,
            "-i", HOST, "-p", str(job.local_port), "-bind_local",
            "-r", f"{job.rate:.0f}", "-rp", "1000", "-m", str(job.calls), "-l", str(job.limit),
            "-nostdin", "-nd", "-buff_size", str(SIPP_BUFFER),
            "-recv_timeout", str(job.recv_timeout_ms),
            "-timeout", f"{math.ceil(job.run_seconds)}s",
            "-max_recv_loops", "10000", "-max_sched_loops", "10000",
            "-trace_stat", "-stf", str(rundir / "stat.csv"), "-fd", "1",
            "-trace_screen", "-screen_file", str(rundir / "screen.log"),
            "-trace_err", "-error_file", str(rundir / "errors.log"),
        ]  # fmt: skip
        if job.logs:
            argv += ["-trace_logs", "-log_file", str(rundir / "actions.log")]
        for key, value in job.keys.items():
            argv += ["-key", key, value]
        (rundir / "cmd.txt").write_text(" ".join(argv) + "\n")
        proc = REAPER.spawn(argv, cwd=rundir, log=rundir / "sipp.out")
        run = SippRun(job.scenario, rate=job.rate, asked_calls=job.calls, workdir=rundir)
        return proc, run

    def wait(
        self,
        proc: subprocess.Popen[bytes],
        run: SippRun,
        timeout: float,
        started: float,
        stop_failed_over: float | None = None,
    ) -> SippRun:
        """Wait for SIPp (outer timeout), then read its statistics; with ``stop_failed_over``
        (a fraction of the asked calls), stop it once more calls than that have failed."""
        stat_path = run.workdir / "stat.csv"
        failed_limit = None if stop_failed_over is None else stop_failed_over * run.asked_calls

        def failed_too_many() -> bool:
            return failed_limit is not None and _failed_calls(stat_path) > failed_limit

        try:
            _, status, usage, stopped_at = _wait4(proc, timeout, failed_too_many, started)
        except subprocess.TimeoutExpired:
            REAPER.stop(proc)
            run.rc = -9
        else:  # reaped by wait4: nothing left to kill
            REAPER.forget(proc)
            run.rc = os.waitstatus_to_exitcode(status)
            run.stopped_at = stopped_at
            run.sipp_cpu = (usage.ru_utime + usage.ru_stime) / max(1e-6, time.monotonic() - started)
        run.wall = time.monotonic() - started
        stat = _parse_stat(run.workdir / "stat.csv")
        run.created = int(stat.get("OutgoingCall(C)", "0") or 0)
        run.successful = int(stat.get("SuccessfulCall(C)", "0") or 0)
        run.failed = int(stat.get("FailedCall(C)", "0") or 0)
        run.achieved_rate = float(stat.get("CallRate(C)", "0") or 0)
        run.messages, run.retrans = _parse_screen(run.workdir / "screen.log")
        if not stat:
            tail = (run.workdir / "sipp.out").read_text(errors="replace")[-1500:]
            raise BenchError(f"SIPp wrote no statistics (rc {run.rc}): {tail}")
        return run

    def run(self, job: SippJob, server: Server) -> SippRun:
        """Start, wait, and attach the server's CPU use over the run."""
        cpu0 = tree_cpu_seconds(server.pid)
        busy0 = machine_busy_seconds()
        drops0 = udp_rcvbuf_errors()
        started = time.monotonic()
        proc, run = self.start(job, server.port)
        run = self.wait(
            proc, run, job.run_seconds + 30, started, stop_failed_over=job.stop_failed_over
        )
        run.udp_drops = udp_rcvbuf_errors() - drops0
        server_s = tree_cpu_seconds(server.pid) - cpu0
        others_s = machine_busy_seconds() - busy0 - server_s - run.sipp_cpu * run.wall
        run.server_cpu = server_s / max(1e-6, run.wall)
        run.others_cpu = max(0.0, others_s / max(1e-6, run.wall))
        self.others.append(run.others_cpu)
        return run


def _failed_calls(stat_path: Path) -> int:
    """FailedCall(C) of the newest row SIPp wrote (a row still being written reads lower)."""
    try:
        return int(_parse_stat(stat_path).get("FailedCall(C)", "0") or 0)
    except ValueError:
        return 0


STOP_CHECK_SECONDS = 0.5
"""How often ``_wait4`` asks whether to stop SIPp (it writes its statistics every second)."""


def _wait4(
    proc: subprocess.Popen[bytes],
    timeout: float,
    stop_when: Callable[[], bool],
    started: float,
) -> tuple[int, int, resource.struct_rusage, float]:
    """os.wait4 with a timeout (polling), so SIPp's own CPU time is known; SIGTERM to SIPp
    once ``stop_when()`` says so.  The last item is when that happened (seconds after
    ``started``), 0 when SIPp ended by itself."""
    deadline = time.monotonic() + timeout
    next_check = time.monotonic() + STOP_CHECK_SECONDS
    stopped_at = 0.0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return pid, status, usage, stopped_at
        now = time.monotonic()
        if now > deadline:
            raise subprocess.TimeoutExpired(proc.args, timeout)
        if not stopped_at and now >= next_check:
            next_check = now + STOP_CHECK_SECONDS
            if stop_when():
                stopped_at = now - started
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        time.sleep(0.05)


def write_csvs(workdir: Path, s: Settings) -> dict[str, Path]:
    """SIPp -inf files: distinct presentities and watchers so state does not collapse."""
    files = {
        "publish": (workdir / "publish.csv", [f"p{i}" for i in range(s.presentities)]),
        "watched": (workdir / "watched.csv", [f"p{i}" for i in range(s.watched)]),
        "cycle": (
            workdir / "cycle.csv",
            [f"w{i};p{i % s.watched}" for i in range(20 * s.watched)],
        ),
        "hold": (
            workdir / "hold.csv",
            [f"h{i};p{i % s.watched}" for i in range(s.hold_subscriptions)],
        ),
        "fanout": (workdir / "fanout.csv", [f"f{i};fanout" for i in range(s.fanout_watchers)]),
    }
    out = {}
    for name, (path, rows) in files.items():
        path.write_text("SEQUENTIAL\n" + "\n".join(rows) + "\n")
        out[name] = path
    return out
