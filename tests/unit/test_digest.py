"""Digest authentication (presence_sip.auth: digest, algorithms, headers): RFC vectors, verifier
rules, header parsing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from presence_sip.auth import (
    AuthOutcome,
    Credentials,
    DigestAlgorithm,
    DigestAuthenticator,
    build_authorization,
    compute_ha1,
    parse_challenge,
    parse_credentials,
    uri_matches,
)
from presence_sip.auth.digest import (
    REASON_CNONCE,
    REASON_EXPIRED,
    REASON_INVALID,
    REASON_NONCE,
    REASON_REPLAY,
    uri_host,
)
from presence_sip.sip.errors import ConfigError, LocalProtocolError, RemoteProtocolError

# RFC 7616 §3.9.1 (cited by RFC 8760 for SIP): note the lower-case "of" (erratum 4495).
RFC7616 = {
    "realm": "http-auth@example.org",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "opaque": "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
}
RFC7616_SHA256 = "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
RFC7616_MD5 = "8ca523f5e9506fed4657c9700eebdbec"

REALM = "net-a.test"
SECRET = b"0123456789abcdef0123456789abcdef"
URI = "sip:net-a.test"
USERS = {"alice": "wonderland", "bob": "builder"}


def rfc7616_challenge(algorithm: str) -> str:
    return (
        f'Digest realm="{RFC7616["realm"]}", qop="auth, auth-int", algorithm={algorithm}, '
        f'nonce="{RFC7616["nonce"]}", opaque="{RFC7616["opaque"]}"'
    )


def lookup(username: str, algorithm: DigestAlgorithm) -> str | None:
    password = USERS.get(username)
    return None if password is None else compute_ha1(username, REALM, password, algorithm)


def answer(
    challenge: str,
    *,
    user: str = "alice",
    password: str | None = None,
    nc: int = 1,
    method: str = "REGISTER",
    cnonce: str = "c0ffee",
) -> Credentials:
    """What a UAC would send back, parsed as the registrar would see it."""
    value = build_authorization(
        challenge,
        username=user,
        password=USERS.get(user, "x") if password is None else password,
        method=method,
        uri=URI,
        cnonce=cnonce,
        nc=nc,
    )
    return parse_credentials(value)


def counter_ids() -> Callable[[], str]:
    count = 0

    def next_id() -> str:
        nonlocal count
        count += 1
        return f"id-{count}"

    return next_id


@pytest.fixture
def auth() -> DigestAuthenticator:
    return DigestAuthenticator(REALM, SECRET, id_source=counter_ids())


# -- RFC vectors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "expected"), [("SHA-256", RFC7616_SHA256), ("MD5", RFC7616_MD5)]
)
def test_rfc7616_example_responses(algorithm: str, expected: str) -> None:
    value = build_authorization(
        rfc7616_challenge(algorithm),
        username="Mufasa",
        password="Circle of Life",
        method="GET",
        uri="/dir/index.html",
        cnonce=RFC7616["cnonce"],
    )
    assert value == (
        'Digest username="Mufasa", realm="http-auth@example.org", '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", uri="/dir/index.html", '
        f'response="{expected}", algorithm={algorithm}, '
        'cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, nc=00000001, '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )


def test_rfc7616_md5_ha1() -> None:
    ha1 = compute_ha1("Mufasa", RFC7616["realm"], "Circle of Life", DigestAlgorithm.MD5)
    assert ha1 == "3d78807defe7de2157e2b0b6573a855f"


def test_rfc2617_example_response() -> None:
    # RFC 2617 §3.5: password "Circle Of Life" (capital O), no algorithm directive (MD5).
    challenge = (
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    value = build_authorization(
        challenge,
        username="Mufasa",
        password="Circle Of Life",
        method="GET",
        uri="/dir/index.html",
        cnonce="0a4f113b",
    )
    creds = parse_credentials(value)
    assert creds.response == "6629fae49393a05397450978507c4ef1"
    assert (creds.qop, creds.nc, creds.cnonce) == ("auth", "00000001", "0a4f113b")
    assert creds.algorithm == ""
    assert "algorithm" not in value


def test_rfc2069_example_response() -> None:
    challenge = (
        'Digest realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
        'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    value = build_authorization(
        challenge,
        username="Mufasa",
        password="CircleOfLife",
        method="GET",
        uri="/dir/index.html",
        cnonce="unused",
    )
    creds = parse_credentials(value)
    assert creds.response == "1949323746fe6a43ef61f9606e7febea"
    assert (creds.qop, creds.nc, creds.cnonce) == ("", "", "")


# -- challenges ----------------------------------------------------------------------------------


def test_challenge_values_exact() -> None:
    auth = DigestAuthenticator(REALM, SECRET, id_source=lambda: "id-1")
    payload = struct.pack("!d", 1000.0) + bytes(4) + b"id-1"  # time, no source tag, random
    mac = hmac.new(SECRET, REALM.encode() + b"\0" + payload, hashlib.sha256).digest()[:16]
    nonce = base64.urlsafe_b64encode(payload + mac).rstrip(b"=").decode()
    opaque = auth.opaque
    assert auth.challenge(1000.0) == [
        f'Digest realm="net-a.test", nonce="{nonce}", opaque="{opaque}", '
        'algorithm=SHA-256, qop="auth"',
        f'Digest realm="net-a.test", nonce="{nonce}", opaque="{opaque}", algorithm=MD5, qop="auth"',
    ]
    assert auth.challenge(1000.0, stale=True)[0].endswith(', qop="auth", stale=true')


def test_challenge_strongest_first_whatever_the_configured_order() -> None:
    auth = DigestAuthenticator(
        REALM, SECRET, algorithms=(DigestAlgorithm.MD5, DigestAlgorithm.SHA512_256)
    )
    algorithms = [parse_challenge(v).algorithm for v in auth.challenge(0.0)]
    assert algorithms == ["SHA-512-256", "MD5"]


def test_nonces_are_unique_without_id_source() -> None:
    auth = DigestAuthenticator(REALM, SECRET)
    nonces = {parse_challenge(auth.challenge(5.0)[0]).nonce for _ in range(50)}
    assert len(nonces) == 50


def test_challenge_round_trips_through_parse_challenge(auth: DigestAuthenticator) -> None:
    ch = parse_challenge(auth.challenge(1.0, stale=True)[0])
    assert (ch.scheme, ch.realm, ch.algorithm, ch.qop, ch.stale) == (
        "Digest",
        REALM,
        "SHA-256",
        ("auth",),
        True,
    )
    assert ch.opaque == auth.opaque


# -- verification --------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1])
def test_valid_credentials_ok(auth: DigestAuthenticator, index: int) -> None:
    creds = answer(auth.challenge(100.0)[index])
    result = auth.verify(creds, "REGISTER", lookup, 101.0)
    assert result.outcome is AuthOutcome.OK
    assert result.username == "alice"


@pytest.mark.parametrize(
    "algorithm",
    [
        DigestAlgorithm.SHA512_256,
        DigestAlgorithm.SHA256_SESS,
        DigestAlgorithm.MD5_SESS,
        DigestAlgorithm.SHA512_256_SESS,
    ],
)
def test_optional_algorithms(algorithm: DigestAlgorithm) -> None:
    auth = DigestAuthenticator(REALM, SECRET, algorithms=(algorithm,))
    creds = answer(auth.challenge(0.0)[0])
    assert creds.algorithm == algorithm.value
    assert auth.verify(creds, "REGISTER", lookup, 1.0).outcome is AuthOutcome.OK


def test_auth_int_covers_the_body(auth: DigestAuthenticator) -> None:
    ch = parse_challenge(auth.challenge(0.0)[0].replace('qop="auth"', 'qop="auth-int"'))
    value = build_authorization(
        ch,
        username="alice",
        password="wonderland",
        method="PUBLISH",
        uri=URI,
        cnonce="c",
        body=b"<presence/>",
    )
    creds = parse_credentials(value)
    assert creds.qop == "auth-int"
    assert auth.verify(creds, "PUBLISH", lookup, 1.0, body=b"<presence/>").outcome is AuthOutcome.OK
    other = auth.verify(creds, "PUBLISH", lookup, 1.0, body=b"<evil/>")
    assert (other.outcome, other.reason) == (AuthOutcome.FAILED, REASON_INVALID)


def test_wrong_method_fails(auth: DigestAuthenticator) -> None:
    creds = answer(auth.challenge(0.0)[0], method="SUBSCRIBE")
    assert auth.verify(creds, "REGISTER", lookup, 1.0).outcome is AuthOutcome.FAILED


def test_wrong_password_and_unknown_user_fail_identically(auth: DigestAuthenticator) -> None:
    wrong = auth.verify(answer(auth.challenge(0.0)[0], password="guess"), "REGISTER", lookup, 1.0)
    seen: list[tuple[str, DigestAlgorithm]] = []

    def spy(username: str, algorithm: DigestAlgorithm) -> str | None:
        seen.append((username, algorithm))
        return lookup(username, algorithm)

    unknown = auth.verify(answer(auth.challenge(0.0)[0], user="mallory"), "REGISTER", spy, 1.0)
    assert wrong.outcome is unknown.outcome is AuthOutcome.FAILED
    assert wrong.reason == unknown.reason == REASON_INVALID
    assert seen == [("mallory", DigestAlgorithm.SHA256)]


def test_unknown_user_never_matches_the_dummy_ha1() -> None:
    # Even a client that knew the dummy HA1 would be refused: the lookup said "no such user".
    auth = DigestAuthenticator(REALM, SECRET)
    creds = answer(auth.challenge(0.0)[1], user="ghost")
    assert auth.verify(creds, "REGISTER", lambda u, a: None, 1.0).outcome is AuthOutcome.FAILED


def test_stale_nonce_with_right_password_is_stale(auth: DigestAuthenticator) -> None:
    creds = answer(auth.challenge(0.0)[0])
    result = auth.verify(creds, "REGISTER", lookup, 300.5)
    assert (result.outcome, result.reason) == (AuthOutcome.STALE, REASON_EXPIRED)
    assert auth.verify(creds, "REGISTER", lookup, 299.5).outcome is AuthOutcome.OK


def test_stale_nonce_with_wrong_password_is_failed(auth: DigestAuthenticator) -> None:
    creds = answer(auth.challenge(0.0)[0], password="guess")
    result = auth.verify(creds, "REGISTER", lookup, 1000.0)
    assert (result.outcome, result.reason) == (AuthOutcome.FAILED, REASON_INVALID)


def test_a_nonce_from_the_future_is_stale(auth: DigestAuthenticator) -> None:
    """A process whose clock ran ahead (its system clock stepped back while it ran) gave it
    out; after a restart its replay state is gone: re-challenge, never accept it as new."""
    creds = answer(auth.challenge(3600.0)[0])
    result = auth.verify(creds, "REGISTER", lookup, 10.0)
    assert (result.outcome, result.reason) == (AuthOutcome.STALE, REASON_EXPIRED)
    close = answer(auth.challenge(12.0)[0])  # within the skew of nodes sharing the key
    assert auth.verify(close, "REGISTER", lookup, 10.0).outcome is AuthOutcome.OK


def test_nonce_count_must_increase(auth: DigestAuthenticator) -> None:
    challenge = auth.challenge(0.0)[0]
    first = answer(challenge, nc=1)
    assert auth.verify(first, "REGISTER", lookup, 1.0).outcome is AuthOutcome.OK
    replay = auth.verify(first, "REGISTER", lookup, 2.0)
    assert (replay.outcome, replay.reason) == (AuthOutcome.FAILED, REASON_REPLAY)
    assert auth.verify(answer(challenge, nc=3), "REGISTER", lookup, 3.0).outcome is AuthOutcome.OK
    older = auth.verify(answer(challenge, nc=2), "REGISTER", lookup, 4.0)
    assert older.reason == REASON_REPLAY


def test_nonce_count_zero_is_a_replay(auth: DigestAuthenticator) -> None:
    creds = answer(auth.challenge(0.0)[0], nc=0)
    assert auth.verify(creds, "REGISTER", lookup, 1.0).reason == REASON_REPLAY


def test_failed_attempt_does_not_burn_nonce_count(auth: DigestAuthenticator) -> None:
    challenge = auth.challenge(0.0)[0]
    bad = answer(challenge, nc=5, password="guess")
    assert auth.verify(bad, "REGISTER", lookup, 1.0).outcome is AuthOutcome.FAILED
    assert auth.verify(answer(challenge, nc=1), "REGISTER", lookup, 2.0).outcome is AuthOutcome.OK


def test_max_nonce_uses_forces_a_fresh_nonce() -> None:
    auth = DigestAuthenticator(REALM, SECRET, max_nonce_uses=2)
    challenge = auth.challenge(0.0)[0]
    outcomes = [
        auth.verify(answer(challenge, nc=n), "REGISTER", lookup, 1.0).outcome for n in (1, 2, 3)
    ]
    assert outcomes == [AuthOutcome.OK, AuthOutcome.OK, AuthOutcome.STALE]


def tamper(nonce: str) -> str:
    index = 12
    replacement = "A" if nonce[index] != "A" else "B"
    return nonce[:index] + replacement + nonce[index + 1 :]


def test_tampered_nonce_fails(auth: DigestAuthenticator) -> None:
    # The response is correct for the tampered nonce, so only the HMAC can catch it.
    challenge = parse_challenge(auth.challenge(0.0)[0])
    forged = replace(challenge, nonce=tamper(challenge.nonce))
    creds = parse_credentials(
        build_authorization(
            forged,
            username="alice",
            password="wonderland",
            method="REGISTER",
            uri=URI,
            cnonce="c",
        )
    )
    result = auth.verify(creds, "REGISTER", lookup, 1.0)
    assert (result.outcome, result.reason) == (AuthOutcome.FAILED, REASON_NONCE)


@pytest.mark.parametrize("nonce", ["", "!!!", "A", "AAAA", "x" * 300, "7ypf/xlj9XXwfDPE"])
def test_foreign_nonces_fail(auth: DigestAuthenticator, nonce: str) -> None:
    creds = answer(f'Digest realm="{REALM}", nonce="{nonce}", algorithm=SHA-256, qop="auth"')
    assert auth.verify(creds, "REGISTER", lookup, 1.0).reason == REASON_NONCE


def test_nonce_from_another_secret_fails_same_secret_succeeds() -> None:
    other = DigestAuthenticator(REALM, b"another secret")
    worker = DigestAuthenticator(REALM, SECRET)
    mine = DigestAuthenticator(REALM, SECRET)
    assert mine.verify(answer(other.challenge(0.0)[0]), "REGISTER", lookup, 1.0).reason == (
        REASON_NONCE
    )
    creds = answer(worker.challenge(0.0)[0])
    assert mine.verify(creds, "REGISTER", lookup, 1.0).outcome is AuthOutcome.OK


def test_nonce_is_bound_to_the_realm() -> None:
    other = DigestAuthenticator("net-b.test", SECRET)
    nonce = parse_challenge(other.challenge(0.0)[0]).nonce
    auth = DigestAuthenticator(REALM, SECRET)
    creds = answer(f'Digest realm="{REALM}", nonce="{nonce}", algorithm=SHA-256, qop="auth"')
    assert auth.verify(creds, "REGISTER", lookup, 1.0).reason == REASON_NONCE


def test_realm_mismatch_is_not_ours(auth: DigestAuthenticator) -> None:
    challenge = auth.challenge(0.0)[0].replace(REALM, "net-b.test")
    result = auth.verify(answer(challenge), "REGISTER", lookup, 1.0)
    assert result.outcome is AuthOutcome.MISSING
    assert result.reason == "Realm mismatch"


def test_missing_cnonce_with_qop_fails(auth: DigestAuthenticator) -> None:
    good = answer(auth.challenge(0.0)[0])
    value = (
        f'Digest username="alice", realm="{REALM}", nonce="{good.nonce}", uri="{URI}", '
        f'response="{good.response}", algorithm=SHA-256, qop=auth, nc=00000001'
    )
    result = auth.verify(parse_credentials(value), "REGISTER", lookup, 1.0)
    assert (result.outcome, result.reason) == (AuthOutcome.FAILED, REASON_CNONCE)


def test_missing_nc_with_qop_fails(auth: DigestAuthenticator) -> None:
    good = answer(auth.challenge(0.0)[0])
    value = (
        f'Digest username="alice", realm="{REALM}", nonce="{good.nonce}", uri="{URI}", '
        f'response="{good.response}", algorithm=SHA-256, qop=auth, cnonce="c0ffee"'
    )
    result = auth.verify(parse_credentials(value), "REGISTER", lookup, 1.0)
    assert result.outcome is AuthOutcome.FAILED
    assert "nonce count" in result.reason


def test_unknown_qop_fails(auth: DigestAuthenticator) -> None:
    creds = answer(auth.challenge(0.0)[0])
    bogus = replace(creds, qop="auth-conf")
    assert auth.verify(bogus, "REGISTER", lookup, 1.0).reason == "Unsupported qop"


def test_algorithm_not_offered_fails(auth: DigestAuthenticator) -> None:
    nonce = parse_challenge(auth.challenge(0.0)[0]).nonce
    for algorithm in ("SHA-512-256", "MD5-sess", "ROT13"):
        challenge = f'Digest realm="{REALM}", nonce="{nonce}", algorithm=SHA-256, qop="auth"'
        creds = answer(challenge)
        creds = replace(creds, algorithm=algorithm)
        result = auth.verify(creds, "REGISTER", lookup, 1.0)
        assert (result.outcome, result.reason) == (
            AuthOutcome.FAILED,
            "Unsupported digest algorithm",
        )


def test_opaque_must_come_back_unaltered(auth: DigestAuthenticator) -> None:
    creds = answer(auth.challenge(0.0)[0])
    altered = replace(creds, opaque="00" + creds.opaque[2:])
    assert auth.verify(altered, "REGISTER", lookup, 1.0).reason == "Opaque mismatch"
    absent = replace(creds, opaque="")
    assert auth.verify(absent, "REGISTER", lookup, 1.0).outcome is AuthOutcome.OK


def test_rfc2069_style_nonce_is_single_use(auth: DigestAuthenticator) -> None:
    challenge = auth.challenge(0.0)[1].replace(', qop="auth"', "")
    creds = answer(challenge)
    assert creds.qop == ""
    assert auth.verify(creds, "REGISTER", lookup, 1.0).outcome is AuthOutcome.OK
    again = auth.verify(creds, "REGISTER", lookup, 2.0)
    assert again.outcome is AuthOutcome.STALE


def test_rfc2069_style_is_for_md5_only(auth: DigestAuthenticator) -> None:
    """SHA-256 (RFC 7616, RFC 8760) never had the form without qop."""
    sha256 = auth.challenge(0.0)[0]
    assert "algorithm=SHA-256" in sha256
    creds = answer(sha256.replace(', qop="auth"', ""))
    assert creds.qop == ""
    result = auth.verify(creds, "REGISTER", lookup, 1.0)
    assert (result.outcome, result.reason) == (AuthOutcome.FAILED, "qop required")


def test_rfc2069_style_refused_when_configured() -> None:
    auth = DigestAuthenticator(REALM, SECRET, allow_no_qop=False)
    creds = answer(auth.challenge(0.0)[0].replace(', qop="auth"', ""))
    result = auth.verify(creds, "REGISTER", lookup, 1.0)
    assert (result.outcome, result.reason) == (AuthOutcome.FAILED, "qop required")


def test_unknown_scheme_is_missing(auth: DigestAuthenticator) -> None:
    creds = parse_credentials("NoOneKnowsThisScheme opaque-data=here")
    result = auth.verify(creds, "REGISTER", lookup, 1.0)
    assert result.outcome is AuthOutcome.MISSING


def test_replay_state_is_bounded_and_expires() -> None:
    auth = DigestAuthenticator(REALM, SECRET, max_tracked_nonces=2)
    challenges = [auth.challenge(float(t))[0] for t in (0, 1, 2)]
    for challenge in challenges:
        assert auth.verify(answer(challenge), "REGISTER", lookup, 3.0).outcome is AuthOutcome.OK
    assert auth.tracked_nonces == 2
    # The evicted nonce's replay state is gone, so it must not be accepted as new: re-challenge.
    lost = auth.verify(answer(challenges[0], nc=2), "REGISTER", lookup, 4.0)
    assert lost.outcome is AuthOutcome.STALE
    # A nonce issued after the eviction is tracked normally.
    fresh = auth.challenge(5.0)[0]
    assert auth.verify(answer(fresh), "REGISTER", lookup, 6.0).outcome is AuthOutcome.OK
    # Expired entries are pruned as time passes.
    later = auth.challenge(400.0)[0]
    assert auth.verify(answer(later), "REGISTER", lookup, 400.0).outcome is AuthOutcome.OK
    assert auth.tracked_nonces == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"secret": b""},
        {"algorithms": ()},
        {"nonce_lifetime": 0.0},
        {"max_nonce_uses": 0},
        {"max_tracked_nonces": 0},
    ],
)
def test_bad_configuration(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"secret": SECRET, **kwargs}
    with pytest.raises(ConfigError):
        DigestAuthenticator(REALM, **args)  # type: ignore[arg-type]


# -- parsing credentials -------------------------------------------------------------------------


def test_parse_odd_but_valid_credentials() -> None:
    value = (
        'digest  USERNAME = "al\\"ice\\\\" ,realm="net-a.test"\t,\r\n nonce="a,b=c", '
        'uri="sip:net-a.test;transport=tcp",\r\n\tresponse = "ABCDEF" , qop="auth", nc=0000000A,'
        ' cnonce="x y", opaque="", algorithm=sha-256, x-vendor=token, x-quoted="a\\b\r\n c"'
    )
    creds = parse_credentials(value)
    assert creds.scheme == "Digest"
    assert creds.username == 'al"ice\\'
    assert creds.realm == "net-a.test"
    assert creds.nonce == "a,b=c"
    assert creds.uri == "sip:net-a.test;transport=tcp"
    assert creds.response == "ABCDEF"
    assert (creds.qop, creds.nc, creds.cnonce, creds.opaque) == ("auth", "0000000A", "x y", "")
    assert creds.algorithm == "sha-256"
    assert creds.params["x-vendor"] == "token"
    assert creds.params["x-quoted"] == "ab\r\n c"
    assert DigestAlgorithm.from_token(creds.algorithm) is DigestAlgorithm.SHA256


def test_parse_minimal_unquoted_credentials() -> None:
    creds = parse_credentials("Digest username=a,realm=b,nonce=c,uri=d,response=e")
    assert (creds.username, creds.realm, creds.nonce, creds.uri, creds.response) == tuple("abcde")
    assert creds.algorithm == ""
    assert DigestAlgorithm.from_token(creds.algorithm) is DigestAlgorithm.MD5


def test_parse_utf8_username() -> None:
    creds = parse_credentials(
        'Digest username="J\u00e4s\u00f8n", realm="r", nonce="n", uri="u", response="0"'
    )
    assert creds.username == "J\u00e4s\u00f8n"


def test_regaut01_unknown_scheme() -> None:
    # RFC 4475 §3.3.7: "Authorization: NoOneKnowsThisScheme opaque-data=here".
    creds = parse_credentials("NoOneKnowsThisScheme opaque-data=here")
    assert creds.scheme == "NoOneKnowsThisScheme"
    assert not creds.is_digest
    assert (creds.username, creds.realm, creds.nonce, creds.response) == ("", "", "", "")
    assert creds.params == {"opaque-data": "here"}


@pytest.mark.parametrize("value", ["Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==", "Bearer", "Foo a b c"])
def test_other_schemes_never_fail(value: str) -> None:
    creds = parse_credentials(value)
    assert creds.scheme == value.split()[0]
    assert creds.username == ""


BAD_CREDENTIALS = [
    "",
    "   ",
    '"Digest" username="a"',
    "Digest",
    "Digest   ",
    "Digest,",
    'Digest username="a", realm="b", nonce="c", uri="d", response="e",',
    'Digest username="a" realm="b", nonce="c", uri="d", response="e"',
    'Digest username="a", realm="b", nonce="c", uri="d", response="e',
    'Digest username="a", realm="b", nonce="c", uri="d", response="e", username="f"',
    'Digest username="a", realm="b", nonce="c", uri="d"',
    'Digest username="a", realm="b", nonce="c", uri="d", response="e", nc=1',
    'Digest username="a", realm="b", nonce="c", uri="d", response="e", nc=0000000g',
    'Digest username="a", realm="b", nonce="c", uri="d", response="e", ,qop=auth',
    'Digest username="a\\\u00e4", realm="b", nonce="c", uri="d", response="e"',
    'Digest username="a\r\nb", realm="b", nonce="c", uri="d", response="e"',
    'Digest username = , realm="b", nonce="c", uri="d", response="e"',
    'Digest:username="a", realm="b", nonce="c", uri="d", response="e"',
]


@pytest.mark.parametrize("value", BAD_CREDENTIALS)
def test_malformed_credentials_are_400(value: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_credentials(value)
    assert info.value.status == 400
    assert info.value.reason


_GRAMMAR_CHARS = st.sampled_from(
    ['"', "\\", ",", "=", " ", "\t", "\r\n", "\r", "\n", "a", "Z", "0", "-", "\u00e4", "\x00"]
)
_NAMES = st.sampled_from(["username", "realm", "nonce", "uri", "response", "nc", "qop", "x"])


@st.composite
def near_credentials(draw: st.DrawFn) -> str:
    parts = draw(
        st.lists(
            st.tuples(_NAMES, st.lists(_GRAMMAR_CHARS, max_size=8).map("".join), st.booleans()),
            max_size=8,
        )
    )
    params = [f'{n}="{v}"' if quoted else f"{n}={v}" for n, v, quoted in parts]
    return draw(st.sampled_from(["Digest ", "digest\t", "Other "])) + ", ".join(params)


@given(st.one_of(st.text(max_size=200), near_credentials()))
def test_parse_credentials_only_raises_remote_protocol_error(value: str) -> None:
    try:
        status = 200 if parse_credentials(value).scheme else 0
    except RemoteProtocolError as exc:
        status = exc.status
    assert status in (200, 400)


@given(st.one_of(near_credentials(), st.text(max_size=200).map("Digest ".__add__)))
def test_verify_never_raises_on_parsed_input(value: str) -> None:
    auth = DigestAuthenticator(REALM, SECRET)
    try:
        creds = parse_credentials(value)
    except RemoteProtocolError:
        return
    assert auth.verify(creds, "REGISTER", lookup, 1.0).outcome is not AuthOutcome.OK


# -- client side ---------------------------------------------------------------------------------


def test_parse_challenge_fields() -> None:
    ch = parse_challenge(
        'Digest realm="atlanta.com", domain="sip:ss1.carrier.com", qop="auth, auth-int, x", '
        'nonce="f84f1cec41e6cbe5aea9c8e88d359", opaque="", stale=FALSE, algorithm=MD5'
    )
    assert (ch.realm, ch.nonce, ch.opaque, ch.algorithm, ch.stale) == (
        "atlanta.com",
        "f84f1cec41e6cbe5aea9c8e88d359",
        "",
        "MD5",
        False,
    )
    assert ch.qop == ("auth", "auth-int", "x")
    assert ch.params["domain"] == "sip:ss1.carrier.com"
    value = build_authorization(
        ch, username="bob", password="p", method="INVITE", uri="sip:a@b", cnonce="z"
    )
    assert value.endswith('qop=auth, nc=00000001, opaque=""')


def test_parse_challenge_other_scheme_and_errors() -> None:
    assert parse_challenge('Basic realm="x"').scheme == "Basic"
    for bad in ("", "Digest", 'Digest realm="x"', 'Digest nonce="n"', 'Digest realm="x",'):
        with pytest.raises(RemoteProtocolError):
            parse_challenge(bad)


def test_build_authorization_refusals() -> None:
    base = 'Digest realm="r", nonce="n"'
    for challenge in ('Basic realm="r"', base + ", algorithm=ROT13", base + ', qop="auth-conf"'):
        with pytest.raises(RemoteProtocolError):
            build_authorization(
                challenge, username="u", password="p", method="M", uri="u", cnonce="c"
            )
    with pytest.raises(LocalProtocolError):
        build_authorization(base, username="u\r\n", password="p", method="M", uri="u", cnonce="c")


def test_build_authorization_quotes_and_counts() -> None:
    value = build_authorization(
        'Digest realm="r", nonce="n", qop="auth"',
        username='we"ird\\',
        password="p",
        method="REGISTER",
        uri="sip:r",
        cnonce="c",
        nc=0x1F,
    )
    creds = parse_credentials(value)
    assert creds.username == 'we"ird\\'
    assert creds.nc == "0000001f"
    assert "opaque" not in value


# -- uri helper ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("sip:alice@Net-A.TEST", "SIP:alice@net-a.test", True),
        ("sip:net-a.test;transport=TCP", "sip:NET-A.test;transport=tcp", True),
        ("sip:Alice@net-a.test", "sip:alice@net-a.test", False),
        ("sip:net-a.test:5060", "sip:net-a.test", False),
        ("sips:net-a.test", "sip:net-a.test", False),
        ("/dir/index.html", "/dir/index.html", True),
        ("/dir/Index.html", "/dir/index.html", False),
        ("tel:+447700900123", "TEL:+447700900123", True),
    ],
)
def test_uri_matches(a: str, b: str, same: bool) -> None:
    assert uri_matches(a, b) is same


@pytest.mark.parametrize(
    ("uri", "host"),
    [
        ("sip:127.0.0.1:5060", "127.0.0.1"),
        ("sip:+447700900123@Net-B.test;user=phone", "net-b.test"),
        ("sips:alice@[2001:db8::1]:5061;transport=tls", "2001:db8::1"),
        ("sip:net-b.test?subject=x", "net-b.test"),
        ("/dir/index.html", ""),
    ],
)
def test_uri_host(uri: str, host: str) -> None:
    assert uri_host(uri) == host


def test_a_wrong_password_says_whether_its_nonce_was_issued_to_its_source() -> None:
    """A nonce carries a keyed tag of the address it was sent to: a forged UDP source cannot
    have received one for the address it forges (``auth/throttle.py`` counts only those)."""
    auth = DigestAuthenticator(REALM, SECRET, id_source=lambda: "id-1")
    here, there = auth.source_tag("203.0.113.5"), auth.source_tag("198.51.100.7")
    assert here != there
    assert len(here) == 4
    assert auth.source_tag("203.0.113.5") == here  # keyed, stable
    challenge = auth.challenge(1000.0, source_tag=here)[0]
    header = build_authorization(
        challenge, username="alice", password="wrong", method="REGISTER", uri=f"sip:{REALM}",
        cnonce="c0ffee", nc=1,
    )  # fmt: skip
    credentials = parse_credentials(header)

    def lookup(user: str, algorithm: DigestAlgorithm) -> str | None:
        return "0" * 64

    from_here = auth.verify(credentials, "REGISTER", lookup, 1000.0, source_tag=here)
    from_there = auth.verify(credentials, "REGISTER", lookup, 1000.0, source_tag=there)
    assert (from_here.reason, from_here.nonce_from_source) == (REASON_INVALID, True)
    assert (from_there.reason, from_there.nonce_from_source) == (REASON_INVALID, False)
