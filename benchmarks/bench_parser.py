"""Parse + serialize throughput of presence_sip.sip against the ``sipmessage`` package.

Run: ``python benchmarks/bench_parser.py`` (``make bench``).  Prints a Markdown table.

Each workload is a set of 1,000 distinct messages built from one vector in ``tests/vectors/sip/``
with a fresh Via branch, From tag, Call-ID and CSeq number per message (what real traffic looks
like: those fields never repeat between transactions, while lines such as ``Max-Forwards: 70`` do).
Every figure is CPU time of this process (``time.process_time``), best of several rounds, so other
load on a shared machine lowers it less.  The "same bytes"
column parses one message over and over, the usual micro-benchmark.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys
import time
from collections.abc import Callable

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from presence_sip.sip import parse_message, to_bytes

VECTORS = pathlib.Path(__file__).resolve().parent.parent / "tests" / "vectors" / "sip"
WORKLOADS = (
    ("SUBSCRIBE", "subscribe.sip"),
    ("NOTIFY + PIDF", "notify.sip"),
    ("200 OK", "subscribe_200.sip"),
)


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


def rate(func: Callable[[bytes], object], batches: list[list[bytes]]) -> float:
    """Messages per second, best of one timed pass over each batch."""
    best = float("inf")
    for batch in batches:
        begin = time.process_time()
        for data in batch:
            func(data)
        best = min(best, time.process_time() - begin)
    return len(batches[0]) / best


def ours(data: bytes) -> bytes:
    return to_bytes(parse_message(data))


def ours_parse(data: bytes) -> object:
    return parse_message(data)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="best of this many passes")
    parser.add_argument("--count", type=int, default=1000, help="distinct messages per workload")
    args = parser.parse_args()
    try:
        import sipmessage  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # the bench extra is not installed
        sipmessage = None  # type: ignore[assignment,unused-ignore]

    def theirs(data: bytes) -> bytes:
        return bytes(sipmessage.Message.parse(data))

    print(
        "| message | ours parse/s | ours parse+serialize/s | sipmessage parse+serialize/s "
        "| ratio | ours p+s/s, same bytes | sipmessage p+s/s, same bytes |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, name in WORKLOADS:
        base = (VECTORS / name).read_bytes()
        # a fresh batch for every round, so no round sees lines an earlier one cached
        fresh = variants(base, args.count * args.rounds * 2)
        assert to_bytes(parse_message(fresh[0])) == fresh[0]
        step = args.count
        batches = [fresh[i : i + step] for i in range(0, len(fresh), step)]
        parse_rate = rate(ours_parse, batches[: args.rounds])
        ours_rate = rate(ours, batches[args.rounds :])
        same = [[base] * args.count] * args.rounds
        ours_same = rate(ours, same)
        if sipmessage is None:
            print(
                f"| {label} | {parse_rate:,.0f} | {ours_rate:,.0f} | n/a | n/a "
                f"| {ours_same:,.0f} | n/a |"
            )
            continue
        theirs_rate = rate(theirs, batches[: args.rounds])
        theirs_same = rate(theirs, same)
        print(
            f"| {label} | {parse_rate:,.0f} | {ours_rate:,.0f} | {theirs_rate:,.0f} "
            f"| {ours_rate / theirs_rate:.1f}x | {ours_same:,.0f} | {theirs_same:,.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
