"""SIPp (Debian ``sip-tester``, through pysipp) against a running ``presence-sip serve``.

* OPTIONS over UDP and TCP gets 200 (``scenarios/options.xml``).
* Loss: a UDP relay in this test, between SIPp and the node, drops the first two transmissions
  of SIPp's OPTIONS (SIPp retransmits on Timer E) and counts exactly one final response back to
  SIPp; and, the other way round, a lost response is resent by the node when SIPp retransmits
  (``scenarios/options_lossy.xml``: ``rport``, so the node answers the relay).
* REGISTER with digest auth (``scenarios/register.xml``) for 1,000 subscribers from a CSV at
  200 calls/s, all 200; a wrong password (``scenarios/register_wrong_password.xml``) never gets
  200; after a restart of the node the bindings are found again.

SIPp 3.6.1 computes MD5 digests only, and it answers the *first* WWW-Authenticate of a 401
rather than the first it supports (with the node's default SHA-256 + MD5 challenges it stops:
"createAuthHeader: authentication must use MD5 or AKAv1-MD5").  The REGISTER runs therefore use
a node started with ``--digest-algorithms MD5``.
"""

from __future__ import annotations

import random
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import pytest
from serve_process import LOOPBACK, ServeProcess, UdpClient, register
from sipp_runner import run_scenario

from presence_sip.storage.database import open_network_database, transaction
from presence_sip.storage.sqlite_hss import SqliteSubscriberStore

pytestmark = pytest.mark.sipp

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"
OPTIONS_XML = SCENARIOS / "options.xml"
OPTIONS_LOSSY_XML = SCENARIOS / "options_lossy.xml"
REGISTER_XML = SCENARIOS / "register.xml"
WRONG_PASSWORD_XML = SCENARIOS / "register_wrong_password.xml"
DOMAIN = "example.test"
USERS = 1000


def msisdn(index: int) -> str:
    return f"+4477009{index:05d}"


def password(index: int) -> str:
    return f"pw-{index}"


