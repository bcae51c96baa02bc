"""``presence-sip serve`` as a subprocess: what every UAS answers before any role (RFC 3261 §8.2).

Each test talks to a real node on 127.0.0.1 over UDP (and TCP where framing matters) with raw
bytes, and checks the exact status and the headers the RFC names for it.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import serve_process
from serve_process import (
    LOOPBACK,
    ServeProcess,
    TcpClient,
    UdpClient,
    build_request,
    parse_response,
    serve_command,
)

from presence_sip.sip import Response
from presence_sip.transport import pki

DOMAIN = "example.test"
UDP_MAX_PAYLOAD = 65_507
"""The largest UDP payload IPv4 carries (65535 - 20 IP - 8 UDP)."""


def tokens(response: Response, name: str) -> set[str]:
    """The comma-separated values of every ``name`` header, as a set."""
    return {
        token.strip()
        for value in response.headers.get_all(name)
        for token in value.split(",")
        if token.strip()
    }


def ask(node: ServeProcess, method: str, uri: str | None = None, **kwargs: object) -> Response:
    with UdpClient() as client:
        data = build_request(method, uri or f"sip:{DOMAIN}", client, **kwargs)  # type: ignore[arg-type]
        return client.request(data, node)


# -- OPTIONS ------------------------------------------------------------------------------------


def check_options_200(response: Response) -> None:
    """RFC 3261 §11.2: 200 with Allow, Accept, Supported; RFC 6665 §8.2.2: Allow-Events."""
    assert response.status == 200, response
    allow = tokens(response, "Allow")
    assert {"OPTIONS", "REGISTER", "SUBSCRIBE", "PUBLISH", "ACK", "CANCEL"} <= allow, allow
    assert "INVITE" not in allow
    assert "presence" in tokens(response, "Allow-Events")
    assert "application/pidf+xml" in tokens(response, "Accept")
    assert "Supported" in response.headers
    assert response.to.tag  # RFC 3261 §8.2.6.2


def test_options_over_udp(shared_serve: ServeProcess) -> None:
    with UdpClient() as client:
        request = build_request("OPTIONS", f"sip:{DOMAIN}", client, call_id="opt-udp")
        response = client.request(request, shared_serve)
    check_options_200(response)
    assert response.call_id == f"opt-udp@{LOOPBACK}"
    assert response.cseq.method == "OPTIONS"
    # RFC 3581 §4: rport filled with the source port, received added.
    via = response.top_via
    assert via.rport == client.port
    assert via.received == LOOPBACK


def tcp_request(client: TcpClient, method: str, uri: str, **kwargs: object) -> bytes:
    return build_request(method, uri, client, transport="TCP", **kwargs)  # type: ignore[arg-type]


def test_options_over_tcp(shared_serve: ServeProcess) -> None:
    client = TcpClient(shared_serve)
    try:
        client.sock.sendall(tcp_request(client, "OPTIONS", f"sip:{DOMAIN}"))
        raw = client.read_message()
        assert raw is not None
        check_options_200(parse_response(raw))
        # The connection stays open for the next request (connection reuse, RFC 3261 §18.2.2).
        client.sock.sendall(tcp_request(client, "OPTIONS", f"sip:{DOMAIN}"))
        again = client.read_message()
        assert again is not None
        assert parse_response(again).status == 200
    finally:
        client.close()


def test_oversize_tcp_message_gets_513_and_close(shared_serve: ServeProcess) -> None:
    """Content-Length over the cap: 513 if the head can be answered, then the connection closes."""
    client = TcpClient(shared_serve)
    try:
        request = tcp_request(client, "OPTIONS", f"sip:{DOMAIN}", body=b"x" * 70_000)
        client.sock.sendall(request)
        raw = client.read_message()
        assert raw is not None, "closed without a 513"
        assert parse_response(raw).status == 513
        assert client.closed_by_peer()
    finally:
        client.close()


# -- status codes of RFC 3261 §8.2 ----------------------------------------------------------------


def test_unknown_method_gets_501_with_allow(shared_serve: ServeProcess) -> None:
    response = ask(shared_serve, "FROBNICATE")
    assert response.status == 501  # RFC 3261 §8.2.1
    assert "OPTIONS" in tokens(response, "Allow")


def invite_exchange(client: UdpClient, node: ServeProcess) -> tuple[bytes, Response]:
    request = build_request(
        "INVITE",
        f"sip:alice@{DOMAIN}",
        client,
        headers=[("Contact", f"<sip:t@{client.host}:{client.port}>")],
    )
    client.send(request, node)
    raw = client.recv(5.0)
    assert raw is not None, "no answer to INVITE"
    return request, parse_response(raw)


def ack_for(request: bytes, response: Response) -> bytes:
    """RFC 3261 §17.1.1.3: the ACK for a non-2xx final response (same branch, the response's To)."""
    head = request.split(b"\r\n\r\n", 1)[0].decode()
    lines = []
    for line in head.split("\r\n"):
        if line.startswith("INVITE "):
            line = "ACK " + line[len("INVITE ") :]
        elif line.startswith("To:"):
            line = f"To: {response.headers.get('To')}"
        elif line.startswith("CSeq:"):
            line = line.replace("INVITE", "ACK")
        elif line.startswith(("Contact:", "Content-Length:")):
            continue
        lines.append(line)
    return ("\r\n".join([*lines, "Content-Length: 0"]) + "\r\n\r\n").encode()


def test_invite_gets_405_with_allow_and_the_ack_is_absorbed(shared_serve: ServeProcess) -> None:
    with UdpClient() as client:
        request, response = invite_exchange(client, shared_serve)
        assert response.status == 405  # RFC 3261 §8.2.1: presence-sip serves no INVITE
        allow = tokens(response, "Allow")
        assert "INVITE" not in allow
        assert {"OPTIONS", "REGISTER"} <= allow
        client.send(ack_for(request, response), shared_serve)
        # The ACK matches nothing (the 405 was sent statelessly) and gets no response.
        assert client.recv_all(quiet=1.3) == []


def test_invite_405_is_stateless(shared_serve: ServeProcess) -> None:
    """RFC 3261 §8.2.7: without the ACK nothing is resent (no Timer G: a source that never ACKs,
    a spoofed one, got the 405 11 times over 32 s); the INVITE's retransmission gets the same
    405 again, To-tag included."""
    with UdpClient() as client:
        request, response = invite_exchange(client, shared_serve)
        assert client.recv_all(quiet=1.3) == []
        client.send(request, shared_serve)
        again = client.recv(5.0)
        assert again is not None, "no answer to the INVITE's retransmission"
        assert parse_response(again).status == 405
        assert parse_response(again).to.tag == response.to.tag


def test_unknown_require_gets_420_with_unsupported(shared_serve: ServeProcess) -> None:
    response = ask(shared_serve, "OPTIONS", headers=[("Require", "foo")])
    assert response.status == 420  # RFC 3261 §8.2.2.3
    assert tokens(response, "Unsupported") == {"foo"}


def test_unknown_uri_scheme_gets_416(shared_serve: ServeProcess) -> None:
    response = ask(shared_serve, "OPTIONS", "foo:bar@example.test", to=f"<sip:bob@{DOMAIN}>")
    assert response.status == 416  # RFC 3261 §8.2.2.1


@pytest.mark.parametrize("method", ["OPTIONS", "SUBSCRIBE", "REGISTER", "MESSAGE"])
def test_foreign_domain_gets_403_and_is_never_forwarded(
    shared_serve: ServeProcess, method: str
) -> None:
    """Never an open relay (DESIGN.md): neither the Request-URI nor a Route header is followed."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as trap_udp,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as trap_tcp,
    ):
        trap_udp.bind(("127.0.0.2", 0))
        port = trap_udp.getsockname()[1]
        trap_tcp.bind(("127.0.0.2", port))
        trap_tcp.listen()
        trap_tcp.settimeout(0.2)
        trap_udp.settimeout(0.2)
        targets = [
            (f"sip:bob@127.0.0.2:{port}", []),
            ("sip:bob@foreign.example", [("Route", f"<sip:127.0.0.2:{port};lr>")]),
            (f"sip:bob@127.0.0.2:{port};transport=tcp", []),
        ]
        for uri, headers in targets:
            response = ask(shared_serve, method, uri, headers=[*headers, ("Event", "presence")])
            assert response.status == 403, (uri, response)
        with pytest.raises(TimeoutError):
            trap_udp.recvfrom(70_000)
        with pytest.raises(TimeoutError):
            trap_tcp.accept()


def test_zero_max_forwards_to_us_gets_200(shared_serve: ServeProcess) -> None:
    """483 is for forwarding (RFC 3261 §16.3); a request for us with Max-Forwards 0 is served
    (RFC 4475 §3.3.11 zeromf)."""
    response = ask(shared_serve, "OPTIONS", f"sip:user@{DOMAIN}", max_forwards=0)
    assert response.status == 200


def test_oversize_udp_datagram_gets_513(shared_serve: ServeProcess) -> None:
    """RFC 3261 §21.5.14: a request larger than the node accepts gets 513 (STYLE.md §4).

    The datagram is the largest one UDP over IPv4 can carry.
    """
    with UdpClient() as client:
        head = build_request("OPTIONS", f"sip:{DOMAIN}", client, call_id="big")
        pad = UDP_MAX_PAYLOAD - len(head) - len("X-Pad: \r\n")
        request = head[:-2] + b"X-Pad: " + b"a" * pad + b"\r\n\r\n"
        assert len(request) == UDP_MAX_PAYLOAD
        client.send(request, shared_serve)
        raw = client.recv(5.0)
    assert raw is not None, "no answer to an oversize datagram"
    assert parse_response(raw).status == 513


# -- stopping ------------------------------------------------------------------------------------


def test_sigterm_stops_the_node_cleanly(serve_factory: Callable[..., ServeProcess]) -> None:
    """One SIGTERM ends the node with status 0 within 5 s, even with a TCP client connected."""
    node = serve_factory(domain=DOMAIN)
    idle = TcpClient(node)
    try:
        assert ask(node, "OPTIONS").status == 200
        started = time.monotonic()
        node.stop()  # asserts exit status 0 within 5 s after a single SIGTERM
        assert time.monotonic() - started < 5.0
    finally:
        idle.close()
    log = node.log_text()
    assert "Traceback" not in log
    assert "stopping" in log
    with UdpClient() as client:
        client.send(build_request("OPTIONS", f"sip:{DOMAIN}", client), node)
        assert client.recv(0.3) is None  # nobody listens any more


def test_sighup_without_tls_reloads_nothing_and_the_node_serves_on(
    serve_factory: Callable[..., ServeProcess],
) -> None:
    """SIGHUP reloads TLS certificates (test_serve_tls_reload.py); a node without TLS says there
    is nothing to reload, and a hang-up does not kill it (without its clean stop, the last
    group-commit window of answered requests would be lost)."""
    node = serve_factory(domain=DOMAIN)
    assert node.process is not None
    node.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while "SIGHUP" not in node.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert node.process.poll() is None
    assert ask(node, "OPTIONS").status == 200
    reloaded = "INFO presence_sip.signals: node: SIGHUP: no TLS certificates to reload"
    assert reloaded in node.log_text()
    assert " ERROR " not in node.log_text()
    node.stop()


@pytest.mark.parametrize("log_level", ["INFO", "WARNING", "ERROR"])
def test_sigusr1_logs_the_status_and_the_node_serves_on(
    serve_factory: Callable[..., ServeProcess], log_level: str
) -> None:
    node = serve_factory(domain=DOMAIN, log_level=log_level)
    assert node.process is not None
    assert ask(node, "OPTIONS").status == 200
    node.process.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while "node status: up" not in node.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    [line] = [text for text in node.log_text().splitlines() if "node status: up" in text]
    assert " INFO presence_sip.signals: node status: up " in line  # asked for: at any level
    assert "holds 0 AORs (0 bindings), 0 subscriptions, 0 publications" in line
    answered = re.search(r"; since start \d+ messages in, (\d+) responses out \(2xx (\d+)\)", line)
    assert answered is not None
    assert answered[1] == answered[2] != "0"
    assert line.endswith("; storage ok")
    assert node.process.poll() is None
    assert ask(node, "OPTIONS").status == 200
    node.stop()


def test_a_second_process_of_the_same_node_on_its_data_directory_is_refused(
    shared_serve: ServeProcess,
) -> None:
    """Two processes of one node would expire and delete each other's rows: the second
    exits 1 with one line, the first keeps serving."""
    second = subprocess.run(
        [*serve_command(), "serve", "--domain", DOMAIN, "--data", str(shared_serve.data_dir),
         "--listen", "udp:127.0.0.1:0", "--log-level", "WARNING"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert second.returncode == 1
    lines = second.stderr.strip().splitlines()
    assert lines[-1].startswith("presence-sip: error: node 'node' already runs on data directory")
    assert "Traceback" not in second.stderr
    assert ask(shared_serve, "OPTIONS").status == 200


def test_log_file_is_written_and_reopened_after_logrotate_moved_it(
    serve_factory: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    """``--log-file``: the lines go to the file, not to standard error; once logrotate has
    renamed it, the next line opens a new file at the same path (no copytruncate, no signal)."""
    log_file = tmp_path / "node.log"
    node = serve_factory(domain=DOMAIN, extra_args=["--log-file", str(log_file)])
    assert node.process is not None
    assert "node serving domain example.test" in log_file.read_text()
    assert "node serving domain" not in node.log_text()  # (its standard error)
    rotated = log_file.rename(tmp_path / "node.log.1")
    node.process.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while not log_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert re.search(r"^\S+ \S+ INFO presence_sip\.signals: node status: up", log_file.read_text())
    assert "node status" not in rotated.read_text()
    assert ask(node, "OPTIONS").status == 200
    node.stop()


def test_a_log_file_that_cannot_be_opened_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [*serve_command(), "serve", "--domain", DOMAIN, "--data", str(tmp_path / "data"),
         "--listen", "udp:127.0.0.1:0", "--log-file", str(tmp_path / "no" / "such" / "x.log")],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (
        2,
        f"presence-sip: error: cannot open log file {tmp_path / 'no' / 'such' / 'x.log'}: "
        "No such file or directory\n",
    )


def test_metrics_are_served_over_http_for_prometheus(
    serve_factory: Callable[..., ServeProcess],
) -> None:
    """``--metrics-listen``: what a Prometheus scrape reads, and it follows the traffic."""
    node = serve_factory(domain=DOMAIN, extra_args=["--metrics-listen", "127.0.0.1:0"])
    found = re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", node.log_text())
    assert found is not None, node.log_text()

    def scrape() -> dict[str, float]:
        with urllib.request.urlopen(found[1], timeout=5) as answer:
            assert answer.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            text = answer.read().decode()
        return {
            name: float(value)
            for line in text.splitlines()
            if not line.startswith("#")
            for name, value in [line.rsplit(" ", 1)]
        }

    before = scrape()
    for _ in range(3):
        assert ask(node, "OPTIONS").status == 200
    after = scrape()
    received = 'presence_sip_messages_received_total{node="node"}'
    answered = 'presence_sip_responses_sent_total{node="node",class="2xx"}'
    assert after[received] == before[received] + 3
    assert after[answered] == before.get(answered, 0) + 3
    assert after['presence_sip_storage_ok{node="node"}'] == 1
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(found[1].replace("/metrics", "/"), timeout=5)
    missing.value.close()
    assert missing.value.code == 404
    node.stop()


def test_a_start_that_lost_its_port_is_retried_and_only_the_running_node_is_in_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The harness itself: a port taken between choice and bind (CI saw it) costs one more start,
    and :meth:`ServeProcess.log_text` holds the running node only, so a test reading the log finds
    the metrics address (or any line) of that node, not of the attempt that exited."""
    node = ServeProcess(
        tmp_path / "data", domain=DOMAIN, extra_args=["--metrics-listen", "127.0.0.1:0"]
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((LOOPBACK, 0))
        taken_port = taken.getsockname()[1]
        ports = iter([taken_port, serve_process.free_port()])
        monkeypatch.setattr(serve_process, "free_port", lambda host: next(ports))
        node.start()
    try:
        assert node.port != taken_port
        assert node.log_text().count("metrics on http://") == 1, node.log_text()
        assert "listening on udp:127.0.0.1:" + str(node.port) in node.log_text()
        [aside] = tmp_path.glob("serve-*.attempt1.log")
        assert "Address already in use" in aside.read_text()
        assert str(aside) in node.log_text()
        assert ask(node, "OPTIONS").status == 200
    finally:
        node.stop()


def test_check_loads_the_config_and_its_tls_files_and_serves_nothing(tmp_path: Path) -> None:
    """``serve --check`` (as ``kamailio -c``, ``nginx -t``) before a restart or a reload."""
    files = pki.load_or_create(tmp_path / "certs", pki.NodeSpec(DOMAIN, "ps1", ("127.0.0.1",)))
    config = tmp_path / "net.toml"
    config.write_text(
        f'[network]\ndomain = "{DOMAIN}"\ndata = "{tmp_path / "data"}"\nca = "{files.ca}"\n'
        f'[[node]]\nname = "ps1"\nlisten = ["udp:127.0.0.1:5060", "tls:127.0.0.1:5061"]\n'
        f'cert = "{files.cert}"\nkey = "{files.key}"\n'
    )

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*serve_command(), "serve", str(config), "--check"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip

    good = check()
    assert (good.returncode, good.stderr) == (0, ""), good.stderr
    [node, verdict] = good.stdout.splitlines()
    assert node.startswith(
        f"ps1: {DOMAIN}, roles presence,registrar, listens udp:127.0.0.1:5060 tls:127.0.0.1:5061,"
        f" data {tmp_path / 'data'}, auth digest; TLS {files.cert} (CN=ps1.{DOMAIN}"
    )
    assert verdict == "configuration ok: 1 node"
    assert not (tmp_path / "data").exists()  # nothing opened, nothing served
    files.key.write_text("not a key")
    bad = check()
    assert bad.returncode == 2
    assert bad.stderr.startswith(
        f"presence-sip: error: ps1: cannot load TLS certificate {files.cert} with key {files.key}: "
    )
