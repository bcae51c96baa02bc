"""The Markdown report of ``run.py``: the numbers of each target, machine, versions, settings."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import presence_sip
from benchmarks.harness.config import GROWTH_CPU_TARGET, NICE, Settings
from benchmarks.harness.servers import KAMAILIO_SETTINGS, OURS_SETTINGS
from presence_sip import native


@dataclass(slots=True)
class TargetResult:
    """Numbers for one target; None where the measurement failed."""

    name: str
    publish_max: float | None = None
    cycle_max: float | None = None
    fanout_rate: float | None = None
    fanout_detail: str = ""
    latency_rate: float | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_detail: str = ""
    latency_runs: list[tuple[float, float, str]] = field(default_factory=list)
    """(p50 ms, p99 ms, what the run did) of each latency run; the row shows their medians."""
    mib_per_10k: float | None = None
    memory_detail: str = ""
    at_ceiling: set[str] = field(default_factory=set)
    """Scenarios whose rate search passed at ``Settings.rate_ceiling``: a lower bound."""
    table_full_steps: list[tuple[str, int]] = field(default_factory=list)
    """(scenario, rate) of the steps in which the server's transaction table filled."""
    errors: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    others_cpu: list[float] = field(default_factory=list)
    """CPU (cores) used by unrelated processes during each SIPp run."""


def _version(argv: list[str]) -> str:
    """First line of what ``argv`` prints (a tool's version), or why it is unavailable."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc.__class__.__name__})"
    text = (out.stdout + out.stderr).strip()
    return text.splitlines()[0].strip() if text else f"unavailable (rc {out.returncode})"


def machine_info() -> list[str]:
    """Markdown bullet lines: machine, CPU, kernel, and the Kamailio, SIPp, Python versions."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ours = f"{presence_sip.__version__}, {native.describe()}"
    return [
        f"- Machine: {platform.node()}, `nproc` = {os.cpu_count()}, CPU: {cpu}, "
        f"kernel {platform.release()}",
        f"- Kamailio: {_version(['kamailio', '-v'])}",
        f"- SIPp: {_version(['sipp', '-v'])}",
        f"- Python: {platform.python_version()} ({sys.executable}); presence_sip: {ours}",
    ]


