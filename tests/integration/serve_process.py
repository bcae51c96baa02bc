"""Run ``presence-sip serve`` as a real subprocess on loopback, and talk to it over plain sockets.

:class:`ServeProcess` starts the console script (``.venv/bin/presence-sip serve``, falling back to
``python -m presence_sip serve``) listening on UDP and TCP on the same free port of 127.0.0.1,
waits until it answers OPTIONS over UDP and accepts TCP connections, and stops it with **one**
SIGTERM, asserting that it exits 0 within 5 s.  Its stdout/stderr go to a log file that is
dumped (on stderr, so pytest shows it with the failure) whenever something goes wrong::

    with ServeProcess(tmp_path / "data", domain="example.com") as node:
        host, port, data_dir = node
        ...
        node.restart()            # same port, same data directory

The fixtures in ``tests/integration/conftest.py`` and ``tests/sipp/conftest.py`` wrap it.

The rest of the module is a small synchronous SIP client kit for such tests: :class:`UdpClient`
(raw datagrams with timeouts), :func:`build_request`, :func:`parse_response`, and
:func:`register` (a REGISTER with the digest round trip, using the project's own
``build_authorization``).  Everything stays on 127.0.0.1; no name is ever resolved.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from loopback import LOOPBACK, free_port

from presence_sip.auth.digest import build_authorization
from presence_sip.sip import Request, Response, SipParseError, parse_message
from presence_sip.storage.sqlite_hss import SqliteSubscriberStore

__all__ = [
    "LOOPBACK",
    "STOP_TIMEOUT",
    "ServeProcess",
    "ServeStartError",
    "UdpClient",
    "build_request",
    "free_port",
    "parse_response",
    "register",
    "serve_command",
    "serve_pool",
]

STOP_TIMEOUT = 5.0
"""Seconds a node has to exit (status 0) after one SIGTERM."""
START_TIMEOUT = 15.0
"""Seconds a node has to answer OPTIONS after it was started."""
_LOG_TAIL = 20_000
_counter = itertools.count(1)


class ServeStartError(RuntimeError):
    """The node did not come up (exited, or never answered OPTIONS)."""


def serve_command() -> list[str]:
    """The command line prefix that runs ``presence-sip`` from the interpreter running pytest."""
    script = Path(sys.executable).with_name("presence-sip")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    found = shutil.which("presence-sip")
    if found is not None and Path(found).parent == Path(sys.executable).parent:
        return [found]
    return [sys.executable, "-m", "presence_sip"]


class ServeProcess:
    """One ``presence-sip serve`` subprocess; see the module docstring.

    Unpacks as ``host, port, data_dir``.  ``domain``/``auth``/``roles`` become ``--domain``,
    ``--auth`` and ``--roles`` only when given (``None``: the command's own defaults).  With
    ``config`` (a TOML file) the nodes listen where the file says, and ``port`` must be the
    UDP and TCP port of its first node on 127.0.0.1 (``--listen`` would replace every node's).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        domain: str | None = None,
        auth: str | None = None,
        roles: str | None = None,
        extra_args: Sequence[str] = (),
        log_level: str | None = "INFO",
        port: int | None = None,
        log_dir: Path | None = None,
        config: Path | None = None,
    ) -> None:
        if config is not None and port is None:
            raise ValueError("a config file needs the port its first node listens on")
        self.host = LOOPBACK
        self.config = config
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.domain = domain
        self._fixed_port = port
        self.port = port or 0
        self._options: list[str] = []
        for flag, value in (("--domain", domain), ("--auth", auth), ("--roles", roles)):
            if value is not None:
                self._options += [flag, value]
        if log_level is not None:  # (None: the config file's log_level, else INFO)
            self._options += ["--log-level", log_level]
        self._options += extra_args
        directory = log_dir or self.data_dir.parent
        self.log_path = directory / f"serve-{os.getpid()}-{next(_counter)}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # -- tuple-like access ---------------------------------------------------------------------

    def __iter__(self) -> Iterator[object]:
        return iter((self.host, self.port, self.data_dir))

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def command(self) -> list[str]:
        if self.config is not None:
            where = [str(self.config)]
        else:
            where = ["--listen", f"udp:{self.host}:{self.port}"]
            where += ["--listen", f"tcp:{self.host}:{self.port}"]
        return [
            *serve_command(),
            "serve",
            *where,
            "--data",
            str(self.data_dir),
            *self._options,
        ]

    # -- life cycle ----------------------------------------------------------------------------

    def __enter__(self) -> ServeProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.dump_log(f"test failed with {exc_type.__name__}")
            self.kill()
            return
        self.stop()

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the node and wait until it answers OPTIONS (UDP) and accepts TCP connections.

        Without a fixed port a fresh one is picked, and picked again (up to 3 times) when the node
        exits early, so a port taken between choice and bind does not fail the test. The log of
        such an attempt is moved aside: :meth:`log_text` is the log of the node that runs.
        """
        attempts = 1 if self._fixed_port or self.starts else 3
        for attempt in range(attempts):
            if not self._fixed_port and not self.starts:
                self.port = free_port(self.host)
            try:
                self._spawn_and_wait(timeout)
            except ServeStartError:
                if attempt + 1 < attempts and self.exited_early:
                    self._set_aside_log(attempt + 1)
                    continue
                self.dump_log("node did not start")
                self.kill()
                raise
            self.starts += 1
            return

    def _set_aside_log(self, attempt: int) -> None:
        aside = self.log_path.with_name(f"{self.log_path.stem}.attempt{attempt}.log")
        self.log_path.replace(aside)
        self.log_path.write_text(f"# start attempt {attempt} exited early; its log: {aside}\n")

    @property
    def exited_early(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def _spawn_and_wait(self, timeout: float) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"$ {' '.join(self.command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + timeout
        with UdpClient() as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise ServeStartError(
                        f"presence-sip serve exited with {self.process.returncode} at start-up"
                    )
                client.send(build_request("OPTIONS", f"sip:{self.host}:{self.port}", client), self)
                if client.recv(0.1) is not None and self._tcp_accepts():
                    return
        raise ServeStartError(f"presence-sip serve did not answer OPTIONS within {timeout} s")

    def _tcp_accepts(self) -> bool:
        try:
            with socket.create_connection(self.address, timeout=1.0):
                return True
        except OSError:
            return False

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """One SIGTERM; the node must exit with status 0 within ``timeout`` seconds."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.dump_log("no exit after SIGTERM")
            raise AssertionError(
                f"presence-sip serve still running {timeout} s after one SIGTERM"
            ) from None
        elapsed = time.monotonic() - started
        if code != 0:
            self.dump_log(f"exit status {code}")
            raise AssertionError(f"presence-sip serve exited with {code} after SIGTERM")
        assert elapsed < timeout

    def restart(self, while_down: Callable[[], object] | None = None) -> None:
        """Stop (asserting a clean exit) and start again on the same port and data directory,
        calling ``while_down`` in between."""
        self.stop()
        if while_down is not None:
            while_down()
        self._fixed_port = self.port
        self.start()

    def kill(self) -> None:
        """SIGKILL, for clean-up after a failure (never instead of :meth:`stop`)."""
        process = self.process
        if process is not None and process.poll() is None:
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")
        except OSError:
            return ""

    def status_line(self, timeout: float = 5.0) -> str:
        """The status line the node logs on SIGUSR1 (the newest, after this signal)."""
        assert self.process is not None
        before = self.log_text().count(" status: up ")
        self.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = [t for t in self.log_text().splitlines() if " status: up " in t]
            if len(lines) > before:
                return lines[-1]
            time.sleep(0.05)
        raise AssertionError(f"no status line within {timeout} s of SIGUSR1")

    def hangup(self, until: str, timeout: float = 5.0) -> str:
        """Send SIGHUP (a reload) and wait for one more log line holding ``until``; the log
        written since the signal."""
        assert self.process is not None
        before = self.log_text()
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_text()
            if text.count(until) > before.count(until):
                return text[len(before) :]
            time.sleep(0.05)
        raise AssertionError(f"no log line with {until!r} within {timeout} s of SIGHUP")

    def dump_log(self, why: str) -> None:
        text = self.log_text()
        if len(text) > _LOG_TAIL:
            text = "[...]\n" + text[-_LOG_TAIL:]
        print(f"\n===== presence-sip serve log ({why}) =====\n{text}=====", file=sys.stderr)


# -- a synchronous SIP client kit ----------------------------------------------------------------


class Address(Protocol):
    """Anything with the ``host`` and ``port`` a Via sent-by names (a client socket)."""

    host: str
    port: int


class UdpClient:
    """A UDP socket on 127.0.0.1 (or ``host``, another loopback address; port 0 by default)
    sending raw datagrams with timeouts."""

    def __init__(self, port: int = 0, host: str = LOOPBACK) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.host, self.port = host, int(self.sock.getsockname()[1])

    def __enter__(self) -> UdpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes, destination: ServeProcess | tuple[str, int]) -> None:
        address = destination.address if isinstance(destination, ServeProcess) else destination
        self.sock.sendto(data, address)

    def recv(self, timeout: float) -> bytes | None:
        """The next datagram, or None after ``timeout`` seconds."""
        self.sock.settimeout(timeout)
        try:
            data, _ = self.sock.recvfrom(70_000)
        except TimeoutError:
            return None
        return data

    def recv_all(self, quiet: float) -> list[bytes]:
        """Every datagram until none arrives for ``quiet`` seconds."""
        received = []
        while (data := self.recv(quiet)) is not None:
            received.append(data)
        return received

    def request(
        self, data: bytes, destination: ServeProcess | tuple[str, int], timeout: float = 5.0
    ) -> Response:
        """Send ``data`` once and return the first final response to it (UDP: retransmit on
        T1).  A final response with another Call-ID is skipped: a late retransmission of an
        earlier answer (an INVITE server transaction resends its 4xx on Timer G until ACKed)."""
        call_id = _call_id_of(data)
        deadline = time.monotonic() + timeout
        interval = 0.5
        while time.monotonic() < deadline:
            self.send(data, destination)
            until = min(deadline, time.monotonic() + interval)
            while (left := until - time.monotonic()) > 0:
                raw = self.recv(left)
                if raw is None:
                    break
                response = parse_response(raw)
                if response.status >= 200 and call_id in (None, response.call_id):
                    return response
            interval = min(interval * 2, 4.0)
        raise TimeoutError(f"no final response within {timeout} s to {data[:60]!r}")


