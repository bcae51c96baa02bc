"""A real softphone (baresip) against a real ``presence-sip serve``, with digest auth, on loopback.

baresip as the watcher: it subscribes to B through the node and must *show* B's status as the
node derives it (registration, then B's PUBLISHes).  baresip as the presentity: it registers and
publishes, and a watcher must see what it published.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from presence_sip.presence.pidf import PIDF_CONTENT_TYPE, document_basic
from presence_sip.runtime.agent import SipAgent
from presence_sip.storage.database import open_network_database
from presence_sip.storage.sqlite_hss import SqliteSubscriberStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
_INTEGRATION = Path(__file__).resolve().parents[1] / "integration"
if str(_INTEGRATION) not in sys.path:  # serve_process lives beside the integration tests
    sys.path.insert(0, str(_INTEGRATION))

from interop.baresip_ctrl import (  # noqa: E402
    BaresipCtrl,
    baresip_sip_port,
    start_baresip,
    stop_baresip,
    write_profile,
)
from serve_process import ServeProcess, free_port  # noqa: E402

DOMAIN = "example.test"
BOB = ("+447700900123", "bob-secret")
WATCHER = ("+447700900124", "watcher-secret")
BOB_URI = f"sip:{BOB[0]}@{DOMAIN}"


def _has_global_ipv4() -> bool | None:
    """Whether some interface has an IPv4 address beyond loopback (None: cannot tell)."""
    ip = shutil.which("ip")
    if ip is None:
        return None
    listing = subprocess.run(
        [ip, "-4", "-o", "addr", "show", "scope", "global"],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    return None if listing.returncode else bool(listing.stdout.strip())


@pytest.fixture(autouse=True, scope="module")
def _network_baresip_can_use() -> None:
    """baresip 1.0 takes its local address from the interfaces and registers nothing where
    only ``lo`` has one ("SIP register failed: Protocol not supported", new-user audit in a
    bare network namespace): say so at once instead of failing on that later."""
    if _has_global_ipv4() is False:
        pytest.fail(
            "baresip needs an IPv4 address beyond loopback on some interface (no default "
            "route needed); in a bare network namespace add one, e.g. a veth pair "
            "(README, Tests)"
        )


def _provision(data: Path) -> None:
    """B and the watcher in the HSS, the watcher allowed by B's rules."""
    conn = open_network_database(data)
    hss = SqliteSubscriberStore(conn, domain=DOMAIN)
    for msisdn, password in (BOB, WATCHER):
        hss.add_subscriber(msisdn, password, credit=10)
    hss.set_rule(BOB[0], f"sip:{WATCHER[0]}@{DOMAIN}", "allow")
    conn.close()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ServeProcess]:
    data = tmp_path / "data"
    _provision(data)
    with ServeProcess(
        data,
        domain=DOMAIN,
        auth="digest",
        log_dir=tmp_path,
        extra_args=["--digest-algorithms", "MD5"],
    ) as serve:
        yield serve


def _pidf(basic: str, extra: str = "") -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<presence xmlns="urn:ietf:params:xml:ns:pidf" '
        'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" '
        'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
        f'entity="{BOB_URI}"><tuple id="bob1"><status><basic>{basic}</basic></status></tuple>'
        f"{extra}</presence>"
    ).encode()


async def _register(agent: SipAgent, port: int) -> int:
    response = await agent.request(
        "REGISTER",
        f"sip:{DOMAIN}",
        ("127.0.0.1", port),
        to=agent.aor,
        headers=[("Expires", "600")],
        password=BOB[1],
    )
    return response.status


async def _publish(agent: SipAgent, port: int, body: bytes, etag: str | None) -> str:
    """PUBLISH (modifying the publication ``etag`` when given); returns the new SIP-ETag."""
    headers = [("Event", "presence"), ("Expires", "600"), ("Content-Type", PIDF_CONTENT_TYPE)]
    if etag is not None:
        headers.append(("SIP-If-Match", etag))
    response = await agent.request(
        "PUBLISH", BOB_URI, ("127.0.0.1", port), headers=headers, body=body, password=BOB[1]
    )
    assert response.status == 200
    assert response.sip_etag is not None
    return response.sip_etag


@contextlib.contextmanager
def running_baresip(tmp_path: Path, account: str, contacts: list[str]) -> Iterator[BaresipCtrl]:
    """baresip with a headless profile of ``account`` and ``contacts``, and its control socket;
    on a failure inside, the end of its log goes to stderr; it must quit with status 0."""
    profile = tmp_path / "baresip"
    ctrl_port = free_port()
    write_profile(
        profile,
        sip_port=baresip_sip_port(avoid=ctrl_port),
        ctrl_port=ctrl_port,
        account=account,
        contacts=contacts,
    )
    process = start_baresip(profile, tmp_path / "baresip.log")
    ctrl = None
    try:
        ctrl = BaresipCtrl(ctrl_port)
        yield ctrl
    except BaseException:
        sys.stderr.write((tmp_path / "baresip.log").read_text(errors="replace")[-4000:])
        raise
    finally:
        assert stop_baresip(process, ctrl) == 0


