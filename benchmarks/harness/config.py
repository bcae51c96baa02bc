"""Where and how the benchmarks run: addresses, ports, CPUs, thresholds and run sizes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
DOMAIN = "example.test"
BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = BENCH_DIR.parent
SCENARIOS = BENCH_DIR / "scenarios"
KAMAILIO_CFG = BENCH_DIR / "kamailio" / "kamailio.cfg"
KAMAILIO_DBTEXT = Path("/usr/share/kamailio/dbtext/kamailio")
RESULTS_DIR = BENCH_DIR / "results"

SERVER_CPU = "0"
SIPP_CPU = "1"
PORTS = {"kamailio": 15060, "ours": 15070}
SIPP_PORT = 16000
PUBLISHER_PORT = 16090

MAX_FAILED = 0.001  # failed calls / calls
MAX_RETRANS = 0.01  # retransmissions / messages
MIN_ACHIEVED = 0.95  # achieved call rate / asked rate
GROWTH_CPU_TARGET = 0.5
"""Server CPU (cores) a passing step of ``run.py``'s rate search grows towards, up to x2: below
it Kamailio's steps pass, while its PUBLISH steps fail at 45-55 % (not a CPU limit), so a
higher target would jump over its limit in one step and widen the bracket the bisection has."""
MAX_PUBLICATIONS = 10_000
"""``max_publications`` of our server in every bench run (the ``serve.toml`` that
``servers.Ours`` writes).  Each call of ``publish.xml`` is an initial PUBLISH (Expires 3600),
round-robin over ``Settings.presentities``, to a server started afresh for each step: a step at
R PUBLISH/s leaves R * ``step_seconds`` / ``presentities`` publications on each presentity.  At
our default of 64 a ``--quick`` step above ~42,700/s (3 s over 2,000 presentities) would end the
oldest ones to make room, which Kamailio (no such limit) never does, and the row would measure
that too.  The search stops at ``rate_ceiling`` (60,000/s: 90 a presentity in ``--quick``, 60 in
a full run; ``tests/unit/test_bench_config.py`` checks it stays below); 10,000 also covers the
other scripts' own ``--rate`` and ``--seconds`` (``commit_lag.py``, ``profile_serve.py``, ...)
at no cost: the limit is only compared with, never reached."""
FALLBACK_KAMAILIO_PUBLISH = 7900  # issue 8: Kamailio on this machine kind, used if not measured
SIPP_BUFFER = 4 * 1024 * 1024
NICE: list[str] = []  # ["nice", "-n", "N"] with --nice N: same priority for server and SIPp


class BenchError(Exception):
    """A measurement could not be made (server down, SIPp error, ...)."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Sizes and durations of one run (full or --quick)."""

    quick: bool
    step_seconds: float
    """Traffic time of one rate step."""
    refine_steps: int
    """Bisection steps after the first failing rate (one more when the failing rate is more than
    ``factor`` times the last passing one, so the bracket ends as narrow)."""
    factor: float
    """Least geometric growth of the rate before the first failure (up to x2 while the server
    used less than ``GROWTH_CPU_TARGET``)."""
    publish_start: int
    cycle_start: int
    rate_ceiling: int
    """Highest rate the search asks for; a row that passes there is a lower bound (marked ≥)."""
    fanout_watchers: int
    latency_seconds: float
    """Traffic time of one latency run."""
    latency_rounds: int
    """Latency runs per server, alternating between the servers; the row is their median: a
    single run's p99 moved by 2-3x between runs on the bench VM (other guests, steal time)."""
    hold_subscriptions: int
    hold_rate: int
    """SUBSCRIBE/s of the memory row, the same for both servers: each SUBSCRIBE's transaction
    stays for Timer J (32 s) after it, so the memory held grows with the rate as well."""
    presentities: int
    """Distinct presentities for PUBLISH."""
    watched: int
    """Distinct presentities watched in the SUBSCRIBE rows; each gets one PUBLISH first."""


FULL = Settings(
    quick=False,
    step_seconds=10.0,
    refine_steps=3,
    factor=1.5,
    publish_start=2000,
    cycle_start=1000,
    rate_ceiling=60000,
    fanout_watchers=1000,
    latency_seconds=10.0,
    latency_rounds=3,
    hold_subscriptions=100_000,
    hold_rate=2000,
    presentities=10_000,
    watched=1_000,
)
QUICK = Settings(
    quick=True,
    step_seconds=3.0,
    refine_steps=1,
    factor=2.0,
    publish_start=2000,
    cycle_start=1000,
    rate_ceiling=60000,
    fanout_watchers=300,
    latency_seconds=5.0,
    latency_rounds=1,
    hold_subscriptions=10_000,
    hold_rate=1000,
    presentities=2_000,
    watched=500,
)
