"""``presence-sip hss`` round trips through real processes on a temporary data directory.

Runs ``python -m presence_sip.cli.hss ARGS`` (the same code as ``presence-sip hss ARGS``).
Every rejected command must exit 2 with one ``presence-sip: error:`` line and leave the database
row-for-row unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import select
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from serve_process import serve_command

from presence_sip.cli import hss as hss_cli
from presence_sip.cli.main import build_parser
from presence_sip.storage.database import (
    connect_read_only,
    database_path,
    open_network_database,
)
from presence_sip.storage.sqlite_hss import SqliteSubscriberStore

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
B = "+447700900123"
C = "+447700900456"


def run_hss(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "presence_sip.cli.hss", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


class Hss:
    """Runs hss commands against one data directory."""

    def __init__(self, data: Path) -> None:
        self.data = data

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_hss("--data", str(self.data), *args)

    def ok(self, *args: str) -> str:
        result = self(*args)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def dump(self) -> list[str]:
        conn = sqlite3.connect(self.data / "presence.sqlite")
        try:
            return list(conn.iterdump())
        finally:
            conn.close()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory populated through the CLI once; each test gets a copy."""
    cli = Hss(tmp_path_factory.mktemp("template") / "data")
    cli.ok("--domain", "net-b.test", "server", "add", "ps1", "sip:127.0.2.11:5060")
    cli.ok("server", "add", "ps2", "sip:127.0.2.12:5060")
    cli.ok("plan", "add", "+44", "net-b.test")
    cli.ok("plan", "add", "+4477", "net-a.test")
    cli.ok(
        "subscriber", "add", B, "--password", "secret", "--credit", "10", "--presence-server", "ps2"
    )
    return cli.data


@pytest.fixture
def hss(template: Path, tmp_path: Path) -> Hss:
    data = tmp_path / "data"
    shutil.copytree(template, data)
    return Hss(data)


def test_subscriber_round_trip(hss: Hss) -> None:
    hss.ok("subscriber", "add", "tel:+44-7700-900456", "--password", "pw")
    assert hss.json("subscriber", "list") == [
        {
            "msisdn": B,
            "identities": [f"sip:{B}@net-b.test;user=phone", f"tel:{B}"],
            "presence_server": "ps2",
            "credit": 10,
        },
        {
            "msisdn": C,
            "identities": [f"sip:{C}@net-b.test;user=phone", f"tel:{C}"],
            "presence_server": None,
            "credit": 0,
        },
    ]
    table = hss.ok("subscriber", "list").splitlines()
    assert table[0].split() == ["MSISDN", "CREDIT", "PRESENCE", "SERVER", "IDENTITIES"]
    assert table[1].split()[:3] == [B, "10", "ps2"]
    assert table[2].split()[:3] == [C, "0", "-"]

    hss.ok("subscriber", "set", C, "--credit", "7", "--presence-server", "ps1", "--password", "new")
    shown = hss.json("subscriber", "show", C)
    assert isinstance(shown, dict)
    assert (shown["credit"], shown["presence_server"]) == (7, "ps1")
    assert "credit           7" in hss.ok("subscriber", "show", C)

    store = SqliteSubscriberStore.open(hss.data)
    try:
        expected = hashlib.sha256(f"{C}:net-b.test:new".encode()).hexdigest()
        assert store.get_ha1(C, "SHA-256") == expected
        expected = hashlib.md5(f"{C[1:]}:net-b.test:new".encode()).hexdigest()
        assert store.get_ha1(C[1:], "MD5") == expected
    finally:
        store.close()

    hss.ok(
        "subscriber", "set", C, "--identity", "sip:carol@net-b.test", "--identity", "sip:c@x.test"
    )
    assert hss.json("subscriber", "show", C)["identities"][2:] == [
        "sip:carol@net-b.test",
        "sip:c@x.test",
    ]
    hss.ok("subscriber", "set", C, "--remove-identity", "sip:c@x.test")
    assert "identity         sip:carol@net-b.test" in hss.ok("subscriber", "show", C)
    assert "sip:c@x.test" not in hss.ok("subscriber", "show", C)

    hss.ok("subscriber", "remove", C)
    assert [s["msisdn"] for s in hss.json("subscriber", "list")] == [B]