def provision(data_dir: Path, count: int) -> Path:
    """``count`` subscribers in the HSS, written in one transaction (fast)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    conn = open_network_database(data_dir)
    try:
        bulk = SqliteSubscriberStore(conn, domain=DOMAIN)
        with transaction(conn):
            for index in range(1, count + 1):
                bulk.add_subscriber(msisdn(index), password(index))
    finally:
        conn.close()
    return data_dir


def users_csv(path: Path, indexes: range, *, wrong: bool = False) -> Path:
    """SIPp injection file: MSISDN;password;[authentication ...] (see scenarios/register.xml)."""
    lines = ["SEQUENTIAL"]
    for index in indexes:
        secret = f"wrong-{index}" if wrong else password(index)
        keyword = f"[authentication username={msisdn(index)} password={secret}]"
        lines.append(f"{msisdn(index)};{secret};{keyword}")
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


# -- the relay -------------------------------------------------------------------------------------

_STATUS = re.compile(rb"^SIP/2\.0 (\d{3}) ")
_CALL_ID = re.compile(rb"\r\n(?:Call-ID|i)[ \t]*:[ \t]*([^\r\n]+)", re.I)
_CSEQ = re.compile(rb"\r\nCSeq[ \t]*:[ \t]*([^\r\n]+)", re.I)


class UdpRelay:
    """SIPp <-> relay <-> node over UDP, on 127.0.0.1, in a thread.

    Requests come from the client (anyone but the node), responses from the node; the node
    answers the relay because the scenarios put ``rport`` in their Via (RFC 3581).  The first
    ``drop_requests`` requests and ``drop_responses`` responses are dropped.  Everything is
    counted.
    """

    def __init__(
        self,
        server: tuple[str, int],
        *,
        drop_requests: int = 0,
        drop_responses: int = 0,
    ) -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.settimeout(0.05)
        self.address: tuple[str, int] = (LOOPBACK, self.sock.getsockname()[1])
        self.drop_requests = drop_requests
        self.drop_responses = drop_responses
        self.client: tuple[str, int] | None = None
        self.requests_seen = 0
        self.requests_dropped = 0
        self.responses_from_server: list[bytes] = []
        self.responses_dropped = 0
        self.statuses_relayed: list[int] = []
        self.finals_by_transaction: dict[tuple[bytes, bytes], set[int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="udp-relay", daemon=True)

    def __enter__(self) -> UdpRelay:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    @property
    def finals_relayed(self) -> list[int]:
        """Every final response passed to the client, retransmissions included."""
        return [status for status in self.statuses_relayed if status >= 200]

    def final_count(self, status: int) -> int:
        """How many transactions (Call-ID, CSeq) got ``status`` as final response."""
        return sum(status in seen for seen in self.finals_by_transaction.values())

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self.sock.recvfrom(70_000)
            except TimeoutError:
                continue
            except OSError:
                return
            if source == self.server:
                self._response(data)
            else:
                self._request(data, source)

    def _request(self, data: bytes, source: tuple[str, int]) -> None:
        self.client = source
        self.requests_seen += 1
        if self.requests_dropped < self.drop_requests:
            self.requests_dropped += 1
            return
        self.sock.sendto(data, self.server)

    def _response(self, data: bytes) -> None:
        self.responses_from_server.append(data)
        if self.responses_dropped < self.drop_responses:
            self.responses_dropped += 1
            return
        status = _STATUS.match(data)
        if status is not None:
            code = int(status.group(1))
            self.statuses_relayed.append(code)
            call_id, cseq = _CALL_ID.search(data), _CSEQ.search(data)
            if code >= 200 and call_id is not None and cseq is not None:
                key = (call_id.group(1).strip(), cseq.group(1).strip())
                self.finals_by_transaction.setdefault(key, set()).add(code)
        if self.client is not None:
            self.sock.sendto(data, self.client)


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def node(serve_factory: Callable[..., ServeProcess]) -> ServeProcess:
    return serve_factory(domain=DOMAIN)


@pytest.fixture
def md5_node(serve_factory: Callable[..., ServeProcess], tmp_path: Path) -> ServeProcess:
    """A node whose HSS holds USERS subscribers, challenging with MD5 only (for SIPp)."""
    return serve_factory(
        data_dir=provision(tmp_path / "net", USERS),
        domain=DOMAIN,
        extra_args=["--digest-algorithms", "MD5"],
    )


# -- OPTIONS -------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_sipp_options_gets_200(node: ServeProcess, transport: str) -> None:
    result = run_scenario(OPTIONS_XML, node.address, transport=transport, timeout=15)
    assert result.ok, result
    assert (result.successful, result.failed) == (1, 0)
    assert "SIP/2.0 200 OK" in result.messages_log
    assert "Allow: " in result.messages_log


def test_sipp_options_first_two_transmissions_lost(node: ServeProcess) -> None:
    with UdpRelay(node.address, drop_requests=2) as relay:
        result = run_scenario(
            OPTIONS_LOSSY_XML, relay.address, keys={"domain": DOMAIN}, timeout=15, recv_timeout=8
        )
    assert result.ok, result
    assert result.retransmissions >= 2
    assert relay.requests_dropped == 2
    assert relay.requests_seen == 3  # the third transmission got through and was answered
    assert relay.finals_relayed == [200]  # exactly one final response reached SIPp


def test_sipp_options_lost_response_is_resent_by_the_node(node: ServeProcess) -> None:
    """RFC 3261 §17.2.2: a request retransmission makes the server transaction resend its last
    response; SIPp still sees exactly one final response."""
    with UdpRelay(node.address, drop_responses=1) as relay:
        result = run_scenario(
            OPTIONS_LOSSY_XML, relay.address, keys={"domain": DOMAIN}, timeout=15, recv_timeout=8
        )
    assert result.ok, result
    assert relay.requests_seen >= 2
    first, second = relay.responses_from_server[:2]
    assert first == second  # the same response, To-tag included
    assert relay.finals_relayed == [200]


# -- REGISTER ------------------------------------------------------------------------------------


def query_bindings(node: ServeProcess, index: int) -> list[str]:
    """Contacts bound to subscriber ``index`` (REGISTER without Contact, RFC 3261 §10.2.3),
    on a node challenging with MD5."""
    with UdpClient() as client:
        _, response = register(
            client, node, user=msisdn(index), password=password(index), domain=DOMAIN,
            algorithm="MD5",
        )  # fmt: skip
    assert response.status == 200, response
    return [value.strip() for value in response.headers.values("Contact")]


def test_sipp_registers_1000_users_and_the_bindings_survive_a_restart(
    md5_node: ServeProcess, tmp_path: Path
) -> None:
    node = md5_node
    csv = users_csv(tmp_path / "users.csv", range(1, USERS + 1))
    started = time.monotonic()
    result = run_scenario(
        REGISTER_XML, node.address, calls=USERS, rate=200, inf=csv, keys={"domain": DOMAIN},
        timeout=45, recv_timeout=10, trace_messages=False,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert (result.successful, result.failed) == (USERS, 0), result
    assert result.returncode == 0, result
    assert elapsed >= USERS / 200 - 1  # the rate was bounded

    sample = sorted(random.Random(4).sample(range(1, USERS + 1), 25))
    before = {index: uris(query_bindings(node, index)) for index in sample}
    assert all(len(bound) == 1 for bound in before.values()), before
    node.restart()  # same data directory, same port
    after = {index: query_bindings(node, index) for index in sample}
    assert {index: uris(bound) for index, bound in after.items()} == before
    for bound in after.values():
        expires = re.search(r";expires=(\d+)", bound[0])
        assert expires is not None
        assert 3500 < int(expires.group(1)) <= 3600, bound


def uris(contacts: list[str]) -> list[str]:
    """The bound contact URIs (``<...>``), without the parameters that count down."""
    return sorted(contact.split(">")[0] + ">" for contact in contacts)


def test_sipp_wrong_password_never_gets_200(md5_node: ServeProcess, tmp_path: Path) -> None:
    csv = users_csv(tmp_path / "wrong.csv", range(1, 21), wrong=True)
    with UdpRelay(md5_node.address) as relay:  # only to count what SIPp gets
        result = run_scenario(
            WRONG_PASSWORD_XML, relay.address, calls=20, rate=100, inf=csv,
            keys={"domain": DOMAIN}, timeout=20, trace_messages=False,
        )  # fmt: skip
    # A 200 would be an unexpected message in the scenario, failing the call.
    assert (result.successful, result.failed) == (20, 0), result
    assert relay.final_count(401) == 40
    assert 200 not in relay.finals_relayed
    assert query_bindings(md5_node, 1) == []
