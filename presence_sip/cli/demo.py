"""``presence-sip demo [--once]``: both demo networks on loopback and a scripted presence flow.

This wave runs each network as one all-in-one node (registrar + presence server) on its demo
address, and the flow inside net-b: B registers, a watcher asks "is B attached?" (Expires: 0),
subscribes, B publishes, the watcher sees each change.  The inter-network steps (gateways,
mutual TLS between networks) arrive with the gateway role.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from presence_sip.node import Node, NodeConfig, TlsSettings
from presence_sip.presence.pidf import PIDF_CONTENT_TYPE, document_basic
from presence_sip.runtime.agent import SipAgent
from presence_sip.sip.errors import ConfigError, StoreError
from presence_sip.storage.database import open_network_database
from presence_sip.storage.sqlite_hss import SqliteSubscriberStore
from presence_sip.transport.listen import ListenSpec
from presence_sip.transport.pki import DEMO_NODES, load_or_create
from presence_sip.transport.tls import client_context


@dataclass(frozen=True, slots=True)
class DemoSubscriber:
    msisdn: str
    password: str


@dataclass(frozen=True, slots=True)
class DemoNetwork:
    domain: str
    address: str
    subscribers: tuple[DemoSubscriber, ...]


NET_A = DemoNetwork(
    "net-a.test",
    "127.0.1.1",
    (
        DemoSubscriber("+447700900001", "alice-secret"),
        DemoSubscriber("+447700900002", "softphone-a"),
    ),
)
NET_B = DemoNetwork(
    "net-b.test",
    "127.0.2.1",
    (
        DemoSubscriber("+447700900123", "bob-secret"),
        DemoSubscriber("+447700900124", "watcher-secret"),
        DemoSubscriber("+447700900125", "softphone-b"),
    ),
)
B, WATCHER = NET_B.subscribers[0], NET_B.subscribers[1]


class StepFailed(Exception):
    """A step of the scripted flow did not give what it should."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the demo networks on loopback and a presence flow"
    )
    parser.add_argument(
        "--once", action="store_true", help="run the flow, then exit (0 on success)"
    )
    parser.add_argument(
        "--data", default="data/demo", help="demo data directory (default data/demo)"
    )
    parser.add_argument("--certs", default="certs", help="certificate directory (default certs)")
    parser.add_argument(
        "--log-level", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, args.log_level), format="%(levelname)s %(name)s: %(message)s"
    )
    return asyncio.run(_demo(Path(args.data), Path(args.certs), once=args.once))


def _prepare(network: DemoNetwork, data: Path) -> None:
    """Create the network's subscribers (and B's rule for the watcher) when missing."""
    conn = open_network_database(data)
    try:
        hss = SqliteSubscriberStore(conn, domain=network.domain)
        for sub in network.subscribers:
            if hss.get_subscriber(sub.msisdn) is None:
                hss.add_subscriber(sub.msisdn, password=sub.password, credit=100)
        if network is NET_B:
            hss.set_rule(B.msisdn, f"sip:{WATCHER.msisdn}@{NET_B.domain}", "allow")
    except StoreError as exc:
        raise ConfigError(f"demo data in {data}: {exc}") from None
    finally:
        conn.close()


def _config(network: DemoNetwork, data: Path, certs: Path) -> NodeConfig:
    """The network's registrar node: UDP/TCP 5060 and TLS 5061 with a certificate of its CA."""
    spec = next(s for s in DEMO_NODES if s.network == network.domain and s.name == "registrar")
    files = load_or_create(certs, spec)
    listen = (
        ListenSpec("udp", network.address, 5060),
        ListenSpec("tcp", network.address, 5060),
        ListenSpec("tls", network.address, 5061),
    )
    tls = TlsSettings(cert=str(files.chain), key=str(files.key), ca=str(files.ca))
    # MD5 only: baresip 1.0 (the softphone of the walkthrough) answers only an MD5 challenge.
    return NodeConfig(
        name=network.domain,
        domain=network.domain,
        listen=listen,
        data_dir=str(data),
        digest_algorithms=("MD5",),
        tls=tls,
    )


async def _demo(data: Path, certs: Path, *, once: bool) -> int:
    nodes: list[Node] = []
    for network in (NET_A, NET_B):
        path = data / network.domain
        _prepare(network, path)
        nodes.append(Node(_config(network, path, certs)))
    for node in nodes:
        await node.start()
    try:
        try:
            await _tls_check(certs)
            await _flow()
        except (StepFailed, TimeoutError) as exc:
            print(f"FAILED: {exc or 'timed out'}", file=sys.stderr)
            return 1
        if once:
            return 0
        _print_softphone_help()
        await _wait_for_signal()
        return 0
    finally:
        for node in nodes:
            await node.stop()


