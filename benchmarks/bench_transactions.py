#!/usr/bin/env python3
"""Transaction rates of ``presence-sip serve`` under SIPp load: OPTIONS and digest REGISTER.

Usage::

    .venv/bin/python benchmarks/bench_transactions.py [--quick] [--nice N] [--rows R1,R2]

Rows (issues 3 and 4, ``make bench``):

* ``options-udp``: OPTIONS/s over UDP (``scenarios/options_timed.xml``, SIPp ``-t u1``);
* ``options-tcp``: OPTIONS/s over TCP, all calls on one connection (SIPp ``-t t1``);
* ``register``: REGISTER/s with digest authentication over UDP
  (``scenarios/register_digest.xml``: REGISTER, 401, REGISTER with Authorization, 200; two
  transactions per call), subscribers provisioned through the HSS store API before the server
  starts.  SIPp 3.6.1 only computes MD5 and answers the first challenge, so this row runs the
  server with ``--digest-algorithms MD5``.

For each row the rate is stepped up (a probe step, a guess from the server's CPU use during the
probe, growth until a step fails, faster while the server's CPU leaves room, then bisection; a
step that fails while the server used less than 80 % of a CPU is repeated once; 50,000 calls/s is
the ceiling); the row is the highest rate whose step passes:
failed-or-unfinished calls <= 0.1 %, SIPp retransmissions <= 1 % of its messages, achieved
call rate >= 95 % of the asked one (``SippRun.verdict`` in ``harness/sipp.py``).  The server
is restarted before every step, pinned to CPU 0, SIPp to CPU 1.  p50/p99 are per-call response
times from SIPp's gettimeofday() around each call (for REGISTER: both round trips).

The servers, SIPp runner, statistics parsing and process reaping are those of ``run.py``, from
the ``benchmarks/harness/`` package.  Everything stays on 127.0.0.1 (server port 15080, SIPp
port 16100), every subprocess runs under a timeout and is killed at the end, on errors and on
Ctrl-C.  A full run takes < 4 minutes, ``--quick`` < 1 minute.  The Markdown table is printed
and appended to today's results file of ``run.py`` for the same mode when there is one
(replacing an earlier transactions section in it), else written to
``benchmarks/results/<date>-transactions[-quick].md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from presence_sip.storage.database import DATABASE_NAME, open_network_database, transaction
from presence_sip.storage.sqlite_hss import SqliteSubscriberStore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness.config import (
    DOMAIN,
    HOST,
    MAX_FAILED,
    NICE,
    RESULTS_DIR,
    SIPP_BUFFER,
    BenchError,
)
from benchmarks.harness.processes import REAPER, on_signal
from benchmarks.harness.report import machine_info, write_section
from benchmarks.harness.samples import growth_factor, latency_samples, percentile, round_rate
from benchmarks.harness.servers import Ours, ours_command, preflight
from benchmarks.harness.sipp import Sipp, SippJob, SippRun

SERVE_PORT = 15080  # run.py uses 15060 (Kamailio) and 15070 (ours)
SIPP_LOCAL_PORT = 16100  # run.py uses 16000 and 16090
MIN_RATE = 20
RATE_CEILING = 50_000
SATURATED = 0.8
HEADROOM_TARGET = 0.85
"""Server CPU (cores) the growth of a passing step aims at (see ``Search._factor``)."""
"""Server CPU (cores) above which a failing step is taken as the server's limit."""
BEGIN_MARK = "<!-- bench_transactions.py: begin -->"
END_MARK = "<!-- bench_transactions.py: end -->"


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class Plan:
    """Sizes and durations of one run (full or --quick)."""

    quick: bool
    step_seconds: float
    """Traffic time of one rate step."""
    refine_steps: int
    """Bisection steps after the first failing rate."""
    factor: float
    """Growth of the rate after the guess, until a step fails."""
    users: int
    """Subscribers provisioned for the REGISTER row (and CSV lines for every row)."""
    recv_timeout_ms: int
    """SIPp -recv_timeout: a call waiting longer for a response fails."""
    budget_seconds: float
    """Whole run; a row stops refining when its share is used up."""


FULL = Plan(
    quick=False,
    step_seconds=5.0,
    refine_steps=3,
    factor=1.25,
    users=10_000,
    recv_timeout_ms=3000,
    budget_seconds=220.0,
)
QUICK = Plan(
    quick=True,
    step_seconds=2.0,
    refine_steps=1,
    factor=1.3,
    users=2_000,
    recv_timeout_ms=2000,
    budget_seconds=48.0,
)


