"""Subscriptions and publications survive a restart of a real ``presence-sip serve`` process.

100 watchers (one :class:`~presence_sip.runtime.agent.SipAgent` each, on its own UDP port)
subscribe to one presentity; the node gets one SIGTERM (clean exit asserted) and is started again
on the same data directory and port; then ONE PUBLISH (a modify under the ETag issued before the
restart) must reach all 100 watchers: a NOTIFY with the new state, in the same dialog, with a
CSeq above every CSeq that dialog saw before the restart (RFC 3261 section 12.2.1.1).

A presence rule added with ``presence-sip hss`` while the node is down applies to the
subscriptions it restores: a watcher blocked meanwhile gets ``terminated;reason=rejected`` at
once, and nothing of the next PUBLISH (before, it went on getting every change until its
subscription ended).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from serve_process import (
    LOOPBACK,
    ServeProcess,
    TcpClient,
    answer_bytes,
    answered_notify,
    build_request,
    register_over,
    serve_command,
)

from presence_sip.runtime.agent import Dialog, SipAgent
from presence_sip.sip import Request, Response, parse_message
from presence_sip.storage.sqlite_hss import SqliteSubscriberStore

DOMAIN = "example.test"
PRESENTITY = "+447700900501"
TCP_WATCHER = "+447700900502"
WATCHERS = 100
NOTIFY_WAIT = 10.0


def pidf(basic: str, note: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:{PRESENTITY}@{DOMAIN}">'
        f'<tuple id="t1"><status><basic>{basic}</basic></status><note>{note}</note></tuple>'
        "</presence>"
    ).encode()


def note_of(notify: Request) -> str | None:
    found = re.search(rb"<note[^>]*>([^<]*)</note>", notify.body)
    return found.group(1).decode() if found else None


def cseq_of(notify: Request) -> int:
    return int((notify.headers.get("CSeq") or "0").split()[0])


class Watcher:
    """One watcher agent, its dialog, and every NOTIFY it got."""

    def __init__(self, agent: SipAgent) -> None:
        self.agent = agent
        self.dialog: Dialog = agent.new_dialog()
        self.notifies: list[Request] = []

    async def wait_for(self, note: str, timeout: float = NOTIFY_WAIT) -> Request:
        """The next NOTIFY whose PIDF note is ``note`` (earlier ones are kept too)."""
        async with asyncio.timeout(timeout):
            while True:
                notify = await self.agent.next_request("NOTIFY", timeout=timeout)
                self.notifies.append(notify)
                if note_of(notify) == note:
                    return notify

    def in_dialog(self, notify: Request) -> bool:
        d = self.dialog
        return (notify.headers.get("Call-ID") == d.call_id and notify.to.tag == d.local_tag
                and notify.from_.tag == d.remote_tag)  # fmt: skip


@contextlib.asynccontextmanager
async def watchers(count: int) -> AsyncIterator[list[Watcher]]:
    async with contextlib.AsyncExitStack() as stack:
        agents = [
            await stack.enter_async_context(SipAgent(f"watcher{i:03d}", DOMAIN))
            for i in range(count)
        ]
        yield [Watcher(agent) for agent in agents]


async def publish(node: ServeProcess, body: bytes, if_match: str | None = None) -> Response:
    headers = [("Event", "presence"), ("Expires", "600"), ("Content-Type", "application/pidf+xml")]
    if if_match is not None:
        headers.append(("SIP-If-Match", if_match))
    async with SipAgent(PRESENTITY, DOMAIN) as agent:
        return await agent.request(
            "PUBLISH", f"sip:{PRESENTITY}@{DOMAIN}", node.address, headers=headers, body=body,
            timeout=10,
        )  # fmt: skip


@pytest.fixture
def data(tmp_path: Path) -> Path:
    directory = tmp_path / "data"
    directory.mkdir()
    store = SqliteSubscriberStore.open(directory, DOMAIN)  # the node's: serve's default
    try:
        store.add_subscriber(PRESENTITY, "secret")
        store.add_subscriber(TCP_WATCHER, "secret")
    finally:
        store.close()
    return directory


async def test_100_subscriptions_survive_a_restart(data: Path) -> None:
    started = time.monotonic()
    with ServeProcess(data, auth="none", extra_args=["--default-policy", "allow"]) as node:
        async with watchers(WATCHERS) as crowd:
            answers = await asyncio.gather(*(
                w.agent.request(
                    "SUBSCRIBE", f"sip:{PRESENTITY}@{DOMAIN}", node.address, dialog=w.dialog,
                    headers=[("Event", "presence"), ("Expires", "600")], timeout=15,
                )
                for w in crowd
            ))  # fmt: skip
            assert [a.status for a in answers] == [200] * WATCHERS
            # nothing published, not registered: the first NOTIFY says closed / "not registered"
            await asyncio.gather(*(w.wait_for("not registered") for w in crowd))
            before = {w.dialog.call_id: max(cseq_of(n) for n in w.notifies) for w in crowd}

            node.restart()  # one SIGTERM, exit 0 asserted; same port, same data directory

            assert (await publish(node, pidf("open", "after-restart"))).status == 200
            results = await asyncio.gather(
                *(w.wait_for("after-restart") for w in crowd), return_exceptions=True
            )
            reached = [w for w, r in zip(crowd, results, strict=True) if isinstance(r, Request)]
            assert len(reached) == WATCHERS, (
                f"{len(reached)} of {WATCHERS} watchers got the NOTIFY after the restart\n"
                + node.log_text()[-3000:]
            )
            for w, notify in zip(crowd, results, strict=True):
                assert isinstance(notify, Request)
                assert w.in_dialog(notify)
                assert cseq_of(notify) > before[w.dialog.call_id]
                assert (notify.headers.get("Subscription-State") or "").startswith("active")
                assert b"<basic>open</basic>" in notify.body
    assert time.monotonic() - started < 60


async def test_a_watcher_blocked_while_the_node_was_down_is_let_go_after_the_restart(
    data: Path,
) -> None:
    def block_the_watcher() -> None:
        command = [*serve_command(), "hss", "--data", str(data)]
        command += ["rule", "add", PRESENTITY, watcher.agent.aor, "block"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr

    with ServeProcess(data, auth="none", extra_args=["--default-policy", "allow"]) as node:
        async with watchers(1) as (watcher,):
            answer = await watcher.agent.request(
                "SUBSCRIBE", f"sip:{PRESENTITY}@{DOMAIN}", node.address, dialog=watcher.dialog,
                headers=[("Event", "presence"), ("Expires", "600")], timeout=10,
            )  # fmt: skip
            assert answer.status == 200
            await watcher.wait_for("not registered")

            node.restart(while_down=block_the_watcher)

            final = await watcher.agent.next_request("NOTIFY", timeout=NOTIFY_WAIT)
            assert watcher.in_dialog(final)
            assert final.headers.get("Subscription-State") == "terminated;reason=rejected"
            assert final.body == b""
            assert (await publish(node, pidf("open", "after-restart"))).status == 200
            with pytest.raises(TimeoutError):
                await watcher.agent.next_request("NOTIFY", timeout=1.0)


async def test_a_publication_survives_a_restart(data: Path) -> None:
    with ServeProcess(data, auth="none", extra_args=["--default-policy", "allow"]) as node:
        first = await publish(node, pidf("open", "before-restart"))
        assert first.status == 200
        etag = first.headers.get("SIP-ETag")
        assert etag
        node.restart()
        async with SipAgent("fetcher", DOMAIN) as agent:
            answer = await agent.request(
                "SUBSCRIBE", f"sip:{PRESENTITY}@{DOMAIN}", node.address,
                headers=[("Event", "presence"), ("Expires", "0")], timeout=10,
            )  # fmt: skip
            assert answer.status == 200
            notify = await agent.next_request("NOTIFY", timeout=5)
        assert note_of(notify) == "before-restart", notify.body  # the stored state came back
        modify = await publish(node, pidf("closed", "after-restart"), if_match=etag)
        assert modify.status == 200, "the entity-tag issued before the restart is unknown"


async def test_a_tcp_watcher_whose_contact_is_its_connection_is_notified_after_a_restart(
    data: Path,
) -> None:
    """pjsua's default over TCP/TLS: its Contact is its connection's own port.  The restart
    closes that connection; the watcher registers again over a new one (as pjsua does), keeps
    its subscription, and the next state change reaches it over the new connection (the
    Contact's port takes no connection: registrar/flows.py); its Contact asks for its flow
    (``ob``), so the node does not try that Contact first."""
    watcher_uri = f"sip:{TCP_WATCHER}@{DOMAIN}"
    with ServeProcess(data, auth="none", extra_args=["--default-policy", "allow"]) as node:
        before = TcpClient(node)
        old_contact = f"sip:{TCP_WATCHER}@{LOOPBACK}:{before.port};transport=tcp;ob"
        assert register_over(before, watcher_uri, old_contact).status == 200
        before.sock.sendall(build_request(
            "SUBSCRIBE", f"sip:{PRESENTITY}@{DOMAIN}", before, transport="TCP",
            from_=f"<{watcher_uri}>",
            headers=[("Contact", f"<{old_contact}>"), ("Event", "presence"),
                     ("Expires", "600")],
        ))  # fmt: skip
        answers = [parse_message(before.read_message() or b"") for _ in range(2)]
        assert [m.status for m in answers if isinstance(m, Response)] == [200]
        (first,) = [m for m in answers if isinstance(m, Request)]
        before.sock.sendall(answer_bytes(first))

        node.restart()  # one SIGTERM, exit 0 asserted; same port, same data directory
        assert before.closed_by_peer()
        before.close()

        after = TcpClient(node)
        new_contact = f"sip:{TCP_WATCHER}@{LOOPBACK}:{after.port};transport=tcp;ob"
        assert register_over(after, watcher_uri, new_contact).status == 200
        assert (await publish(node, pidf("open", "after-restart"))).status == 200
        notify = await answered_notify(after)
        assert note_of(notify) == "after-restart", node.log_text()[-3000:]
        assert notify.call_id == first.call_id
        assert notify.to.tag == first.to.tag
        assert cseq_of(notify) > cseq_of(first)
        assert (notify.headers.get("Subscription-State") or "").startswith("active")
        after.close()
        # RFC 5626 ob: straight over the new flow, without a connect to the dead Contact first.
        log = node.log_text()
        assert f"cannot connect to tcp:{LOOPBACK}:{before.port}" not in log
        assert f"flow tcp:{LOOPBACK}:{before.port} gone, by its new one" in log
