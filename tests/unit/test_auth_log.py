"""The operator's log of failed digest authentication: one greppable line per failed request,
naming the source address and the user (what fail2ban-style filters need), never a password.

Byte-exact REGISTERs through a real Endpoint + RegistrarRole, sans-IO on a fixed clock; the
SUBSCRIBE case goes through the presence role of ``test_presence_server``.
"""

from __future__ import annotations

import logging
import re

import pytest
import test_presence_server as flows  # tests/unit is on sys.path (conftest / rootdir import)

from presence_sip.auth.digest import DigestAuthenticator, build_authorization
from presence_sip.auth.guard import RequestGuard
from presence_sip.endpoint import Endpoint
from presence_sip.ids import CountingIdSource
from presence_sip.registrar.bindings import MemoryBindingStore
from presence_sip.registrar.registrar import Registrar
from presence_sip.registrar.role import RegistrarRole
from presence_sip.sip import Request, Response, parse_message, to_bytes
from presence_sip.sip.peer import Peer
from presence_sip.storage.memory_hss import MemorySubscriberStore

REALM = "net-b.test"
BOB = "+447700900123"
PASSWORD = "bob-secret"
T0 = 1000.0
SOURCE = Peer("udp", "203.0.113.5", 5062)

FAIL2BAN = re.compile(r"^auth failed: src=(?P<host>\S+) port=\d+ transport=\w+ ")
"""What a fail2ban ``failregex`` of the report does: ``auth failed: src=<HOST> port=\\d+ ``."""


class Registrar1:
    """One registrar node with digest authentication and one subscriber, Bob."""

    def __init__(self) -> None:
        self.hss = MemorySubscriberStore(REALM)
        self.hss.add_subscriber(BOB, PASSWORD)
        self.endpoint = Endpoint(ids=CountingIdSource())
        nonces = CountingIdSource("n").new_id
        authenticator = DigestAuthenticator(REALM, b"k" * 32, id_source=nonces)
        self.guard = RequestGuard(
            authenticator, lambda user, alg: self.hss.get_ha1(user, alg.base.value)
        )
        registrar = Registrar(MemoryBindingStore(), now=T0)
        role = RegistrarRole(registrar, self.guard, self.hss, frozenset({REALM}), now=T0)
        self.endpoint.register("REGISTER", role.handle)
        self.count = 0

    def send(self, authorization: str = "", source: Peer = SOURCE, now: float = T0) -> Response:
        self.count += 1
        lines = [
            f"REGISTER sip:{REALM} SIP/2.0",
            f"Via: SIP/2.0/UDP 203.0.113.5:5062;branch=z9hG4bK-a{self.count}",
            "Max-Forwards: 70",
            f"From: <sip:{BOB}@{REALM}>;tag=f1",
            f"To: <sip:{BOB}@{REALM}>",
            "Call-ID: brute@203.0.113.5",
            f"CSeq: {self.count} REGISTER",
            "Contact: <sip:bob@203.0.113.5:5062>",
        ]
        if authorization:
            lines.append(f"Authorization: {authorization}")
        data = ("\r\n".join([*lines, "Content-Length: 0"]) + "\r\n\r\n").encode()
        self.endpoint.receive(data, source, now)
        (out,) = self.endpoint.outbox()
        response = parse_message(out[0])
        assert isinstance(response, Response)
        return response

    def credentials(
        self, user: str = BOB, password: str = PASSWORD, nc: int = 1, now: float = T0
    ) -> str:
        """An answer (MD5, qop=auth) to a fresh challenge."""
        challenge = self.send(now=now).headers.get_all("WWW-Authenticate")[-1]
        return build_authorization(
            challenge, username=user, password=password, method="REGISTER",
            uri=f"sip:{REALM}", cnonce="c0ffee", nc=nc,
        )  # fmt: skip


def auth_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [
        (r.levelno, r.getMessage()) for r in caplog.records if r.name == "presence_sip.auth.guard"
    ]


@pytest.fixture
def node(caplog: pytest.LogCaptureFixture) -> Registrar1:
    caplog.set_level(logging.INFO, logger="presence_sip.auth.guard")
    return Registrar1()


def test_wrong_password_is_one_warning_with_source_and_user(
    node: Registrar1, caplog: pytest.LogCaptureFixture
) -> None:
    credentials = node.credentials(password="guess-1")
    caplog.clear()
    assert node.send(credentials).status == 401
    assert auth_lines(caplog) == [(
        logging.WARNING,
        'auth failed: src=203.0.113.5 port=5062 transport=udp method=REGISTER '
        'user="+447700900123" realm="net-b.test" reason="wrong password"',
    )]  # fmt: skip
    text = caplog.text
    response = re.search(r'response="([0-9a-f]+)"', credentials)
    assert response is not None
    assert "guess-1" not in text
    assert response.group(1) not in text
    match = FAIL2BAN.match(auth_lines(caplog)[0][1])
    assert match is not None
    assert match["host"] == "203.0.113.5"