@dataclass(frozen=True, slots=True)
class Row:
    """One measured row: scenario, transport and where the rate search starts."""

    key: str
    label: str
    scenario: str
    transport: str
    """SIPp -t value: u1 (one UDP socket) or t1 (one TCP connection)."""
    transactions_per_call: int
    start_rate: int
    digest: bool


ROWS = (
    Row("options-udp", "OPTIONS/s, UDP", "options_timed.xml", "u1", 1, 500, digest=False),
    Row(
        "options-tcp",
        "OPTIONS/s, TCP (one connection, SIPp `-t t1`)",
        "options_timed.xml",
        "t1",
        1,
        500,
        digest=False,
    ),
    Row(
        "register",
        "REGISTER/s with digest (MD5), UDP: REGISTER, 401, REGISTER + Authorization, 200",
        "register_digest.xml",
        "u1",
        2,
        200,
        digest=True,
    ),
)


# --------------------------------------------------------------------------- server


def with_flag(argv: Sequence[str], flag: str, values: Sequence[str]) -> list[str]:
    """``argv`` without any ``flag VALUE`` pair, then ``flag V`` for each of ``values``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        else:
            out.append(arg)
    for value in values:
        out += [flag, value]
    return out


def serve_argv(base: Sequence[str], port: int, *, digest: bool) -> list[str]:
    """``servers.ours_command()`` with UDP+TCP listeners and the row's authentication."""
    argv = with_flag(base, "--listen", [f"udp:{HOST}:{port}", f"tcp:{HOST}:{port}"])
    argv = with_flag(argv, "--auth", ["digest" if digest else "none"])
    # SIPp 3.6.1 computes MD5 only and answers the first challenge of a 401.
    return with_flag(argv, "--digest-algorithms", ["MD5"] if digest else [])


def serve_settings(digest: bool) -> str:
    """The server's command line as shown in the report."""
    argv = serve_argv(ours_command(SERVE_PORT, Path("TMPDIR")), SERVE_PORT, digest=digest)
    return "`" + " ".join(["presence-sip", *argv[3:]]) + "`"


class TransactionServer(Ours):
    """``presence-sip serve`` from ``ours_command()`` on UDP and TCP, optionally with digest.

    ``template`` is a provisioned ``presence.sqlite`` copied into each fresh data directory.
    Flags only, as :func:`serve_settings` shows (OPTIONS and REGISTER publish nothing).
    """

    with_config = False

    def __init__(self, workdir: Path, *, digest: bool, template: Path | None) -> None:
        super().__init__(workdir)
        self.port = SERVE_PORT
        self.digest = digest
        self.template = template

    def command(self, rundir: Path) -> list[str]:
        base = super().command(rundir)
        if self.template is not None:
            shutil.copyfile(self.template, rundir / "data" / DATABASE_NAME)
        return serve_argv(base, self.port, digest=self.digest)


def msisdn(index: int) -> str:
    """E.164 number of bench subscriber ``index`` (+44 7700 900xxx drama range, widened)."""
    return f"+4477009{index:05d}"


def password(index: int) -> str:
    return f"bench-{index}"


def provision(data_dir: Path, users: int) -> Path:
    """Subscribers 0..users-1 in a fresh database, one transaction; returns the database file."""
    conn = open_network_database(data_dir)
    try:
        store = SqliteSubscriberStore(conn, domain=DOMAIN)
        with transaction(conn):
            for index in range(users):
                store.add_subscriber(msisdn(index), password(index))
    finally:
        conn.close()
    return data_dir / DATABASE_NAME


def write_csv(path: Path, users: int, *, digest: bool) -> Path:
    """SIPp -inf file; with ``digest``: MSISDN;password;[authentication ...] per line."""
    lines = ["SEQUENTIAL"]
    for index in range(users):
        if digest:
            keyword = f"[authentication username={msisdn(index)} password={password(index)}]"
            lines.append(f"{msisdn(index)};{password(index)};{keyword}")
        else:
            lines.append(f"bench{index}")
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


# --------------------------------------------------------------------------- SIPp


# --------------------------------------------------------------------------- rate search


@dataclass(frozen=True, slots=True)
class Step:
    """One rate step: SIPp's outcome and the response times of the answered calls."""

    run: SippRun
    p50_ms: float | None
    p99_ms: float | None
    seconds: float
    """Wall time of the whole step, server start to stop."""

    @property
    def passed(self) -> bool:
        return not self.run.verdict()