def test_subscribers_are_imported_from_a_csv_file_all_in_one_transaction(
    hss: Hss, tmp_path: Path
) -> None:
    table = tmp_path / "subscribers.csv"
    table.write_text(
        "msisdn,password,credit,presence_server,identities\n"
        "+447700900601,pw-601,5,ps1,sip:dora@net-b.test sip:d@x.test\n"
        'tel:+44-7700-900602,"pw,602",,,\n'
    )
    assert hss.ok("subscriber", "import", str(table)) == "imported 2 subscribers\n"
    listed = {s["msisdn"]: s for s in hss.json("subscriber", "list")}
    assert listed["+447700900601"]["identities"][2:] == ["sip:dora@net-b.test", "sip:d@x.test"]
    assert (listed["+447700900601"]["credit"], listed["+447700900601"]["presence_server"]) == (
        5, "ps1",
    )  # fmt: skip
    assert (listed["+447700900602"]["credit"], listed["+447700900602"]["presence_server"]) == (
        0, None,
    )  # fmt: skip
    store = SqliteSubscriberStore.open(hss.data)
    try:  # the password is the digest's: a quoted comma is part of it
        expected = hashlib.sha256(b"+447700900602:net-b.test:pw,602").hexdigest()
        assert store.get_ha1("+447700900602", "SHA-256") == expected
    finally:
        store.close()
    from_stdin = subprocess.run(
        [sys.executable, "-m", "presence_sip.cli.hss", "--data", str(hss.data),
         "subscriber", "import", "-"],
        input="msisdn,password\n+447700900603,pw\n", capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60, check=False,
    )  # fmt: skip
    assert (from_stdin.returncode, from_stdin.stdout) == (0, "imported 1 subscribers\n")


def test_an_import_saved_by_a_spreadsheet_is_read(hss: Hss, tmp_path: Path) -> None:
    """A spreadsheet's "CSV UTF-8" export: a byte order mark first, CRLF line ends."""
    table = tmp_path / "subscribers.csv"
    table.write_bytes(b"\xef\xbb\xbfmsisdn,password\r\n+447700900604,pw\r\n")
    assert hss.ok("subscriber", "import", str(table)) == "imported 1 subscribers\n"
    assert "+447700900604" in [s["msisdn"] for s in hss.json("subscriber", "list")]


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("msisdn,password\n+447700900611,pw\nnot-a-number,pw\n",
         "line 3: "),
        (f"msisdn,password\n+447700900611,pw\n{B},pw\n",
         f"line 3: subscriber {B} already exists"),
        ("msisdn,password\n+447700900611,pw\n+447700900612,pw,extra\n",
         "line 3: not as many fields as the header names"),
        ("msisdn,password\n+447700900611,\n",
         "line 2: empty password"),
        ("msisdn,password,credit\n+447700900611,pw,-3\n",
         "line 2: "),
        ("msisdn,password,presence_server\n+447700900611,pw,ps9\n",
         "line 2: "),
        ("number,password\n+447700900611,pw\n",
         "the first line must name the columns"),
        ("msisdn,password\n+447700900611," + "x" * 200_000 + "\n",
         "line 2: not readable as CSV: field larger than field limit"),
        ('msisdn,password,credit,identities\n'
         '+447700900611,pw,many,"sip:a@x.test\nsip:b@x.test"\n',
         "line 2: bad credit 'many'"),  # a record spanning lines: the line it starts on
    ],
)  # fmt: skip
def test_an_import_with_a_bad_line_names_it_and_imports_nothing(
    hss: Hss, tmp_path: Path, content: str, error: str
) -> None:
    before = hss.dump()
    table = tmp_path / "subscribers.csv"
    table.write_text(content)
    result = hss("subscriber", "import", str(table))
    assert result.returncode == 2
    assert result.stderr.startswith(f"presence-sip: error: {table}"), result.stderr
    assert error in result.stderr
    assert hss.dump() == before


