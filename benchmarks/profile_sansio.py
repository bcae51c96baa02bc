#!/usr/bin/env python3
"""Sans-IO micro-benchmarks of the request path: no sockets, no event loop, no SIPp.

Builds the same node as ``presence-sip serve --auth none --default-policy allow`` (SQLite store
in a temporary directory, registrar + presence roles, proxy router) and feeds its endpoint the
messages SIPp would send, answering every NOTIFY, on a simulated clock that advances at
``--rate`` messages per second (timers fire as the driver would fire them, so completed UDP
server transactions live for Timer J = 32 s of simulated time, as under real load).

Usage::

    .venv/bin/python benchmarks/profile_sansio.py publish [-n 20000] [--rate 4000]
    .venv/bin/python benchmarks/profile_sansio.py cycle   [-n 5000]  [--profile cprofile]
    .venv/bin/python benchmarks/profile_sansio.py options [--no-gc]
    .venv/bin/python benchmarks/profile_sansio.py hold --memory [-n 20000] [--rate 500]

``--profile cprofile`` prints the top functions (tottime) of the second half of the run;
``--profile pyinstrument`` prints a call tree (needs ``pip install pyinstrument``).  The
printed figure is what the sans-IO core sustains on one core, an upper bound for the server;
it is computed from the process's CPU time (``time.process_time``), so other load on the
machine changes it less than wall time would.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from presence_sip.endpoint import Endpoint
from presence_sip.node import Node, NodeConfig
from presence_sip.runtime.gc_policy import tune_gc
from presence_sip.sip.peer import Peer
from presence_sip.storage.group_commit import FAILING_GRACE, GroupCommit
from presence_sip.transport.listen import ListenSpec

DOMAIN = "example.test"
SERVER = ("127.0.0.1", 15070)
SIPP = Peer("udp", "127.0.0.1", 16000)
COMMIT_WAIT = 1.0
"""Simulated seconds a group commit may be in flight before the clock waits for it."""
PRESENTITIES = 10_000
"""Presentities the publish scenario cycles through (as benchmarks/run.py's PUBLISH row)."""

PIDF = (
    '<?xml version="1.0" encoding="UTF-8"?>\r\n'
    '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:{user}@example.test">\r\n'
    '<tuple id="t{n}"><status><basic>open</basic></status><note>bench</note></tuple>\r\n'
    "</presence>\r\n"
)


def make_node(data_dir: str) -> Node:
    """A node as ``serve`` builds it, with the router ``Node.start`` would install."""
    spec = ListenSpec("udp", *SERVER)
    node = Node(
        NodeConfig(
            domain=DOMAIN, listen=(spec,), data_dir=data_dir, auth="none", default_policy="allow"
        )
    )
    node.route_for([spec])
    return node


def publish(n: int, user: str) -> bytes:
    body = PIDF.format(user=user, n=n).encode()
    head = (
        f"PUBLISH sip:{user}@{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:16000;branch=z9hG4bK-{n}-1\r\n"
        f"From: <sip:{user}@{DOMAIN}>;tag=1SIPpTag00{n}\r\n"
        f"To: <sip:{user}@{DOMAIN}>\r\n"
        f"Call-ID: {n}-1@127.0.0.1\r\n"
        "CSeq: 1 PUBLISH\r\nMax-Forwards: 70\r\nEvent: presence\r\nExpires: 3600\r\n"
        f"Content-Type: application/pidf+xml\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def subscribe(
    n: int,
    watcher: str,
    presentity: str,
    *,
    cseq: int = 1,
    to_tag: str = "",
    ruri: str = "",
    expires: int = 3600,
) -> bytes:
    tag = f";tag={to_tag}" if to_tag else ""
    return (
        f"SUBSCRIBE {ruri or f'sip:{presentity}@{DOMAIN}'} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:16000;branch=z9hG4bK-{n}-{cseq}\r\n"
        f"From: <sip:{watcher}@{DOMAIN}>;tag=1SIPpTag00{n}\r\n"
        f"To: <sip:{presentity}@{DOMAIN}>{tag}\r\n"
        f"Call-ID: {n}-1@127.0.0.1\r\n"
        f"CSeq: {cseq} SUBSCRIBE\r\n"
        f"Contact: <sip:{watcher}@127.0.0.1:16000;transport=UDP>\r\n"
        "Max-Forwards: 70\r\nEvent: presence\r\nAccept: application/pidf+xml\r\n"
        f"Expires: {expires}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def options(n: int) -> bytes:
    return (
        f"OPTIONS sip:{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:16000;branch=z9hG4bK-{n}-o\r\n"
        f"From: <sip:a@{DOMAIN}>;tag=f{n}\r\nTo: <sip:{DOMAIN}>\r\nCall-ID: o{n}@127.0.0.1\r\n"
        "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def _header(data: bytes, name: bytes) -> bytes:
    start = data.index(b"\r\n" + name + b": ") + len(name) + 4
    return data[start : data.index(b"\r\n", start)]


def answer_notify(data: bytes) -> bytes:
    """SIPp's 200 to a NOTIFY (the header values copied as subscribe_cycle.xml does)."""
    return (
        b"SIP/2.0 200 OK\r\nVia: "
        + _header(data, b"Via")
        + b"\r\nFrom: "
        + _header(data, b"From")
        + b"\r\nTo: "
        + _header(data, b"To")
        + b"\r\nCall-ID: "
        + _header(data, b"Call-ID")
        + b"\r\nCSeq: "
        + _header(data, b"CSeq")
        + b"\r\nContact: <sip:w@127.0.0.1:16000;transport=UDP>\r\nContent-Length: 0\r\n\r\n"
    )


class Clock:
    """Simulated time, advanced per message; fires endpoint timers like the driver does.

    The group commit runs on its thread in real time, which the simulated clock outruns (a
    compiled build handles ~30,000 messages a real second, 7 simulated seconds at the default
    rate): a commit still in flight after :data:`COMMIT_WAIT` simulated seconds is waited for,
    else the node's storage guard would answer 503 once one has taken ``FAILING_GRACE``."""

    def __init__(self, endpoint: Endpoint, rate: float, commits: GroupCommit) -> None:
        self.endpoint = endpoint
        self.commits = commits
        self.now = time.time()
        self.step = 1.0 / rate

    def tick(self) -> float:
        self.now += self.step
        if self.commits.cannot_store(self.now + FAILING_GRACE - COMMIT_WAIT):
            self.commits.wait_in_flight()
        deadline = self.endpoint.get_timer()
        if deadline is not None and deadline <= self.now:
            self.endpoint.handle_timer(self.now)
        return self.now


def feed(endpoint: Endpoint, clock: Clock, data: bytes) -> list[tuple[bytes, Peer]]:
    endpoint.receive(data, SIPP, clock.tick())
    return endpoint.outbox()


def run_publish(
    endpoint: Endpoint, clock: Clock, n: int, presentities: int = PRESENTITIES
) -> Iterator[int]:
    """publish.xml: one initial PUBLISH per call, round-robin over ``presentities``."""
    for i in range(n):
        out = feed(endpoint, clock, publish(i, f"p{i % presentities}"))
        assert out, "no answer"
        assert out[0][0].startswith(b"SIP/2.0 200"), out
        yield 1


def run_options(endpoint: Endpoint, clock: Clock, n: int) -> Iterator[int]:
    for i in range(n):
        out = feed(endpoint, clock, options(i))
        assert out, "no answer"
        assert out[0][0].startswith(b"SIP/2.0 200"), out
        yield 1


def run_cycle(endpoint: Endpoint, clock: Clock, n: int) -> Iterator[int]:
    """subscribe_cycle.xml: 4 transactions, 8 messages per cycle over 1,000 presentities."""
    for i in range(1000):
        feed(endpoint, clock, publish(10_000_000 + i, f"c{i}"))
    for i in range(n):
        presentity = f"c{i % 1000}"
        out = feed(endpoint, clock, subscribe(i, f"w{i}", presentity))
        notify = next(d for d, _ in out if d.startswith(b"NOTIFY"))
        assert any(d.startswith(b"SIP/2.0 200") for d, _ in out), out
        feed(endpoint, clock, answer_notify(notify))
        stag = _header(notify, b"From").split(b"tag=")[1].decode()
        ruri = _header(notify, b"Contact").strip(b"<>").decode()
        out = feed(
            endpoint,
            clock,
            subscribe(i, f"w{i}", presentity, cseq=2, to_tag=stag, ruri=ruri, expires=0),
        )
        notify = next(d for d, _ in out if d.startswith(b"NOTIFY"))
        assert b"terminated" in notify, notify
        feed(endpoint, clock, answer_notify(notify))
        yield 1


def run_hold(endpoint: Endpoint, clock: Clock, n: int) -> Iterator[int]:
    """subscribe_hold.xml: subscriptions that stay (Expires 3600) over 1,000 presentities."""
    for i in range(1000):
        feed(endpoint, clock, publish(10_000_000 + i, f"c{i}"))
    for i in range(n):
        out = feed(endpoint, clock, subscribe(i, f"h{i}", f"c{i % 1000}"))
        notify = next(d for d, _ in out if d.startswith(b"NOTIFY"))
        feed(endpoint, clock, answer_notify(notify))
        yield 1


def hold_memory(node: Node, n: int, rate: float) -> str:
    """Bytes per held subscription (tracemalloc), with and without the transactions that are
    still alive right after establishing them (Timer J keeps the SUBSCRIBE ones for 32 s)."""
    import tracemalloc

    endpoint = node.endpoint
    clock = Clock(endpoint, rate, node.commits)
    calls = run_hold(endpoint, clock, n)
    next(calls)  # the publications are made before the first subscription
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for _ in calls:
        pass
    node.commits.flush()
    gc.collect()
    with_txns = tracemalloc.get_traced_memory()[0] - base
    clock.now += 60.0  # past Timer J and K: only the subscriptions remain
    endpoint.handle_timer(clock.now)
    node.commits.flush()
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return (
        f"hold: {n:,} subscriptions; {with_txns / n:,.0f} B per subscription with the "
        f"transactions still alive, {held / n:,.0f} B once they expired "
        f"({len(endpoint.transactions):,} transactions left)"
    )


SCENARIOS: dict[str, Callable[[Endpoint, Clock, int], Iterator[int]]] = {
    "publish": run_publish,
    "cycle": run_cycle,
    "options": run_options,
    "hold": run_hold,
}
UNITS = {"publish": "PUBLISH/s", "cycle": "cycles/s", "options": "OPTIONS/s", "hold": "SUBSCRIBE/s"}
DEFAULT_N = {"publish": 20000, "cycle": 5000, "options": 40000, "hold": 20000}


GC_TIME: dict[int, tuple[int, float, float]] = {}
"""Per generation: collections, CPU seconds in total, the longest one (seconds)."""
_gc_started = 0.0


def _gc_timer(phase: str, info: dict[str, int]) -> None:
    """gc.callbacks hook: collections and time spent per generation."""
    global _gc_started
    if phase == "start":
        _gc_started = time.process_time()
        return
    took = time.process_time() - _gc_started
    count, spent, longest = GC_TIME.get(info["generation"], (0, 0.0, 0.0))
    GC_TIME[info["generation"]] = (count + 1, spent + took, max(longest, took))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("-n", type=int, default=None, help="calls (default per scenario)")
    parser.add_argument(
        "--rate",
        type=float,
        default=4000.0,
        help="simulated messages/s (sets how many transactions stay alive)",
    )
    parser.add_argument(
        "--presentities",
        type=int,
        default=PRESENTITIES,
        help=f"publish: distinct presentities (default {PRESENTITIES:,}, as the PUBLISH row)",
    )
    parser.add_argument("--profile", choices=("cprofile", "pyinstrument"), default=None)
    parser.add_argument("--no-gc", action="store_true", help="gc.disable() for the run")
    parser.add_argument("--top", type=int, default=35, help="cProfile rows printed")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="hold: measure bytes per subscription (tracemalloc) instead",
    )
    parser.add_argument(
        "--gc-tuned",
        action="store_true",
        help="apply the serve process's GC policy (runtime.gc_policy.tune_gc)",
    )
    args = parser.parse_args()
    n = args.n or DEFAULT_N[args.scenario]
    with tempfile.TemporaryDirectory(prefix="presence-prof-") as data_dir:
        node = make_node(data_dir)
        try:
            if args.no_gc:
                gc.disable()
            if args.gc_tuned:
                tune_gc()
            if args.scenario == "hold" and args.memory:
                print(hold_memory(node, n, args.rate))
                return 0
            gc.callbacks.append(_gc_timer)
            clock = Clock(node.endpoint, args.rate, node.commits)
            if args.scenario == "publish":
                calls = run_publish(node.endpoint, clock, n, args.presentities)
            else:
                calls = SCENARIOS[args.scenario](node.endpoint, clock, n)
            first, second = _timed_halves(calls, n, args)
        finally:
            node.close()
    gc.callbacks.remove(_gc_timer)
    unit = UNITS[args.scenario]
    print(
        f"{args.scenario}: {n / 2 / first:,.0f} {unit} (first half), "
        f"{n / 2 / second:,.0f} {unit} (second half); "
        f"{len(node.endpoint.transactions):,} transactions alive at the end; cyclic GC "
        + ", ".join(
            f"gen{g} {c}x {t * 1000:.0f} ms (longest {m * 1000:.1f} ms)"
            for g, (c, t, m) in sorted(GC_TIME.items())
        )
    )
    return 0


class CallTreeProfiler(Protocol):
    """What ``--profile pyinstrument`` uses of ``pyinstrument.Profiler`` (an optional package)."""

    def start(self) -> None: ...

    def stop(self) -> object: ...

    def output_text(self, *, unicode: bool, color: bool) -> str: ...


def _timed_halves(calls: Iterator[int], n: int, args: argparse.Namespace) -> tuple[float, float]:
    t0 = time.process_time()
    for _ in range(n // 2):
        next(calls)
    first = time.process_time() - t0
    profiler: cProfile.Profile | CallTreeProfiler | None = None
    if args.profile == "cprofile":
        profiler = cProfile.Profile()
        profiler.enable()
    elif args.profile == "pyinstrument":
        from pyinstrument import Profiler

        call_tree: CallTreeProfiler = Profiler(interval=0.0005)
        call_tree.start()
        profiler = call_tree
    t0 = time.process_time()
    for _ in calls:
        pass
    second = time.process_time() - t0
    if isinstance(profiler, cProfile.Profile):
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)
    elif profiler is not None:
        profiler.stop()
        print(profiler.output_text(unicode=False, color=False))
    return first, second


if __name__ == "__main__":
    sys.exit(main())