async def _tls_check(certs: Path) -> None:
    """Step 0: net-b answers OPTIONS over TLS with a certificate that chains to its CA."""
    _step(
        "0", f"TLS to net-b.test ({NET_B.address}:5061), server certificate checked against its CA"
    )
    context = client_context(None, None, certs / NET_B.domain / "ca.pem")
    request = (
        f"OPTIONS sip:{NET_B.domain} SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bK-demo-tls;rport\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:demo@net-b.test>;tag=demo\r\nTo: <sip:net-b.test>\r\n"
        "Call-ID: demo-tls@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    try:
        async with asyncio.timeout(10):
            reader, writer = await asyncio.open_connection(
                NET_B.address, 5061, ssl=context, server_hostname=NET_B.address
            )
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            writer.close()
            await writer.wait_closed()
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        raise StepFailed(f"TLS OPTIONS to net-b.test: {exc}") from None
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    _expect(status.startswith("SIP/2.0 200"), f"TLS OPTIONS answered {status}")
    _step("0", f"TLS OPTIONS: {status}")


def _step(number: str, text: str) -> None:
    print(f"[{number}] {text}", flush=True)


async def _flow() -> None:
    registrar = (NET_B.address, 5060)
    async with (
        SipAgent(B.msisdn, NET_B.domain) as bob,
        SipAgent(WATCHER.msisdn, NET_B.domain) as watcher,
    ):
        presentity = f"sip:{B.msisdn}@{NET_B.domain};user=phone"
        _step("1", f"B ({B.msisdn}) registers with {NET_B.domain} (digest)")
        response = await bob.request(
            "REGISTER",
            f"sip:{NET_B.domain}",
            registrar,
            to=bob.aor,
            headers=[("Expires", "600")],
            password=B.password,
        )
        _expect(response.status == 200, f"REGISTER answered {response.status} {response.reason}")
        _step("2", f"watcher asks 'is B attached?' (SUBSCRIBE Expires: 0 to {presentity})")
        status = await _fetch(watcher, presentity, registrar)
        _step("2", f"B's status: {status}")
        _expect(status == "open", f"expected open, got {status}")
        _step("3", "watcher subscribes for 10 minutes")
        dialog = watcher.new_dialog()
        response = await watcher.request(
            "SUBSCRIBE",
            presentity,
            registrar,
            dialog=dialog,
            headers=[("Event", "presence"), ("Accept", PIDF_CONTENT_TYPE), ("Expires", "600")],
            password=WATCHER.password,
        )
        _expect(response.status == 200, f"SUBSCRIBE answered {response.status}")
        notify = await watcher.next_request()
        _step(
            "3", f"NOTIFY {notify.headers.get('Subscription-State')}: {document_basic(notify.body)}"
        )
        _step("4", "B publishes 'closed' with a note")
        body = _pidf(presentity, "closed", "In a meeting")
        response = await bob.request(
            "PUBLISH",
            presentity,
            registrar,
            headers=[
                ("Event", "presence"),
                ("Expires", "600"),
                ("Content-Type", PIDF_CONTENT_TYPE),
            ],
            body=body,
            password=B.password,
        )
        _expect(response.status == 200, f"PUBLISH answered {response.status}")
        etag = response.sip_etag or ""
        notify = await watcher.next_request()
        status = document_basic(notify.body)
        _step("4", f"watcher sees B: {status} ({_note(notify.body)})")
        _expect(status == "closed", f"expected closed after PUBLISH, got {status}")
        _step("5", "watcher unsubscribes")
        await watcher.request(
            "SUBSCRIBE",
            presentity,
            registrar,
            dialog=dialog,
            headers=[("Event", "presence"), ("Expires", "0")],
            password=WATCHER.password,
        )
        _step("6", "B withdraws its publication and unregisters (the demo can run again)")
        response = await bob.request(
            "PUBLISH",
            presentity,
            registrar,
            headers=[("Event", "presence"), ("Expires", "0"), ("SIP-If-Match", etag)],
            password=B.password,
        )
        _expect(response.status == 200, f"PUBLISH removal answered {response.status}")
        response = await bob.request(
            "REGISTER",
            f"sip:{NET_B.domain}",
            registrar,
            to=bob.aor,
            headers=[("Expires", "0")],
            password=B.password,
        )
        _expect(response.status == 200, f"unREGISTER answered {response.status}")
        _step("done", "presence flow inside net-b.test completed")


async def _fetch(agent: SipAgent, presentity: str, registrar: tuple[str, int]) -> str | None:
    response = await agent.request(
        "SUBSCRIBE",
        presentity,
        registrar,
        headers=[("Event", "presence"), ("Accept", PIDF_CONTENT_TYPE), ("Expires", "0")],
        password=WATCHER.password,
    )
    _expect(response.status == 200, f"fetch SUBSCRIBE answered {response.status} {response.reason}")
    notify = await agent.next_request()
    return document_basic(notify.body)


def _pidf(entity: str, basic: str, note: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="{entity}">'
        f'<tuple id="demo"><status><basic>{basic}</basic></status></tuple>'
        f"<note>{note}</note></presence>"
    ).encode()


def _note(body: bytes) -> str:
    start = body.find(b"<note")
    if start < 0:
        return "no note"
    start = body.find(b">", start) + 1
    return body[start : body.find(b"</", start)].decode(errors="replace")


def _expect(condition: bool, failure: str) -> None:
    if not condition:
        raise StepFailed(failure)


def _print_softphone_help() -> None:
    print("\nServing. Point a softphone at the demo networks (UDP/TCP 5060, TLS 5061):")
    for network in (NET_A, NET_B):
        for sub in network.subscribers:
            print(
                f"  sip:{sub.msisdn}@{network.domain}  password {sub.password}"
                f"  registrar {network.address}:5060"
            )
    print("Ctrl-C stops.", flush=True)


async def _wait_for_signal() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