def test_an_import_names_every_bad_line_up_to_20_and_imports_nothing(
    hss: Hss, tmp_path: Path
) -> None:
    """An operator fixing a 50,000-line export sees every bad line at once, not one a run."""
    before = hss.dump()
    lines = ["msisdn,password"]
    lines += [f"+4477009007{i:02d},pw" for i in range(40)]
    lines[3] = "+447700900702,"  # line 4: empty password
    lines[10] = f"{B},pw"  # line 11: exists
    # lines 42-46: on lines 2-6 too (but line 44: line 4 was bad, so it is line 44's own)
    lines += [f"+4477009007{i:02d},again" for i in range(5)]
    lines += [f"bad-{i},pw" for i in range(20)]  # lines 47-66
    table = tmp_path / "subscribers.csv"
    table.write_text("\n".join(lines) + "\n")
    result = hss("subscriber", "import", str(table))
    assert (result.returncode, result.stdout) == (2, "")
    errors = result.stderr.splitlines()
    prefix = f"presence-sip: error: {table}"
    assert all(line.startswith(prefix) for line in errors), result.stderr
    assert errors[0] == f"{prefix} line 4: empty password"
    assert errors[1] == (
        f"{prefix} line 11: subscriber {B} already exists (--update replaces existing ones)"
    )
    assert errors[3] == f"{prefix} line 43: subscriber +447700900701 is on line 3 too"
    assert errors[6].startswith(f"{prefix} line 47: not an E.164 number: 'bad-0'")
    assert len(errors) == 22
    assert errors[20] == f"{prefix} and 6 more bad lines"
    assert errors[21] == f"{prefix}: 26 bad line(s); nothing was imported"
    assert hss.dump() == before


def test_an_import_with_update_replaces_existing_subscribers(hss: Hss, tmp_path: Path) -> None:
    """A re-imported export: ``--update`` replaces the password and the named columns of the
    subscribers that exist (their rules and unnamed columns kept), and adds the others."""
    hss.ok("rule", "add", B, "sip:ann@net-a.test", "allow")
    table = tmp_path / "export.csv"
    table.write_text(f"msisdn,password,identities\n{B},renewed,sip:bob@net-b.test\n{C},pw,\n")
    assert hss("subscriber", "import", str(table)).returncode == 2  # the default refuses B
    assert hss.ok("subscriber", "import", "--update", str(table)) == (
        "imported 2 subscribers (1 added, 1 updated)\n"
    )
    shown = hss.json("subscriber", "show", B)
    assert shown["identities"][2:] == ["sip:bob@net-b.test"]
    assert (shown["credit"], shown["presence_server"]) == (10, "ps2")  # not in the file: kept
    assert shown["rules"] == {"sip:ann@net-a.test": "allow"}
    assert ha1_of_b(hss) == hashlib.sha256(f"{B}:net-b.test:renewed".encode()).hexdigest()
    assert [s["msisdn"] for s in hss.json("subscriber", "list")] == [B, C]


