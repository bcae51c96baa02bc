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
  by SIPp around each transaction);
* memory (PSS of the server process tree) per 10,000 active subscriptions when holding N.

Everything stays on 127.0.0.1, every subprocess runs under a timeout, and every process this
script starts is killed at the end, on errors and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

HOST = "127.0.0.1"
DOMAIN = "example.test"
BENCH_DIR = Path(__file__).resolve().parent
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
FALLBACK_KAMAILIO_PUBLISH = 7900  # issue 8: Kamailio on this machine kind, used if not measured
SIPP_BUFFER = 4 * 1024 * 1024
NICE: list[str] = []  # ["nice", "-n", "N"] with --nice N: same priority for server and SIPp


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class Settings:
    """Sizes and durations of one run (full or --quick)."""

    quick: bool
    step_seconds: float
    """Traffic time of one rate step."""
    refine_steps: int
    """Bisection steps after the first failing rate."""
    factor: float
    """Geometric growth of the rate before the first failure."""
    publish_start: int
    cycle_start: int
    rate_ceiling: int
    fanout_watchers: int
    latency_seconds: float
    hold_subscriptions: int
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
    rate_ceiling=40000,
    fanout_watchers=1000,
    latency_seconds=20.0,
    hold_subscriptions=100_000,
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
    rate_ceiling=40000,
    fanout_watchers=300,
    latency_seconds=5.0,
    hold_subscriptions=10_000,
    presentities=2_000,
    watched=500,
)


# --------------------------------------------------------------------------- processes


class Reaper:
    """Remembers every process this script starts and kills them (their whole group)."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def spawn(
        self, argv: Sequence[str], *, cwd: Path, log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in its own session, stdout+stderr to ``log``."""
        with log.open("ab") as out:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        self._procs.append(proc)
        if NICE:
            _set_autogroup_nice(proc.pid, int(NICE[-1]))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        """TERM the process group of ``proc``, KILL it after ``grace`` seconds."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=grace)
        # children left in the group (Kamailio workers) once the leader is gone
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc in self._procs:
            self._procs.remove(proc)

    def forget(self, proc: subprocess.Popen[bytes]) -> None:
        """Drop a process that was reaped elsewhere (os.wait4)."""
        if proc in self._procs:
            self._procs.remove(proc)

    def stop_all(self) -> None:
        """Stop everything still running."""
        for proc in list(self._procs):
            self.stop(proc, grace=2.0)


REAPER = Reaper()


def _set_autogroup_nice(pid: int, nice: int) -> None:
    """Give the new session's scheduler autogroup the same nice level.

    With kernel.sched_autogroup_enabled=1 every session (each process started here runs in
    its own) competes with the other sessions as one group, whatever the nice value of its
    processes; /proc/<pid>/autogroup sets the weight of the group (sched(7)).
    """
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(str(nice))


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_memory_kib(root: int) -> tuple[int, int]:
    """(PSS, RSS) in KiB summed over the process tree of ``root``.

    PSS splits shared pages between the processes that map them, so Kamailio's shared memory
    pool is counted once, not once per worker.
    """
    pss = rss = 0
    for pid in process_tree(root):
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Pss:"):
                pss += int(line.split()[1])
            elif line.startswith("Rss:"):
                rss += int(line.split()[1])
    return pss, rss


def udp_rcvbuf_errors() -> int:
    """Datagrams the kernel dropped because a UDP receive buffer was full (/proc/net/snmp)."""
    try:
        lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines()]
    except OSError:
        return 0
    udp = [ln for ln in lines if ln and ln[0] == "Udp:"]
    if len(udp) < 2 or "RcvbufErrors" not in udp[0]:
        return 0
    return int(udp[1][udp[0].index("RcvbufErrors")])


def machine_busy_seconds() -> float:
    """CPU seconds in user+nice+system of all CPUs since boot, from /proc/stat.

    irq/softirq time (the loopback network path) is left out, so that subtracting the CPU
    time of the server and SIPp leaves what other processes on the machine used.
    """
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return 0.0
    user, nice, system = (int(v) for v in first[1:4])
    return (user + nice + system) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """utime+stime of the live process tree of ``root``."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in process_tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / tick


# --------------------------------------------------------------------------- tiny SIP client