@dataclass(slots=True)
class RowResult:
    """Outcome of one row: the best passing step, if any."""

    row: Row
    best: Step | None = None
    first_fail: float | None = None
    notes: list[str] = field(default_factory=list)


class Search:
    """Runs the steps of one row and searches the highest passing rate."""

    def __init__(
        self, row: Row, plan: Plan, server: TransactionServer, sipp: Sipp, csv: Path,
        log: Callable[[str], None], deadline: float,
    ) -> None:  # fmt: skip
        self.row, self.plan, self.server, self.sipp = row, plan, server, sipp
        self.csv, self.log, self.deadline = csv, log, deadline
        self.result = RowResult(row)
        self.last_seconds = 0.0

    def step(self, rate: int) -> Step:
        t0 = time.monotonic()
        self.server.start()
        try:
            job = SippJob(
                self.row.scenario,
                rate=rate,
                calls=max(1, int(rate * self.plan.step_seconds)),
                limit=max(500, rate),
                csv=self.csv,
                keys={"domain": DOMAIN, "expires": "3600"},
                run_seconds=self.plan.step_seconds + 15,
                recv_timeout_ms=self.plan.recv_timeout_ms,
                stop_failed_over=MAX_FAILED,
                logs=True,
                local_port=SIPP_LOCAL_PORT,
                transport=self.row.transport,
            )
            run = self.sipp.run(job, self.server)
        finally:
            self.server.stop()
        samples = sorted(latency_samples(run.workdir / "actions.log"))
        p50 = percentile(samples, 0.50) * 1000 if samples else None
        p99 = percentile(samples, 0.99) * 1000 if samples else None
        step = Step(run, p50, p99, time.monotonic() - t0)
        self.last_seconds = step.seconds
        self.log(f"{self.row.key}/{self.row.transport}: {run.describe()} p50={_ms(p50)} ms "
                 f"p99={_ms(p99)} ms step={step.seconds:.1f}s")  # fmt: skip
        return step

    def measure(self, rate: int) -> Step:
        """One step; a failure with the server below SATURATED CPU is repeated once.

        On a shared machine another process can hold CPU 0 for a moment and fail a step the
        server would pass; a server that was not busy itself did not reach its limit.
        """
        step = self.step(rate)
        cpu = step.run.server_cpu
        if step.passed or cpu >= SATURATED or not self.time_left():
            return step
        self.log(f"{self.row.key}: failed with the server at {cpu:.0%} CPU, repeating once")
        return self.step(rate)

    def time_left(self) -> bool:
        """Room for one more step of the last step's length before this row's deadline."""
        if time.monotonic() + self.last_seconds <= self.deadline:
            return True
        self.result.notes.append("time budget reached, search stopped early")
        return False

    def find_max(self) -> RowResult:
        """Probe, guess from CPU, grow until a step fails, then bisect."""
        probe = self.measure(self.row.start_rate)
        if probe.passed:
            self.result.best = probe
            self._grow(self._guess(probe))
        else:
            self._descend(self.row.start_rate)
        self._bisect()
        return self.result

    def _guess(self, probe: Step) -> int:
        """80 % of the rate at which the server would use all of CPU 0, within [x1.5, x8]."""
        rate = probe.run.rate
        estimate = 0.8 * rate / max(probe.run.server_cpu, 0.01)
        return round_rate(min(max(estimate, rate * 1.5), rate * 8))

    def _grow(self, rate: int) -> None:
        while self.time_left():
            step = self.measure(rate)
            if not step.passed:
                self.result.first_fail = rate
                return
            self.result.best = step
            if rate >= RATE_CEILING:
                self.result.notes.append(
                    f"passed at the search's ceiling of {RATE_CEILING:,} calls/s: the row is "
                    "a lower bound"
                )
                return
            rate = min(RATE_CEILING, round_rate(rate * self._factor(step)))

    def _factor(self, step: Step) -> float:
        """Growth after a passing step: the plan's factor, more while the server's CPU use
        leaves room (up to x2 towards 85 % of CPU 0).  A probe at a low rate guesses short
        (fixed costs, a coarse CPU reading), and x1.25 alone from there used the row's budget
        before a step failed (2026-11-26 23:24: OPTIONS stopped at 37,200/s with the server at
        53 %)."""
        return growth_factor(step.run.server_cpu, self.plan.factor, HEADROOM_TARGET)

    def _descend(self, rate: int) -> None:
        """The start rate failed: halve until a step passes."""
        self.result.first_fail = rate
        while rate > MIN_RATE and self.time_left():
            rate = max(MIN_RATE, round_rate(rate / 2))
            step = self.measure(rate)
            if step.passed:
                self.result.best = step
                return
            self.result.first_fail = rate

    def _bisect(self) -> None:
        for _ in range(self.plan.refine_steps):
            best, fail = self.result.best, self.result.first_fail
            if best is None or fail is None:
                return
            mid = round_rate((best.run.rate + fail) / 2)
            if mid in (best.run.rate, fail) or not self.time_left():
                return
            step = self.measure(mid)
            if step.passed:
                self.result.best = step
            else:
                self.result.first_fail = mid


