"""transport.tls.load_contexts: a node's TLS files -> its three contexts, or one error naming the
file (what SIGHUP reloads, all or nothing), with certificates made by ``transport.pki``."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from presence_sip.sip.errors import ConfigError
from presence_sip.transport import pki
from presence_sip.transport.tls import TlsContexts, load_contexts

NOW = dt.datetime.now(dt.UTC)
PS1 = pki.NodeSpec("net-b.test", "ps1", ("127.0.2.11",))
PS2 = pki.NodeSpec("net-b.test", "ps2", ("127.0.2.12",))


@pytest.fixture
def ps1(tmp_path: Path) -> pki.NodeFiles:
    return pki.load_or_create(tmp_path, PS1, now=NOW)


def load(files: pki.NodeFiles, *, key: Path | None = None, ca: Path | None = None) -> TlsContexts:
    return load_contexts(files.cert, key or files.key, ca or files.ca, require_client_cert=True)


def test_good_files_make_the_three_contexts_and_name_the_certificate(ps1: pki.NodeFiles) -> None:
    contexts = load(ps1)
    assert contexts.server.verify_mode == ssl.CERT_REQUIRED
    assert contexts.client.check_hostname
    assert not contexts.route.check_hostname  # RFC 5922's check instead, by the driver
    assert contexts.route.verify_mode == ssl.CERT_REQUIRED
    assert len({id(contexts.server), id(contexts.client), id(contexts.route)}) == 3
    assert {c.minimum_version for c in (contexts.server, contexts.client, contexts.route)} == {
        ssl.TLSVersion.TLSv1_2
    }
    cert = x509.load_pem_x509_certificate(ps1.cert.read_bytes())
    assert contexts.certificate == (
        f"{ps1.cert} (CN=ps1.net-b.test,O=net-b.test, serial {cert.serial_number:x},"
        f" not after {cert.not_valid_after_utc})"
    )


def test_a_chain_file_is_named_by_its_first_certificate(ps1: pki.NodeFiles) -> None:
    contexts = load_contexts(ps1.chain, ps1.key, ps1.ca, require_client_cert=False)
    assert contexts.server.verify_mode == ssl.CERT_OPTIONAL
    assert "(CN=ps1.net-b.test,O=net-b.test, serial " in contexts.certificate


def test_each_load_makes_new_contexts(ps1: pki.NodeFiles) -> None:
    first, second = load(ps1), load(ps1)
    assert first.server is not second.server
    assert first.client is not second.client
    assert first.route is not second.route


def test_a_key_that_is_not_the_certificates_is_an_error(tmp_path: Path, ps1: pki.NodeFiles) -> None:
    ps2 = pki.load_or_create(tmp_path, PS2, now=NOW)  # same CA, another key
    with pytest.raises(ConfigError) as error:
        load(ps1, key=ps2.key)
    message = str(error.value)
    assert f"cannot load TLS certificate {ps1.cert} with key {ps2.key}" in message
    assert "KEY_VALUES_MISMATCH" in message


@pytest.mark.parametrize(
    ("broken", "content", "said"),
    [
        ("key", None, "cannot read TLS key {path}"),
        ("key", b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\n", "with key {path}"),
        ("cert", None, "cannot read TLS certificate {path}"),
        ("cert", b"not PEM at all\n", "cannot load TLS certificate {path}"),
        ("ca", None, "cannot load CA bundle {path}"),
        ("ca", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "{path}"),
    ],
)
def test_a_file_missing_or_unparsable_is_an_error_naming_it(
    ps1: pki.NodeFiles, broken: str, content: bytes | None, said: str
) -> None:
    path: Path = getattr(ps1, broken)
    if content is None:
        path.unlink()
    else:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as error:
        load(ps1)
    assert said.format(path=path) in str(error.value)