def _sip_transaction(port: int, request: str, timeout: float = 4.0) -> dict[str, str] | None:
    """Send one request over UDP to 127.0.0.1:``port`` and return the final response headers.

    Retransmits with RFC 3261 Timer E doubling (T1 = 0.5 s).  Returns None on timeout.  The
    returned dict has ``status`` plus lower-cased header names.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        lport = sock.getsockname()[1]
        data = request.replace("{lport}", str(lport)).encode()
        branch = re.search(r"branch=([^;\s]+)", request)
        deadline = time.monotonic() + timeout
        interval = 0.5
        sock.sendto(data, (HOST, port))
        next_send = time.monotonic() + interval
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, min(next_send, deadline) - time.monotonic()))
            try:
                raw, _ = sock.recvfrom(65535)
            except TimeoutError:
                interval = min(interval * 2, 4.0)
                next_send = time.monotonic() + interval
                sock.sendto(data, (HOST, port))
                continue
            headers = _parse_response(raw)
            if headers is None or (branch and branch.group(1) not in headers.get("via", "")):
                continue
            if int(headers["status"]) >= 200:
                return headers
    return None


def _parse_response(raw: bytes) -> dict[str, str] | None:
    text = raw.decode("utf-8", "replace")
    head = text.split("\r\n\r\n", 1)[0].split("\r\n")
    if not head or not head[0].startswith("SIP/2.0 "):
        return None
    out = {"status": head[0].split()[1]}
    for line in head[1:]:
        name, _, value = line.partition(":")
        out.setdefault(name.strip().lower(), value.strip())
    return out


def _request(method: str, ruri: str, user: str, extra: str = "", body: str = "") -> str:
    tag, branch, call_id = uuid.uuid4().hex[:10], uuid.uuid4().hex, uuid.uuid4().hex
    return (
        f"{method} {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:{{lport}};branch=z9hG4bK{branch};rport\r\n"
        f"From: <sip:{user}@{DOMAIN}>;tag={tag}\r\n"
        f"To: <sip:{user}@{DOMAIN}>\r\n"
        f"Call-ID: {call_id}@{HOST}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"Max-Forwards: 70\r\n"
        f"{extra}"
        f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
    )


def options_ping(port: int, timeout: float = 1.0) -> bool:
    """True when the server answers OPTIONS with 200."""
    resp = _sip_transaction(port, _request("OPTIONS", f"sip:{DOMAIN}", "bench"), timeout)
    return resp is not None and resp["status"] == "200"


def publish(port: int, user: str, basic: str, note: str, etag: str | None = None) -> str:
    """PUBLISH (RFC 3903) a PIDF document for ``user``; returns the SIP-ETag of the 200."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\r\n'
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:{user}@{DOMAIN}">\r\n'
        f'<tuple id="fanout"><status><basic>{basic}</basic></status><note>{note}</note></tuple>\r\n'
        "</presence>\r\n"
    )
    extra = "Event: presence\r\nExpires: 3600\r\nContent-Type: application/pidf+xml\r\n"
    if etag:
        extra += f"SIP-If-Match: {etag}\r\n"
    resp = _sip_transaction(port, _request("PUBLISH", f"sip:{user}@{DOMAIN}", user, extra, body))
    if resp is None or resp["status"] != "200":
        raise BenchError(f"PUBLISH {user} -> {resp and resp['status']}")
    return resp.get("sip-etag", "")


class BenchError(Exception):
    """A measurement could not be made (server down, SIPp error, ...)."""


# --------------------------------------------------------------------------- servers


def ours_command(port: int, data_dir: Path) -> list[str]:
    """Command line of our server.  THE place to change when `presence-sip serve` changes."""
    return [
        sys.executable, "-m", "presence_sip", "serve",
        "--domain", DOMAIN,
        "--listen", f"udp:{HOST}:{port}",
        "--auth", "none",
        "--default-policy", "allow",
        "--data", str(data_dir),
        "--log-level", "WARNING",
    ]  # fmt: skip


OURS_SETTINGS = (
    "`presence-sip serve --domain example.test --listen udp:127.0.0.1:PORT --auth none "
    "--default-policy allow --data TMPDIR --log-level WARNING`, pinned to CPU 0"
)
KAMAILIO_SETTINGS = (
    "Kamailio 5.6 `benchmarks/kamailio/kamailio.cfg`: presence + presence_xml, "
    "`publ_cache=2`, `subs_db_mode=0` (memory only), `subs_respond_200=1`, "
    "`send_fast_notify=1`, `force_active=1`, no auth, `children=2`, UDP on 127.0.0.1, "
    "`-DD -E -m 1024 -M 16`, pinned to CPU 0"
)