# --------------------------------------------------------------------------- report


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def table_row(res: RowResult) -> str:
    best = res.best
    if best is None:
        return f"| {res.row.label} | n/a | n/a | n/a | n/a | n/a | n/a |"
    run = best.run
    rate = run.rate
    return (
        f"| {res.row.label} | {rate:,.0f} | {rate * res.row.transactions_per_call:,.0f} | "
        f"{run.failed_ratio:.3%} | {run.retrans_ratio:.2%} | {_ms(best.p50_ms)} | "
        f"{_ms(best.p99_ms)} |"
    )


def render(
    results: list[RowResult], plan: Plan, started: dt.datetime, elapsed: float, steps: list[str],
    others: list[float], standalone: bool,
) -> str:  # fmt: skip
    mode = "quick" if plan.quick else "full"
    lines = [
        BEGIN_MARK,
        f"## Transaction rates of presence-sip serve under SIPp ({mode} run, "
        f"{started:%Y-%m-%d %H:%M}, {elapsed / 60:.1f} min, `benchmarks/bench_transactions.py`)",
        "",
        "| Row | calls/s | transactions/s | failed | retransmissions | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(table_row(res) for res in results),
        "",
        "- calls/s: the highest rate SIPp held with failed-or-unfinished calls <= 0.1 %, "
        "retransmissions <= 1 % of its messages and an achieved rate >= 95 % of the asked one; "
        "failed and retransmissions are that step's. A REGISTER call is two transactions "
        "(REGISTER -> 401, REGISTER with Authorization -> 200, binding stored).",
        "- p50/p99: per-call response time at that rate, from SIPp's gettimeofday() before the "
        "first request and when the final 200 arrives (REGISTER: both round trips); it includes "
        "SIPp's own scheduling.",
        f"- Server: {serve_settings(False)} for OPTIONS; {serve_settings(True)} for REGISTER "
        "(**MD5 only**: SIPp 3.6.1 computes MD5 digests only and answers the first challenge; "
        f"the default offers SHA-256 first). {plan.users:,} subscribers provisioned through "
        "`SqliteSubscriberStore` before the server starts; the server is restarted with a fresh "
        "copy of that database before every step. Pinned to CPU 0.",
        f"- SIPp 3.6.1 on 127.0.0.1, pinned to CPU 1, `-rp 1000 -buff_size {SIPP_BUFFER} "
        f"-recv_timeout {plan.recv_timeout_ms}`, UDP retransmission T1 = 500 ms (`-t u1`), TCP "
        "`-t t1` (one connection). Rate search: a probe step, a guess from the server's CPU use "
        f"in it, growth until a step fails (x{plan.factor}, up to x2 while the server used less "
        f"than {HEADROOM_TARGET:.0%} of a CPU), then {plan.refine_steps} bisection step(s); "
        f"{plan.step_seconds:.0f} s of traffic per step; a step that fails while the server "
        f"used less than {SATURATED:.0%} of a CPU is repeated once (another process held CPU 0); "
        f"SIPp is stopped once more than {MAX_FAILED:.1%} of a step's calls have failed.",
        "- Priority: "
        + (f"`nice -n {NICE[-1]}` (`--nice`)." if NICE else "default (no `--nice`)."),
    ]
    lines += busy_note(others)
    for res in results:
        if res.first_fail is not None:
            res.notes.insert(0, f"lowest failing rate tried {res.first_fail:,.0f} calls/s")
        lines += [f"- {res.row.key}: {note}." for note in res.notes]
    if standalone:
        lines += ["", *(ln for ln in machine_info() if not ln.startswith("- Kamailio"))]
    lines += ["", "```", *steps, "```", END_MARK]
    return "\n".join(lines) + "\n"


