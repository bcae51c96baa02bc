"""The presence servers under test (Kamailio 5.6 and ours) and the tools a run needs."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.harness.config import (
    DOMAIN,
    HOST,
    KAMAILIO_CFG,
    KAMAILIO_DBTEXT,
    MAX_PUBLICATIONS,
    NICE,
    PORTS,
    REPO_DIR,
    SERVER_CPU,
    BenchError,
)
from benchmarks.harness.probe import options_ping
from benchmarks.harness.processes import REAPER


def ours_command(port: int, data_dir: Path, config: Path | None = None) -> list[str]:
    """Command line of our server.  THE place to change when `presence-sip serve` changes.
    ``config``: a config file (:func:`write_ours_config`), the flags overriding it."""
    return [
        sys.executable, "-m", "presence_sip", "serve",
        *([str(config)] if config is not None else []),
        "--domain", DOMAIN,
        "--listen", f"udp:{HOST}:{port}",
        "--auth", "none",
        "--default-policy", "allow",
        "--data", str(data_dir),
        "--log-level", "WARNING",
    ]  # fmt: skip


OURS_CONFIG = f"""\
# Written by benchmarks/harness/servers.py for one bench run; the command line sets the rest.
[network.presence]
max_publications = {MAX_PUBLICATIONS}  # benchmarks/harness/config.py MAX_PUBLICATIONS

[[node]]
"""
"""What ``serve.toml`` holds: ``max_publications`` can only be set in a config file."""


def write_ours_config(rundir: Path) -> Path:
    """``RUNDIR/serve.toml`` (:data:`OURS_CONFIG`)."""
    path = rundir / "serve.toml"
    path.write_text(OURS_CONFIG, encoding="utf-8")
    return path


OURS_SETTINGS = (
    "`presence-sip serve serve.toml --domain example.test --listen udp:127.0.0.1:PORT "
    "--auth none --default-policy allow --data TMPDIR --log-level WARNING`, `serve.toml` "
    f"setting `[network.presence] max_publications = {MAX_PUBLICATIONS}` only (with the "
    "default, 64, a PUBLISH step would end publications once rate x step seconds / "
    "presentities passes 64, above ~42,700/s in --quick; Kamailio has no such limit), "
    "pinned to CPU 0"
)
KAMAILIO_SETTINGS = (
    "Kamailio 5.6 `benchmarks/kamailio/kamailio.cfg`: presence + presence_xml, "
    "`publ_cache=2`, `subs_db_mode=0` (memory only), `subs_respond_200=1`, "
    "`send_fast_notify=1`, `force_active=1`, no auth, `children=2`, UDP on 127.0.0.1, "
    "`-DD -E -m 1024 -M 16`, tm's `wt_timer` at its default (a completed transaction is kept "
    "5 s), pinned to CPU 0"
)
TABLE_FULL = "transaction table full"
"""What our server logs (at most once a minute) while its transaction table is full and it ends
Completed transactions before Timer J to make room (``transaction/manager.py``)."""


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
        self.rundir: Path | None = None
        """The directory of the latest start (holds its ``server.log``)."""

    def command(self, rundir: Path) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        return None

    def start(self) -> None:
        """Start a fresh server and wait until it answers OPTIONS."""
        self.stop()
        check_port_free(self.port)
        self.starts += 1
        rundir = self.rundir = self.workdir / f"run{self.starts}"
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

    def table_filled(self) -> bool:
        """Did the latest run fill the transaction table (see :data:`TABLE_FULL`)?  Only our
        server says so; Kamailio keeps every completed transaction for its ``wt_timer``."""
        return False


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
    """presence-sip serve (see ours_command), plus ``extra_args`` (e.g. ``--loop asyncio``)."""

    name = "ours"
    settings = OURS_SETTINGS
    with_config = True
    """Run with :func:`write_ours_config` (as :data:`OURS_SETTINGS` says); False: flags only."""

    def __init__(self, workdir: Path, extra_args: Sequence[str] = ()) -> None:
        super().__init__(workdir)
        self.extra_args = list(extra_args)

    def command(self, rundir: Path) -> list[str]:
        data = rundir / "data"
        data.mkdir()
        config = write_ours_config(rundir) if self.with_config else None
        return [*ours_command(self.port, data, config), *self.extra_args]

    def table_filled(self) -> bool:
        if self.rundir is None:
            return False
        log = self.rundir / "server.log"
        return log.exists() and TABLE_FULL in log.read_text(errors="replace")

    def env(self) -> dict[str, str] | None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_DIR), env.get("PYTHONPATH")]))
        return env


def check_port_free(port: int) -> None:
    """Raise BenchError when UDP 127.0.0.1:``port`` cannot be bound (something listens)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            raise BenchError(f"UDP {HOST}:{port} is busy: {exc}") from exc


def preflight(targets: Sequence[str]) -> None:
    """Exit with an install hint when SIPp, taskset or (for its target) Kamailio is missing."""
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