class Server:
    """One presence server under test; start() before each step, stop() after."""

    name = ""
    settings = ""

    def __init__(self, workdir: Path) -> None:
        self.port = PORTS[self.name]
        self.workdir = workdir / self.name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def command(self, rundir: Path) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        return None

    def start(self) -> None:
        """Start a fresh server and wait until it answers OPTIONS."""
        self.stop()
        _check_port_free(self.port)
        self.starts += 1
        rundir = self.workdir / f"run{self.starts}"
        rundir.mkdir()
        argv = [*NICE, "taskset", "-c", SERVER_CPU, *self.command(rundir)]
        self.proc = REAPER.spawn(argv, cwd=rundir, log=rundir / "server.log", env=self.env())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = (rundir / "server.log").read_text(errors="replace")[-2000:]
                raise BenchError(f"{self.name} exited with {self.proc.returncode}: {tail}")
            if options_ping(self.port, timeout=0.5):
                time.sleep(0.3)
                return
        raise BenchError(f"{self.name} did not answer OPTIONS on {HOST}:{self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            REAPER.stop(self.proc)
            self.proc = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


class Kamailio(Server):
    """Kamailio 5.6 with benchmarks/kamailio/kamailio.cfg (memory-only presence)."""

    name = "kamailio"
    settings = KAMAILIO_SETTINGS

    def command(self, rundir: Path) -> list[str]:
        db = rundir / "db"
        shutil.copytree(KAMAILIO_DBTEXT, db)
        return [
            "kamailio", "-f", str(KAMAILIO_CFG), "-DD", "-E", "-m", "1024", "-M", "16",
            "-w", str(rundir),
            "-A", f"BENCH_LISTEN=udp:{HOST}:{self.port}",
            "-A", f'BENCH_DBURL="text://{db}"',
            "-A", f'BENCH_SERVER="sip:{HOST}:{self.port}"',
        ]  # fmt: skip


class Ours(Server):
    """presence-sip serve (see ours_command)."""

    name = "ours"
    settings = OURS_SETTINGS

    def command(self, rundir: Path) -> list[str]:
        data = rundir / "data"
        data.mkdir()
        return ours_command(self.port, data)

    def env(self) -> dict[str, str] | None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_DIR), env.get("PYTHONPATH")]))
        return env


def _check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            raise BenchError(f"UDP {HOST}:{port} is busy: {exc}") from exc


# --------------------------------------------------------------------------- SIPp


@dataclass(slots=True)
class SippRun:
    """What one SIPp run did (from its statistics CSV and final screen)."""

    scenario: str
    rate: float
    asked_calls: int
    rc: int = -1
    created: int = 0
    successful: int = 0
    failed: int = 0
    achieved_rate: float = 0.0
    messages: int = 0
    retrans: int = 0
    wall: float = 0.0
    sipp_cpu: float = 0.0
    server_cpu: float = 0.0
    udp_drops: int = 0
    others_cpu: float = 0.0
    """CPU (in cores) used by processes other than the server and SIPp during the run."""
    workdir: Path = field(default_factory=Path)

    @property
    def failed_ratio(self) -> float:
        """Failed or unfinished calls over asked calls."""
        return (self.asked_calls - self.successful) / max(1, self.asked_calls)

    @property
    def retrans_ratio(self) -> float:
        return self.retrans / max(1, self.messages)

    def verdict(self) -> str:
        """'' when the step passes, else why it failed."""
        why = []
        if self.failed_ratio > MAX_FAILED:
            why.append(f"failed {self.failed_ratio:.2%}")
        if self.retrans_ratio > MAX_RETRANS:
            why.append(f"retrans {self.retrans_ratio:.2%}")
        if self.achieved_rate < MIN_ACHIEVED * self.rate:
            why.append(f"achieved {self.achieved_rate:.0f}/s")
        return ", ".join(why)

    def describe(self, verdict: bool = True) -> str:
        """One log line: load, outcome, CPU use and, for rate steps, pass or why not."""
        outcome = f" -> {self.verdict() or 'pass'}" if verdict else ""
        return (
            f"{self.scenario} r={self.rate:.0f}/s calls={self.asked_calls} ok={self.successful} "
            f"failed={self.failed_ratio:.3%} retrans={self.retrans}/{self.messages} "
            f"achieved={self.achieved_rate:.0f}/s sipp_cpu={self.sipp_cpu:.0%} "
            f"server_cpu={self.server_cpu:.0%} others_cpu={self.others_cpu:.0%} "
            f"udp_drops={self.udp_drops} rc={self.rc}{outcome}"
        )