def test_password_from_a_file_or_standard_input(hss: Hss, tmp_path: Path) -> None:
    """Neither in the process list nor in the shell history: the first line of a file, or
    standard input with ``-``."""
    secret_file = tmp_path / "pw"
    secret_file.write_text("from file\nignored\n")
    hss.ok("subscriber", "add", C, "--password-file", str(secret_file))
    result = subprocess.run(
        [sys.executable, "-m", "presence_sip.cli.hss", "--data", str(hss.data),
         "subscriber", "set", B, "--password-file", "-"],
        input="from stdin\n", capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    store = SqliteSubscriberStore.open(hss.data)
    try:
        for msisdn, password in ((C, "from file"), (B, "from stdin")):
            expected = hashlib.sha256(f"{msisdn}:net-b.test:{password}".encode()).hexdigest()
            assert store.get_ha1(msisdn, "SHA-256") == expected
    finally:
        store.close()
    both = hss("subscriber", "set", B, "--password", "x", "--password-file", str(secret_file))
    assert both.returncode == 2
    assert "not allowed with argument" in both.stderr
    empty = tmp_path / "empty"
    empty.write_text("\n")
    refused = hss("subscriber", "set", B, "--password-file", str(empty))
    assert refused.returncode == 2
    assert f"no password in the first line of {empty}" in refused.stderr


def type_password_at_a_terminal(hss: Hss, first: bytes, second: bytes) -> tuple[int, bytes]:
    """``subscriber set B --password-file -`` on a pseudo-terminal, answering its two prompts;
    the exit status and everything the terminal showed."""
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "presence_sip.cli.hss", "--data", str(hss.data),
         "subscriber", "set", B, "--password-file", "-"],
        stdin=secondary, stdout=secondary, stderr=secondary, close_fds=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
    )  # fmt: skip
    os.close(secondary)
    screen = b""
    try:
        for prompt, answer in ((b"Password: ", first), (b"Again: ", second)):
            while prompt not in screen:
                ready, _, _ = select.select([primary], [], [], 30)
                assert ready, f"no {prompt!r}; the terminal showed {screen!r}"
                screen += os.read(primary, 1024)
            os.write(primary, answer + b"\n")
        status = process.wait(timeout=30)
        while select.select([primary], [], [], 0.2)[0]:
            try:
                chunk = os.read(primary, 1024)
            except OSError:  # (Linux: EIO once the last writer has gone)
                break
            if not chunk:
                break
            screen += chunk
    finally:
        os.close(primary)
        if process.poll() is None:
            process.kill()
            process.wait()
    return status, screen


def ha1_of_b(hss: Hss) -> str | None:
    store = SqliteSubscriberStore.open(hss.data)
    try:
        return store.get_ha1(B, "SHA-256")
    finally:
        store.close()


