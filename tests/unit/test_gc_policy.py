"""The serving process's garbage-collector policy (runtime/gc_policy.py) and what it relies on:
the request path creates no reference cycles, so objects it keeps are freed by reference
counting and the old generations need no automatic collection."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, Iterator

import pytest
import test_presence_server as flows  # tests/unit is on sys.path (conftest / rootdir import)
from cycles import cyclic_garbage

from presence_sip.runtime import gc_policy
from presence_sip.sip.errors import SipParseError
from presence_sip.sip.framing import StreamBuffer

FLOWS: list[Callable[[], None]] = [
    flows.test_subscribe_gets_200_then_notify_with_registration_state,
    flows.test_publish_lifecycle_rfc3903,
    flows.test_publication_expires_on_timer_and_watchers_hear_it,
    flows.test_missing_contact_is_400_and_missing_event_is_400,
    flows.test_refresh_and_unsubscribe_in_dialog,
    flows.test_out_of_order_refresh_is_500,
    flows.test_subscription_expires_with_timeout_notify,
    flows.test_fetch_gets_one_notify_then_nothing,
    flows.test_notify_timeout_ends_the_subscription,
    flows.test_stray_notify_is_481,
    flows.test_fan_out_one_publish_many_notifies_with_shared_bytes,
    flows.test_registration_drives_presence_when_nothing_is_published,
    flows.test_rate_limit_newest_state_wins,
    flows.test_confirm_is_pending_until_bob_allows_then_active_at_once,
    flows.test_rule_change_to_block_terminates_with_rejected,
    flows.test_winfo_lists_watchers_including_pending_and_follows_changes,
    flows.test_partial_notification_full_then_diff,
    flows.test_partial_publication,
    flows.test_tcp_subscription_reuses_the_connection,
    flows.test_subscribe_needs_authentication_before_404,
]


@pytest.mark.parametrize("flow", FLOWS, ids=[f.__name__.removeprefix("test_") for f in FLOWS])
def test_presence_flows_leave_no_reference_cycles(
    flow: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Registrar, presence server, dialogs, transactions and stores, sans-IO end to end.

    The nodes the flow builds are kept alive until the check: a node's own structure has
    cycles (roles and endpoint know each other) and lives as long as the process; what is
    checked is that serving requests leaves nothing behind that only the cyclic collector frees.
    """
    nodes: list[flows.Node] = []

    class KeptNode(flows.Node):
        def __init__(self, **kwargs: object) -> None:
            super().__init__(**kwargs)  # type: ignore[arg-type]
            nodes.append(self)

    monkeypatch.setattr(flows, "Node", KeptNode)
    with cyclic_garbage() as found:
        flow()
    assert nodes, "the flow built no node"
    assert found == []


def test_lost_framing_leaves_no_reference_cycle() -> None:
    """A stream buffer in error once kept the exception, whose traceback kept the buffer."""
    with cyclic_garbage() as found:
        buffer = StreamBuffer()
        buffer.feed(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: x\r\n\r\n")
        for _ in range(2):  # the failure, then the buffer staying in error
            try:
                buffer.next_message()
            except SipParseError:
                pass
            else:
                raise AssertionError("no SipParseError")
        del buffer
    assert found == []


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_tune_gc_keeps_collections_young_and_freezes_the_loaded_state() -> None:
    gc.unfreeze()
    gc_policy.tune_gc()
    assert gc.get_threshold() == (gc_policy.YOUNG_THRESHOLD, gc_policy.NEVER, gc_policy.NEVER)
    assert gc.get_freeze_count() > 0
    assert gc.get_count()[1:] == (0, 0)


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_full_collections_run_on_schedule_and_report_what_they_find(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def two_runs() -> int:
        collections = gc_policy.FullCollections(interval=0.02)
        collections.start()
        _Cycle()  # garbage only the cyclic collector frees
        for _ in range(500):  # each run is a full collection of this test process: not instant
            if collections.runs >= 2:
                break
            await asyncio.sleep(0.01)
        collections.close()
        runs = collections.runs
        await asyncio.sleep(0.1)
        assert collections.runs == runs, "still running after close()"
        return runs

    caplog.set_level(logging.DEBUG, logger=gc_policy.__name__)
    gc.disable()  # only the scheduled collections may free the cycle
    try:
        assert asyncio.run(two_runs()) >= 2
    finally:
        gc.enable()
    found = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert found, [r.getMessage() for r in caplog.records]
    assert "full garbage collection: " in found[0]
    assert not found[0].startswith("full garbage collection: 0 ")
    assert any(r.levelno == logging.DEBUG for r in caplog.records), "a clean run logs at DEBUG"


def test_a_full_collection_gives_the_freed_heap_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """Soak audit: RSS stayed at the busiest moment's level; after each full collection the
    freed C heap is given back (malloc_trim, on a thread)."""
    trims: list[int] = []

    def trim() -> bool:
        trims.append(1)
        return True

    monkeypatch.setattr(gc_policy, "trim_heap", trim)

    async def one_run() -> None:
        collections = gc_policy.FullCollections(interval=0.01)
        collections.start()
        for _ in range(500):
            if trims:
                break
            await asyncio.sleep(0.01)
        collections.close()

    asyncio.run(one_run())
    assert trims
