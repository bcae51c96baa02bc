"""The presence scenarios of ``scenarios/`` (SIPp through pysipp) against a real ``serve`` process.

Each test starts ``presence-sip serve --auth none --default-policy allow|confirm`` on a free
loopback port and drives it with SIPp (``publish.xml``, ``subscribe.xml``, ``fetch.xml``,
``winfo.xml``, and 1,000 ``fanout_watcher.xml`` calls in one SIPp process), with the project's
scripted :class:`~presence_sip.runtime.agent.SipAgent` as the presentity or a second watcher where
a scenario needs one.  SIPp runs in a worker thread so the agent keeps answering meanwhile.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from presence_serve import (
    ServeProcess,
    presence_node,
    provision,
    wait_for_subscriptions,
)
from sipp_runner import SippResult, run_scenario, start_scenario

from presence_sip.runtime.agent import Dialog, SipAgent
from presence_sip.sip import Request, Response

pytestmark = pytest.mark.sipp

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
DOMAIN = "example.test"
FANOUT_WATCHERS = 1000
FANOUT_RATE = 200
"""SUBSCRIBEs per second SIPp starts (bounded: the node is not being benchmarked here)."""


# One presentity per test on the shared node, so no test sees another's state.
P_LIFECYCLE = "+447700900101"
P_REMOVED = "+447700900102"
P_SUBSCRIBE = "+447700900103"
P_FETCH = "+447700900104"
P_CLOSED = "+447700900105"
P_OPEN = "+447700900106"
P_WINFO = "+447700900107"
P_WINFO_CONFIRM = "+447700900108"
P_WINFO_WRONG = "+447700900109"
P_FANOUT = "+447700900110"
ALL_PRESENTITIES = (
    P_LIFECYCLE, P_REMOVED, P_SUBSCRIBE, P_FETCH, P_CLOSED, P_OPEN, P_WINFO, P_WINFO_CONFIRM,
    P_WINFO_WRONG, P_FANOUT,
)  # fmt: skip
WINFO_WATCHER = f"sip:winfo-watcher@{DOMAIN}"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared node's data directory: every presentity in the HSS, one confirm rule."""
    directory = tmp_path_factory.mktemp("presence") / "data"
    directory.mkdir()
    provision(directory, ALL_PRESENTITIES, rules=[(P_WINFO_CONFIRM, WINFO_WATCHER, "confirm")])
    return directory


@pytest.fixture(scope="module")
def node(data: Path) -> Iterator[ServeProcess]:
    """``serve --auth none --default-policy allow``, shared by the tests of this module."""
    with presence_node(data, auth="none", default_policy="allow") as running:
        yield running


def pidf(presentity: str, basic: str, note: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:{presentity}@{DOMAIN}">'
        f'<tuple id="agent-t1"><status><basic>{basic}</basic></status>'
        f"<note>{note}</note></tuple></presence>"
    ).encode()


async def publish(node: ServeProcess, presentity: str, basic: str, note: str) -> Response:
    """One initial PUBLISH by the presentity itself (a SipAgent on its own port)."""
    async with SipAgent(presentity, DOMAIN) as agent:
        return await agent.request(
            "PUBLISH", f"sip:{presentity}@{DOMAIN}", node.address,
            headers=[("Event", "presence"), ("Expires", "600"),
                     ("Content-Type", "application/pidf+xml")],
            body=pidf(presentity, basic, note), timeout=10,
        )  # fmt: skip


async def watch(agent: SipAgent, node: ServeProcess, presentity: str) -> tuple[Dialog, str]:
    """SUBSCRIBE ``agent`` to ``presentity`` (200 asserted): its dialog and our target URI."""
    dialog = agent.new_dialog()
    answer = await agent.request(
        "SUBSCRIBE", f"sip:{presentity}@{DOMAIN}", node.address, dialog=dialog,
        headers=[("Event", "presence"), ("Expires", "600")], timeout=10,
    )  # fmt: skip
    assert answer.status == 200, answer
    contact = answer.headers.get("Contact") or ""
    return dialog, contact.strip().strip("<>")


async def unwatch(agent: SipAgent, node: ServeProcess, dialog: Dialog, target: str) -> None:
    """End the subscription (Expires: 0 inside the dialog), so no NOTIFY chases a closed port."""
    answer = await agent.request(
        "SUBSCRIBE", target, node.address, dialog=dialog,
        headers=[("Event", "presence"), ("Expires", "0")], timeout=10,
    )  # fmt: skip
    assert answer.status == 200, answer