def write_section(path: Path, section: str, begin: str, end: str) -> None:
    """Append ``section`` (which starts with ``begin`` and ends with ``end``, marker lines) to
    the results file ``path``, replacing an earlier section between the same markers."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    start, stop = old.find(begin), old.find(end)
    if start >= 0 and stop > start:
        old = old[:start] + old[stop + len(end) :].lstrip("\n")
    if old and not old.endswith("\n\n"):
        old = old.rstrip("\n") + "\n\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(old + section, encoding="utf-8")


def _fmt(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _ratio(ours: float | None, kam: float | None) -> str:
    if ours is None or kam is None or kam == 0:
        return "n/a"
    return f"{ours / kam:.2f}x"


def render(
    results: dict[str, TargetResult], s: Settings, started: dt.datetime, elapsed: float
) -> str:
    """The whole results file: table of rows, machine, settings, and the details per target."""
    ours = results.get("ours", TargetResult("ours"))
    kam = results.get("kamailio", TargetResult("kamailio"))
    lat_rate = kam.latency_rate or ours.latency_rate
    n_hold = f"{s.hold_subscriptions:,}"
    rows: list[tuple[str, float | None, float | None, int]] = [
        ("Max PUBLISH/s (higher is better)", ours.publish_max, kam.publish_max, 0),
        ("Max SUBSCRIBE+NOTIFY cycles/s (higher is better)", ours.cycle_max, kam.cycle_max, 0),
        (
            f"NOTIFY fan-out/s, {s.fanout_watchers:,} watchers, one PUBLISH (higher is better)",
            ours.fanout_rate,
            kam.fanout_rate,
            0,
        ),
        (
            f"PUBLISH p50 latency at {_fmt(lat_rate)}/s, ms (lower is better)",
            ours.latency_p50_ms,
            kam.latency_p50_ms,
            2,
        ),
        (
            f"PUBLISH p99 latency at {_fmt(lat_rate)}/s, ms (lower is better)",
            ours.latency_p99_ms,
            kam.latency_p99_ms,
            2,
        ),
        (
            f"Memory per 10,000 active subscriptions (holding {n_hold}), MiB (lower is better)",
            ours.mib_per_10k,
            kam.mib_per_10k,
            2,
        ),
    ]
    mode = "quick" if s.quick else "full"
    lines = [
        f"# Presence benchmark, {started:%Y-%m-%d %H:%M} ({mode} run, {elapsed / 60:.1f} min)",
        "",
        "| Row | ours | Kamailio | ratio (ours / Kamailio) |",
        "|---|---:|---:|---:|",
    ]
    searched = {rows[0][0]: "publish.xml", rows[1][0]: "subscribe_cycle.xml"}
    for label, o, k, digits in rows:
        # A search that passed at the ceiling gives a lower bound: "≥" before the value.
        o_low = searched.get(label) in ours.at_ceiling
        k_low = searched.get(label) in kam.at_ceiling
        ratio_mark = "≥ " if o_low and not k_low else "≤ " if k_low and not o_low else ""
        lines.append(
            f"| {label} | {'≥ ' * o_low}{_fmt(o, digits)} | {'≥ ' * k_low}{_fmt(k, digits)} "
            f"| {ratio_mark}{_ratio(o, k)} |"
        )
    lines += ["", "## Machine and versions", "", *machine_info(), "", "## Settings", ""]
    lines += [
        f"- Kamailio: {KAMAILIO_SETTINGS}.",
        f"- ours: {OURS_SETTINGS}.",
        "- SIPp 3.6.1 over UDP on 127.0.0.1, pinned to CPU 1, `-rp 1000`, `-buff_size 4194304`, "
        "`-recv_timeout 5000`, UDP retransmission T1 = 500 ms. The server is restarted before "
        "every step.",
        "- Priority: "
        + (
            f"`nice -n {NICE[-1]}` and scheduler autogroup nice {NICE[-1]} for the servers and "
            "SIPp (`--nice`)."
            if NICE
            else "default (no `--nice`)."
        ),
        f"- Rate search: {s.step_seconds:.0f} s per step, start {s.publish_start}/s (PUBLISH) and "
        f"{s.cycle_start}/s (cycles), x{s.factor} (up to x2 while the server used less than "
        f"{GROWTH_CPU_TARGET:.0%} of a CPU) until a step fails (up to {s.rate_ceiling:,}/s; "
        f"a row that passes there is marked ≥), then {s.refine_steps} bisection steps (one more "
        f"when the failing rate is over x{s.factor} the last passing one). "
        "A step passes with failed-or-unfinished calls <= 0.1 %, "
        "retransmissions <= 1 % of the messages SIPp handled, and an achieved call rate >= 95 % "
        "of the asked rate; SIPp is stopped as soon as more than 0.1 % of a step's calls have "
        "failed (the step has failed whatever follows; its line says `stopped at`).",
        f"- State: {s.presentities:,} presentities for PUBLISH (CSV injection); PUBLISH = "
        "initial publication, Expires 3600; a cycle = SUBSCRIBE, 200, NOTIFY, 200, SUBSCRIBE "
        f"Expires 0, 200, NOTIFY terminated, 200, over {s.watched:,} watched presentities that "
        "each got one PUBLISH after the server started (so NOTIFYs carry a PIDF body).",
        "- Latency: SIPp takes gettimeofday() before sending each PUBLISH and when its 200 "
        "arrives (`publish_timed.xml`), at 50 % of Kamailio's max PUBLISH rate.",
        "- Memory: PSS (proportional set size, shared pages split between the processes) of "
        "the server's process tree before and 2 s after establishing the subscriptions "
        f"(Expires 3600) at {s.hold_rate:,} SUBSCRIBE/s for both servers, scaled to 10,000. "
        "Ours still holds the completed SUBSCRIBE transactions of the last 32 s then (Timer J, "
        "RFC 3261), Kamailio those of the last 5 s (tm's `wt_timer`).",
    ]
    for name, res in results.items():
        lines += ["", f"## Details: {name}", ""]
        if res.others_cpu:
            mean = sum(res.others_cpu) / len(res.others_cpu)
            lines.append(
                f"- Other processes on the machine used {mean:.2f} CPU cores on average "
                f"(max {max(res.others_cpu):.2f}) during the SIPp runs of this target"
                + (
                    ": the machine was busy, read the numbers as lower bounds."
                    if mean > 0.15
                    else "."
                )
            )
        for label, text in (
            ("fan-out", res.fanout_detail),
            ("latency", res.latency_detail),
            ("memory", res.memory_detail),
        ):
            if text:
                lines.append(f"- {label}: {text}")
        for scenario in sorted(res.at_ceiling):
            lines.append(
                f"- {scenario}: passed at the rate search's ceiling of {s.rate_ceiling:,}/s, so "
                "the row is a lower bound"
            )
        if res.table_full_steps:
            steps = ", ".join(f"{name} at {rate:,}/s" for name, rate in res.table_full_steps)
            lines.append(
                f"- transaction table full in {steps}: the Completed transactions there ended "
                "before Timer J (32 s) to make room (`max_transactions`, 200,000)"
            )
        lines += [f"- ERROR {err}" for err in res.errors]
        lines += ["", "```", *res.steps, "```"]
    return "\n".join(lines) + "\n"