def run_hss_with_input(hss: Hss, text: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``hss ARGS`` reading *text* from its standard input, in UTF-8 whatever the locale."""
    result = subprocess.run(
        [sys.executable, "-m", "presence_sip.cli.hss", "--data", str(hss.data), *args],
        input=text.encode(), capture_output=True, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "utf-8"}, cwd=ROOT,
    )  # fmt: skip
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )


def test_a_password_with_a_control_character_is_refused_by_every_command(
    hss: Hss, tmp_path: Path
) -> None:
    """``add``, ``set`` and ``import`` (``--update`` too) refuse a password with a NUL or another
    control character, C1 (U+0080-U+009F) included (no softphone can type it; a NUL cuts it short
    in other tools): one error line naming the character and not the password, exit 2, nothing
    written; an import names the line."""
    before = hss.dump()
    nul_file = tmp_path / "pw"
    nul_file.write_bytes(b"top\x00secret\n")
    c1_file = tmp_path / "pw-c1"
    c1_file.write_bytes("top\x85secret\n".encode())
    table = tmp_path / "subscribers.csv"
    table.write_text(
        "msisdn,password\n+447700900601,top\x00secret\n+447700900602,\ttopsecret\n"
        "+447700900603,top\x80secret\n+447700900604,topsecret\x9f\n",
        encoding="utf-8",
    )
    update = tmp_path / "update.csv"
    update.write_text(f"msisdn,password\n{B},top\x9bsecret\n", encoding="utf-8")
    prefix = "presence-sip: error:"
    expected = [
        (hss("subscriber", "add", C, "--password-file", str(nul_file)),
         f"{prefix} password contains a control character (U+0000)\n"),
        (hss("subscriber", "add", C, "--password-file", str(c1_file)),
         f"{prefix} password contains a control character (U+0085)\n"),
        (hss("subscriber", "add", C, "--password", "top\x90secret"),
         f"{prefix} password contains a control character (U+0090)\n"),
        (hss("subscriber", "set", B, "--password", "top\x1bsecret", "--credit", "1"),
         f"{prefix} password contains a control character (U+001B)\n"),
        (hss("subscriber", "set", B, "--password", "top\x9fsecret", "--credit", "1"),
         f"{prefix} password contains a control character (U+009F)\n"),
        (run_hss_with_input(hss, "top\x00secret\n", "subscriber", "set", B, "--password-file", "-"),
         f"{prefix} password contains a control character (U+0000)\n"),
        (run_hss_with_input(hss, "top\x80secret\n", "subscriber", "set", B, "--password-file", "-"),
         f"{prefix} password contains a control character (U+0080)\n"),
        (hss("subscriber", "import", str(table)),
         f"{prefix} {table} line 2: password contains a control character (U+0000)\n"
         f"{prefix} {table} line 3: password contains a control character (U+0009)\n"
         f"{prefix} {table} line 4: password contains a control character (U+0080)\n"
         f"{prefix} {table} line 5: password contains a control character (U+009F)\n"
         f"{prefix} {table}: 4 bad line(s); nothing was imported\n"),
        (hss("subscriber", "import", "--update", str(update)),
         f"{prefix} {update} line 2: password contains a control character (U+009B)\n"
         f"{prefix} {update}: 1 bad line(s); nothing was imported\n"),
    ]  # fmt: skip
    for result, stderr in expected:
        assert (result.returncode, result.stdout, result.stderr) == (2, "", stderr)
        assert "secret" not in result.stderr
    assert hss.dump() == before


def test_a_password_typed_at_a_terminal_is_not_echoed_and_asked_twice(hss: Hss) -> None:
    """``--password-file -`` at a terminal asks for the password with echo off (it showed on
    the screen as it was typed: new-user audit), and twice: a typo is not stored unseen."""
    status, screen = type_password_at_a_terminal(hss, b"typed secret", b"typed secret")
    assert status == 0, screen
    assert b"typed secret" not in screen
    assert ha1_of_b(hss) == hashlib.sha256(f"{B}:net-b.test:typed secret".encode()).hexdigest()
    before = ha1_of_b(hss)
    status, screen = type_password_at_a_terminal(hss, b"new secret", b"new secrte")
    assert status == 2
    assert b"the two passwords differ: nothing changed" in screen
    assert ha1_of_b(hss) == before


def test_a_mistyped_data_directory_is_an_error_and_stays_empty(tmp_path: Path) -> None:
    """Reading, or changing what does not exist yet, needs an HSS: an empty table (and a new
    database in the wrong place) would hide the typo."""
    typo = Hss(tmp_path / "dtaa")
    for args in (("subscriber", "list"), ("rule", "add", B, "sip:x@net-b.test", "allow")):
        result = typo(*args)
        assert result.returncode == 2
        assert "no HSS in" in result.stderr
        assert "wrong --data?" in result.stderr
    assert not (tmp_path / "dtaa" / "presence.sqlite").exists()
    typo.ok("--domain", "net-b.test", "subscriber", "add", B, "--password", "pw")  # creates it
    assert [s["msisdn"] for s in typo.json("subscriber", "list")] == [B]


def test_rule_round_trip(hss: Hss) -> None:
    hss.ok("rule", "add", B, "sip:+447700900789@net-a.test;user=phone", "allow")
    hss.ok("rule", "add", B, "sip:eve@net-c.test", "polite-block")
    hss.ok("rule", "add", B, "tel:+44-7700-900789", "confirm")  # same watcher: replaced
    assert hss.json("rule", "list", B) == [
        {"owner": B, "watcher_uri": "sip:eve@net-c.test", "action": "polite-block"},
        {"owner": B, "watcher_uri": "tel:+447700900789", "action": "confirm"},
    ]
    assert hss.ok("rule", "list", B).splitlines()[2].split() == ["tel:+447700900789", "confirm"]
    hss.ok("rule", "remove", B, "sip:eve@net-c.test")
    assert hss.json("rule", "list", B) == [
        {"owner": B, "watcher_uri": "tel:+447700900789", "action": "confirm"}
    ]
    for action in ("block", "allow"):
        hss.ok("rule", "add", B, "sip:x@net-a.test", action)


def test_plan_port_server_round_trip(hss: Hss) -> None:
    hss.ok("port", "add", "+447700900999", "net-b.test")
    assert hss.json("port", "list") == [{"msisdn": "+447700900999", "network": "net-b.test"}]
    assert hss.json("plan", "list") == [
        {"prefix": "+44", "network": "net-b.test"},
        {"prefix": "+4477", "network": "net-a.test"},
    ]
    assert hss.json("server", "list") == [
        {"name": "ps1", "uri": "sip:127.0.2.11:5060"},
        {"name": "ps2", "uri": "sip:127.0.2.12:5060"},
    ]
    store = SqliteSubscriberStore.open(hss.data)
    try:
        assert store.network_for("+447700900999") == "net-b.test"
        assert store.network_for("+447700900998") == "net-a.test"
    finally:
        store.close()
    hss.ok("port", "remove", "+447700900999")
    hss.ok("plan", "remove", "+4477")
    hss.ok("server", "remove", "ps1")
    assert hss.json("port", "list") == []
    assert hss.ok("plan", "list").split() == ["PREFIX", "NETWORK", "+44", "net-b.test"]
    assert hss.ok("server", "list").split() == ["NAME", "URI", "ps2", "sip:127.0.2.12:5060"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("subscriber", "add", B, "--password", "x"), f"subscriber {B} already exists"),
        (("subscriber", "add", "447700900111", "--password", "x"), "not an E.164 number"),
        (("subscriber", "add", "+44 7700 9001x1", "--password", "x"), "not an E.164 number"),
        (("subscriber", "add", C, "--password", "x", "--credit", "lots"), "bad credit"),
        (("subscriber", "add", C, "--password", "x", "--credit", "-1"), "bad credit"),
        (("subscriber", "add", C, "--password", ""), "empty password"),
        (
            ("subscriber", "add", C, "--password", "x", "--presence-server", "ps9"),
            "unknown presence server ps9",
        ),
        (("subscriber", "show", C), f"unknown subscriber {C}"),
        (("subscriber", "remove", C), f"unknown subscriber {C}"),
        (("subscriber", "set", C, "--credit", "1"), f"unknown subscriber {C}"),
        (("subscriber", "set", B), "nothing to change"),
        (("subscriber", "set", B, "--remove-identity", f"tel:{B}"), "own identity"),
        (("subscriber", "set", B, "--remove-identity", "sip:x@y.test"), "not an identity of"),
        (("subscriber", "set", B, "--credit", "1", "--identity", f"tel:{C}"), "another number"),
        (
            ("subscriber", "set", B, "--credit", "5", "--presence-server", "ps9"),
            "unknown presence server",
        ),
        (("rule", "add", B, "sip:a@net-a.test", "deny"), "bad action 'deny'"),
        (("rule", "add", B, "not a uri", "allow"), "bad watcher URI"),
        (("rule", "add", C, "sip:a@net-a.test", "allow"), f"unknown subscriber {C}"),
        (("rule", "list", C), f"unknown subscriber {C}"),
        (("rule", "remove", B, "sip:a@net-a.test"), "no rule"),
        (("plan", "add", "+44", "net-x.test"), "already in the plan"),
        (("plan", "add", "33", "net-x.test"), "not an E.164 prefix"),
        (("plan", "add", "+33", "net x"), "bad network domain"),
        (("plan", "remove", "+33"), "not in the plan"),
        (("port", "add", "+447700900999", "net-x.test"), "unknown network net-x.test"),
        (("port", "add", "07700900999", "net-a.test"), "not an E.164 number"),
        (("port", "remove", "+447700900999"), "is not ported"),
        (("server", "add", "ps1", "sip:elsewhere.test"), "already exists"),
        (("server", "add", "ps3", "ps3.net-b.test"), "bad presence server URI"),
        (("server", "remove", "ps2"), "still serves 1 subscriber"),
        (("--domain", "net-a.test", "plan", "list"), "domain net-b.test, not net-a.test"),
        (("subscriber", "list", "--domain", "net-a.test"), "belongs to domain net-b.test"),
    ],
)
def test_errors_are_one_line_exit_2_and_write_nothing(
    hss: Hss, args: tuple[str, ...], message: str
) -> None:
    before = hss.dump()
    result = hss(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("presence-sip: error: ")
    assert message in lines[0]
    assert hss.dump() == before


def test_corrupt_input_after_good_data_changes_no_row(hss: Hss) -> None:
    hss.ok("rule", "add", B, "sip:ann@net-a.test", "allow")
    before = hss.dump()
    for args in (
        ("subscriber", "add", "+4477\n00900111", "--password", "x"),
        ("rule", "add", B, "sip:ann@net-a.test", "allow\nblock"),
        ("subscriber", "set", B, "--credit", "5", "--password", "new", "--presence-server", "nope"),
        ("port", "add", B, "net-z.test"),
    ):
        assert hss(*args).returncode == 2
    assert hss.dump() == before
    assert hss.json("subscriber", "show", B)["credit"] == 10


def test_usage_errors_exit_2(hss: Hss) -> None:
    for args in (("subscriber", "add", C), ("rule",), ("frobnicate",), ()):
        result = hss(*args)
        assert result.returncode == 2
        assert "error:" in result.stderr


def test_listing_works_for_a_user_who_may_not_write_the_database(
    hss: Hss, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An auditor's account or a backup copy: the reading commands open the file read-only
    (the audit saw "attempt to write a readonly database" for `subscriber list`)."""
    before = hss.dump()
    monkeypatch.setattr(hss_cli, "_may_write", lambda path: False)
    args = build_parser().parse_args(["hss", "--data", str(hss.data), "subscriber", "list"])
    assert hss_cli.run(args) == 0
    assert B in capsys.readouterr().out
    assert hss.dump() == before


def test_a_read_only_connection_reads_and_cannot_write(hss: Hss) -> None:
    conn = connect_read_only(database_path(hss.data))
    try:
        assert conn.execute("SELECT count(*) FROM hss_subscribers").fetchone()[0] >= 1
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("DELETE FROM hss_subscribers")
    finally:
        conn.close()


def test_data_option_positions_and_default(tmp_path: Path) -> None:
    added = run_hss(
        "plan", "add", "+44", "net-b.test", "--data", str(tmp_path / "d"), "--domain", "net-b.test"
    )
    assert added.returncode == 0
    listed = run_hss("--data", str(tmp_path / "d"), "plan", "list", "--json")
    assert json.loads(listed.stdout) == [{"prefix": "+44", "network": "net-b.test"}]
    # Without --data: ./data under the working directory.
    made = run_hss(
        "--domain", "net-c.test", "server", "add", "ps1", "sip:ps1.net-c.test", cwd=tmp_path
    )
    assert made.returncode == 0
    assert (tmp_path / "data" / "presence.sqlite").is_file()
    store = SqliteSubscriberStore.open(tmp_path / "data")
    try:
        assert store.domain == "net-c.test"
    finally:
        store.close()


@pytest.mark.parametrize(
    "command",
    [
        ("subscriber", "add", B, "--password", "pw"),
        ("subscriber", "import", "-"),
        ("plan", "add", "+44", "net-b.test"),
        ("server", "add", "ps1", "sip:127.0.2.11"),
    ],
)
def test_the_command_that_would_create_the_hss_needs_the_domain(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """No default realm: HA1s stored for example.test would make the net-b.test node refuse
    the database (and they cannot be recomputed without the passwords)."""
    fresh = Hss(tmp_path / "net-b")
    result = fresh(*command)
    assert (result.returncode, result.stdout) == (2, "")
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"presence-sip: error: {fresh.data}: no database yet")
    assert "give --domain DOMAIN" in lines[0]
    assert not fresh.data.exists()


@pytest.mark.parametrize(
    "command",
    [
        ("subscriber", "list"),
        ("subscriber", "add", B, "--password", "pw"),
        ("server", "add", "ps1", "sip:127.0.2.11"),
    ],
)
def test_a_database_that_records_no_domain_is_refused_without_a_write(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """A database made by another component, the core tables only (a node that stopped before
    its HSS recorded the domain, an older release): without --domain the command is refused,
    exit 2, and the file is as it was (it was given the HSS's tables first, then refused)."""
    data = tmp_path / "net-b"
    open_network_database(data).close()
    made = database_path(data).read_bytes()
    result = Hss(data)(*command)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"presence-sip: error: {data}: this database records no network domain yet: the first"
        " use must name it: give --domain DOMAIN, the network's domain (as `serve` has it: the"
        " digest realm the passwords are stored for, recorded now and checked afterwards)\n"
    )
    assert database_path(data).read_bytes() == made
    assert [path.name for path in data.iterdir()] == ["presence.sqlite"]


def test_a_mistyped_first_domain_is_named_with_the_way_out_while_nothing_is_stored(
    tmp_path: Path,
) -> None:
    """A first command with a mistyped --domain that failed (a bad number) leaves an HSS that
    records it: the corrected command is refused, and says the database holds no subscriber
    and which file to remove; once a subscriber is stored, only the refusal (nothing is
    removed by the tool itself)."""
    fresh = Hss(tmp_path / "net-b")
    failed = fresh("--domain", "net-b.tset", "subscriber", "add", "not-a-number", "--password", "p")
    assert failed.returncode == 2
    refused = fresh("--domain", "net-b.test", "subscriber", "add", B, "--password", "pw")
    assert refused.returncode == 2
    assert "database belongs to domain net-b.tset, not net-b.test" in refused.stderr
    assert "it holds no subscriber yet" in refused.stderr
    assert str(database_path(fresh.data)) in refused.stderr
    database_path(fresh.data).unlink()
    fresh.ok("--domain", "net-b.test", "subscriber", "add", B, "--password", "pw")
    other = fresh("--domain", "net-a.test", "subscriber", "list")
    assert other.returncode == 2
    assert "belongs to domain net-b.test" in other.stderr
    assert "holds no subscriber" not in other.stderr
    assert [s["msisdn"] for s in fresh.json("subscriber", "list")] == [B]


def test_the_recorded_domain_is_kept_and_another_refused(tmp_path: Path) -> None:
    fresh = Hss(tmp_path / "net-b")
    fresh.ok("subscriber", "add", B, "--password", "pw", "--domain", "net-b.test")
    fresh.ok("subscriber", "add", C, "--password", "pw")  # the recorded domain
    assert ha1_of_b(fresh) == hashlib.sha256(f"{B}:net-b.test:pw".encode()).hexdigest()
    shown = fresh.json("subscriber", "show", C)
    assert shown["identities"][0] == f"sip:{C}@net-b.test;user=phone"
    before = fresh.dump()
    refused = fresh(
        "--domain", "example.test", "subscriber", "add", "+447700900777", "--password", "pw"
    )
    assert refused.returncode == 2
    assert refused.stderr == (
        "presence-sip: error: database belongs to domain net-b.test, not example.test\n"
    )
    assert fresh.dump() == before


def test_concurrent_processes_share_one_database(tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    numbers = [f"+4477009002{i:02d}" for i in range(8)]
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "presence_sip.cli.hss",
                "--data",
                str(data),
                "--domain",
                "net-b.test",
                "subscriber",
                "add",
                number,
                "--password",
                "pw",
                "--credit",
                "1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )
        for number in numbers
    ]
    # Every process is waited for (its pipes closed) before a failure is reported.
    errors = [process.communicate(timeout=60)[1] for process in processes]
    assert [p.returncode for p in processes] == [0] * len(numbers), errors
    listed = Hss(data).json("subscriber", "list")
    assert [s["msisdn"] for s in listed] == numbers
    store = SqliteSubscriberStore.open(data)
    try:
        assert store.data_version() == len(numbers)
    finally:
        store.close()


def test_a_node_of_another_domain_refuses_the_hss(tmp_path: Path) -> None:
    """What the realm trap did: an HSS made for example.test, a node for net-b.test."""
    made = Hss(tmp_path / "net")
    made.ok("--domain", "example.test", "subscriber", "add", B, "--password", "pw")
    before = made.dump()
    argv = [*serve_command(), "serve", "--data", str(made.data), "--domain", "net-b.test",
            "--listen", "udp:127.0.0.1:0"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "database belongs to domain example.test, not net-b.test" in done.stderr
    assert made.dump() == before
