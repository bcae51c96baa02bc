"""REGISTER with digest authentication against a running ``presence-sip serve`` (issue 4).

Subscribers are written with the HSS store API before the node starts (``presence-sip hss`` round
trips have their own tests).  The digest username is the MSISDN with ``+``; the realm is the
node's domain.  ``SipAgent`` (the project's scripted UDP agent) plays the softphone; raw requests
(``serve_process.register``) cover what the agent does not do (MD5 on purpose, no Contact, ``*``,
replays).  Most tests share one node and use their own subscribers; the restart tests run their
own node.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
from serve_process import ServeProcess, UdpClient, build_request, register, serve_pool

from presence_sip.auth.digest import build_authorization
from presence_sip.auth.headers import parse_challenge
from presence_sip.runtime.agent import SipAgent
from presence_sip.sip import Response
from presence_sip.storage.database import database_path
from presence_sip.storage.sqlite_hss import SqliteSubscriberStore

DOMAIN = "example.test"
SUBSCRIBERS = 40
"""Subscribers provisioned in every node's HSS: +447700900001 ... +447700900040."""
UNKNOWN = "+447700900999"


@dataclass(frozen=True)
class User:
    msisdn: str
    password: str

    @property
    def aor(self) -> str:
        return f"sip:{self.msisdn}@{DOMAIN}"


def provisioned(index: int) -> User:
    msisdn = f"+4477009{index:05d}"
    return User(msisdn, f"secret-{index}")


def provision(data_dir: Path) -> Path:
    store = SqliteSubscriberStore.open(data_dir, DOMAIN)
    try:
        for index in range(1, SUBSCRIBERS + 1):
            user = provisioned(index)
            store.add_subscriber(user.msisdn, user.password)
    finally:
        store.close()
    return data_dir


@pytest.fixture(scope="module")
def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    failures_before = request.session.testsfailed
    directory = tmp_path_factory.mktemp("register")
    with serve_pool(directory, lambda: request.session.testsfailed > failures_before) as start:
        yield start(data_dir=provision(directory / "net"), domain=DOMAIN)


_next_user = itertools.count(1)


def _fresh_user() -> User:
    index = next(_next_user)
    assert index <= SUBSCRIBERS, "provision more subscribers"
    return provisioned(index)


@pytest.fixture
def alice() -> User:
    """A provisioned subscriber no other test uses."""
    return _fresh_user()


@pytest.fixture
def bob() -> User:
    """Another one."""
    return _fresh_user()


@pytest.fixture
def node(serve_factory: Callable[..., ServeProcess], tmp_path: Path) -> ServeProcess:
    """A node of its own (for the restart tests)."""
    return serve_factory(data_dir=provision(tmp_path / "net"), domain=DOMAIN)


def challenges(response: Response) -> list[str]:
    return response.headers.get_all("WWW-Authenticate")


def algorithms(response: Response) -> list[str]:
    return [parse_challenge(value).algorithm for value in challenges(response)]


def bound_contacts(response: Response) -> list[str]:
    return [value.strip() for value in response.headers.values("Contact")]


async def agent_register(
    node: ServeProcess, msisdn: str, password: str | None, expires: int = 600
) -> tuple[SipAgent, Response]:
    agent = SipAgent(msisdn, DOMAIN)
    await agent.start()
    response = await agent.request(
        "REGISTER",
        f"sip:{DOMAIN}",
        node.address,
        to=f"sip:{msisdn}@{DOMAIN}",
        headers=[("Expires", str(expires))],
        password=password,
        timeout=10.0,
    )
    return agent, response


# -- the digest flow -------------------------------------------------------------------------------


async def test_register_is_challenged_with_sha256_and_md5_then_accepted(
    shared: ServeProcess, alice: User
) -> None:
    agent, first = await agent_register(shared, alice.msisdn, None)
    agent.close()
    assert first.status == 401
    # RFC 8760 §2.4: one challenge per algorithm, the preferred (SHA-256) first.
    assert algorithms(first) == ["SHA-256", "MD5"]
    for value in challenges(first):
        challenge = parse_challenge(value)
        assert challenge.realm == DOMAIN
        assert "auth" in challenge.qop
        assert not challenge.stale

    agent, final = await agent_register(shared, alice.msisdn, alice.password)  # uses SHA-256
    try:
        assert final.status == 200
        contact = f"<sip:{alice.msisdn}@{agent.host}:{agent.port}>"
        (bound,) = bound_contacts(final)
        assert bound.startswith(contact), bound
        assert re.search(r";expires=(59\d|600)\b", bound), bound
    finally:
        agent.close()