class TcpClient:
    """A TCP connection (to the node, or one it opened to us: ``sock``) that reads
    Content-Length framed messages."""

    def __init__(self, node: ServeProcess | None = None, sock: socket.socket | None = None) -> None:
        if sock is None:
            assert node is not None
            sock = socket.create_connection(node.address, timeout=5.0)
        self.sock = sock
        self.host: str = self.sock.getsockname()[0]
        self.port: int = self.sock.getsockname()[1]
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def read_message(self, timeout: float = 5.0) -> bytes | None:
        """One framed message; None when the node closed the connection first."""
        self.sock.settimeout(timeout)
        while True:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if sep:
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() in (b"content-length", b"l"):
                        length = int(value.strip())
                if len(rest) >= length:
                    self.buffer = rest[length:]
                    return head + sep + rest[:length]
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536) == b""
        except (TimeoutError, ConnectionResetError):
            return False


def build_request(
    method: str,
    uri: str,
    client: Address,
    *,
    to: str | None = None,
    from_: str = "<sip:tester@127.0.0.1>",
    call_id: str | None = None,
    cseq: int = 1,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    transport: str = "UDP",
    max_forwards: int | None = 70,
    branch: str | None = None,
) -> bytes:
    """Wire bytes of a request whose top Via names ``client`` (with rport)."""
    branch = branch or f"z9hG4bK-{secrets.token_hex(8)}"
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/{transport} {client.host}:{client.port};branch={branch};rport",
    ]
    if max_forwards is not None:
        lines.append(f"Max-Forwards: {max_forwards}")
    lines += [
        f"From: {from_};tag={secrets.token_hex(4)}",
        f"To: {to or '<' + uri + '>'}",
        f"Call-ID: {call_id or secrets.token_hex(10)}@{client.host}",
        f"CSeq: {cseq} {method}",
        *(f"{name}: {value}" for name, value in headers),
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def presence_subscribe(uri: str, client: Address, watcher: str, contact: str) -> bytes:
    """Wire bytes of a SUBSCRIBE to ``uri``'s presence (PIDF, 600 s) from ``watcher`` (a URI)
    with the Contact ``contact`` (a URI), its top Via naming ``client``."""
    return build_request(
        "SUBSCRIBE",
        uri,
        client,
        from_=f"<{watcher}>",
        headers=[
            ("Contact", f"<{contact}>"),
            ("Event", "presence"),
            ("Accept", "application/pidf+xml"),
            ("Expires", "600"),
        ],
    )


def subscribe_watchers(
    node: ServeProcess, client: UdpClient, uri: str, count: int, chunk: int = 100
) -> None:
    """``count`` watchers (``sip:w<n>@<uri's host>``, all at ``client``'s socket) subscribe to
    ``uri``'s presence, ``chunk`` SUBSCRIBEs at a time (the socket holds what they bring): every
    answer must be 200, and every first NOTIFY is answered 200."""
    domain = uri.rpartition("@")[2]
    for start in range(0, count, chunk):
        size = min(chunk, count - start)
        for n in range(start, start + size):
            contact = f"sip:watcher{n}@{client.host}:{client.port}"
            client.send(presence_subscribe(uri, client, f"sip:w{n}@{domain}", contact), node)
        answered = notified = 0
        while answered < size or notified < size:
            raw = client.recv(5.0)
            assert raw is not None, f"{answered} answers, {notified} NOTIFYs of {size} in 5 s"
            message = parse_message(raw)
            if isinstance(message, Response):
                assert message.status == 200, raw[:80]
                answered += 1
            else:
                client.send(answer_bytes(message), node)
                notified += 1


def presence_publish(uri: str, client: Address, basic: str) -> bytes:
    """Wire bytes of an initial PUBLISH of ``uri``'s presence (600 s): one tuple, ``basic``."""
    body = (
        f'<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="{uri}">'
        f'<tuple id="t1"><status><basic>{basic}</basic></status></tuple></presence>'
    ).encode()
    headers = [("Event", "presence"), ("Expires", "600"), ("Content-Type", "application/pidf+xml")]
    return build_request("PUBLISH", uri, client, headers=headers, body=body)


def provision(data: Path, domain: str, *msisdns: str, password: str = "secret-pw") -> None:
    """Subscribers straight into the HSS store of a data directory (what ``presence-sip hss``
    calls), before a node starts on it."""
    data.mkdir(parents=True, exist_ok=True)
    store = SqliteSubscriberStore.open(data, domain)
    try:
        for msisdn in msisdns:
            store.add_subscriber(msisdn, password)
    finally:
        store.close()


def _call_id_of(request: bytes) -> str | None:
    """The Call-ID of a request we send; None when our parser refuses it (a torture vector)."""
    try:
        return parse_message(request).call_id
    except SipParseError:
        return None


def parse_response(data: bytes) -> Response:
    """Parse ``data`` as a response (AssertionError naming the bytes otherwise)."""
    try:
        message = parse_message(data)
    except SipParseError as exc:
        raise AssertionError(f"unparseable reply ({exc}): {data[:200]!r}") from None
    assert isinstance(message, Response), f"expected a response, got {data[:80]!r}"
    return message


def register(
    client: UdpClient,
    destination: ServeProcess | tuple[str, int],
    *,
    user: str,
    password: str,
    domain: str,
    contact: str | None = None,
    expires: int | None = None,
    algorithm: str = "SHA-256",
    headers: Sequence[tuple[str, str]] = (),
) -> tuple[Response, Response]:
    """REGISTER ``sip:user@domain`` (``contact=None``: a query), answer the challenge for
    ``algorithm`` with ``password``; return (challenge, final response)."""
    uri = f"sip:{domain}"
    aor = f"<sip:{user}@{domain}>"
    call_id = secrets.token_hex(10)
    extra = list(headers)
    if contact is not None:
        extra.append(("Contact", contact))
    if expires is not None:
        extra.append(("Expires", str(expires)))

    def attempt(cseq: int, auth: Sequence[tuple[str, str]]) -> Response:
        data = build_request(
            "REGISTER", uri, client, to=aor, from_=aor, call_id=call_id, cseq=cseq,
            headers=[*extra, *auth],
        )  # fmt: skip
        return client.request(data, destination)

    challenge = attempt(1, ())
    if challenge.status != 401:
        return challenge, challenge
    offered = challenge.headers.get_all("WWW-Authenticate")
    chosen = next((c for c in offered if f"algorithm={algorithm}" in c), None)
    assert chosen is not None, f"no {algorithm} challenge in {offered}"
    credentials = build_authorization(
        chosen, username=user, password=password, method="REGISTER", uri=uri,
        cnonce=secrets.token_hex(8),
    )  # fmt: skip
    return challenge, attempt(2, [("Authorization", credentials)])


# -- pytest glue (used by tests/integration/conftest.py and tests/sipp/conftest.py) ---------------


@contextlib.contextmanager
def serve_pool(
    directory: Path, test_failed: Callable[[], bool]
) -> Iterator[Callable[..., ServeProcess]]:
    """Yield ``start(**kwargs) -> ServeProcess`` (started); at the end stop every node with one
    SIGTERM and assert exit status 0 within :data:`STOP_TIMEOUT`.  Logs are dumped when the test
    failed (``test_failed()``) or a node did not stop cleanly."""
    started: list[ServeProcess] = []

    def start(*, data_dir: Path | None = None, **kwargs: Any) -> ServeProcess:
        node = ServeProcess(data_dir or directory / f"data{len(started)}", **kwargs)
        node.start()
        started.append(node)
        return node

    try:
        yield start
    finally:
        failed = test_failed()
        problems: list[AssertionError] = []
        for node in started:
            if failed:
                node.dump_log("test failed")
            try:
                node.stop()
            except AssertionError as exc:
                problems.append(exc)
    if problems:
        raise problems[0]


def answer_bytes(request: Request) -> bytes:
    """A 200 to ``request`` (its Via, From, To, Call-ID and CSeq copied)."""
    lines = ["SIP/2.0 200 OK"]
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        lines += [f"{name}: {value}" for value in request.headers.get_all(name)]
    return ("\r\n".join([*lines, "Content-Length: 0", "", ""])).encode()


def register_over(client: TcpClient, aor: str, contact: str) -> Response:
    """REGISTER ``aor`` (a SIP URI) with ``contact`` over ``client``'s connection; the answer."""
    registrar = "sip:" + aor.rpartition("@")[2]
    request = build_request(
        "REGISTER", registrar, client, transport="TCP", from_=f"<{aor}>", to=f"<{aor}>",
        headers=[("Contact", f"<{contact}>"), ("Expires", "600")],
    )  # fmt: skip
    client.sock.sendall(request)
    answer = parse_message(client.read_message() or b"")
    assert isinstance(answer, Response), answer
    return answer


async def answered_notify(client: TcpClient, timeout: float = 10.0) -> Request:
    """The next request on ``client``'s connection, a NOTIFY, answered 200."""
    raw = await asyncio.to_thread(client.read_message, timeout)
    assert raw is not None, "the node closed the connection"
    notify = parse_message(raw)
    assert isinstance(notify, Request), notify
    assert notify.method == "NOTIFY", notify.method
    client.sock.sendall(answer_bytes(notify))
    return notify
