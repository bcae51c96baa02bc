"""Subprocesses of the benchmarks: start and reap them, and account for their CPU and memory.

Every process a benchmark starts goes through ``REAPER``, which kills it (its whole process
group) at the end, on errors and on Ctrl-C.  The accounting helpers read /proc.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from benchmarks.harness.config import NICE


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
            set_autogroup_nice(proc.pid, int(NICE[-1]))
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


def set_autogroup_nice(pid: int, nice: int) -> None:
    """Give the new session's scheduler autogroup the same nice level.

    With kernel.sched_autogroup_enabled=1 every session (each process started here runs in
    its own) competes with the other sessions as one group, whatever the nice value of its
    processes; /proc/<pid>/autogroup sets the weight of the group (sched(7)).
    """
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(str(nice))


def on_signal(signum: int, frame: FrameType | None) -> None:
    """SIGTERM/SIGINT handler: unwind as Ctrl-C does, so every process gets stopped."""
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