async def sipp(
    xml: str, node: ServeProcess, *, keys: Mapping[str, str], timeout: float = 20
) -> SippResult:
    """Run one scenario to the end in a worker thread (the event loop keeps serving agents)."""
    return await asyncio.to_thread(
        run_scenario, SCENARIOS / xml, node.address, keys=keys, timeout=timeout
    )


def explain(result: SippResult, node: ServeProcess) -> str:
    return (
        f"{result}\n--- SIPp messages (tail) ---\n{result.messages_log[-6000:]}"
        f"\n--- serve log (tail) ---\n{node.log_text()[-4000:]}"
    )


def basics(notify: Request) -> tuple[str, ...]:
    return tuple(b.decode() for b in re.findall(rb"<basic>(\w+)</basic>", notify.body))


def notes(notify: Request) -> tuple[str, ...]:
    return tuple(n.decode() for n in re.findall(rb"<note[^>]*>([^<]*)</note>", notify.body))


# --- publish.xml --------------------------------------------------------------------------------


async def test_publish_lifecycle_is_seen_by_a_watcher(node: ServeProcess) -> None:
    async with SipAgent("observer", DOMAIN) as watcher:
        dialog, target = await watch(watcher, node, P_LIFECYCLE)
        first = await watcher.next_request("NOTIFY", timeout=5)
        assert basics(first) == ("closed",)  # not registered, nothing published

        keys = {"presentity": P_LIFECYCLE, "basic": "open"}
        result = await sipp("publish.xml", node, keys=keys, timeout=20)
        assert (result.returncode, result.successful, result.failed) == (0, 1, 0), explain(
            result, node
        )
        assert result.messages_log.count("SIP-ETag:") == 4  # initial, refresh, modify, remove

        # initial -> open; the refresh changes nothing; modify -> new note; remove -> closed
        seen: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
        while not seen or seen[-1][0] != ("closed",):
            notify = await watcher.next_request("NOTIFY", timeout=5)
            state = (basics(notify), notes(notify))
            if not seen or seen[-1] != state:  # a NOTIFY repeating the state is allowed
                seen.append(state)
        await unwatch(watcher, node, dialog, target)
    assert seen == [
        (("open",), ("sipp publish initial",)),
        (("open",), ("sipp publish modified",)),
        (("closed",), ("not registered",)),
    ]


async def test_publish_then_fetch_shows_the_publication_removed(node: ServeProcess) -> None:
    keys = {"presentity": P_REMOVED, "basic": "open"}
    result = await sipp("publish.xml", node, keys=keys, timeout=20)
    assert result.ok, explain(result, node)
    fetched = await sipp("fetch.xml", node, keys={**keys, "basic": "closed"}, timeout=20)
    assert fetched.ok, explain(fetched, node)


# --- subscribe.xml ------------------------------------------------------------------------------


async def test_subscribe_refresh_unsubscribe(node: ServeProcess, data: Path) -> None:
    assert (await publish(node, P_SUBSCRIBE, "open", "at work")).status == 200
    keys = {"presentity": P_SUBSCRIBE, "basic": "open"}
    result = await sipp("subscribe.xml", node, keys=keys, timeout=20)
    assert (result.returncode, result.successful, result.failed) == (0, 1, 0), explain(result, node)
    log = result.messages_log
    assert len(re.findall(r"^NOTIFY ", log, re.MULTILINE)) == 3  # subscribe, refresh, end
    cseqs = [int(n) for n in re.findall(r"^NOTIFY .*?^CSeq: (\d+) NOTIFY", log, re.M | re.S)]
    assert cseqs == sorted(set(cseqs)), cseqs  # strictly rising
    assert len(cseqs) == 3
    # the unsubscribe ended it (stored write-behind: poll)
    assert await asyncio.to_thread(wait_for_subscriptions, data, P_SUBSCRIBE, 0, timeout=5) == 0


# --- fetch.xml ----------------------------------------------------------------------------------


async def test_fetch_open_presentity(node: ServeProcess, data: Path) -> None:
    assert (await publish(node, P_FETCH, "open", "here")).status == 200
    keys = {"presentity": P_FETCH, "basic": "open"}
    result = await sipp("fetch.xml", node, keys=keys, timeout=20)
    assert (result.returncode, result.successful, result.failed) == (0, 1, 0), explain(result, node)
    assert len(re.findall(r"^NOTIFY ", result.messages_log, re.MULTILINE)) == 1
    assert "Subscription-State: terminated" in result.messages_log
    # a fetch leaves nothing behind (stored write-behind: poll)
    assert await asyncio.to_thread(wait_for_subscriptions, data, P_FETCH, 0, timeout=5) == 0


