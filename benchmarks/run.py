#!/usr/bin/env python3
"""Side-by-side presence benchmark: our server and Kamailio 5.6, same SIPp scenarios.

Usage::

    python benchmarks/run.py [--targets kamailio,ours] [--quick]

Each target is a presence server listening on 127.0.0.1 (UDP).  The server is pinned to CPU 0
and SIPp to CPU 1 (``taskset``); the server is restarted before every measured step.  Rows:

* max PUBLISH/s and max SUBSCRIBE+NOTIFY cycles/s: the rate is stepped up (geometric, then
  bisected) until failed calls exceed 0.1 % or retransmissions exceed 1 % of the messages, or
  SIPp cannot hold the asked rate; the highest passing rate is reported;
* NOTIFY fan-out/s: N watchers subscribed to one presentity, one PUBLISH, time until every
  watcher has answered the NOTIFY that carries the new state;
* PUBLISH latency p50/p99 at 50 % of Kamailio's max PUBLISH rate (microsecond timestamps taken
  by SIPp around each transaction): the median of three runs per server, made last and
  alternating between the servers;
* memory (PSS of the server process tree) per 10,000 active subscriptions when holding N.

Everything stays on 127.0.0.1, every subprocess runs under a timeout, and every process this
script starts is killed at the end, on errors and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness.config import (
    DOMAIN,
    FALLBACK_KAMAILIO_PUBLISH,
    FULL,
    GROWTH_CPU_TARGET,
    MAX_FAILED,
    NICE,
    PORTS,
    QUICK,
    RESULTS_DIR,
    BenchError,
    Settings,
)
from benchmarks.harness.probe import publish
from benchmarks.harness.processes import REAPER, on_signal, tree_memory_kib
from benchmarks.harness.report import TargetResult, render
from benchmarks.harness.samples import (
    count_lines,
    growth_factor,
    latency_samples,
    notified_stamps,
    percentile,
    round_rate,
)
from benchmarks.harness.servers import Kamailio, Ours, Server, preflight
from benchmarks.harness.sipp import Sipp, SippJob, SippRun, write_csvs

PREPUBLISH_RATE = 1000
"""PUBLISH/s of the publication before each SUBSCRIBE step: a tenth of what either server
passes, and 1 s of every cycle step instead of 2 s at 500/s."""


def latency_job(rate: float, seconds: float, csv: Path) -> SippJob:
    """The SIPp run of one latency measurement: timed initial PUBLISHes at ``rate``."""
    return SippJob(
        "publish_timed.xml",
        rate=rate,
        calls=int(rate * seconds),
        limit=max(500, int(rate)),
        csv=csv,
        keys={"domain": DOMAIN, "expires": "3600", "basic": "open", "note": "lat"},
        run_seconds=seconds + 15,
        logs=True,
    )


class Bench:
    """All measurements for one server."""

    def __init__(self, server: Server, s: Settings, csvs: dict[str, Path], workdir: Path) -> None:
        self.server = server
        self.s = s
        self.csvs = csvs
        self.result = TargetResult(server.name)
        self.sipp = Sipp(workdir / server.name / "sipp", self.result.others_cpu)

    def log(self, text: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {self.server.name}: {text}"
        print(line, flush=True)
        self.result.steps.append(line)

    # ---- state every SUBSCRIBE row starts from

    def prepublish(self) -> None:
        """One PUBLISH per watched presentity, so that SUBSCRIBEs find a document.

        Both servers get the same; our server answers 404 to a SUBSCRIBE for a presentity it
        has never seen (not in the HSS, not registered, never published), Kamailio does not.
        """
        n = self.s.watched
        job = SippJob(
            "publish.xml",
            rate=min(n, PREPUBLISH_RATE),
            calls=n,
            limit=n,
            csv=self.csvs["watched"],
            keys={"domain": DOMAIN, "expires": "3600", "basic": "open", "note": "watched"},
            run_seconds=n / PREPUBLISH_RATE + 20,
        )
        run = self.sipp.run(job, self.server)
        if run.successful < n:
            raise BenchError(f"pre-publication: {run.successful}/{n} PUBLISH answered 200")

    # ---- stepping

    def _step(self, scenario: str, csv: str, rate: int, keys: dict[str, str]) -> SippRun:
        self.server.start()
        try:
            if scenario != "publish.xml":
                self.prepublish()
            calls = max(1, int(rate * self.s.step_seconds))
            job = SippJob(
                scenario,
                rate=rate,
                calls=calls,
                limit=max(500, rate),
                csv=self.csvs[csv],
                keys=keys,
                run_seconds=self.s.step_seconds + 15,
                stop_failed_over=MAX_FAILED,
            )
            run = self.sipp.run(job, self.server)
        finally:
            self.server.stop()
        if self.server.table_filled():
            self.result.table_full_steps.append((scenario, rate))
            self.log(f"{run.describe()} (transaction table full)")
        else:
            self.log(run.describe())
        return run

    def find_max(self, scenario: str, csv: str, start: int, keys: dict[str, str]) -> float:
        """Highest rate whose step passes: grow geometrically (faster while the server's CPU
        leaves room), then bisect."""
        best, fail = 0, 0
        rate = start
        while True:
            run = self._step(scenario, csv, rate, keys)
            if run.verdict():
                fail = rate
                break
            best = rate
            if rate >= self.s.rate_ceiling:  # the search's limit, not the server's
                self.result.at_ceiling.add(scenario)
                self.log(f"{scenario}: passed at the search's ceiling, {rate}/s")
                return float(best)
            growth = growth_factor(run.server_cpu, self.s.factor, GROWTH_CPU_TARGET)
            rate = min(round_rate(rate * growth), self.s.rate_ceiling)
        lo = best if best else max(50, start // 4)
        if not best:  # even the start rate failed: come down first
            while lo >= 50 and self._step(scenario, csv, lo, keys).verdict():
                fail, lo = lo, lo // 2
            if lo < 50:
                return 0.0
            best = lo
        wide = fail > best * self.s.factor  # a faster growth (or the descent) ended the climb
        for _ in range(self.s.refine_steps + (1 if wide else 0)):
            mid = round_rate((best + fail) / 2)
            if mid in (best, fail):
                break
            if self._step(scenario, csv, mid, keys).verdict():
                fail = mid
            else:
                best = mid
        return float(best)

    def publish_max(self) -> None:
        keys = {"domain": DOMAIN, "expires": "3600", "basic": "open", "note": "bench"}
        self.result.publish_max = self.find_max(
            "publish.xml", "publish", self.s.publish_start, keys
        )
        self.log(f"max PUBLISH/s = {self.result.publish_max:.0f}")

    def cycle_max(self) -> None:
        keys = {"domain": DOMAIN, "expires": "600"}
        self.result.cycle_max = self.find_max(
            "subscribe_cycle.xml", "cycle", self.s.cycle_start, keys
        )
        self.log(f"max SUBSCRIBE+NOTIFY cycles/s = {self.result.cycle_max:.0f}")

    # ---- fan-out

    def fanout(self) -> None:
        n = self.s.fanout_watchers
        run, stamps, t0 = self._fanout_once(n)
        retried = ""
        if len(stamps) < n and run.successful == n:
            # Every watcher's call completes only after answering the NOTIFY with the new state,
            # so SIPp counting all n successful while a NOTIFIED line is missing is a line its
            # log lost (once in ~20 full runs), not a watcher the server missed: measure again.
            retried = f"; measured twice: the first run's log had {len(stamps)}/{n} lines"
            self.log(
                f"fan-out: SIPp completed all {n} watcher calls but {len(stamps)} NOTIFIED lines "
                "were read (a lost log line): measuring again"
            )
            run, stamps, t0 = self._fanout_once(n)
        if len(stamps) < n:
            raise BenchError(f"fan-out: only {len(stamps)}/{n} watchers got the new state")
        spread = max(stamps) - t0
        self.result.fanout_rate = n / spread
        self.result.fanout_detail = (
            f"{n} watchers, last NOTIFY answered {spread * 1000:.0f} ms after the PUBLISH, "
            f"SIPp retransmissions {run.retrans}{retried}"
        )
        self.log(f"fan-out {self.result.fanout_rate:.0f} NOTIFY/s ({self.result.fanout_detail})")

    def _fanout_once(self, n: int) -> tuple[SippRun, list[float], float]:
        """One fan-out run on a fresh server: the SIPp run, the NOTIFIED stamps, the PUBLISH's
        wall-clock time."""
        self.server.start()
        try:
            etag = publish(self.server.port, "fanout", "closed", "fanout-start")
            started = time.monotonic()
            job = SippJob(
                "fanout_watch.xml",
                rate=min(n, 500),
                calls=n,
                limit=n,
                csv=self.csvs["fanout"],
                keys={"domain": DOMAIN, "expires": "3600"},
                run_seconds=120,
                recv_timeout_ms=10000,
                logs=True,
            )
            proc, run = self.sipp.start(job, self.server.port)
            actions = run.workdir / "actions.log"
            deadline = time.monotonic() + 60
            while count_lines(actions, "SUBSCRIBED") < n:
                if proc.poll() is not None or time.monotonic() > deadline:
                    got = count_lines(actions, "SUBSCRIBED")
                    raise BenchError(f"fan-out: only {got}/{n} watchers subscribed")
                time.sleep(0.1)
            time.sleep(0.5)
            t0 = time.time()
            publish(self.server.port, "fanout", "open", "fanout-go", etag)
            run = self.sipp.wait(proc, run, timeout=150, started=started)
        finally:
            self.server.stop()
        stamps = notified_stamps(run.workdir / "actions.log")
        self.log(run.describe(verdict=False) + f"; {len(stamps)}/{n} NOTIFYs with the new state")
        return run, stamps, t0

    # ---- latency

    def latency(self, rate: float) -> None:
        """One latency run at ``rate``; :meth:`latency_row` turns the runs into the row."""
        rate = round_rate(rate)
        self.server.start()
        try:
            job = latency_job(rate, self.s.latency_seconds, self.csvs["publish"])
            run = self.sipp.run(job, self.server)
        finally:
            self.server.stop()
        self.log(run.describe())
        samples = latency_samples(run.workdir / "actions.log")
        if not samples:
            raise BenchError("latency: no samples")
        samples.sort()
        p50 = percentile(samples, 0.50) * 1000
        p99 = percentile(samples, 0.99) * 1000
        self.result.latency_rate = rate
        self.result.latency_runs.append(
            (
                p50,
                p99,
                f"{len(samples)} PUBLISH, failed {run.failed_ratio:.2%}, "
                f"max {samples[-1] * 1000:.1f} ms, load {run.verdict() or 'pass'}",
            )
        )
        self.log(f"latency at {rate:.0f}/s: p50 {p50:.2f} ms, p99 {p99:.2f} ms")

    def latency_row(self) -> None:
        """The row from the runs made: the median p50 and p99, every run in the detail."""
        runs = self.result.latency_runs
        if not runs:
            return
        self.result.latency_p50_ms = statistics.median(r[0] for r in runs)
        self.result.latency_p99_ms = statistics.median(r[1] for r in runs)
        each = "; ".join(f"p50 {p50:.2f} ms, p99 {p99:.2f} ms ({what})" for p50, p99, what in runs)
        self.result.latency_detail = (
            f"median of {len(runs)} run(s) at {self.result.latency_rate:.0f}/s, "
            f"{self.s.latency_seconds:.0f} s each, after the other rows "
            f"(alternating between the servers when both run): {each}"
        )

    # ---- memory

    def memory(self) -> None:
        n = self.s.hold_subscriptions
        rate = self.s.hold_rate
        self.server.start()
        try:
            self.prepublish()
            time.sleep(1.0)
            pss0, rss0 = tree_memory_kib(self.server.pid)
            job = SippJob(
                "subscribe_hold.xml",
                rate=rate,
                calls=n,
                limit=max(1000, int(rate)),
                csv=self.csvs["hold"],
                keys={"domain": DOMAIN, "expires": "3600"},
                run_seconds=n / rate * 2 + 20,
                recv_timeout_ms=10000,
            )
            run = self.sipp.run(job, self.server)
            time.sleep(2.0)
            pss1, rss1 = tree_memory_kib(self.server.pid)
        finally:
            self.server.stop()
        self.log(run.describe())
        held = run.successful
        if held < n * 0.99:
            raise BenchError(f"memory: only {held}/{n} subscriptions established")
        per10k = (pss1 - pss0) / 1024 / (held / 10_000)
        self.result.mib_per_10k = per10k
        self.result.memory_detail = (
            f"{held} subscriptions at {rate:.0f}/s; "
            f"PSS {pss0 / 1024:.1f} -> {pss1 / 1024:.1f} MiB, "
            f"RSS sum {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB; "
            f"{per10k * 1024 * 1024 / 10_000:.0f} B per subscription"
        )
        self.log(f"memory {per10k:.2f} MiB per 10k ({self.result.memory_detail})")

    # ---- all rows

    def run_all(self) -> TargetResult:
        """Every row but latency (see :func:`latency_rounds`)."""
        rows: list[tuple[str, Callable[[], None]]] = [
            ("max PUBLISH/s", self.publish_max),
            ("max cycles/s", self.cycle_max),
            ("fan-out", self.fanout),
            ("memory", self.memory),
        ]
        for label, fn in rows:
            self.attempt(label, fn)
        return self.result

    def attempt(self, label: str, fn: Callable[[], None]) -> None:
        """Run one measurement; a BenchError becomes an error line of the target's report."""
        try:
            fn()
        except BenchError as exc:
            self.server.stop()
            self.result.errors.append(f"{label}: {exc}")
            self.log(f"ERROR {label}: {exc}")