def test_baresip_watcher_shows_what_the_node_derives_and_publishes(
    node: ServeProcess, tmp_path: Path
) -> None:
    account = (
        f"<sip:{WATCHER[0]}@{DOMAIN}>;auth_pass={WATCHER[1]};"
        f'outbound="sip:127.0.0.1:{node.port}";regint=0;pubint=0'
    )
    with running_baresip(tmp_path, account, [f'"Bob" <{BOB_URI}>;presence=p2p']) as ctrl:
        # Nothing published, not registered: the node derives closed.
        assert ctrl.wait_status(BOB_URI, "Offline") == "Offline"

        async def scenario() -> None:
            async with SipAgent(BOB[0], DOMAIN) as bob:
                assert await _register(bob, node.port) == 200
                await asyncio.to_thread(ctrl.wait_status, BOB_URI, "Online")
                busy = (
                    "<dm:person id='p1'><rpid:activities><rpid:busy/></rpid:activities></dm:person>"
                )
                etag = await _publish(bob, node.port, _pidf("open", busy), None)
                await asyncio.to_thread(ctrl.wait_status, BOB_URI, "Busy")
                await _publish(bob, node.port, _pidf("closed"), etag)  # modify (RFC 3903 §4.4)
                await asyncio.to_thread(ctrl.wait_status, BOB_URI, "Offline")

        asyncio.run(scenario())


def test_baresip_presentity_registers_and_publishes_to_a_watcher(
    node: ServeProcess, tmp_path: Path
) -> None:
    account = (
        f'<{BOB_URI}>;auth_pass={BOB[1]};outbound="sip:127.0.0.1:{node.port}";regint=600;pubint=600'
    )
    with running_baresip(tmp_path, account, []):

        async def scenario() -> None:
            async with SipAgent(WATCHER[0], DOMAIN) as watcher:
                deadline = asyncio.get_running_loop().time() + 15
                basic = None
                while basic != "open" and asyncio.get_running_loop().time() < deadline:
                    response = await watcher.request(
                        "SUBSCRIBE",
                        BOB_URI,
                        ("127.0.0.1", node.port),
                        headers=[("Event", "presence"), ("Expires", "0")],
                        password=WATCHER[1],
                    )
                    assert response.status == 200
                    basic = document_basic((await watcher.next_request()).body)
                    await asyncio.sleep(0.3)
                assert basic == "open"

        asyncio.run(scenario())


def test_baresip_keeps_its_outbound_udp_flow_alive_with_stun_at_the_flow_timer(
    tmp_path: Path,
) -> None:
    """RFC 5626 with a real client: baresip (``sipnat=outbound``) registers a flow over UDP,
    the 200 gives ``Require: outbound`` and ``Flow-Timer: 2``, and baresip then keeps the flow
    alive with STUN Binding requests every 1.6-2 s (§4.4.1, §8), which the node answers; its
    subscription to B goes on over that flow."""
    data = tmp_path / "data"
    _provision(data)
    port = free_port()
    config = tmp_path / "net.toml"
    config.write_text(
        f'[network]\ndomain = "{DOMAIN}"\ndata = "{data}"\ndigest_algorithms = ["MD5"]\n'
        "[network.registrar]\nflow_timer = 2\n"
        f'[[node]]\nname = "ps1"\nlisten = ["udp:127.0.0.1:{port}", "tcp:127.0.0.1:{port}"]\n'
    )
    account = (
        f"<sip:{WATCHER[0]}@{DOMAIN}>;auth_pass={WATCHER[1]};"
        f'outbound="sip:127.0.0.1:{port}";sipnat=outbound;regint=600;pubint=0'
    )
    with (
        ServeProcess(data, config=config, port=port, log_dir=tmp_path) as node,
        running_baresip(tmp_path, account, [f'"Bob" <{BOB_URI}>;presence=p2p']) as ctrl,
    ):
        assert ctrl.wait_status(BOB_URI, "Offline") == "Offline"
        stun = 0
        deadline = time.monotonic() + 15
        while stun < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
            found = re.search(r"UDP keep-alives \((\d+) STUN\)", node.status_line())
            stun = int(found.group(1)) if found else 0
        assert stun >= 3, node.status_line()
        baresip_log = (tmp_path / "baresip.log").read_text(errors="replace")
        assert "Require: outbound" in baresip_log
        assert "Flow-Timer: 2" in baresip_log
        assert baresip_log.count("REGISTER sip:") <= 2  # the flow held: no re-REGISTER

        async def scenario() -> None:
            async with SipAgent(BOB[0], DOMAIN) as bob:
                await _publish(bob, node.port, _pidf("open"), None)
                await asyncio.to_thread(ctrl.wait_status, BOB_URI, "Online")

        asyncio.run(scenario())


def test_baresip_over_tcp_keeps_seeing_b_after_the_node_restarts(
    node: ServeProcess, tmp_path: Path
) -> None:
    """baresip (``sipnat=outbound``) registers a flow and subscribes over TCP; the node restarts
    under it (its connection is gone); B's next change still reaches it: the subscription was
    kept in the node's database, and its NOTIFY goes to the Contact baresip listens on."""
    account = (
        f"<sip:{WATCHER[0]}@{DOMAIN};transport=tcp>;auth_pass={WATCHER[1]};"
        f'outbound="sip:127.0.0.1:{node.port};transport=tcp";sipnat=outbound;'
        "regint=600;pubint=0"
    )
    with running_baresip(tmp_path, account, [f'"Bob" <{BOB_URI}>;presence=p2p']) as ctrl:
        assert ctrl.wait_status(BOB_URI, "Offline") == "Offline"
        node.restart()

        async def scenario() -> None:
            async with SipAgent(BOB[0], DOMAIN) as bob:
                await _publish(bob, node.port, _pidf("open"), None)
                await asyncio.to_thread(ctrl.wait_status, BOB_URI, "Online")

        asyncio.run(scenario())
    assert "subscription removed" not in node.log_text()
