#!/usr/bin/env python3
"""Profile a running ``presence-sip serve`` under SIPp load with py-spy (sampling, no overhead
inside the server).

Starts our server exactly as ``run.py`` does (pinned to CPU 0, SIPp to CPU 1), sends one SIPp
scenario at a fixed rate, records the server with ``py-spy record --format raw`` meanwhile, and
prints the functions with the most samples (self and inclusive) plus the SIPp verdict.

Usage::

    .venv/bin/pip install py-spy
    .venv/bin/python benchmarks/profile_serve.py publish --rate 3000 [--seconds 10] [--nice -10]
    .venv/bin/python benchmarks/profile_serve.py cycle --rate 800 --raw /tmp/cycle.txt
    .venv/bin/python benchmarks/profile_serve.py publish --rate 2000 --no-spy --loop asyncio

The raw file (``--raw``) holds collapsed stacks, one per line, for flame-graph tools.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness.config import DOMAIN, FULL, NICE
from benchmarks.harness.processes import REAPER
from benchmarks.harness.servers import Ours
from benchmarks.harness.sipp import SippJob, write_csvs
from benchmarks.run import Bench

SCENARIOS = {
    "publish": (
        "publish.xml",
        "publish",
        {"domain": DOMAIN, "expires": "3600", "basic": "open", "note": "busy"},
    ),
    "cycle": ("subscribe_cycle.xml", "cycle", {"domain": DOMAIN, "expires": "3600"}),
}


def summarise(raw: Path, top: int) -> str:
    """Top functions by self and inclusive samples from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_short(f) for f in stack.split(";") if f]
        if frames:
            own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples", "", "self %  function"]
    lines += [f"{100 * n / total:5.1f}  {f}" for f, n in own.most_common(top)]
    lines += ["", "incl %  function"]
    lines += [f"{100 * n / total:5.1f}  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    """``fn (path/to/module.py:12)`` -> ``fn (module.py)``: lines merged per function."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({'/'.join(Path(path).parts[-2:])})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--rate", type=int, default=2000, help="calls/s sent by SIPp")
    parser.add_argument("--seconds", type=float, default=10.0, help="traffic time")
    parser.add_argument("--nice", type=int, default=0, help="as run.py --nice")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--raw", type=Path, default=None, help="keep py-spy's collapsed stacks")
    parser.add_argument(
        "--loop", choices=("auto", "asyncio", "uvloop"), default=None, help="serve --loop"
    )
    parser.add_argument("--no-spy", action="store_true", help="only the load, no py-spy")
    args = parser.parse_args()
    if shutil.which("py-spy") is None and not (Path(sys.executable).parent / "py-spy").exists():
        parser.error("py-spy is not installed (.venv/bin/pip install py-spy)")
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if args.nice:
        NICE[:] = ["nice", "-n", str(args.nice)]
    scenario, csv, keys = SCENARIOS[args.scenario]
    workdir = Path(tempfile.mkdtemp(prefix="presence-profile-"))
    raw = args.raw or workdir / "pyspy.txt"
    try:
        csvs = write_csvs(workdir, FULL)
        server = Ours(workdir, ["--loop", args.loop] if args.loop else [])
        b = Bench(server, FULL, csvs, workdir)
        server.start()
        if scenario != "publish.xml":
            b.prepublish()
        if args.no_spy:
            print(
                b.sipp.run(
                    SippJob(
                        scenario,
                        rate=args.rate,
                        calls=int(args.rate * args.seconds),
                        limit=max(500, args.rate),
                        csv=csvs[csv],
                        keys=keys,
                        run_seconds=args.seconds + 15,
                    ),
                    server,
                ).describe()
            )
            return 0
        spy = REAPER.spawn(
            [
                pyspy,
                "record",
                "--pid",
                str(server.pid),
                "--duration",
                str(int(args.seconds) + 2),
                "--format",
                "raw",
                "--rate",
                "250",
                "--nonblocking",
                "--output",
                str(raw),
            ],
            cwd=workdir,
            log=workdir / "py-spy.log",
        )
        job = SippJob(
            scenario,
            rate=args.rate,
            calls=int(args.rate * args.seconds),
            limit=max(500, args.rate),
            csv=csvs[csv],
            keys=keys,
            run_seconds=args.seconds + 15,
        )
        run = b.sipp.run(job, server)
        try:
            spy.wait(timeout=args.seconds + 30)
        except subprocess.TimeoutExpired:
            REAPER.stop(spy)
        print(run.describe())
        print(summarise(raw, args.top) if raw.exists() else (workdir / "py-spy.log").read_text())
    finally:
        REAPER.stop_all()
        if args.raw is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