def latency_rounds(benches: list[Bench], rate: Callable[[TargetResult], float]) -> None:
    """The latency row: ``latency_rounds`` runs per server, alternating between the servers,
    so that both meet the same moods of a shared machine; each row is its runs' median."""
    rounds = benches[0].s.latency_rounds if benches else 0
    for _ in range(rounds):
        for bench in benches:
            bench.attempt("latency", partial(_latency_run, bench, rate))
    for bench in benches:
        bench.latency_row()


def _latency_run(bench: Bench, rate: Callable[[TargetResult], float]) -> None:
    bench.latency(rate(bench.result))


def _latest_kamailio_publish() -> float:
    """Kamailio's max PUBLISH/s from the newest results file, else the issue's figure."""
    pattern = re.compile(r"^\| Max PUBLISH/s[^|]*\|[^|]*\| ([\d,]+) \|", re.MULTILINE)
    for path in sorted(RESULTS_DIR.glob("*.md"), reverse=True):
        m = pattern.search(path.read_text(errors="replace"))
        if m:
            return float(m.group(1).replace(",", ""))
    return float(FALLBACK_KAMAILIO_PUBLISH)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--targets", default="kamailio,ours", help="comma list: kamailio,ours")
    parser.add_argument("--quick", action="store_true", help="reduced run (< 3 minutes)")
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=None,
        help="PUBLISH/s for the latency row (default: 50%% of Kamailio's measured max)",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run server and SIPp under `nice -n N` (e.g. -5 on a shared machine; default 0)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--output", type=Path, default=None, help="results file")
    args = parser.parse_args(argv)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(targets) - set(PORTS)
    if unknown or not targets:
        parser.error(f"unknown targets {sorted(unknown)}; choose from {sorted(PORTS)}")
    targets.sort(key=lambda t: 0 if t == "kamailio" else 1)  # Kamailio first: latency rate
    preflight(targets)
    s = QUICK if args.quick else FULL
    if args.nice:
        NICE[:] = ["nice", "-n", str(args.nice)]

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)  # also when started with SIGINT ignored
    started = dt.datetime.now()
    t0 = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="presence-bench-"))
    print(f"work directory: {workdir}", flush=True)
    results: dict[str, TargetResult] = {}
    try:
        csvs = write_csvs(workdir, s)
        benches = []
        for name in targets:
            server: Server = Kamailio(workdir) if name == "kamailio" else Ours(workdir)
            bench = Bench(server, s, csvs, workdir)
            results[name] = bench.run_all()
            benches.append(bench)
        latency_rounds(benches, lambda current: _latency_rate(args.latency_rate, results, current))
    except KeyboardInterrupt:
        print("interrupted: stopping every process started here", file=sys.stderr)
        REAPER.stop_all()
        return 130
    finally:
        REAPER.stop_all()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report = render(results, s, started, time.monotonic() - t0)
    print()
    print(report)
    out = args.output or RESULTS_DIR / f"{started:%Y-%m-%d}{'-quick' if s.quick else ''}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(f"written to {out}")
    return 1 if any(r.errors for r in results.values()) else 0


def _latency_rate(
    explicit: float | None, results: dict[str, TargetResult], current: TargetResult
) -> float:
    """PUBLISH/s for the latency row: --latency-rate, else half of Kamailio's max."""
    if explicit:
        return explicit
    kam = current if current.name == "kamailio" else results.get("kamailio")
    if kam is not None and kam.publish_max:
        return kam.publish_max / 2
    return _latest_kamailio_publish() / 2


if __name__ == "__main__":
    sys.exit(main())