def busy_note(others: list[float]) -> list[str]:
    """One line on the CPU other processes used during the SIPp runs (run.py's measure)."""
    if not others:
        return []
    mean = sum(others) / len(others)
    text = (
        f"- Other processes on the machine used {mean:.2f} CPU cores on average "
        f"(max {max(others):.2f}) during the SIPp runs"
    )
    if mean > 0.15:
        text += ": the machine was busy, read the rates as lower bounds (`--nice -10` helps)"
    return [text + "."]


def output_file(plan: Plan, started: dt.datetime) -> tuple[Path, bool]:
    """(file, standalone): today's run.py results file of the same mode, else our own."""
    suffix = "-quick" if plan.quick else ""
    shared = RESULTS_DIR / f"{started:%Y-%m-%d}{suffix}.md"
    if shared.exists():
        return shared, False
    return RESULTS_DIR / f"{started:%Y-%m-%d}-transactions{suffix}.md", True


# --------------------------------------------------------------------------- main


class Runner:
    """All rows of one run, sharing the work directory, CSVs and template database."""

    def __init__(self, plan: Plan, workdir: Path, rows: Sequence[Row]) -> None:
        self.plan, self.workdir, self.rows = plan, workdir, rows
        self.steps: list[str] = []
        self.others: list[float] = []
        self.t0 = time.monotonic()

    def log(self, text: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {text}"
        print(line, flush=True)
        self.steps.append(line)

    def run(self) -> list[RowResult]:
        users = self.plan.users
        t0 = time.monotonic()
        template = provision(self.workdir / "template", users)
        self.log(f"provisioned {users} subscribers in {time.monotonic() - t0:.1f} s")
        csvs = {
            False: write_csv(self.workdir / "users.csv", users, digest=False),
            True: write_csv(self.workdir / "digest.csv", users, digest=True),
        }
        results = []
        for index, row in enumerate(self.rows):
            left = self.plan.budget_seconds - (time.monotonic() - self.t0)
            deadline = time.monotonic() + left / (len(self.rows) - index)
            results.append(self.run_row(row, csvs[row.digest], template, deadline))
        return results

    def run_row(self, row: Row, csv: Path, template: Path, deadline: float) -> RowResult:
        server = TransactionServer(
            self.workdir / row.key, digest=row.digest, template=template if row.digest else None
        )
        sipp = Sipp(self.workdir / row.key / "sipp", self.others)
        search = Search(row, self.plan, server, sipp, csv, self.log, deadline)
        try:
            result = search.find_max()
        except BenchError as exc:
            server.stop()
            search.result.notes.append(f"ERROR {exc}".rstrip("."))
            self.log(f"ERROR {row.key}: {exc}")
            return search.result
        best = result.best
        self.log(f"{row.key}: max {best.run.rate:.0f} calls/s" if best else f"{row.key}: none")
        return result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="reduced run (< 1 minute)")
    parser.add_argument(
        "--rows",
        default=",".join(row.key for row in ROWS),
        help="comma list of rows (default all: %(default)s)",
    )
    parser.add_argument("--nice", type=int, default=0, help="run server and SIPp under nice -n N")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--output", type=Path, default=None, help="results file (appended to)")
    args = parser.parse_args(argv)
    keys = [key.strip() for key in args.rows.split(",") if key.strip()]
    unknown = set(keys) - {row.key for row in ROWS}
    if unknown or not keys:
        parser.error(f"unknown rows {sorted(unknown)}; choose from {[r.key for r in ROWS]}")
    args.row_list = [row for row in ROWS if row.key in keys]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    preflight(["ours"])
    plan = QUICK if args.quick else FULL
    if args.nice:
        NICE[:] = ["nice", "-n", str(args.nice)]
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = dt.datetime.now()
    workdir = Path(tempfile.mkdtemp(prefix="presence-bench-tx-"))
    print(f"work directory: {workdir}", flush=True)
    runner = Runner(plan, workdir, args.row_list)
    try:
        results = runner.run()
    except KeyboardInterrupt:
        print("interrupted: stopping every process started here", file=sys.stderr)
        return 130
    finally:
        REAPER.stop_all()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    path, standalone = (args.output, True) if args.output else output_file(plan, started)
    elapsed = time.monotonic() - runner.t0
    section = render(results, plan, started, elapsed, runner.steps, runner.others, standalone)
    print()
    print(section)
    write_section(path, section, BEGIN_MARK, END_MARK)
    print(f"written to {path}")
    return 1 if any(res.best is None for res in results) else 0


if __name__ == "__main__":
    sys.exit(main())