_SCREEN_ROW = re.compile(r"^\s*\S+\s+(?:-+>|<-+)\s+(?:\S*RTD\S*\s+)?(\d+)\s+(\d+)")


def _parse_screen(path: Path) -> tuple[int, int]:
    """(messages, retransmissions) summed over the scenario screen."""
    messages = retrans = 0
    if not path.exists():
        return 0, 0
    for line in path.read_text(errors="replace").splitlines():
        if "Statistics Screen" in line:
            break
        m = _SCREEN_ROW.match(line)
        if m:
            messages += int(m.group(1))
            retrans += int(m.group(2))
    return messages, retrans


def _parse_stat(path: Path) -> dict[str, str]:
    """Last row of a SIPp -trace_stat CSV as {column: value}."""
    if not path.exists():
        return {}
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    if len(lines) < 2:
        return {}
    return dict(zip(lines[0].split(";"), lines[-1].split(";"), strict=False))


@dataclass(frozen=True, slots=True)
class SippJob:
    """One SIPp invocation: scenario file, load and injected values."""

    scenario: str
    rate: float
    calls: int
    limit: int
    csv: Path
    keys: dict[str, str]
    run_seconds: float
    """SIPp's own -timeout; the outer timeout adds 30 s."""
    recv_timeout_ms: int = 5000
    logs: bool = False
    """Write <log> actions (-trace_logs) to actions.log."""
    local_port: int = SIPP_PORT
    transport: str = "u1"
    """SIPp -t: u1 (UDP), t1 (one TCP connection), tn (one per call)."""


class Sipp:
    """Runs SIPp (pinned to SIPP_CPU) against one server."""

    def __init__(self, workdir: Path, others: list[float]) -> None:
        self.workdir = workdir
        self.count = 0
        self.others = others

    def start(self, job: SippJob, port: int) -> tuple[subprocess.Popen[bytes], SippRun]:
        """Start SIPp in the background; finish with ``wait``."""
        self.count += 1
        rundir = self.workdir / f"sipp{self.count:03d}-{Path(job.scenario).stem}"
        rundir.mkdir(parents=True)
        _check_port_free(job.local_port)
        argv = [
            *NICE, "taskset", "-c", SIPP_CPU, "sipp", f"{HOST}:{port}",
            "-sf", str(SCENARIOS / job.scenario), "-inf", str(job.csv), "-t", job.transport,
            "-i", HOST, "-p", str(job.local_port), "-bind_local",
            "-r", f"{job.rate:.0f}", "-rp", "1000", "-m", str(job.calls), "-l", str(job.limit),
            "-nostdin", "-nd", "-buff_size", str(SIPP_BUFFER),
            "-recv_timeout", str(job.recv_timeout_ms),
            "-timeout", f"{math.ceil(job.run_seconds)}s",
            "-max_recv_loops", "10000", "-max_sched_loops", "10000",
            "-trace_stat", "-stf", str(rundir / "stat.csv"), "-fd", "1",
            "-trace_screen", "-screen_file", str(rundir / "screen.log"),
            "-trace_err", "-error_file", str(rundir / "errors.log"),
        ]  # fmt: skip
        if job.logs:
            argv += ["-trace_logs", "-log_file", str(rundir / "actions.log")]
        for key, value in job.keys.items():
            argv += ["-key", key, value]
        (rundir / "cmd.txt").write_text(" ".join(argv) + "\n")
        proc = REAPER.spawn(argv, cwd=rundir, log=rundir / "sipp.out")
        run = SippRun(job.scenario, rate=job.rate, asked_calls=job.calls, workdir=rundir)
        return proc, run

    def wait(
        self, proc: subprocess.Popen[bytes], run: SippRun, timeout: float, started: float
    ) -> SippRun:
        """Wait for SIPp (outer timeout), then read its statistics."""
        try:
            _, status, usage = _wait4(proc, timeout)
        except subprocess.TimeoutExpired:
            REAPER.stop(proc)
            run.rc = -9
        else:  # reaped by wait4: nothing left to kill
            REAPER.forget(proc)
            run.rc = os.waitstatus_to_exitcode(status)
            run.sipp_cpu = (usage.ru_utime + usage.ru_stime) / max(1e-6, time.monotonic() - started)
        run.wall = time.monotonic() - started
        stat = _parse_stat(run.workdir / "stat.csv")
        run.created = int(stat.get("OutgoingCall(C)", "0") or 0)
        run.successful = int(stat.get("SuccessfulCall(C)", "0") or 0)
        run.failed = int(stat.get("FailedCall(C)", "0") or 0)
        run.achieved_rate = float(stat.get("CallRate(C)", "0") or 0)
        run.messages, run.retrans = _parse_screen(run.workdir / "screen.log")
        if not stat:
            tail = (run.workdir / "sipp.out").read_text(errors="replace")[-1500:]
            raise BenchError(f"SIPp wrote no statistics (rc {run.rc}): {tail}")
        return run

    def run(self, job: SippJob, server: Server) -> SippRun:
        """Start, wait, and attach the server's CPU use over the run."""
        cpu0 = tree_cpu_seconds(server.pid)
        busy0 = machine_busy_seconds()
        drops0 = udp_rcvbuf_errors()
        started = time.monotonic()
        proc, run = self.start(job, server.port)
        run = self.wait(proc, run, timeout=job.run_seconds + 30, started=started)
        run.udp_drops = udp_rcvbuf_errors() - drops0
        server_s = tree_cpu_seconds(server.pid) - cpu0
        others_s = machine_busy_seconds() - busy0 - server_s - run.sipp_cpu * run.wall
        run.server_cpu = server_s / max(1e-6, run.wall)
        run.others_cpu = max(0.0, others_s / max(1e-6, run.wall))
        self.others.append(run.others_cpu)
        return run


