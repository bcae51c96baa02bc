"""``presence-sip serve CONFIG --check`` as the systemd unit runs it before a start and a reload:
the exit status and the line an operator reads, for each refusal and for the fine case, and
beside a node serving on the same database (which it must not disturb).

Certificates are made by the project's pki code at other times than now (expired, not yet
valid, expiring soon) and by another network's CA (foreign); databases by the HSS store.  The
file-permission case needs a user the database is not writable by: when the tests run as root,
root without the capabilities that override file modes, the database given to ``nobody``;
otherwise the test's own user, the database made read-only.
"""

from __future__ import annotations

import datetime as dt
import os
import pwd
import sqlite3
import subprocess
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path

from cryptography import x509
from serve_process import LOOPBACK, ServeProcess, UdpClient, free_port, register, serve_command

from presence_sip.storage.database import database_path
from presence_sip.storage.sqlite_hss import HSS_MIGRATIONS, SqliteSubscriberStore
from presence_sip.transport import pki

NETWORK = "net-b.test"
NOW = dt.datetime.now(dt.UTC)
ALICE = "+447700900601"


def issue(certs: Path, name: str, *, network: str = NETWORK, days_ago: int = 0) -> pki.NodeFiles:
    """A node's files, made ``days_ago`` days ago (a node certificate is valid 825 days)."""
    spec = pki.NodeSpec(network, name, (LOOPBACK,))
    return pki.load_or_create(certs, spec, now=NOW - dt.timedelta(days=days_ago))


def not_after(files: pki.NodeFiles) -> dt.datetime:
    return x509.load_pem_x509_certificate(files.cert.read_bytes()).not_valid_after_utc


def write_config(
    directory: Path, data: Path, nodes: dict[str, pki.NodeFiles], *, ca: Path, port: int = 0
) -> Path:
    """A network config: one node per entry of ``nodes`` (UDP and TCP on ``port`` for the
    first, TLS on a port of its own for each), every certificate checked against ``ca``."""
    port = port or free_port()
    text = f'[network]\ndomain = "{NETWORK}"\ndata = "{data}"\nca = "{ca}"\n'
    for index, (name, files) in enumerate(nodes.items()):
        listen = [f"tls:{LOOPBACK}:{free_port()}"]
        if index == 0:
            listen = [f"udp:{LOOPBACK}:{port}", f"tcp:{LOOPBACK}:{port}", *listen]
        text += (
            f'[[node]]\nname = "{name}"\nlisten = {listen!r}\n'
            f'cert = "{files.cert}"\nkey = "{files.key}"\n'
        ).replace("'", '"')
    config = directory / f"{NETWORK}.toml"
    config.write_text(text, encoding="utf-8")
    return config


