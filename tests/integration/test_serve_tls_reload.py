"""``presence-sip serve`` reloads its TLS certificates on SIGHUP, for every node of the process:
new connections get the new certificate, connections up keep theirs and go on working, and a
broken file keeps the certificate in use (one ERROR line) without stopping the node."""

from __future__ import annotations

import signal
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from serve_process import LOOPBACK, ServeProcess, TcpClient, build_request, free_port

from presence_sip.sip import Response, parse_message
from presence_sip.transport import pki

NETWORK = "net-b.test"


def issue(certs: Path, name: str) -> pki.NodeFiles:
    return pki.load_or_create(certs, pki.NodeSpec(NETWORK, name, (LOOPBACK,)))


def renew(certs: Path, name: str) -> pki.NodeFiles:
    """A new key and certificate by the same CA in place of the old files (``certs node``
    keeps a valid certificate, so it goes first)."""
    (certs / NETWORK / f"{name}.pem").unlink()
    return issue(certs, name)


def serial_of(files: pki.NodeFiles) -> int:
    return x509.load_pem_x509_certificate(files.cert.read_bytes()).serial_number


class TlsClient(TcpClient):
    """A TLS connection to 127.0.0.1:``port`` that verifies the node's certificate (by the
    network's CA, for the address) and presents none."""

    def __init__(self, port: int, ca: Path) -> None:
        context = ssl.create_default_context(cafile=str(ca))
        raw = socket.create_connection((LOOPBACK, port), timeout=5.0)
        super().__init__(sock=context.wrap_socket(raw, server_hostname=LOOPBACK))
        assert isinstance(self.sock, ssl.SSLSocket)
        der = self.sock.getpeercert(binary_form=True)
        assert der is not None
        self.serial = x509.load_der_x509_certificate(der).serial_number
        """The serial of the certificate the node presented."""

    def __enter__(self) -> TlsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def options(self, call_id: str) -> Response:
        request = build_request("OPTIONS", f"sip:{NETWORK}", self, transport="TLS", call_id=call_id)
        self.sock.sendall(request)
        answer = self.read_message()
        assert answer is not None, "the node closed the connection"
        response = parse_message(answer)
        assert isinstance(response, Response)
        return response


def serial_presented(port: int, ca: Path) -> int:
    """The serial of the certificate a new connection to ``port`` gets."""
    with TlsClient(port, ca) as client:
        return client.serial


def wait_for(node: ServeProcess, text: str, count: int) -> str:
    """The node's log once ``text`` is in it ``count`` times (at most 10 s)."""
    deadline = time.monotonic() + 10
    while (log := node.log_text()).count(text) < count:
        assert time.monotonic() < deadline, f"{text!r} not logged {count} times"
        time.sleep(0.05)
    return log


def start_two_nodes(
    serve_factory: Callable[..., ServeProcess],
    directory: Path,
    ps1: pki.NodeFiles,
    ps2: pki.NodeFiles,
) -> tuple[ServeProcess, int, int]:
    """One ``serve`` running ps1 (UDP, TCP, TLS) and ps2 (TLS, its chain file as certificate)
    from a config file; the node and the TLS ports of ps1 and ps2."""
    port, tls1, tls2 = free_port(), free_port(), free_port()
    config = directory / "net-b.toml"
    config.write_text(
        f"""
[network]
domain = "{NETWORK}"
ca = "{ps1.ca}"

[[node]]
name = "ps1"
listen = ["udp:{LOOPBACK}:{port}", "tcp:{LOOPBACK}:{port}", "tls:{LOOPBACK}:{tls1}"]
cert = "{ps1.cert}"
key = "{ps1.key}"

[[node]]
name = "ps2"
listen = ["tls:{LOOPBACK}:{tls2}"]
cert = "{ps2.chain}"
key = "{ps2.key}"
""",
        encoding="utf-8",
    )
    return serve_factory(config=config, port=port), tls1, tls2


def test_sighup_reloads_the_certificates_of_every_node(
    serve_factory: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    certs = tmp_path / "certs"
    ps1, ps2 = issue(certs, "ps1"), issue(certs, "ps2")
    node, tls1, tls2 = start_two_nodes(serve_factory, tmp_path, ps1, ps2)
    assert node.process is not None
    with TlsClient(tls1, ps1.ca) as held:
        assert held.serial == serial_of(ps1)
        assert held.options("before").status == 200
        assert serial_presented(tls2, ps2.ca) == serial_of(ps2)

        # Rotation: new keys and certificates from the same CA, then SIGHUP.
        ps1, ps2 = renew(certs, "ps1"), renew(certs, "ps2")
        node.process.send_signal(signal.SIGHUP)
        log = wait_for(node, ": TLS reloaded: new connections get ", 2)
        assert f"ps1: TLS reloaded: new connections get {ps1.cert} (" in log
        assert f"serial {serial_of(ps1):x}, not after " in log
        assert f"ps2: TLS reloaded: new connections get {ps2.chain} (" in log
        assert f"serial {serial_of(ps2):x}, not after " in log
        with TlsClient(tls1, ps1.ca) as fresh:
            assert fresh.serial == serial_of(ps1) != held.serial
            assert fresh.options("after").status == 200
        assert serial_presented(tls2, ps2.ca) == serial_of(ps2)
        assert held.options("held").status == 200  # up before the reload: its certificate kept

        # A key cut short (a copy that failed half-way): ps1 keeps the certificate in use.
        good = ps1.key.read_bytes()
        ps1.key.write_bytes(good[: len(good) // 2])
        node.process.send_signal(signal.SIGHUP)
        log = wait_for(node, "ps2: TLS reloaded", 2)  # (after ps1's attempt: nodes go in order)
        errors = [line for line in log.splitlines() if " ERROR " in line]
        assert len(errors) == 1, errors
        assert "ps1: TLS reload failed, the certificates in use are kept: " in errors[0]
        assert f"with key {ps1.key}: " in errors[0]
        assert log.count("ps1: TLS reloaded") == 1
        assert node.process.poll() is None
        with TlsClient(tls1, ps1.ca) as again:
            assert again.serial == serial_of(ps1)
            assert again.options("still").status == 200
        assert held.options("held-still").status == 200
    assert node.process.poll() is None
    assert "Traceback" not in node.log_text()