def _wait4(
    proc: subprocess.Popen[bytes], timeout: float
) -> tuple[int, int, resource.struct_rusage]:
    """os.wait4 with a timeout (polling), so SIPp's own CPU time is known."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return pid, status, usage
        if time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(proc.args, timeout)
        time.sleep(0.05)


# --------------------------------------------------------------------------- CSV injection


def write_csvs(workdir: Path, s: Settings) -> dict[str, Path]:
    """SIPp -inf files: distinct presentities and watchers so state does not collapse."""
    files = {
        "publish": (workdir / "publish.csv", [f"p{i}" for i in range(s.presentities)]),
        "watched": (workdir / "watched.csv", [f"p{i}" for i in range(s.watched)]),
        "cycle": (
            workdir / "cycle.csv",
            [f"w{i};p{i % s.watched}" for i in range(20 * s.watched)],
        ),
        "hold": (
            workdir / "hold.csv",
            [f"h{i};p{i % s.watched}" for i in range(s.hold_subscriptions)],
        ),
        "fanout": (workdir / "fanout.csv", [f"f{i};fanout" for i in range(s.fanout_watchers)]),
    }
    out = {}
    for name, (path, rows) in files.items():
        path.write_text("SEQUENTIAL\n" + "\n".join(rows) + "\n")
        out[name] = path
    return out


# --------------------------------------------------------------------------- measurements


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
    mib_per_10k: float | None = None
    memory_detail: str = ""
    errors: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    others_cpu: list[float] = field(default_factory=list)
    """CPU (cores) used by unrelated processes during each SIPp run."""


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
            rate=min(n, 500),
            calls=n,
            limit=n,
            csv=self.csvs["watched"],
            keys={"domain": DOMAIN, "expires": "3600", "basic": "open", "note": "watched"},
            run_seconds=n / 500 + 20,
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
            )
            run = self.sipp.run(job, self.server)
        finally:
            self.server.stop()
        self.log(run.describe())
        return run

    def find_max(self, scenario: str, csv: str, start: int, keys: dict[str, str]) -> float:
        """Highest rate whose step passes: grow geometrically, then bisect."""
        best, fail = 0, 0
        rate = start
        while rate <= self.s.rate_ceiling:
            if self._step(scenario, csv, rate, keys).verdict():
                fail = rate
                break
            best = rate
            rate = int(rate * self.s.factor)
        if fail == 0:
            return float(best)
        lo = best if best else max(50, start // 4)
        if not best:  # even the start rate failed: come down first
            while lo >= 50 and self._step(scenario, csv, lo, keys).verdict():
                fail, lo = lo, lo // 2
            if lo < 50:
                return 0.0
            best = lo
        for _ in range(self.s.refine_steps):
            mid = _round_rate((best + fail) / 2)
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
            while _count_lines(actions, "SUBSCRIBED") < n:
                if proc.poll() is not None or time.monotonic() > deadline:
                    got = _count_lines(actions, "SUBSCRIBED")
                    raise BenchError(f"fan-out: only {got}/{n} watchers subscribed")
                time.sleep(0.1)
            time.sleep(0.5)
            t0 = time.time()
            publish(self.server.port, "fanout", "open", "fanout-go", etag)
            run = self.sipp.wait(proc, run, timeout=150, started=started)
        finally:
            self.server.stop()
        stamps = _notified_stamps(run.workdir / "actions.log")
        self.log(run.describe(verdict=False) + f"; {len(stamps)}/{n} NOTIFYs with the new state")
        if len(stamps) < n:
            raise BenchError(f"fan-out: only {len(stamps)}/{n} watchers got the new state")
        spread = max(stamps) - t0
        self.result.fanout_rate = n / spread
        self.result.fanout_detail = (
            f"{n} watchers, last NOTIFY answered {spread * 1000:.0f} ms after the PUBLISH, "
            f"SIPp retransmissions {run.retrans}"
        )
        self.log(f"fan-out {self.result.fanout_rate:.0f} NOTIFY/s ({self.result.fanout_detail})")

    # ---- latency

    def latency(self, rate: float) -> None:
        rate = _round_rate(rate)
        self.server.start()
        try:
            job = SippJob(
                "publish_timed.xml",
                rate=rate,
                calls=int(rate * self.s.latency_seconds),
                limit=max(500, int(rate)),
                csv=self.csvs["publish"],
                keys={"domain": DOMAIN, "expires": "3600", "basic": "open", "note": "lat"},
                run_seconds=self.s.latency_seconds + 15,
                logs=True,
            )
            run = self.sipp.run(job, self.server)
        finally:
            self.server.stop()
        self.log(run.describe())
        samples = _latency_samples(run.workdir / "actions.log")
        if not samples:
            raise BenchError("latency: no samples")
        samples.sort()
        self.result.latency_rate = rate
        self.result.latency_p50_ms = _percentile(samples, 0.50) * 1000
        self.result.latency_p99_ms = _percentile(samples, 0.99) * 1000
        self.result.latency_detail = (
            f"{len(samples)} PUBLISH at {rate:.0f}/s, failed {run.failed_ratio:.2%}, "
            f"max {samples[-1] * 1000:.1f} ms; the load itself: {run.verdict() or 'pass'}"
        )
        self.log(
            f"latency at {rate:.0f}/s: p50 {self.result.latency_p50_ms:.2f} ms, "
            f"p99 {self.result.latency_p99_ms:.2f} ms"
        )

    # ---- memory

    def memory(self) -> None:
        n = self.s.hold_subscriptions
        rate = _round_rate(min(4000.0, max(500.0, (self.result.cycle_max or 1000.0) * 1.2)))
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

    def run_all(self, latency_rate: Callable[[TargetResult], float]) -> TargetResult:
        rows: list[tuple[str, Callable[[], None]]] = [
            ("max PUBLISH/s", self.publish_max),
            ("max cycles/s", self.cycle_max),
            ("fan-out", self.fanout),
            ("latency", lambda: self.latency(latency_rate(self.result))),
            ("memory", self.memory),
        ]
        for label, fn in rows:
            try:
                fn()
            except BenchError as exc:
                self.server.stop()
                self.result.errors.append(f"{label}: {exc}")
                self.log(f"ERROR {label}: {exc}")
        return self.result


def _round_rate(rate: float) -> int:
    step = 10 if rate < 1000 else 50
    return max(step, int(round(rate / step) * step))


def _count_lines(path: Path, prefix: str) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.startswith(prefix.encode()))


def _notified_stamps(path: Path) -> list[float]:
    out = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 4 and parts[0] == "NOTIFIED":
                out.append(float(parts[2]) + float(parts[3]) / 1e6)
    return out


def _latency_samples(path: Path) -> list[float]:
    """Seconds between the PUBLISH send and its 200, from publish_timed.xml log lines."""
    out = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 5 and parts[0] == "RTT":
                s0, u0, s1, u1 = (float(p) for p in parts[1:])
                out.append((s1 - s0) + (u1 - u0) / 1e6)
    return out


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


# --------------------------------------------------------------------------- report


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc.__class__.__name__})"
    text = (out.stdout + out.stderr).strip()
    return text.splitlines()[0].strip() if text else f"unavailable (rc {out.returncode})"


def machine_info() -> list[str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ours = _version([sys.executable, "-c", "import presence_sip as p; print(p.__version__)"])
    return [
        f"- Machine: {platform.node()}, `nproc` = {os.cpu_count()}, CPU: {cpu}, "
        f"kernel {platform.release()}",
        f"- Kamailio: {_version(['kamailio', '-v'])}",
        f"- SIPp: {_version(['sipp', '-v'])}",
        f"- Python: {platform.python_version()} ({sys.executable}); presence_sip: {ours}",
    ]


def _fmt(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _ratio(ours: float | None, kam: float | None) -> str:
    if ours is None or kam is None or kam == 0:
        return "n/a"
    return f"{ours / kam:.2f}x"


def render(
    results: dict[str, TargetResult], s: Settings, started: dt.datetime, elapsed: float
) -> str:
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
    for label, o, k, digits in rows:
        lines.append(f"| {label} | {_fmt(o, digits)} | {_fmt(k, digits)} | {_ratio(o, k)} |")
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
        f"{s.cycle_start}/s (cycles), x{s.factor} until a step fails, then {s.refine_steps} "
        "bisection steps. A step passes with failed-or-unfinished calls <= 0.1 %, "
        "retransmissions <= 1 % of the messages SIPp handled, and an achieved call rate >= 95 % "
        "of the asked rate.",
        f"- State: {s.presentities:,} presentities for PUBLISH (CSV injection); PUBLISH = "
        "initial publication, Expires 3600; a cycle = SUBSCRIBE, 200, NOTIFY, 200, SUBSCRIBE "
        f"Expires 0, 200, NOTIFY terminated, 200, over {s.watched:,} watched presentities that "
        "each got one PUBLISH after the server started (so NOTIFYs carry a PIDF body).",
        "- Latency: SIPp takes gettimeofday() before sending each PUBLISH and when its 200 "
        "arrives (`publish_timed.xml`), at 50 % of Kamailio's max PUBLISH rate.",
        "- Memory: PSS (proportional set size, shared pages split between the processes) of "
        "the server's process tree before and after establishing the subscriptions (Expires "
        "3600), scaled to 10,000.",
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
        lines += [f"- ERROR {err}" for err in res.errors]
        lines += ["", "```", *res.steps, "```"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def _latest_kamailio_publish() -> float:
    """Kamailio's max PUBLISH/s from the newest results file, else the issue's figure."""
    pattern = re.compile(r"^\| Max PUBLISH/s[^|]*\|[^|]*\| ([\d,]+) \|", re.MULTILINE)
    for path in sorted(RESULTS_DIR.glob("*.md"), reverse=True):
        m = pattern.search(path.read_text(errors="replace"))
        if m:
            return float(m.group(1).replace(",", ""))
    return float(FALLBACK_KAMAILIO_PUBLISH)


def preflight(targets: Sequence[str]) -> None:
    missing = [tool for tool in ("sipp", "taskset") if shutil.which(tool) is None]
    if "kamailio" in targets:
        if shutil.which("kamailio") is None:
            missing.append("kamailio")
        if not KAMAILIO_DBTEXT.is_dir():
            missing.append(f"{KAMAILIO_DBTEXT} (kamailio package)")
    if missing:
        sys.exit(
            "missing: " + ", ".join(missing) + "\n  apt-get install -y sip-tester kamailio "
            "kamailio-presence-modules util-linux"
        )
    if (os.cpu_count() or 1) < 2:
        sys.exit("needs 2 CPUs: server on CPU 0, SIPp on CPU 1")


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

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)  # also when started with SIGINT ignored
    started = dt.datetime.now()
    t0 = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="presence-bench-"))
    print(f"work directory: {workdir}", flush=True)
    results: dict[str, TargetResult] = {}
    try:
        csvs = write_csvs(workdir, s)
        for name in targets:
            server: Server = Kamailio(workdir) if name == "kamailio" else Ours(workdir)
            bench = Bench(server, s, csvs, workdir)
            results[name] = bench.run_all(
                lambda current: _latency_rate(args.latency_rate, results, current)
            )
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
