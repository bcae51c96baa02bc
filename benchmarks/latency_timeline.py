#!/usr/bin/env python3
"""Latency over time at one PUBLISH rate, beside what CPU 0 did meanwhile: where a p99 comes from.

Makes one latency run as ``run.py`` does (``publish_timed.xml`` at ``--rate`` for ``--seconds``,
the server pinned to CPU 0 and SIPp to CPU 1, a fresh server) against ``ours`` or ``kamailio``.
Every 20 ms during the run it reads the scheduler statistics of every thread of the server's
process tree (``/proc/PID/task/TID/schedstat``: time on a CPU, time runnable but waiting for
one) and CPU 0's line of ``/proc/stat`` (ticks of user, system, softirq, idle and steal, the
time the hypervisor gave CPU 0 to someone else).  It prints, per 100 ms of sending time, the
requests sent, their mean and largest latency, the server's share of the interval on a CPU and
waiting for one, and CPU 0's steal; then how the requests slower than the p99 are spread over
the run: a p99 set by a few slow intervals is a different problem from one set everywhere.

Usage::

    .venv/bin/python benchmarks/latency_timeline.py ours --rate 3600 --nice -10
    .venv/bin/python benchmarks/latency_timeline.py kamailio --rate 3600 --nice -10

Loopback only, like the rest of the bench.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness.config import FULL, NICE
from benchmarks.harness.processes import REAPER, process_tree
from benchmarks.harness.samples import percentile, timed_latency_samples
from benchmarks.harness.servers import Kamailio, Ours, Server, preflight
from benchmarks.harness.sipp import Sipp, write_csvs
from benchmarks.run import latency_job

SAMPLE_EVERY = 0.02
"""Seconds between two readings of the scheduler statistics."""
BUCKET = 0.1
"""Seconds of sending time per printed row."""


@dataclass(frozen=True, slots=True)
class Reading:
    """One sample: wall time, the server tree's on-CPU and waiting ns, CPU 0's tick counters."""

    at: float
    on_cpu_ns: int
    waiting_ns: int
    cpu0: tuple[int, ...]
    """user, nice, system, idle, iowait, irq, softirq, steal (ticks)."""


def read_cpu0() -> tuple[int, ...]:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu0 "):
            return tuple(int(v) for v in line.split()[1:9])
    raise RuntimeError("no cpu0 line in /proc/stat")


def read_schedstat(pids: list[int]) -> tuple[int, int]:
    on_cpu = waiting = 0
    for pid in pids:
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                run_ns, wait_ns, _ = (task / "schedstat").read_text().split()
            except (OSError, ValueError):
                continue
            on_cpu += int(run_ns)
            waiting += int(wait_ns)
    return on_cpu, waiting


class Sampler(threading.Thread):
    """Reads the server tree's schedstat and CPU 0's ticks every SAMPLE_EVERY until stopped."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.readings: list[Reading] = []
        self.halt = threading.Event()

    def run(self) -> None:
        pids = process_tree(self.root)
        refreshed = time.monotonic()
        while not self.halt.wait(SAMPLE_EVERY):
            if time.monotonic() - refreshed > 1.0:  # Kamailio's children, our checkpoint thread
                pids, refreshed = process_tree(self.root), time.monotonic()
            on_cpu, waiting = read_schedstat(pids)
            self.readings.append(Reading(time.time(), on_cpu, waiting, read_cpu0()))


def reading_at(readings: list[Reading], at: float) -> Reading:
    """The first reading at or after ``at`` (the last one past the end)."""
    for reading in readings:
        if reading.at >= at:
            return reading
    return readings[-1]


def report(samples: list[tuple[float, float]], readings: list[Reading]) -> None:
    latencies = sorted(lat for _, lat in samples)
    p99 = percentile(latencies, 0.99)
    start = samples[0][0]
    buckets: dict[int, list[float]] = {}
    for sent, lat in samples:
        buckets.setdefault(int((sent - start) / BUCKET), []).append(lat)
    print(f"{len(samples)} PUBLISH: p50 {percentile(latencies, 0.5) * 1000:.2f} ms, "
          f"p99 {p99 * 1000:.2f} ms, max {latencies[-1] * 1000:.1f} ms")  # fmt: skip
    print("   t (s)     n  mean ms   max ms  >p99  server on-CPU %  waiting %  CPU 0 steal %")
    rows = []
    for index in sorted(buckets):
        lats = buckets[index]
        a = reading_at(readings, start + index * BUCKET)
        b = reading_at(readings, start + (index + 1) * BUCKET)
        span = max(b.at - a.at, 1e-9)
        ticks = max(sum(b.cpu0) - sum(a.cpu0), 1)
        on_cpu = (b.on_cpu_ns - a.on_cpu_ns) / 1e9 / span * 100
        waiting = (b.waiting_ns - a.waiting_ns) / 1e9 / span * 100
        steal = (b.cpu0[7] - a.cpu0[7]) / ticks * 100
        slow = sum(lat > p99 for lat in lats)
        rows.append((sum(lats) / len(lats), slow, steal))
        mean_ms, max_ms = sum(lats) / len(lats) * 1000, max(lats) * 1000
        print(f"{index * BUCKET:8.1f} {len(lats):5d} {mean_ms:8.1f} {max_ms:8.1f} {slow:5d} "
              f"{on_cpu:16.0f} {waiting:10.0f} {steal:14.0f}")  # fmt: skip
    slow_total = sum(slow for _, slow, _ in rows) or 1
    worst = sorted(rows, reverse=True)[: max(1, len(rows) // 10)]
    in_worst = sum(slow for _, slow, _ in worst)
    with_slow = [steal for _, slow, steal in rows if slow]
    without = [steal for _, slow, steal in rows if not slow]
    print(f"requests slower than the p99 in the 10 % of intervals with the highest mean latency: "
          f"{in_worst / slow_total:.0%}")  # fmt: skip
    if with_slow and without:
        steal_slow, steal_other = sum(with_slow) / len(with_slow), sum(without) / len(without)
        print(f"CPU 0 steal: {steal_slow:.0f} % in intervals with a request slower than the p99, "
              f"{steal_other:.0f} % in the others")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=["ours", "kamailio"])
    parser.add_argument("--rate", type=float, default=3600.0, help="PUBLISH/s")
    parser.add_argument("--seconds", type=float, default=FULL.latency_seconds)
    parser.add_argument("--nice", type=int, default=0, help="as run.py --nice")
    args = parser.parse_args()
    preflight([args.target])
    if args.nice:
        NICE[:] = ["nice", "-n", str(args.nice)]
    workdir = Path(tempfile.mkdtemp(prefix="latency-timeline-"))
    try:
        csvs = write_csvs(workdir, FULL)
        server: Server = Ours(workdir) if args.target == "ours" else Kamailio(workdir)
        sipp = Sipp(workdir / server.name / "sipp", [])
        job = latency_job(args.rate, args.seconds, csvs["publish"])
        server.start()
        sampler = Sampler(server.pid)
        sampler.start()
        try:
            run = sipp.run(job, server)
        finally:
            sampler.halt.set()
            sampler.join()
            server.stop()
        print(run.describe())
        samples = sorted(timed_latency_samples(run.workdir / "actions.log"))
        if not samples or not sampler.readings:
            sys.exit("no latency samples")
        report(samples, sampler.readings)
    finally:
        REAPER.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