def test_register_with_md5_is_accepted(shared: ServeProcess, alice: User) -> None:
    with UdpClient() as client:
        contact = f"<sip:{alice.msisdn}@127.0.0.1:{client.port}>"
        _, final = register(
            client, shared, user=alice.msisdn, password=alice.password, domain=DOMAIN,
            contact=contact, algorithm="MD5",
        )  # fmt: skip
    assert final.status == 200
    assert [c for c in bound_contacts(final) if c.startswith(contact)]


async def test_wrong_password_is_challenged_again_never_200(
    shared: ServeProcess, alice: User
) -> None:
    agent, final = await agent_register(shared, alice.msisdn, "not-the-password")
    agent.close()
    assert final.status == 401
    assert algorithms(final) == ["SHA-256", "MD5"]
    with UdpClient() as client:
        for algorithm in ("SHA-256", "MD5"):
            _, again = register(
                client, shared, user=alice.msisdn, password="wrong", domain=DOMAIN,
                contact=f"<sip:{alice.msisdn}@127.0.0.1:{client.port}>", algorithm=algorithm,
            )  # fmt: skip
            assert again.status == 401, algorithm
        # ... and nothing was bound by those attempts.
        _, query = register(
            client, shared, user=alice.msisdn, password=alice.password, domain=DOMAIN
        )
    assert query.status == 200
    assert bound_contacts(query) == []


