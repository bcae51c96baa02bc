"""Run one SIPp scenario through pysipp, on loopback only, bounded in time.

``run_scenario`` runs a client scenario to the end and returns a :class:`SippResult`;
``start_scenario`` starts one (typically a UAS playing a peer) and returns a :class:`SippRun`
handle to wait for readiness and collect the result later::

    with start_scenario(UAS_XML, None, local_port=port) as uas:
        uas.wait_listening()
        result = run_scenario(OPTIONS_XML, ("127.0.0.1", port))
    assert result.ok and uas.wait().ok

Guarantees:

* Loopback only: the target must be a loopback IP literal (no name is ever resolved); SIPp binds
  its SIP, media and control sockets to ``127.0.0.1`` (``-i``, ``-mi``, ``-ci``).
* Never hangs: SIPp gets ``-timeout`` (a soft global timeout); if it is still alive
  ``HARD_KILL_AFTER`` seconds later it gets SIGTERM, then SIGKILL.  A run returns within about
  ``timeout + HARD_KILL_AFTER + 2`` seconds whatever SIPp does.
* Counts come from SIPp's ``-trace_stat`` CSV (cumulative columns of its last line), with the
  ``-trace_screen`` dump as a fallback.

pysipp 0.1.0 has no field for ``-trace_stat``, ``-ci`` or ``-nostdin``; they reach SIPp through a
small wrapper script used as the agent's ``bin_path`` (the way TOOLCHAIN.md suggests).
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from loopback import free_port
from pysipp_compat import pysipp

__all__ = [
    "HARD_KILL_AFTER",
    "BoundSocket",
    "SippResult",
    "SippRun",
    "bound_sockets",
    "run_scenario",
    "start_scenario",
]

#: Seconds past ``timeout`` before a still-running SIPp is terminated.
HARD_KILL_AFTER = 2.0
#: SIPp transports this runner accepts (Debian's SIPp has no TLS), mapped to socket kinds.
TRANSPORTS = {"u1": "udp", "un": "udp", "t1": "tcp", "tn": "tcp"}
LOCAL_HOST = "127.0.0.1"
_STDERR_TAIL = 4000
_POLL = 0.05


@dataclass(frozen=True, slots=True)
class SippResult:
    """What one SIPp run did."""

    returncode: int
    """SIPp's exit code (0 all calls ok, 1 some failed, 97 global timeout, 255 usage error, ...);
    negative when the runner had to kill it."""
    successful: int
    """Cumulative ``SuccessfulCall`` count."""
    failed: int
    """Cumulative ``FailedCall`` count."""
    retransmissions: int
    """Cumulative ``Retransmissions`` count (messages SIPp sent again)."""
    stderr_tail: str
    """The last few thousand characters of SIPp's stderr."""
    messages_log: str
    """The ``-trace_msg`` message trace (every message sent and received), or ``""``."""
    timed_out: bool = False
    """True when the runner had to kill SIPp."""

    @property
    def ok(self) -> bool:
        """Exit code 0, at least one successful call, no failed call."""
        return self.returncode == 0 and self.successful > 0 and self.failed == 0


@dataclass(frozen=True, slots=True)
class BoundSocket:
    """One socket a process holds, as seen in ``/proc/net``."""

    proto: str
    """``udp`` or ``tcp``."""
    host: str
    port: int
    listening: bool
    """TCP: in LISTEN state; UDP: always True."""


class _Spawner:
    """pysipp's ``subprocmod``: starts SIPp with our stdin/stdout and remembers the process."""

    PIPE = subprocess.PIPE

    def __init__(self, stdout_path: Path) -> None:
        self.stdout_path = stdout_path
        self.procs: list[subprocess.Popen[bytes]] = []

    def Popen(self, args: Sequence[str], stdout: IO[bytes], stderr: int) -> subprocess.Popen[bytes]:
        stdout.close()  # pysipp's own devnull handle, which it would never close
        with self.stdout_path.open("ab") as out:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=stderr)
        self.procs.append(proc)
        return proc