def test_unknown_user_is_named_in_the_log_but_not_on_the_wire(
    node: Registrar1, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = node.send(node.credentials(password="guess"))
    caplog.clear()
    unknown = node.send(node.credentials(user="+447700900999", password="guess"))
    assert [line for level, line in auth_lines(caplog) if level == logging.WARNING] == [
        "auth failed: src=203.0.113.5 port=5062 transport=udp method=REGISTER "
        'user="+447700900999" realm="net-b.test" reason="unknown user"'
    ]
    # The client gets the same answer for both (no subscriber enumeration).
    assert (wrong.status, wrong.reason) == (unknown.status, unknown.reason) == (401, "Unauthorized")


def test_replayed_nonce_count_and_foreign_nonce_fail_with_their_reason(
    node: Registrar1, caplog: pytest.LogCaptureFixture
) -> None:
    credentials = node.credentials()
    assert node.send(credentials).status == 200
    caplog.clear()
    assert node.send(credentials).status == 401  # the same nc again: a replay
    forged = re.sub(r'nonce="[^"]+"', 'nonce="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"', credentials)
    assert node.send(forged).status == 401
    assert [line.rsplit(" reason=", 1)[1] for _, line in auth_lines(caplog)] == [
        '"Replayed nonce count"',
        '"Invalid nonce"',
    ]
    assert {level for level, _ in auth_lines(caplog)} == {logging.WARNING}


def test_stale_nonce_with_the_right_password_is_info_not_a_failure(
    node: Registrar1, caplog: pytest.LogCaptureFixture
) -> None:
    credentials = node.credentials()
    caplog.clear()
    response = node.send(credentials, now=T0 + 301)
    assert response.status == 401
    assert "stale=true" in (response.headers.get("WWW-Authenticate") or "")
    assert auth_lines(caplog) == [(
        logging.INFO,
        'auth stale: src=203.0.113.5 port=5062 transport=udp method=REGISTER '
        'user="+447700900123" realm="net-b.test" reason="Nonce expired"',
    )]  # fmt: skip


def test_no_credentials_and_success_log_nothing(
    node: Registrar1, caplog: pytest.LogCaptureFixture
) -> None:
    assert node.send(node.credentials()).status == 200
    assert auth_lines(caplog) == []


def test_malformed_credentials_are_a_failure_too(
    node: Registrar1, caplog: pytest.LogCaptureFixture
) -> None:
    response = node.send('Digest username="+447700900123", realm="net-b.test"')
    assert (response.status, response.reason) == (400, "Malformed Authorization")
    assert auth_lines(caplog) == [(
        logging.WARNING,
        'auth failed: src=203.0.113.5 port=5062 transport=udp method=REGISTER '
        'user="" realm="" reason="Malformed Authorization"',
    )]  # fmt: skip


def test_client_written_values_cannot_forge_or_flood_a_line(
    node: Registrar1, caplog: pytest.LogCaptureFixture
) -> None:
    user = 'x" src=198.51.100.1 \\ ' + "é" * 100
    credentials = node.credentials(user=user)
    caplog.clear()
    node.send(credentials, source=Peer("tcp", "2001:db8::5", 40001, 7))
    ((level, line),) = auth_lines(caplog)
    assert level == logging.WARNING
    assert line == (
        "auth failed: src=2001:db8::5 port=40001 transport=tcp method=REGISTER "
        r'user="x\" src=198.51.100.1 \\ ' + r"\u00e9" * 42 + '..." realm="net-b.test" '
        'reason="unknown user"'
    )
    match = FAIL2BAN.match(line)
    assert match is not None
    assert match["host"] == "2001:db8::5"


def test_a_subscribe_with_a_wrong_password_is_logged_by_the_presence_role(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="presence_sip.auth.guard")
    node = flows.Node(auth=True)
    challenge = flows.only_response(node.receive(flows.subscribe()))
    assert challenge.status == 401
    request = parse_message(flows.subscribe())
    assert isinstance(request, Request)
    value = challenge.headers.get_all("WWW-Authenticate")[-1]
    credentials = build_authorization(
        value, username=flows.ALICE, password="guess", method="SUBSCRIBE",
        uri=request.uri, cnonce="c1", nc=1,
    )  # fmt: skip
    request.headers.add("Authorization", credentials)
    assert flows.only_response(node.receive(to_bytes(request))).status == 401
    assert auth_lines(caplog) == [(
        logging.WARNING,
        'auth failed: src=127.0.0.1 port=5070 transport=udp method=SUBSCRIBE '
        'user="+447700900001" realm="net-b.test" reason="wrong password"',
    )]  # fmt: skip


def test_registering_someone_elses_number_is_one_warning_with_source_and_user(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Valid credentials for another number: 403, and the operator's log says who and from
    where (it said nothing; hostile-client audit)."""
    node = Registrar1()
    node.hss.add_subscriber("+447700900999", "mallory-pw")
    credentials = node.credentials(user="+447700900999", password="mallory-pw")
    with caplog.at_level(logging.INFO, logger="presence_sip.registrar.role"):
        refused = node.send(credentials)
    assert (refused.status, refused.reason) == (403, "Not allowed to register this AOR")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(
        logging.WARNING,
        'register forbidden: src=203.0.113.5 port=5062 transport=udp user="+447700900999" '
        'aor="+447700900123"',
    )]  # fmt: skip


def test_failures_that_are_no_guess_are_one_line_a_minute_per_reason(
    node: Registrar1, caplog: pytest.LogCaptureFixture
) -> None:
    """A nonce not ours needs no challenge: anyone can send floods of them from any address
    (review: a WARNING line each was the per-request log cost moved to DEBUG)."""
    credentials = node.credentials()
    forged = re.sub(r'nonce="[^"]+"', 'nonce="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"', credentials)
    caplog.clear()
    for _ in range(50):
        assert node.send(forged).status == 401
    assert node.send(forged, now=T0 + 61.0).status == 401
    reasons = [line.rsplit("reason=", 1)[1] for level, line in auth_lines(caplog)]
    assert reasons == ['"Invalid nonce"', '"Invalid nonce (51 so far, one line a minute)"']
    assert node.guard.failures == 51
