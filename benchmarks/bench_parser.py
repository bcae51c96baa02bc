"""Parse + serialize throughput of presence_sip.sip against the ``sipmessage`` package.

Run: ``python benchmarks/bench_parser.py`` (``make bench``).  Prints a Markdown table.

Each workload is a set of 1,000 distinct messages built from one vector in ``tests/vectors/sip/``
with a fresh Via branch, From tag, Call-ID and CSeq number per message (what real traffic looks
like: those fields never repeat between transactions, while lines such as ``Max-Forwards: 70`` do).
Every figure is CPU time of this process (``time.process_time``), best of several rounds, so other
load on a shared machine lowers it less; the contenders take turns within each round, so a burst of
load hits them alike.  "ours" uses the C fast path when it is built (``_speedups``), "pure" is the
pure Python parser (what ``PRESENCE_SIP_PURE=1`` runs).  The "same bytes" column parses one message
over and over, the usual micro-benchmark.

The table is printed and added to today's results file of ``run.py`` when there is one (as
``bench_transactions.py`` does, replacing an earlier parser section in it), else written to
``benchmarks/results/<date>-parser.md``; ``--output`` names another file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import pathlib
import re
import sys
import time
from collections.abc import Callable, Iterator

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from benchmarks.harness.config import RESULTS_DIR
from benchmarks.harness.report import write_section
from presence_sip.sip import parse_message, to_bytes
from presence_sip.sip import parser as sip_parser

VECTORS = pathlib.Path(__file__).resolve().parent.parent / "tests" / "vectors" / "sip"
WORKLOADS = (
    ("SUBSCRIBE", "subscribe.sip"),
    ("NOTIFY + PIDF", "notify.sip"),
    ("200 OK", "subscribe_200.sip"),
)
BEGIN_MARK = "<!-- bench_parser.py: begin -->"
END_MARK = "<!-- bench_parser.py: end -->"


def variants(data: bytes, count: int) -> list[bytes]:
    """``count`` copies of ``data`` with distinct branch, From tag, Call-ID and CSeq number."""
    out = []
    for i in range(count):
        msg = re.sub(rb"branch=z9hG4bK[^;\r\n]*", b"branch=z9hG4bK%08x" % (i * 7919), data)
        msg = re.sub(rb"(\r\nFrom: [^\r\n]*;tag=)[^;\r\n]*", rb"\g<1>%x" % (i * 104729), msg)
        msg = re.sub(rb"(\r\nCall-ID: )[^\r\n]*", rb"\g<1>%d@127.0.0.1" % (10**9 + i), msg)
        msg = re.sub(rb"(\r\nCSeq: )[0-9]+", rb"\g<1>%d" % (i + 1), msg)
        out.append(msg)
    return out


def rates(
    funcs: dict[str, Callable[[bytes], object]], batches: Iterator[list[bytes]], rounds: int
) -> dict[str, float]:
    """Messages per second of each function: best of ``rounds`` timed passes, each over its own
    batch, the functions taking turns."""
    best = dict.fromkeys(funcs, float("inf"))
    size = 0
    for _ in range(rounds):
        for name, func in funcs.items():
            batch = next(batches)
            size = len(batch)
            begin = time.process_time()
            for data in batch:
                func(data)
            best[name] = min(best[name], time.process_time() - begin)
    return {name: size / seconds for name, seconds in best.items()}


def ours(data: bytes) -> bytes:
    return to_bytes(parse_message(data))


def ours_parse(data: bytes) -> object:
    return parse_message(data)


def pure(data: bytes) -> bytes:
    return to_bytes(sip_parser._parse(data, True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="best of this many passes")
    parser.add_argument("--count", type=int, default=1000, help="distinct messages per workload")
    parser.add_argument("--output", type=pathlib.Path, default=None, help="results file")
    args = parser.parse_args()
    started = dt.datetime.now()
    lines = table(args.rounds, args.count)
    print("\n".join(lines))
    section = "\n".join(
        [
            BEGIN_MARK,
            f"## Parser: presence_sip.sip against sipmessage ({started:%Y-%m-%d %H:%M}, "
            f"`benchmarks/bench_parser.py`, {args.count:,} distinct messages per pass, "
            f"best of {args.rounds}, CPU time)",
            "",
            *lines,
            END_MARK,
        ]
    )
    path = args.output or _results_file(started)
    write_section(path, section + "\n", BEGIN_MARK, END_MARK)
    print(f"\nwritten to {path}")
    return 0


def _results_file(started: dt.datetime) -> pathlib.Path:
    """Today's results file of ``run.py`` (a full run), else one of our own."""
    shared = RESULTS_DIR / f"{started:%Y-%m-%d}.md"
    return shared if shared.exists() else RESULTS_DIR / f"{started:%Y-%m-%d}-parser.md"


def table(rounds: int, count: int) -> list[str]:
    """The Markdown lines of the parser table (a note on the build, then the table)."""
    try:
        import sipmessage
    except ImportError:  # the bench extra is not installed
        sipmessage = None  # type: ignore[assignment,unused-ignore]

    def theirs(data: bytes) -> bytes:
        return bytes(sipmessage.Message.parse(data))

    accelerated = "C fast path" if sip_parser._fast_parse is not None else "C fast path NOT built"
    lines = [
        f"ours: {accelerated}; ratio = ours / sipmessage, parse+serialize",
        "",
        "| message | ours parse/s | ours parse+serialize/s | pure parse+serialize/s "
        "| sipmessage parse+serialize/s | ratio | pure ratio "
        "| ours p+s/s, same bytes | sipmessage p+s/s, same bytes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, name in WORKLOADS:
        base = (VECTORS / name).read_bytes()
        funcs: dict[str, Callable[[bytes], object]] = {
            "parse": ours_parse,
            "ours": ours,
            "pure": pure,
        }
        if sipmessage is not None:
            funcs["theirs"] = theirs
        # a fresh batch for every pass, so no pass sees lines an earlier one cached
        fresh = variants(base, count * rounds * len(funcs))
        assert to_bytes(parse_message(fresh[0])) == fresh[0] == pure(fresh[0])
        got = rates(funcs, (fresh[i : i + count] for i in range(0, len(fresh), count)), rounds)
        same = rates(
            {key: funcs[key] for key in ("ours", "theirs") if key in funcs},
            iter([[base] * count] * (2 * rounds)),
            rounds,
        )
        theirs_rate = got.get("theirs")
        if theirs_rate is None:
            cells = ["n/a"] * 3
        else:
            cells = [
                f"{theirs_rate:,.0f}",
                f"{got['ours'] / theirs_rate:.1f}x",
                f"{got['pure'] / theirs_rate:.1f}x",
            ]
        theirs_same = f"{same['theirs']:,.0f}" if "theirs" in same else "n/a"
        lines.append(
            f"| {label} | {got['parse']:,.0f} | {got['ours']:,.0f} | {got['pure']:,.0f} "
            f"| {' | '.join(cells)} | {same['ours']:,.0f} | {theirs_same} |"
        )
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
