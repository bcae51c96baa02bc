"""REGISTER with digest authentication against a running ``presence-sip serve`` (issue 4).

Subscribers are added with the ``presence-sip hss`` CLI before the node starts.  The digest
username is the MSISDN with ``+``; the realm is the node's domain.  ``SipAgent`` (the project's
scripted UDP agent) plays the softphone; raw requests (``serve_process.register``) cover what the
agent does not do (MD5 on purpose, no Contact, ``*``, replays).
"""

from __future__ import annotations

import re
import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from serve_process import ServeProcess, UdpClient, build_request, register, serve_command

from presence_sip.auth.digest import build_authorization, parse_challenge
from presence_sip.runtime.agent import SipAgent
from presence_sip.sip import Response

DOMAIN = "example.test"
ALICE, ALICE_PW = "+447700900001", "alice-secret"
BOB, BOB_PW = "+447700900002", "bob-secret"
UNKNOWN = "+447700900999"


def hss(data_dir: Path, *args: str) -> None:
    """``presence-sip hss --data DIR --domain D ARGS`` (exit 0 expected)."""
    command = [*serve_command(), "hss", "--data", str(data_dir), "--domain", DOMAIN, *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def node(serve_factory: Callable[..., ServeProcess], tmp_path: Path) -> ServeProcess:
    data_dir = tmp_path / "net"
    hss(data_dir, "subscriber", "add", ALICE, "--password", ALICE_PW)
    hss(data_dir, "subscriber", "add", BOB, "--password", BOB_PW)
    return serve_factory(data_dir=data_dir, domain=DOMAIN)


def aor(user: str) -> str:
    return f"sip:{user}@{DOMAIN}"


def challenges(response: Response) -> list[str]:
    return response.headers.get_all("WWW-Authenticate")


def algorithms(response: Response) -> list[str]:
    return [parse_challenge(value).algorithm for value in challenges(response)]


def bound_contacts(response: Response) -> list[str]:
    return [value.strip() for value in response.headers.values("Contact")]


async def agent_register(
    node: ServeProcess, user: str, password: str | None, expires: int = 600
) -> tuple[SipAgent, Response]:
    agent = SipAgent(user, DOMAIN)
    await agent.start()
    response = await agent.request(
        "REGISTER",
        f"sip:{DOMAIN}",
        node.address,
        to=aor(user),
        headers=[("Expires", str(expires))],
        password=password,
        timeout=10.0,
    )
    return agent, response


# -- the digest flow -------------------------------------------------------------------------------


async def test_register_is_challenged_with_sha256_and_md5_then_accepted(node: ServeProcess) -> None:
    agent, first = await agent_register(node, ALICE, None)
    agent.close()
    assert first.status == 401
    # RFC 8760 §2.4: one challenge per algorithm, the preferred (SHA-256) first.
    assert algorithms(first) == ["SHA-256", "MD5"]
    for value in challenges(first):
        challenge = parse_challenge(value)
        assert challenge.realm == DOMAIN
        assert "auth" in challenge.qop
        assert not challenge.stale

    agent, final = await agent_register(node, ALICE, ALICE_PW)  # answers the SHA-256 challenge
    try:
        assert final.status == 200
        contact = f"<sip:{ALICE}@{agent.host}:{agent.port}>"
        (bound,) = bound_contacts(final)
        assert bound.startswith(contact), bound
        assert re.search(r";expires=(59\d|600)\b", bound), bound
    finally:
        agent.close()


def test_register_with_md5_is_accepted(node: ServeProcess) -> None:
    with UdpClient() as client:
        contact = f"<sip:{BOB}@127.0.0.1:{client.port}>"
        _, final = register(
            client, node, user=BOB, password=BOB_PW, domain=DOMAIN, contact=contact,
            algorithm="MD5",
        )  # fmt: skip
    assert final.status == 200
    assert any(c.startswith(contact) for c in bound_contacts(final))


async def test_wrong_password_is_challenged_again_never_200(node: ServeProcess) -> None:
    agent, final = await agent_register(node, ALICE, "not-the-password")
    agent.close()
    assert final.status == 401
    assert algorithms(final) == ["SHA-256", "MD5"]
    with UdpClient() as client:
        for algorithm in ("SHA-256", "MD5"):
            _, again = register(
                client, node, user=ALICE, password="wrong", domain=DOMAIN,
                contact=f"<sip:{ALICE}@127.0.0.1:{client.port}>", algorithm=algorithm,
            )  # fmt: skip
            assert again.status == 401, algorithm
        # ... and nothing was bound by those attempts.
        _, query = register(client, node, user=ALICE, password=ALICE_PW, domain=DOMAIN)
    assert query.status == 200
    assert bound_contacts(query) == []


async def test_unknown_user_is_challenged_like_a_known_one(node: ServeProcess) -> None:
    """No 404 (or anything else) before authentication: subscribers cannot be enumerated."""
    unknown_agent, unknown = await agent_register(node, UNKNOWN, "whatever")
    known_agent, known = await agent_register(node, ALICE, "whatever")
    unknown_agent.close()
    known_agent.close()
    assert unknown.status == known.status == 401
    assert unknown.reason == known.reason
    assert algorithms(unknown) == algorithms(known)
    assert sorted(name for name, _ in unknown.headers) == sorted(name for name, _ in known.headers)


async def test_register_for_someone_else_is_refused(node: ServeProcess) -> None:
    """RFC 3261 §10.3 step 3: Bob's credentials do not register Alice's AOR."""
    agent = SipAgent(BOB, DOMAIN)
    await agent.start()
    try:
        response = await agent.request(
            "REGISTER", f"sip:{DOMAIN}", node.address, to=aor(ALICE), password=BOB_PW,
            timeout=10.0,
        )  # fmt: skip
    finally:
        agent.close()
    assert response.status == 403


# -- nonces ----------------------------------------------------------------------------------------


def raw_register(
    client: UdpClient, node: ServeProcess, *, authorization: str | None, cseq: int
) -> Response:
    """One REGISTER of Alice's AOR with a fresh Call-ID/branch and the given Authorization."""
    headers = [("Contact", f"<sip:{ALICE}@127.0.0.1:{client.port}>"), ("Expires", "600")]
    if authorization is not None:
        headers.append(("Authorization", authorization))
    request = build_request(
        "REGISTER", f"sip:{DOMAIN}", client, to=f"<{aor(ALICE)}>", from_=f"<{aor(ALICE)}>",
        cseq=cseq, headers=headers,
    )  # fmt: skip
    return client.request(request, node)


def credentials(challenge: str, *, nc: int = 1) -> str:
    return build_authorization(
        challenge, username=ALICE, password=ALICE_PW, method="REGISTER", uri=f"sip:{DOMAIN}",
        cnonce=secrets.token_hex(8), nc=nc,
    )  # fmt: skip


def test_replayed_nonce_count_is_refused(node: ServeProcess) -> None:
    """RFC 2617 §3.2.2 / RFC 7616 §3.4: nc must grow; the same credentials twice is a replay."""
    with UdpClient() as client:
        challenge = raw_register(client, node, authorization=None, cseq=1)
        authorization = credentials(challenges(challenge)[0])
        assert raw_register(client, node, authorization=authorization, cseq=2).status == 200
        replay = raw_register(client, node, authorization=authorization, cseq=3)
        assert replay.status == 401
        # The next nonce-count with the same nonce is fine.
        next_nc = credentials(challenges(challenge)[0], nc=2)
        assert raw_register(client, node, authorization=next_nc, cseq=4).status == 200


def test_reused_nonce_without_qop_is_stale(node: ServeProcess) -> None:
    """RFC 2069-style credentials (no qop) use a nonce once; the reuse gets ``stale=true``."""
    with UdpClient() as client:
        challenge = raw_register(client, node, authorization=None, cseq=1)
        no_qop = challenges(challenge)[0].replace(', qop="auth"', "")
        assert "qop" not in no_qop
        authorization = credentials(no_qop)
        assert raw_register(client, node, authorization=authorization, cseq=2).status == 200
        again = raw_register(client, node, authorization=authorization, cseq=3)
    assert again.status == 401
    assert all(parse_challenge(value).stale for value in challenges(again))


def test_forged_nonce_is_refused_not_stale(node: ServeProcess) -> None:
    with UdpClient() as client:
        challenge = raw_register(client, node, authorization=None, cseq=1)
        value = challenges(challenge)[0]
        nonce = parse_challenge(value).nonce
        forged = value.replace(nonce, nonce[:-4] + ("AAAA" if nonce[-4:] != "AAAA" else "BBBB"))
        response = raw_register(client, node, authorization=credentials(forged), cseq=2)
    assert response.status == 401
    assert not any(parse_challenge(v).stale for v in challenges(response))


def test_credentials_captured_before_a_restart_cannot_be_replayed(node: ServeProcess) -> None:
    """Digest covers method and URI, not Contact: a replay that the node accepts would let
    anyone who saw one REGISTER bind their own Contact to the AOR.  The nonce-count state is
    per process, so a restarted node must not accept nonces whose state it no longer has
    (re-challenge, ideally with ``stale=true``)."""
    with UdpClient() as client:
        challenge = raw_register(client, node, authorization=None, cseq=1)
        authorization = credentials(challenges(challenge)[0])
        assert raw_register(client, node, authorization=authorization, cseq=2).status == 200
    node.restart()
    with UdpClient() as attacker:
        replay = raw_register(attacker, node, authorization=authorization, cseq=1)
    assert replay.status == 401, f"replayed credentials accepted: {replay.status}"


# -- bindings ----------------------------------------------------------------------------------------


async def test_bindings_survive_a_restart(node: ServeProcess) -> None:
    agent, registered = await agent_register(node, ALICE, ALICE_PW, expires=3600)
    agent.close()
    assert registered.status == 200
    contact = f"<sip:{ALICE}@{agent.host}:{agent.port}>"
    node.restart()  # same data directory, same port
    with UdpClient() as client:
        _, query = register(client, node, user=ALICE, password=ALICE_PW, domain=DOMAIN)
    assert query.status == 200
    (bound,) = bound_contacts(query)
    assert bound.startswith(contact), bound
    expires = int(re.search(r";expires=(\d+)", bound).group(1))  # type: ignore[union-attr]
    assert 3500 < expires <= 3600


def test_star_removes_every_binding(node: ServeProcess) -> None:
    with UdpClient() as one, UdpClient() as two:
        for client in (one, two):
            contact = f"<sip:{ALICE}@127.0.0.1:{client.port}>"
            _, response = register(
                client, node, user=ALICE, password=ALICE_PW, domain=DOMAIN, contact=contact,
            )  # fmt: skip
            assert response.status == 200
        assert len(bound_contacts(response)) == 2
        # RFC 3261 §10.3 step 6: "*" needs Expires: 0 ...
        _, refused = register(
            one, node, user=ALICE, password=ALICE_PW, domain=DOMAIN, contact="*", expires=60
        )
        assert refused.status == 400
        # ... and then removes every binding of the AOR.
        _, removed = register(
            one, node, user=ALICE, password=ALICE_PW, domain=DOMAIN, contact="*", expires=0
        )
        assert removed.status == 200
        assert bound_contacts(removed) == []
        _, query = register(one, node, user=ALICE, password=ALICE_PW, domain=DOMAIN)
    assert query.status == 200
    assert bound_contacts(query) == []


def test_unknown_authorization_scheme_is_challenged(node: ServeProcess) -> None:
    """RFC 4475 §3.3.7 regaut01: a registrar that authenticates answers 401 with a challenge it
    understands."""
    with UdpClient() as client:
        response = raw_register(
            client, node, authorization="NoOneKnowsThisScheme opaque-data=here", cseq=1
        )
    assert response.status == 401
    assert algorithms(response) == ["SHA-256", "MD5"]
