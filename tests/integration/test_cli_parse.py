"""``presence-sip parse`` as a user runs it: a subprocess over the torture vectors."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from vectors import ROOT, load

RFC4475 = sorted((ROOT / "rfc4475").glob("*.dat"))
REJECTED = {
    "badinv01", "clerr", "ncl", "scalar02", "scalarlg", "quotbal", "ltgtruri", "lwsruri",
    "lwsstart", "trws", "escruri", "baddate", "regbadct", "badaspec", "baddn", "badvers",
    "mismatch01", "mismatch02", "bigcode", "insuf", "multi01", "mcl01",
}  # fmt: skip


def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "presence_sip", "parse", *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )


def records(result: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.decode("utf-8").splitlines()]


def test_torture_set_one_line_per_file_exit_1() -> None:
    result = run(*map(str, RFC4475))
    assert result.returncode == 1
    assert result.stderr == b""
    out = records(result)
    assert [r["file"] for r in out] == [str(p) for p in RFC4475]
    assert {Path(r["file"]).stem for r in out if not r["valid"]} == REJECTED
    by_name = {Path(r["file"]).stem: r for r in out}
    assert by_name["badvers"]["error"] == {"status": 505, "reason": "Version Not Supported"}
    assert by_name["mismatch02"]["error"]["status"] == 501
    esc02 = by_name["esc02"]
    assert (esc02["kind"], esc02["method"], esc02["uri"]) == (
        "request",
        "RE%47IST%45R",
        "sip:registrar.example.com",
    )
    assert [v for n, v in esc02["headers"] if n == "Contact"] == [
        "<sip:alias1@host1.example.com>",
        "<sip:alias3@host3.example.com>",
    ]
    assert esc02["headers"][-1] == ["Content-Length", "0"]  # "l" expanded
    unreason = by_name["unreason"]
    assert (unreason["kind"], unreason["status"]) == ("response", 200)
    assert unreason["reason"].endswith("простое")
    assert unreason["content_type"] == "application/sdp"
    assert unreason["body_length"] == 154
    assert by_name["mpart01"]["body_length"] == 553


def test_all_valid_exit_0_and_stdin() -> None:
    valid = [str(p) for p in RFC4475 if p.stem not in REJECTED]
    result = run(*valid)
    assert result.returncode == 0
    assert len(records(result)) == len(valid)
    piped = run("-", stdin=load("sip/notify"))
    assert piped.returncode == 0
    [record] = records(piped)
    assert record["file"] == "-"
    assert record["content_type"] == "application/pidf+xml"
    assert record["method"] == "NOTIFY"
    implicit = run(stdin=load("rfc4475/badvers"))
    assert implicit.returncode == 1
    assert records(implicit)[0]["error"]["status"] == 505


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = run(str(RFC4475[0]), str(tmp_path / "missing.sip"))
    assert result.returncode == 2
    assert result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("presence-sip: error: ")
    assert "missing.sip" in lines[0]
    directory = run(str(tmp_path))
    assert directory.returncode == 2
    assert directory.stderr.decode().count("\n") == 1


def test_a_file_with_lf_line_ends_is_invalid_with_a_hint(tmp_path: Path) -> None:
    text = (
        b"OPTIONS sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n"
        b"From: <sip:a@example.test>;tag=1\r\nTo: <sip:example.test>\r\nCall-ID: c1\r\n"
        b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    (tmp_path / "crlf.sip").write_bytes(text)
    (tmp_path / "lf.sip").write_bytes(text.replace(b"\r\n", b"\n"))
    result = run(str(tmp_path / "crlf.sip"), str(tmp_path / "lf.sip"))
    good, bad = records(result)
    assert good["valid"] is True
    assert "hint" not in good
    assert bad["valid"] is False
    assert "CRLF" in bad["error"]["hint"]


def test_thousands_of_files_in_one_call(tmp_path: Path) -> None:
    data = load("sip/subscribe")
    paths = []
    for i in range(3000):
        path = tmp_path / f"m{i}.sip"
        path.write_bytes(data.replace(b"CSeq: 17766", b"CSeq: %d" % i))
        paths.append(str(path))
    begin = time.monotonic()
    result = run(*paths)
    elapsed = time.monotonic() - begin
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == 3000
    assert elapsed < 60