def check(config: Path, prefix: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, *serve_command(), "serve", str(config), "--check"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def refused(result: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a check that failed with exit status 2 (without the verdict)."""
    assert result.returncode == 2, result
    assert "configuration ok" not in result.stdout
    [line] = result.stderr.splitlines()
    assert line.startswith("presence-sip: error: ")
    return line.removeprefix("presence-sip: error: ")


def provision(data: Path, *users: str, domain: str = NETWORK) -> None:
    store = SqliteSubscriberStore.open(data, domain)
    try:
        for user in users:
            store.add_subscriber(user, "secret")
    finally:
        store.close()


# -- the fine case ---------------------------------------------------------------------------


def test_a_good_network_is_ok_with_a_line_per_node(tmp_path: Path) -> None:
    certs, data = tmp_path / "certs", tmp_path / "data"
    ps1, ps2 = issue(certs, "ps1"), issue(certs, "ps2")
    config = write_config(tmp_path, data, {"ps1": ps1, "ps2": ps2}, ca=ps1.ca)
    first = check(config)
    assert (first.returncode, first.stderr) == (0, ""), first
    line1, line2, verdict = first.stdout.splitlines()
    assert line1.startswith(f"ps1: {NETWORK}, roles presence,registrar, listens udp:")
    assert f"; TLS {ps1.cert} (CN=ps1.{NETWORK}," in line1
    assert line1.endswith("; new database")
    assert line2.startswith("ps2: ")
    assert line2.endswith("; new database")
    assert verdict == "configuration ok: 2 nodes"
    assert not data.exists()  # (made by the first start, not by the check)

    provision(data, ALICE)
    second = check(config)
    assert second.returncode == 0, second
    assert second.stdout.splitlines()[0].endswith("; database: 1 subscriber")
    assert sorted(p.name for p in data.iterdir()) == ["presence.sqlite"]  # nothing left


def test_the_line_names_the_data_directory_checked_as_an_absolute_path(tmp_path: Path) -> None:
    """A relative ``data`` is taken from where the check runs (the unit's WorkingDirectory):
    run from elsewhere it checks another directory, and the line must show which (operator
    walkthrough: run from the clone, ``data data/net-b`` looked like the network's own)."""
    home, elsewhere = tmp_path / "lib", tmp_path / "elsewhere"
    elsewhere.mkdir()
    provision(home / "data" / "net-b", ALICE)
    config = tmp_path / "net.toml"
    config.write_text(
        f'[network]\ndomain = "{NETWORK}"\ndata = "data/net-b"\n[[node]]\nname = "ps1"\n'
    )
    for cwd, database in ((home, "database: 1 subscriber"), (elsewhere, "new database")):
        result = subprocess.run(
            [*serve_command(), "serve", str(config), "--check"],
            capture_output=True, text=True, timeout=60, check=False, cwd=cwd,
        )  # fmt: skip
        assert result.returncode == 0, result
        assert f", data {cwd / 'data' / 'net-b'}, auth digest; no TLS; {database}\n" in (
            result.stdout
        )


def test_a_certificate_expiring_within_30_days_is_a_warning_with_its_date(tmp_path: Path) -> None:
    ps1 = issue(tmp_path / "certs", "ps1", days_ago=805)
    result = check(write_config(tmp_path, tmp_path / "data", {"ps1": ps1}, ca=ps1.ca))
    assert (result.returncode, result.stderr) == (0, ""), result
    warning, node, verdict = result.stdout.splitlines()
    assert warning == (
        f"ps1: warning: TLS certificate {ps1.cert} expires in 20 days ({not_after(ps1)})"
    )
    assert node.startswith("ps1: ")
    assert verdict == "configuration ok: 1 node"


# -- certificates peers would refuse ---------------------------------------------------------


def test_an_expired_certificate_fails_naming_the_node_the_file_and_the_date(
    tmp_path: Path,
) -> None:
    ps1 = issue(tmp_path / "certs", "ps1", days_ago=900)
    result = check(write_config(tmp_path, tmp_path / "data", {"ps1": ps1}, ca=ps1.ca))
    assert refused(result) == (
        f"ps1: TLS certificate {ps1.cert} expired on {not_after(ps1)}: peers refuse it"
    )
    assert result.stdout == ""  # (not said again as a warning)


def test_a_certificate_not_valid_yet_fails(tmp_path: Path) -> None:
    ps1 = issue(tmp_path / "certs", "ps1", days_ago=-10)
    begins = x509.load_pem_x509_certificate(ps1.cert.read_bytes()).not_valid_before_utc
    result = check(write_config(tmp_path, tmp_path / "data", {"ps1": ps1}, ca=ps1.ca))
    assert refused(result) == f"ps1: TLS certificate {ps1.cert} is not valid before {begins}"


def test_a_certificate_of_another_networks_ca_fails_naming_that_node(tmp_path: Path) -> None:
    """ps2 was given net-a.test's certificate: the peers, trusting net-b.test's CA, refuse it."""
    ps1 = issue(tmp_path / "certs", "ps1")
    foreign = issue(tmp_path / "certs", "ps2", network="net-a.test")
    result = check(
        write_config(tmp_path, tmp_path / "data", {"ps1": ps1, "ps2": foreign}, ca=ps1.ca)
    )
    assert refused(result) == (
        f"ps2: TLS certificate {foreign.cert} does not chain to the CA bundle {ps1.ca} (it is"
        " issued by CN=net-a.test CA,O=net-a.test): peers trusting that bundle refuse it"
        " (a certificate of another network?)"
    )
    assert result.stdout.startswith("ps1: ")  # (checked first, and fine)


def test_a_key_that_is_not_the_certificates_fails(tmp_path: Path) -> None:
    """Another node's key (a valid key file, not the certificate's): OpenSSL refuses the pair
    when the contexts are loaded, as at a start."""
    ps1, ps2 = issue(tmp_path / "certs", "ps1"), issue(tmp_path / "certs", "ps2")
    mixed = pki.NodeFiles(ps1.spec, ps1.cert, ps2.key, ps1.chain, ps1.combined, ps1.ca)
    line = refused(check(write_config(tmp_path, tmp_path / "data", {"ps1": mixed}, ca=ps1.ca)))
    assert line.startswith(f"ps1: cannot load TLS certificate {ps1.cert} with key {ps2.key}: ")
    assert "KEY_VALUES_MISMATCH" in line


def test_a_key_the_checking_user_cannot_read_fails_naming_the_node(tmp_path: Path) -> None:
    """The key ``certs node --renew`` wrote as root (mode 0600), before it is given back to the
    service's group: the line names the node, as every other refusal does (operator walkthrough:
    it was the only one that did not)."""
    ps1, ps2 = issue(tmp_path / "certs", "ps1"), issue(tmp_path / "certs", "ps2")
    config = write_config(tmp_path, tmp_path / "data", {"ps1": ps1, "ps2": ps2}, ca=ps1.ca)
    ps2.key.chmod(0o600)
    prefix: list[str] = []
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(ps2.key, nobody.pw_uid, nobody.pw_gid)
        prefix = WITHOUT_OVERRIDE
    else:
        ps2.key.chmod(0o000)
    assert refused(check(config, prefix=prefix)) == (
        f"ps2: cannot read TLS key {ps2.key}: Permission denied"
    )


# -- the database ----------------------------------------------------------------------------


def test_a_database_of_another_domain_fails_as_the_node_would(tmp_path: Path) -> None:
    ps1, data = issue(tmp_path / "certs", "ps1"), tmp_path / "data"
    provision(data, ALICE, domain="net-a.test")
    result = check(write_config(tmp_path, data, {"ps1": ps1}, ca=ps1.ca))
    assert refused(result) == (
        f"ps1: data directory {data}: database belongs to domain net-a.test, not {NETWORK}"
    )


def test_a_database_of_a_later_release_fails(tmp_path: Path) -> None:
    ps1, data = issue(tmp_path / "certs", "ps1"), tmp_path / "data"
    provision(data, ALICE)
    with closing(sqlite3.connect(database_path(data))) as later, later:
        later.execute("UPDATE schema_versions SET version = 99 WHERE component = 'hss'")
    result = check(write_config(tmp_path, data, {"ps1": ps1}, ca=ps1.ca))
    assert refused(result) == (
        f"ps1: database {database_path(data)} was written by a later presence-sip (hss version"
        f" 99 (this release knows up to {len(HSS_MIGRATIONS)})): a node of this release refuses it"
    )


WITHOUT_OVERRIDE = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
"""A command prefix: root without the capabilities that let it read and write any file, to
whom a file's mode applies as to any user (util-linux's setpriv)."""


def other_user(data: Path) -> tuple[list[str], Callable[[], None]]:
    """How to run the check as a user the database in ``data`` is not writable by, and how to
    give the database back to that user.  As root (the tests in a container): the database is
    given to ``nobody`` and the check runs as root without the capability to override file
    modes; otherwise the database is made read-only for the test's own user."""
    database = database_path(data)
    if os.geteuid() != 0:
        database.chmod(0o440)
        return [], lambda: database.chmod(0o640)
    nobody = pwd.getpwnam("nobody")
    os.chown(database, nobody.pw_uid, nobody.pw_gid)
    return WITHOUT_OVERRIDE, lambda: os.chown(database, 0, 0)


def test_a_database_the_checking_user_cannot_write_fails_until_it_is_given_back(
    tmp_path: Path,
) -> None:
    """The database put back by a ``restore`` run as another user than the service's, which
    the unit runs the check as.  Then a data directory that user cannot make."""
    data = tmp_path / "data"
    provision(data, ALICE)
    config = tmp_path / "net.toml"
    config.write_text(f'[network]\ndomain = "{NETWORK}"\ndata = "{data}"\n[[node]]\nname = "ps1"\n')
    prefix, give_back = other_user(data)
    user = pwd.getpwuid(os.geteuid()).pw_name
    owner = pwd.getpwuid(database_path(data).stat().st_uid).pw_name
    mode = database_path(data).stat().st_mode & 0o777
    assert refused(check(config, prefix=prefix)) == (
        f"ps1: database file {database_path(data)} is not readable and writable by user {user}"
        f" (owner {owner}, mode {mode:04o}): a node run as this user cannot open it (left by a"
        " restore, an hss command or a serve run as another user?)"
    )
    give_back()
    assert check(config, prefix=prefix).stdout.endswith(
        "; database: 1 subscriber\nconfiguration ok: 1 node\n"
    )

    parent = tmp_path / "lib"  # (as /var/lib, root's: the service user may not make data in it)
    parent.mkdir(mode=0o555)
    config.write_text(config.read_text().replace(f'"{data}"', f'"{parent}/data"'))
    assert refused(check(config, prefix=prefix)) == (
        f"ps1: cannot create data directory {parent}/data: {parent} is not a directory {user}"
        f" may write (owner {user}, mode 0555)"
    )
    parent.chmod(0o755)
    assert check(config, prefix=prefix).stdout.endswith(
        "; new database\nconfiguration ok: 1 node\n"
    )


# -- beside a serving node, and what a start says ------------------------------------------------


def test_check_beside_a_serving_node_succeeds_and_leaves_it_serving(
    serve_factory: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    ps1, data, port = issue(tmp_path / "certs", "ps1"), tmp_path / "data", free_port()
    provision(data, ALICE)
    config = write_config(tmp_path, data, {"ps1": ps1}, ca=ps1.ca, port=port)
    node = serve_factory(config=config, port=port, data_dir=data)
    with UdpClient() as client:
        contact = f"<sip:{ALICE}@{client.host}:{client.port}>"
        _, ok = register(client, node, user=ALICE, password="secret", domain=NETWORK,
                         contact=contact, expires=600)  # fmt: skip
        assert ok.status == 200
        for _ in range(3):  # (each reads the node's write-ahead log)
            result = check(config)
            assert (result.returncode, result.stderr) == (0, ""), result
            assert "; database: 1 subscriber, 1 binding" in result.stdout
        _, again = register(client, node, user=ALICE, password="secret", domain=NETWORK,
                            contact=contact, expires=600)  # fmt: skip
        assert again.status == 200
    log = node.log_text()
    assert " ERROR " not in log, log
    assert " WARNING " not in log, log
    # (serve_factory stops it: one SIGTERM, exit status 0)


def test_a_node_started_with_an_expired_certificate_serves_and_logs_a_warning(
    serve_factory: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    """As Kamailio does: the node starts (UDP and TCP still serve); peers refuse its TLS."""
    ps1, port = issue(tmp_path / "certs", "ps1", days_ago=900), free_port()
    config = write_config(tmp_path, tmp_path / "data", {"ps1": ps1}, ca=ps1.ca, port=port)
    node = serve_factory(config=config, port=port, data_dir=tmp_path / "data")
    assert (
        f"WARNING presence_sip.node: TLS certificate {ps1.cert} expired on {not_after(ps1)}:"
        " peers refuse it"
    ) in node.log_text()
