"""``presence-sip demo --once`` from a clean data and certificate directory: every step, exit 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_demo(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "presence_sip", "demo", "--once",
         "--data", str(tmp_path / "data"), "--certs", str(tmp_path / "certs")],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip


def test_demo_once_runs_the_flow_and_exits_zero(tmp_path: Path) -> None:
    result = run_demo(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "[0] TLS OPTIONS: SIP/2.0 200 OK" in out
    assert "[2] B's status: open" in out
    assert "[3] NOTIFY active;expires=600: open" in out
    assert "[4] watcher sees B: closed (In a meeting)" in out
    assert "[done]" in out
    assert (tmp_path / "certs" / "net-b.test" / "ca.pem").exists()
    # A second run reuses the subscribers and certificates it made the first time.
    again = run_demo(tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr


def test_demo_names_the_failing_step_when_a_port_is_taken(tmp_path: Path) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocker:
        blocker.bind(("127.0.2.1", 5060))
        result = run_demo(tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("presence-sip: error: cannot listen")
    assert "127.0.2.1" in result.stderr