@pytest.mark.parametrize(
    ("presentity", "published", "expected"),
    [(P_CLOSED, None, "open"), (P_OPEN, "open", "closed")],
)
async def test_fetch_fails_when_the_state_differs(
    node: ServeProcess, presentity: str, published: str | None, expected: str
) -> None:
    # The scenarios can fail: expecting `open` from a closed presentity (and the reverse).
    if published is not None:
        assert (await publish(node, presentity, published, "x")).status == 200
    keys = {"presentity": presentity, "basic": expected}
    result = await sipp("fetch.xml", node, keys=keys, timeout=20)
    assert not result.ok
    assert (result.successful, result.failed) == (0, 1), explain(result, node)
    assert result.returncode != 0


# --- winfo.xml ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("presentity", "status"), [(P_WINFO, "active"), (P_WINFO_CONFIRM, "pending")]
)
async def test_winfo_shows_a_new_watcher(
    node: ServeProcess, data: Path, presentity: str, status: str
) -> None:
    # P_WINFO_CONFIRM has a `confirm` rule for the watcher: it shows as pending.
    keys = {"presentity": presentity, "watcher": WINFO_WATCHER, "wstatus": status}
    run = await asyncio.to_thread(
        start_scenario, SCENARIOS / "winfo.xml", node.address, keys=keys, timeout=25
    )
    with run:
        got = await asyncio.to_thread(
            wait_for_subscriptions, data, presentity, 1, event="presence.winfo", timeout=10
        )
        assert got == 1, node.log_text()[-3000:]
        async with SipAgent("winfo-watcher", DOMAIN) as watcher:
            dialog, target = await watch(watcher, node, presentity)
            result = await asyncio.to_thread(run.wait)  # the watcher stays until the end
            await unwatch(watcher, node, dialog, target)
    assert (result.returncode, result.successful, result.failed) == (0, 1, 0), explain(result, node)
    left = await asyncio.to_thread(
        wait_for_subscriptions, data, presentity, 0, event="presence.winfo", timeout=5
    )
    assert left == 0  # stored write-behind: poll


async def test_winfo_fails_on_the_wrong_watcher_status(node: ServeProcess, data: Path) -> None:
    # The watcher is allowed (active): a scenario expecting `pending` must fail.
    keys = {"presentity": P_WINFO_WRONG, "watcher": WINFO_WATCHER, "wstatus": "pending"}
    run = await asyncio.to_thread(
        start_scenario, SCENARIOS / "winfo.xml", node.address, keys=keys, timeout=25
    )
    with run:
        got = await asyncio.to_thread(
            wait_for_subscriptions, data, P_WINFO_WRONG, 1, event="presence.winfo", timeout=10
        )
        assert got == 1
        async with SipAgent("winfo-watcher", DOMAIN) as watcher:
            dialog, target = await watch(watcher, node, P_WINFO_WRONG)
            result = await asyncio.to_thread(run.wait)
            await unwatch(watcher, node, dialog, target)
    assert (result.successful, result.failed) == (0, 1), explain(result, node)
    assert result.returncode != 0


# --- fan-out ------------------------------------------------------------------------------------


async def test_fanout_one_publish_reaches_1000_sipp_watchers(node: ServeProcess, data: Path,
                                                            tmp_path: Path) -> None:  # fmt: skip
    users = tmp_path / "watchers.csv"
    users.write_text(
        "SEQUENTIAL\n" + "".join(f"fan{i:04d};\n" for i in range(FANOUT_WATCHERS)), "ascii"
    )
    marker = f"fanout-{secrets.token_hex(6)}"
    keys = {"presentity": P_FANOUT, "marker": marker}
    run = await asyncio.to_thread(
        start_scenario, SCENARIOS / "fanout_watcher.xml", node.address, keys=keys, inf=users,
        calls=FANOUT_WATCHERS, rate=FANOUT_RATE, timeout=120, recv_timeout=100,
        trace_messages=False,
    )  # fmt: skip
    with run:
        subscribed = await asyncio.to_thread(
            wait_for_subscriptions, data, P_FANOUT, FANOUT_WATCHERS, timeout=40
        )
        assert subscribed == FANOUT_WATCHERS, node.log_text()[-3000:]
        await asyncio.sleep(0.5)  # the last first-NOTIFYs are answered
        assert (await publish(node, P_FANOUT, "open", marker)).status == 200
        result = await asyncio.to_thread(run.wait)
    assert result.returncode == 0, explain(result, node)
    assert (result.successful, result.failed) == (FANOUT_WATCHERS, 0), explain(result, node)
