"""Drive a real baresip (Debian ``baresip-core``) through its ``ctrl_tcp`` module.

ctrl_tcp frames JSON in netstrings (``<len>:<json>,``).  ``contacts`` prints one line per contact
with the presence status baresip shows (``Online``, ``Offline``, ``Busy``, ``Unknown``).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from pathlib import Path

from loopback import LOOPBACK, free_port

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CONTACT_LINE = re.compile(r"^[ >]\s*(Unknown|Online|Offline|Busy|Away)\s+.*<([^>]+)>")


class BaresipCtrl:
    """A netstring/JSON client of baresip's control socket."""

    def __init__(
        self, port: int, *, host: str = "127.0.0.1", connect_timeout: float = 10.0
    ) -> None:
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                self.sock = socket.create_connection((host, port), timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.buffer = b""
        self.token = 0

    def _read(self, timeout: float) -> dict[str, object]:
        self.sock.settimeout(timeout)
        while True:
            match = re.match(rb"(\d+):", self.buffer)
            if match:
                size = int(match.group(1))
                start = match.end()
                if len(self.buffer) >= start + size + 1:
                    payload = self.buffer[start : start + size]
                    self.buffer = self.buffer[start + size + 1 :]
                    return dict(json.loads(payload))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("baresip closed its control socket")
            self.buffer += chunk

    def command(self, name: str, params: str = "", timeout: float = 5.0) -> dict[str, object]:
        self.token += 1
        token = str(self.token)
        body = json.dumps({"command": name, "params": params, "token": token}).encode()
        self.sock.sendall(b"%d:%s," % (len(body), body))
        deadline = time.monotonic() + timeout
        while True:
            message = self._read(max(0.1, deadline - time.monotonic()))
            if message.get("response") and message.get("token") == token:
                message["data"] = _ANSI.sub("", str(message.get("data", "")))
                return message

    def contacts(self) -> dict[str, str]:
        """``{uri: status}`` as baresip shows them."""
        out: dict[str, str] = {}
        for line in str(self.command("contacts")["data"]).splitlines():
            match = _CONTACT_LINE.match(line)
            if match:
                out[match.group(2)] = match.group(1)
        return out

    def wait_status(self, uri: str, want: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.contacts().get(uri)
            if last == want:
                return last
            time.sleep(0.2)
        raise TimeoutError(f"{uri}: wanted {want}, baresip last showed {last}")

    def close(self) -> None:
        self.sock.close()


def baresip_sip_port(*, avoid: int = 0) -> int:
    """A ``sip_listen`` port for baresip, which listens on UDP and TCP there and on SIP/TLS at
    the next port: all three free right now, and neither is ``avoid`` (the ctrl_tcp port picked
    before).  (``free_port`` alone once gave a port whose next one an outgoing TCP connection
    held, and baresip exited with "Address already in use".)"""
    for _ in range(50):
        port = free_port()
        if avoid in (port, port + 1):
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tls:
            try:
                tls.bind((LOOPBACK, port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no port free for baresip's UDP, TCP and TLS on {LOOPBACK}")


def write_profile(
    directory: Path, *, sip_port: int, ctrl_port: int, account: str, contacts: list[str]
) -> None:
    """A headless baresip profile: loopback only, no audio, ctrl_tcp, presence."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config").write_text(
        "poll_method\t\tepoll\n"
        f"sip_listen\t\t127.0.0.1:{sip_port}\n"
        "dns_server\t\t127.0.0.1:53\n"
        "module_path\t\t/usr/lib/baresip/modules\n"
        "module\t\t\tctrl_tcp.so\n"
        "module_tmp\t\tuuid.so\n"
        "module_tmp\t\taccount.so\n"
        "module_app\t\tcontact.so\n"
        "module_app\t\tpresence.so\n"
        f"ctrl_tcp_listen\t\t127.0.0.1:{ctrl_port}\n"
    )
    (directory / "accounts").write_text(account + "\n")
    (directory / "contacts").write_text("".join(c + "\n" for c in contacts))


def start_baresip(directory: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            ["baresip", "-f", str(directory), "-s"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop_baresip(process: subprocess.Popen[bytes], ctrl: BaresipCtrl | None) -> int:
    if ctrl is not None:
        try:
            ctrl.command("quit")
        except (OSError, ConnectionError):
            pass
        ctrl.close()
    try:
        return process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.terminate()
        return process.wait(timeout=5)