class SippRun:
    """A started SIPp process; :meth:`wait` collects its :class:`SippResult`."""

    def __init__(
        self,
        *,
        runner: Any,
        spawner: _Spawner,
        workdir: Path,
        keep_workdir: bool,
        proto: str,
        local_port: int,
        timeout: float,
    ) -> None:
        self._runner = runner
        self._spawner = spawner
        self.workdir = workdir
        self._keep_workdir = keep_workdir
        self.proto = proto
        self.local_port = local_port
        self.timeout = timeout
        self._started = time.monotonic()
        self._result: SippResult | None = None
        if len(spawner.procs) != 1:
            raise RuntimeError(f"expected one SIPp process, pysipp started {len(spawner.procs)}")
        self.proc = spawner.procs[0]

    def __enter__(self) -> SippRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.kill()
        self.wait()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_listening(self, timeout: float = 5.0) -> None:
        """Block until SIPp has bound its SIP socket on ``local_port`` (no probe traffic sent)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                result = self.wait()
                raise RuntimeError(f"SIPp exited with {result.returncode}: {result.stderr_tail}")
            if any(
                s.proto == self.proto and s.port == self.local_port and s.listening
                for s in bound_sockets(self.pid)
            ):
                return
            time.sleep(_POLL)
        self.kill()
        raise TimeoutError(f"SIPp did not bind {self.proto} port {self.local_port} in {timeout}s")

    def kill(self) -> None:
        """SIGTERM, then SIGKILL after two seconds."""
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5.0)

    def wait(self) -> SippResult:
        """Wait for SIPp to end (killing it past the deadline) and return the result."""
        if self._result is not None:
            return self._result
        deadline = self._started + self.timeout + HARD_KILL_AFTER
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(_POLL)
        timed_out = self.proc.poll() is None
        if timed_out:
            self.kill()
        # pysipp's collector thread has seen the exit.  (Its `finalize` would also log a failure
        # report, but that does str() on bytes: an error under `python -bb`; stderr_tail has it.)
        self._runner.get(timeout=10)
        self._result = self._collect(timed_out)
        if not self._keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return self._result

    def _collect(self, timed_out: bool) -> SippResult:
        streams = getattr(self.proc, "streams", None)
        stderr = streams.stderr if streams is not None and streams.stderr else b""
        counts = _read_stat_counts(self.workdir / "stat.csv") or _read_screen_counts(
            self.workdir / "screen.log"
        )
        messages = self.workdir / "messages.log"
        return SippResult(
            returncode=self.proc.returncode if self.proc.returncode is not None else -1,
            successful=counts.get("SuccessfulCall", 0),
            failed=counts.get("FailedCall", 0),
            retransmissions=counts.get("Retransmissions", 0),
            stderr_tail=stderr.decode("utf-8", "replace")[-_STDERR_TAIL:],
            messages_log=messages.read_text("utf-8", "replace") if messages.exists() else "",
            timed_out=timed_out,
        )


def start_scenario(
    xml_path: Path | str,
    target: tuple[str, int] | None,
    *,
    transport: str = "u1",
    calls: int = 1,
    rate: float | None = None,
    keys: Mapping[str, str] | None = None,
    inf: Path | None = None,
    timeout: float = 30,
    local_port: int | None = None,
    recv_timeout: float | None = None,
    trace_messages: bool = True,
    logdir: Path | None = None,
    sipp_binary: str | None = None,
) -> SippRun:
    """Start SIPp on ``xml_path``; ``target`` is the peer (``None`` for a UAS that only answers).

    ``rate`` is calls per second (SIPp's default 10 when ``None``); ``recv_timeout`` (seconds,
    default ``min(5, timeout)``) fails a call that waits longer for an expected message.
    ``logdir`` keeps SIPp's files there instead of a temporary directory removed after
    :meth:`SippRun.wait`.  ``sipp_binary`` replaces ``sipp`` on PATH (tests of the runner).
    """
    xml = Path(xml_path).resolve()
    if not xml.is_file():
        raise FileNotFoundError(f"no SIPp scenario at {xml}")
    if transport not in TRANSPORTS:
        raise ValueError(f"transport {transport!r} not one of {sorted(TRANSPORTS)}")
    if target is not None:
        _check_loopback(target[0])
    binary = sipp_binary or shutil.which("sipp")
    if binary is None:
        raise FileNotFoundError("sipp not found: install Debian's sip-tester (make install)")
    workdir = Path(tempfile.mkdtemp(prefix="sipp-", dir=logdir))
    port = local_port or free_port(LOCAL_HOST)
    spawner = _Spawner(workdir / "stdout.log")
    agent = pysipp.agent.ua(
        **_agent_args(
            xml=xml,
            target=target,
            transport=transport,
            calls=calls,
            rate=rate,
            keys=keys,
            inf=inf,
            timeout=timeout,
            port=port,
            recv_timeout=recv_timeout,
            trace_messages=trace_messages,
            workdir=workdir,
            wrapper=_write_wrapper(workdir, binary),
        )
    )
    runner = pysipp.launch.PopenRunner(subprocmod=spawner)
    agent(block=False, runner=runner, raise_exc=False, timeout=timeout)
    return SippRun(
        runner=runner,
        spawner=spawner,
        workdir=workdir,
        keep_workdir=logdir is not None,
        proto=TRANSPORTS[transport],
        local_port=port,
        timeout=timeout,
    )


def run_scenario(
    xml_path: Path | str,
    target: tuple[str, int] | None,
    *,
    transport: str = "u1",
    calls: int = 1,
    rate: float | None = None,
    keys: Mapping[str, str] | None = None,
    inf: Path | None = None,
    timeout: float = 30,
    local_port: int | None = None,
    recv_timeout: float | None = None,
    trace_messages: bool = True,
    logdir: Path | None = None,
    sipp_binary: str | None = None,
) -> SippResult:
    """Run SIPp on ``xml_path`` against ``target`` to the end; see :func:`start_scenario`."""
    run = start_scenario(
        xml_path, target, transport=transport, calls=calls, rate=rate, keys=keys, inf=inf,
        timeout=timeout, local_port=local_port, recv_timeout=recv_timeout,
        trace_messages=trace_messages, logdir=logdir, sipp_binary=sipp_binary,
    )  # fmt: skip
    with run:
        return run.wait()


def _agent_args(
    *,
    xml: Path,
    target: tuple[str, int] | None,
    transport: str,
    calls: int,
    rate: float | None,
    keys: Mapping[str, str] | None,
    inf: Path | None,
    timeout: float,
    port: int,
    recv_timeout: float | None,
    trace_messages: bool,
    workdir: Path,
    wrapper: Path,
) -> dict[str, Any]:
    """pysipp agent fields (each becomes one SIPp option)."""
    args: dict[str, Any] = {
        "scen_file": str(xml),
        "bin_path": str(wrapper),
        "local_host": LOCAL_HOST,
        "local_port": port,
        "media_addr": LOCAL_HOST,
        "transport": transport,
        "call_count": calls,
        "rate": rate if rate is not None else 10,
        "limit": max(calls, 1),
        "recv_timeout": int(1000 * (recv_timeout if recv_timeout is not None else min(5, timeout))),
        "timeout": f"{max(1, int(timeout))}s",
        "key_vals": dict(keys or {}),
        "screen_file": str(workdir / "screen.log"),
        "log_file": str(workdir / "log.log"),
    }
    if target is not None:
        args["remote_host"], args["remote_port"] = target
    if inf is not None:
        args["info_file"] = str(Path(inf).resolve())
    if trace_messages:
        args["trace_message"] = True
        args["message_file"] = str(workdir / "messages.log")
    return args


SOCKET_BUFFER = 4 * 1024 * 1024
"""SIPp's ``-buff_size`` (send and receive; Linux caps it at net.core.[rw]mem_max).

