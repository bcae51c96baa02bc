"""Numbers from SIPp's ``<log>`` action files: latency samples, NOTIFY stamps, percentiles."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path


def round_rate(rate: float) -> int:
    """A call rate rounded to a step of 10/s (below 1,000/s) or 50/s, at least one step."""
    step = 10 if rate < 1000 else 50
    return max(step, int(round(rate / step) * step))


def growth_factor(server_cpu: float, floor: float, cpu_target: float) -> float:
    """How far a rate search grows after a passing step in which the server used
    ``server_cpu`` cores: ``floor``, more while that leaves room, up to x2 towards
    ``cpu_target``."""
    headroom = cpu_target / max(server_cpu, 0.01)
    return min(2.0, max(floor, headroom))


def count_lines(path: Path, prefix: str) -> int:
    """Lines of ``path`` starting with ``prefix`` (0 while the file does not exist)."""
    if not path.exists():
        return 0
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.startswith(prefix.encode()))


def notified_stamps(path: Path) -> list[float]:
    """Wall-clock seconds of each ``NOTIFIED`` line of fanout_watch.xml."""
    out = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 4 and parts[0] == "NOTIFIED":
                out.append(float(parts[2]) + float(parts[3]) / 1e6)
    return out


def latency_samples(path: Path) -> list[float]:
    """Seconds between the PUBLISH send and its 200, from publish_timed.xml log lines."""
    return [latency for _, latency in timed_latency_samples(path)]


def timed_latency_samples(path: Path) -> list[tuple[float, float]]:
    """``(send time, latency)`` of each PUBLISH, in log order: the ``RTT <s0> <us0> <s1> <us1>``
    lines publish_timed.xml writes (gettimeofday() before the send and at the 200)."""
    out = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 5 and parts[0] == "RTT":
                s0, u0, s1, u1 = (float(p) for p in parts[1:])
                out.append((s0 + u0 / 1e6, (s1 - s0) + (u1 - u0) / 1e6))
    return out


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]
