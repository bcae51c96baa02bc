"""``presence-sip show``: what a running node holds, read from its database by another process.

A real node (``presence-sip serve``, loopback UDP) takes a REGISTER (an RFC 5626 flow), a PUBLISH
and SUBSCRIBEs; ``show`` run beside it, while it serves, finds each, by every spelling of the
address of record, an extra identity included; nothing is written to the data directory.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from serve_process import ServeProcess, UdpClient, build_request, serve_command

DOMAIN = "example.test"
BOB = "+447700900123"
PIDF = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:+447700900123@example.test">'
    b'<tuple id="t1"><status><basic>open</basic></status></tuple></presence>\n'
)
INSTANCE = "<urn:uuid:00000000-0000-1000-8000-aabbccddeeff>"
FLOW = f'+sip.instance="{INSTANCE}";reg-id=1'


def presence_sip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*serve_command(), *args], capture_output=True, text=True, timeout=60, check=False
    )


def show(data: Path, *args: str) -> str:
    result = presence_sip("show", "--data", str(data), *args)
    assert (result.returncode, result.stderr) == (0, ""), result
    return result.stdout


def show_until(data: Path, text: str, *args: str) -> str:
    """``show``'s output once it holds ``text`` (the node's group commit writes within ms)."""
    deadline = time.monotonic() + 5
    while True:
        out = show(data, *args)
        if text in out or time.monotonic() > deadline:
            return out
        time.sleep(0.05)


def test_show_reads_what_a_serving_node_holds_by_any_spelling_of_the_aor(
    serve_factory: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    made = presence_sip(
        "hss", "--data", str(data), "--domain", DOMAIN, "subscriber", "add", BOB,
        "--password", "secret", "--identity", f"sip:bob@{DOMAIN}",
    )  # fmt: skip
    assert made.returncode == 0, made
    node = serve_factory(
        domain=DOMAIN, auth="none", data_dir=data, extra_args=["--default-policy", "allow"]
    )
    with UdpClient() as phone, UdpClient() as watcher, UdpClient() as ua:
        register = build_request(
            "REGISTER",
            f"sip:{DOMAIN}",
            phone,
            to=f"<sip:{BOB}@{DOMAIN}>",
            from_=f"<sip:{BOB}@{DOMAIN}>",
            headers=[
                ("Contact", f'<sip:bob@{phone.host}:{phone.port}>;{FLOW}'),
                ("Supported", "outbound"),
                ("User-Agent", "TestPhone/1.0"),
                ("Expires", "600"),
            ],
        )  # fmt: skip
        assert phone.request(register, node).status == 200
        publish = build_request(
            "PUBLISH",
            f"sip:{BOB}@{DOMAIN}",
            phone,
            from_=f"<sip:{BOB}@{DOMAIN}>",
            headers=[("Event", "presence"), ("Expires", "600"),
                     ("Content-Type", "application/pidf+xml")],
            body=PIDF,
        )  # fmt: skip
        assert phone.request(publish, node).status == 200
        for presentity in (f"sip:{BOB}@{DOMAIN}", f"sip:bob@{DOMAIN}"):
            subscribe = build_request(
                "SUBSCRIBE",
                presentity,
                watcher,
                from_=f"<sip:alice@{DOMAIN}>",
                headers=[("Contact", f"<sip:alice@{ua.host}:{ua.port}>"),
                         ("Event", "presence"), ("Expires", "300")],
            )  # fmt: skip
            assert watcher.request(subscribe, node).status == 200

        summary = show_until(data, "2 subscriptions")
        assert summary.splitlines()[0] == (
            "node: 1 AORs (1 bindings), 2 subscriptions (2 presence; 2 active),"
            " 1 publications of 1 presentities"
        ), summary
        assert f"watchers holding the most subscriptions: sip:alice@{DOMAIN} 2" in summary
        assert f"presentities with the most watchers: {BOB} 2" in summary

        for spelling in (BOB, f"tel:{BOB}", f"sip:bob@{DOMAIN.upper()}", f"bob@{DOMAIN}"):
            about = show(data, spelling).splitlines()
            assert about[0] == BOB, (spelling, about)
            (registered,) = [line for line in about if "registered at" in line]
            assert f"<sip:bob@{phone.host}:{phone.port}>, expires in " in registered
            assert f'"TestPhone/1.0", flow {INSTANCE} reg-id 1' in registered
            assert len([line for line in about if " published at " in line]) == 1
            watched = [line for line in about if "watched by sip:alice@" in line]
            assert len(watched) == 2, about
            assert f"NOTIFYs to <sip:alice@{ua.host}:{ua.port}>" in watched[0]

        alice = json.loads(show(data, "--json", f"sip:alice@{DOMAIN}"))
        assert alice["key"] == f"sip:alice@{DOMAIN}"
        assert [s["presentity"] for s in alice["watching"]] == [BOB, BOB]
        assert {s["state"] for s in alice["watching"]} == {"active"}
        assert all(0 < s["expires_in"] <= 300 for s in alice["watching"])
        assert alice["bindings"] == alice["publications"] == alice["watched_by"] == []

        nobody = show(data, "+447700900999").splitlines()
        assert nobody == [
            "+447700900999",
            "  nothing held: not registered, nothing published, no subscription",
        ]
    files = sorted(p.name for p in data.iterdir())
    refused = presence_sip("show", "--data", str(data), "not a uri@@")
    assert refused.returncode == 2
    assert refused.stderr.startswith("presence-sip: error: not an address of record:")
    missing = presence_sip("show", "--data", str(tmp_path / "nowhere"))
    assert missing.returncode == 2
    assert "no database at" in missing.stderr
    assert sorted(p.name for p in data.iterdir()) == files  # show wrote nothing beside it