def test_a_password_guesser_is_blocked_after_auth_failures(
    serve_factory: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    """``--auth-failures 3``: the third wrong password from one address starts a block; then
    even the right one gets 503 with Retry-After (no guess is answered), logged once for
    fail2ban too."""
    user = provisioned(0)
    node = serve_factory(
        data_dir=provision(tmp_path / "net"), domain=DOMAIN, extra_args=["--auth-failures", "3"]
    )
    with UdpClient() as client:
        for guess in range(3):
            _, wrong = register(
                client, node, user=user.msisdn, password=f"guess-{guess}", domain=DOMAIN
            )
            assert wrong.status == 401
        challenge, _ = register(
            client, node, user=user.msisdn, password=user.password, domain=DOMAIN
        )
    assert (challenge.status, challenge.reason) == (503, "Too many failed authentications")
    assert 0 < int(challenge.headers.get("Retry-After") or "0") <= 300
    assert "auth blocked: src=127.0.0.1 for 300 s after 3 failed authentications" in (
        node.log_text()
    )


async def test_unknown_user_is_challenged_like_a_known_one(
    shared: ServeProcess, alice: User
) -> None:
    """No 404 (or anything else) before authentication: subscribers cannot be enumerated."""
    unknown_agent, unknown = await agent_register(shared, UNKNOWN, "whatever")
    known_agent, known = await agent_register(shared, alice.msisdn, "whatever")
    unknown_agent.close()
    known_agent.close()
    assert unknown.status == known.status == 401
    assert unknown.reason == known.reason
    assert algorithms(unknown) == algorithms(known)
    assert sorted(name for name, _ in unknown.headers) == sorted(name for name, _ in known.headers)


async def test_register_for_someone_else_is_refused(
    shared: ServeProcess, alice: User, bob: User
) -> None:
    """RFC 3261 §10.3 step 3: Bob's credentials do not register Alice's AOR."""
    agent = SipAgent(bob.msisdn, DOMAIN)
    await agent.start()
    try:
        response = await agent.request(
            "REGISTER", f"sip:{DOMAIN}", shared.address, to=alice.aor, password=bob.password,
            timeout=10.0,
        )  # fmt: skip
    finally:
        agent.close()
    assert response.status == 403


# -- nonces ----------------------------------------------------------------------------------------


def raw_register(
    client: UdpClient, node: ServeProcess, user: User, *, authorization: str | None, cseq: int
) -> Response:
    """One REGISTER of ``user``'s AOR with a fresh Call-ID/branch and the given Authorization."""
    headers = [("Contact", f"<sip:{user.msisdn}@127.0.0.1:{client.port}>"), ("Expires", "600")]
    if authorization is not None:
        headers.append(("Authorization", authorization))
    request = build_request(
        "REGISTER", f"sip:{DOMAIN}", client, to=f"<{user.aor}>", from_=f"<{user.aor}>",
        cseq=cseq, headers=headers,
    )  # fmt: skip
    return client.request(request, node)


def credentials(user: User, challenge: str, *, nc: int = 1) -> str:
    return build_authorization(
        challenge, username=user.msisdn, password=user.password, method="REGISTER",
        uri=f"sip:{DOMAIN}", cnonce=secrets.token_hex(8), nc=nc,
    )  # fmt: skip


def test_replayed_nonce_count_is_refused(shared: ServeProcess, alice: User) -> None:
    """RFC 2617 §3.2.2 / RFC 7616 §3.4: nc must grow; the same credentials twice is a replay."""
    with UdpClient() as client:
        challenge = raw_register(client, shared, alice, authorization=None, cseq=1)
        authorization = credentials(alice, challenges(challenge)[0])
        ok = raw_register(client, shared, alice, authorization=authorization, cseq=2)
        assert ok.status == 200
        replay = raw_register(client, shared, alice, authorization=authorization, cseq=3)
        assert replay.status == 401
        # The next nonce-count with the same nonce is fine.
        next_nc = credentials(alice, challenges(challenge)[0], nc=2)
        assert raw_register(client, shared, alice, authorization=next_nc, cseq=4).status == 200


def test_reused_nonce_without_qop_is_stale(shared: ServeProcess, alice: User) -> None:
    """RFC 2069-style MD5 credentials (no qop) use a nonce once; the reuse gets ``stale=true``.
    SHA-256 never had that form: without qop it is challenged again, not stale."""
    with UdpClient() as client:
        challenge = raw_register(client, shared, alice, authorization=None, cseq=1)
        by_algorithm = {parse_challenge(value).algorithm: value for value in challenges(challenge)}
        no_qop = by_algorithm["MD5"].replace(', qop="auth"', "")
        assert "qop" not in no_qop
        authorization = credentials(alice, no_qop)
        ok = raw_register(client, shared, alice, authorization=authorization, cseq=2)
        assert ok.status == 200
        again = raw_register(client, shared, alice, authorization=authorization, cseq=3)
        sha256_no_qop = credentials(alice, by_algorithm["SHA-256"].replace(', qop="auth"', ""))
        refused = raw_register(client, shared, alice, authorization=sha256_no_qop, cseq=4)
    assert again.status == 401
    assert all(parse_challenge(value).stale for value in challenges(again))
    assert refused.status == 401
    assert not any(parse_challenge(value).stale for value in challenges(refused))


def test_forged_nonce_is_refused_not_stale(shared: ServeProcess, alice: User) -> None:
    with UdpClient() as client:
        challenge = raw_register(client, shared, alice, authorization=None, cseq=1)
        value = challenges(challenge)[0]
        nonce = parse_challenge(value).nonce
        forged = value.replace(nonce, nonce[:-4] + ("AAAA" if nonce[-4:] != "AAAA" else "BBBB"))
        authorization = credentials(alice, forged)
        response = raw_register(client, shared, alice, authorization=authorization, cseq=2)
    assert response.status == 401
    assert not any(parse_challenge(v).stale for v in challenges(response))


def test_credentials_captured_before_a_restart_cannot_be_replayed(node: ServeProcess) -> None:
    """Digest covers method and URI, not Contact: a replay the node accepts lets anyone who saw
    one REGISTER bind their own Contact to the AOR.  Nonce-count state is per process, so a
    restarted node must not accept nonces it has no state for (re-challenge, ideally
    ``stale=true``)."""
    user = provisioned(1)
    with UdpClient() as client:
        challenge = raw_register(client, node, user, authorization=None, cseq=1)
        authorization = credentials(user, challenges(challenge)[0])
        ok = raw_register(client, node, user, authorization=authorization, cseq=2)
        assert ok.status == 200
    node.restart()
    with UdpClient() as attacker:
        replay = raw_register(attacker, node, user, authorization=authorization, cseq=1)
    assert replay.status == 401, f"replayed credentials accepted: {replay.status}"


# -- bindings -----------------------------------------------------------------------------------


async def test_bindings_survive_a_restart(node: ServeProcess) -> None:
    user = provisioned(1)
    agent, registered = await agent_register(node, user.msisdn, user.password, expires=3600)
    agent.close()
    assert registered.status == 200
    contact = f"<sip:{user.msisdn}@{agent.host}:{agent.port}>"
    node.restart()  # same data directory, same port
    with UdpClient() as client:
        _, query = register(client, node, user=user.msisdn, password=user.password, domain=DOMAIN)
    assert query.status == 200
    bound = bound_contacts(query)
    assert len(bound) == 1, f"bindings after the restart: {bound}"
    assert bound[0].startswith(contact), bound
    expires = re.search(r";expires=(\d+)", bound[0])
    assert expires is not None
    assert 3500 < int(expires.group(1)) <= 3600


def test_star_removes_every_binding(shared: ServeProcess, alice: User) -> None:
    def register_alice(
        client: UdpClient, contact: str | None, expires: int | None = None
    ) -> Response:
        _, final = register(
            client, shared, user=alice.msisdn, password=alice.password, domain=DOMAIN,
            contact=contact, expires=expires,
        )  # fmt: skip
        return final

    with UdpClient() as one, UdpClient() as two:
        for client in (one, two):
            response = register_alice(client, f"<sip:{alice.msisdn}@127.0.0.1:{client.port}>")
            assert response.status == 200
        assert len(bound_contacts(response)) == 2
        # RFC 3261 §10.3 step 6: "*" needs Expires: 0 ...
        assert register_alice(one, "*", expires=60).status == 400
        # ... and then removes every binding of the AOR.
        removed = register_alice(one, "*", expires=0)
        assert removed.status == 200
        assert bound_contacts(removed) == []
        query = register_alice(one, None)
    assert query.status == 200
    assert bound_contacts(query) == []


def test_unknown_authorization_scheme_is_challenged(shared: ServeProcess, alice: User) -> None:
    """RFC 4475 §3.3.7 regaut01: a registrar that authenticates answers 401 with a challenge it
    understands."""
    with UdpClient() as client:
        response = raw_register(
            client, shared, alice, authorization="NoOneKnowsThisScheme opaque-data=here", cseq=1
        )
    assert response.status == 401
    assert algorithms(response) == ["SHA-256", "MD5"]


def _stored_aors(data_dir: Path) -> set[str]:
    location = f"file:{database_path(data_dir)}?mode=ro"
    with closing(sqlite3.connect(location, uri=True)) as conn:
        return {row[0] for row in conn.execute("SELECT aor FROM bindings")}


def test_subscriber_removed_while_serving_loses_its_bindings(
    shared: ServeProcess, alice: User, bob: User
) -> None:
    """``presence-sip hss subscriber remove`` in another process: the running node drops the
    subscriber's bindings (memory and database) within its HSS poll, and keeps the others'."""
    with UdpClient() as client:
        for user in (alice, bob):
            contact = f"<sip:{user.msisdn}@127.0.0.1:{client.port}>"
            _, final = register(
                client, shared, user=user.msisdn, password=user.password, domain=DOMAIN,
                contact=contact,
            )  # fmt: skip
            assert final.status == 200
    removed = subprocess.run(
        [sys.executable, "-m", "presence_sip.cli.hss", "--data", str(shared.data_dir),
         "--domain", DOMAIN, "subscriber", "remove", alice.msisdn],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )  # fmt: skip
    assert removed.returncode == 0, removed.stderr
    deadline = time.monotonic() + 10.0
    while alice.msisdn in _stored_aors(shared.data_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alice.msisdn not in _stored_aors(shared.data_dir)
    assert bob.msisdn in _stored_aors(shared.data_dir)
    assert f"{alice.msisdn} left the HSS: 1 binding(s) removed" in shared.log_text()


IMPORTED = 100_000
"""Subscribers of the big import below (its write transaction held SQLite's write lock for
~4 s before the import checked and hashed every line first; ~1 s now)."""


def test_a_big_import_leaves_a_running_node_answering_register(
    node: ServeProcess, tmp_path: Path
) -> None:
    """An operator imports 100,000 subscribers into the HSS of a running node: REGISTERs
    made all the while are answered 200 (a node whose commits wait on the import's write lock
    over 5 s answers 503), their bindings are stored, and the import is complete."""
    table = tmp_path / "subscribers.csv"
    rows = (f"+4478{index:08d},pw-{index}\n" for index in range(IMPORTED))
    table.write_text("msisdn,password\n" + "".join(rows))
    importing = subprocess.Popen(
        [sys.executable, "-m", "presence_sip.cli.hss", "--data", str(node.data_dir),
         "subscriber", "import", str(table)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )  # fmt: skip
    statuses: list[int] = []
    users = itertools.cycle(provisioned(index) for index in range(1, SUBSCRIBERS + 1))
    with UdpClient() as client:
        while importing.poll() is None:
            user = next(users)
            _, final = register(
                client, node, user=user.msisdn, password=user.password, domain=DOMAIN,
                contact=f"<sip:{user.msisdn}@127.0.0.1:{client.port}>",
            )  # fmt: skip
            statuses.append(final.status)
    out, err = importing.communicate(timeout=60)
    assert (importing.returncode, out, err) == (0, f"imported {IMPORTED} subscribers\n", "")
    assert len(statuses) >= 20, "the REGISTERs did not overlap the import"
    assert set(statuses) == {200}
    deadline = time.monotonic() + 5.0
    while len(_stored_aors(node.data_dir)) < min(len(statuses), SUBSCRIBERS):
        assert time.monotonic() < deadline, "the bindings were not stored"
        time.sleep(0.1)
    store = SqliteSubscriberStore.open(node.data_dir)
    try:
        assert len(store.msisdns()) == SUBSCRIBERS + IMPORTED
    finally:
        store.close()