SIPp's default, 64 KiB, holds about 60 NOTIFYs: one PUBLISH to the fan-out test's 1,000 watchers
on one SIPp socket lost ~3,700 datagrams in the kernel, and the test (38 s) passed only through
the node's Timer E retransmissions, which went on for most of Timer F's 32 s.  Once (CI,
2026-11-26) the last 16 watchers, last in every retransmitted burst, were still unserved when
Timer F ended their subscriptions.  With 4 MiB: no loss and a 6 s test; capped at the default
net.core.rmem_max of 208 KiB: ~1,100 lost, and a 9 s test."""


def _write_wrapper(workdir: Path, binary: str) -> Path:
    """A ``bin_path`` script adding the SIPp options pysipp 0.1.0 has no field for."""
    wrapper = workdir / "sipp.sh"
    stat = shlex.quote(str(workdir / "stat.csv"))
    wrapper.write_text(
        "#!/bin/sh\n"
        f"exec {shlex.quote(binary)} -nostdin -ci {LOCAL_HOST}"
        f' -trace_stat -stf {stat} -fd 1 -buff_size {SOCKET_BUFFER} "$@"\n',
        encoding="utf-8",
    )
    wrapper.chmod(0o700)
    return wrapper


def _check_loopback(host: str) -> None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"target {host!r} is not an IP literal (never resolved)") from None
    if not address.is_loopback:
        raise ValueError(f"target {host} is not a loopback address")


def _read_stat_counts(path: Path) -> dict[str, int]:
    """Cumulative counters from the last line of a ``-trace_stat`` CSV (``Name(C)`` columns)."""
    if not path.exists():
        return {}
    lines = [line for line in path.read_text("utf-8", "replace").splitlines() if line.strip()]
    if len(lines) < 2:
        return {}
    header, last = lines[0].split(";"), lines[-1].split(";")
    counts: dict[str, int] = {}
    for name, value in zip(header, last, strict=False):
        if name.endswith("(C)") and value.strip().isdigit():
            counts[name[: -len("(C)")]] = int(value)
    return counts


_SCREEN_COUNTERS = {"SuccessfulCall": "Successful call", "FailedCall": "Failed call"}


def _read_screen_counts(path: Path) -> dict[str, int]:
    """Counters from the statistics screen of a ``-trace_screen`` dump (last table wins)."""
    if not path.exists():
        return {}
    text = path.read_text("utf-8", "replace")
    counts: dict[str, int] = {}
    for key, label in _SCREEN_COUNTERS.items():
        found = re.findall(rf"{label}\s*\|\s*\d+\s*\|\s*(\d+)", text)
        if found:
            counts[key] = int(found[-1])
    retrans = re.findall(r"^\s*\S+\s+(?:-+>|<-+)\s+(?:\S+\s+)?\d+\s+(\d+)", text, re.MULTILINE)
    counts["Retransmissions"] = sum(int(n) for n in retrans)
    return counts


def bound_sockets(pid: int) -> list[BoundSocket]:
    """The UDP/TCP sockets process ``pid`` holds, from ``/proc`` (Linux); ``[]`` if it is gone."""
    inodes = set(_socket_inodes(pid))
    found: list[BoundSocket] = []
    for table in ("udp", "udp6", "tcp", "tcp6"):
        for inode, host, port, state in _proc_net(table):
            if inode in inodes:
                proto = table.rstrip("6")
                found.append(BoundSocket(proto, host, port, proto == "udp" or state == "0A"))
    return found


def _socket_inodes(pid: int) -> Iterator[int]:
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        entries = list(fd_dir.iterdir())
    except OSError:
        return
    for entry in entries:
        try:
            link = os.readlink(entry)
        except OSError:
            continue
        if link.startswith("socket:["):
            yield int(link[len("socket:[") : -1])


def _proc_net(table: str) -> Iterator[tuple[int, str, int, str]]:
    """(inode, local host, local port, state) rows of ``/proc/net/<table>``."""
    try:
        lines = Path(f"/proc/net/{table}").read_text("ascii").splitlines()[1:]
    except OSError:
        return
    for line in lines:
        fields = line.split()
        if len(fields) < 10:
            continue
        hex_host, hex_port = fields[1].split(":")
        yield int(fields[9]), _decode_proc_address(hex_host), int(hex_port, 16), fields[3]


def _decode_proc_address(hex_host: str) -> str:
    """``/proc/net`` prints addresses as 32-bit words in host (little-endian) byte order."""
    raw = bytes.fromhex(hex_host)
    swapped = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(swapped))
