"""Watcher information documents (RFC 3857, RFC 3858)."""

from __future__ import annotations

import pytest
from lxml import etree

from presence_sip.presence.watcherinfo import (
    WATCHER_EVENTS,
    WATCHER_STATUSES,
    WATCHERINFO_CONTENT_TYPE,
    WATCHERINFO_NS,
    WatcherEntry,
    WatcherInfoDocument,
    WatcherList,
    compose_watcherinfo,
    parse_watcherinfo,
    parse_watcherinfo_document,
)
from presence_sip.sip.errors import LocalProtocolError, PidfError

# RFC 3858 section 5 example.
RFC3858_EXAMPLE = b"""<?xml version="1.0"?>
<watcherinfo xmlns="urn:ietf:params:xml:ns:watcherinfo"
             version="0" state="full">
  <watcher-list resource="sip:professor@example.net" package="presence">
    <watcher status="active"
             id="8ajksjda7s"
             duration-subscribed="509"
             event="approved" >sip:userA@example.net</watcher>
    <watcher status="pending"
             id="hh8juja87s997-ass7"
             display-name="Mr. Subscriber"
             event="subscribe">sip:userB@example.org</watcher>
  </watcher-list>
</watcherinfo>
"""

ALICE = WatcherEntry(id="w1", uri="sip:alice@net-a.test", status="pending", event="subscribe")


def test_constants():
    assert WATCHERINFO_CONTENT_TYPE == "application/watcherinfo+xml"
    assert WATCHERINFO_NS == "urn:ietf:params:xml:ns:watcherinfo"
    assert {"pending", "active", "waiting", "terminated"} == WATCHER_STATUSES
    assert {"subscribe", "approved", "deactivated", "timeout", "rejected"} <= WATCHER_EVENTS


def test_rfc3858_example():
    document = parse_watcherinfo_document(RFC3858_EXAMPLE)
    assert (document.version, document.state) == (0, "full")
    (watcher_list,) = document.watcher_lists
    assert (watcher_list.resource, watcher_list.package) == (
        "sip:professor@example.net",
        "presence",
    )
    assert parse_watcherinfo(RFC3858_EXAMPLE) == [
        WatcherEntry(
            "8ajksjda7s", "sip:userA@example.net", "active", "approved", duration_subscribed=509
        ),
        WatcherEntry(
            "hh8juja87s997-ass7",
            "sip:userB@example.org",
            "pending",
            "subscribe",
            display_name="Mr. Subscriber",
        ),
    ]


def test_compose_exact_bytes():
    xml = compose_watcherinfo("sip:bob@net-b.test", [ALICE], version=3)
    assert xml == (
        b"<?xml version='1.0' encoding='UTF-8'?>\n"
        b'<watcherinfo xmlns="urn:ietf:params:xml:ns:watcherinfo" version="3" state="full">'
        b'<watcher-list resource="sip:bob@net-b.test" package="presence">'
        b'<watcher id="w1" status="pending" event="subscribe">sip:alice@net-a.test</watcher>'
        b"</watcher-list></watcherinfo>"
    )


def test_compose_then_parse_round_trip():
    watchers = [
        ALICE,
        WatcherEntry(
            "w2",
            "sip:carol@net-a.test",
            "active",
            "approved",
            display_name="Carol & co",
            duration_subscribed=60,
            expiration=3540,
        ),
        WatcherEntry("w3", "sip:eve@net-c.test", "terminated", "rejected"),
        WatcherEntry("w4", "sip:dave@net-a.test", "terminated", "timeout"),
        WatcherEntry("w5", "sip:frank@net-a.test", "waiting", "deactivated"),
    ]
    xml = compose_watcherinfo("sip:bob@net-b.test", watchers, version=9, state="partial")
    assert parse_watcherinfo(xml) == watchers
    assert parse_watcherinfo_document(xml) == WatcherInfoDocument(
        9, "partial", (WatcherList("sip:bob@net-b.test", "presence", tuple(watchers)),)
    )


def test_compose_empty_list_and_other_package():
    xml = compose_watcherinfo("sip:bob@net-b.test", [], version=0, package="dialog")
    document = parse_watcherinfo_document(xml)
    assert document.watcher_lists == (WatcherList("sip:bob@net-b.test", "dialog", ()),)


@pytest.mark.parametrize(("version", "state"), [(-1, "full"), (2**32, "full"), (0, "delta")])
def test_compose_rejects_bad_arguments(version, state):
    with pytest.raises(LocalProtocolError):
        compose_watcherinfo("sip:bob@net-b.test", [ALICE], version=version, state=state)


@pytest.mark.parametrize(
    "fields",
    [
        {"id": "", "uri": "sip:a@b", "status": "active", "event": "approved"},
        {"id": "w", "uri": "", "status": "active", "event": "approved"},
        {"id": "w", "uri": "sip:a@b", "status": "gone", "event": "approved"},
        {"id": "w", "uri": "sip:a@b", "status": "active", "event": "vanished"},
    ],
)
def test_invalid_entries_cannot_exist(fields):
    with pytest.raises(LocalProtocolError):
        WatcherEntry(**fields)


def _winfo(
    watcher: str = '<watcher id="w" status="active" event="approved">sip:a@b</watcher>',
    root_attrs: str = 'version="1" state="full"',
    list_attrs: str = 'resource="sip:b@c" package="presence"',
) -> bytes:
    return (
        f'<watcherinfo xmlns="{WATCHERINFO_NS}" {root_attrs}>'
        f"<watcher-list {list_attrs}>{watcher}</watcher-list></watcherinfo>"
    ).encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<watcherinfo", "Invalid watcherinfo: not well-formed XML"),
        (b"<!DOCTYPE x><x/>", "Invalid watcherinfo: DOCTYPE"),
        (b"x" * 70000, "watcherinfo too large"),
        (b'<presence xmlns="urn:ietf:params:xml:ns:pidf"/>', "root element must be <watcherinfo>"),
        (_winfo(root_attrs='state="full"'), "<watcherinfo> without version"),
        (_winfo(root_attrs='version="v1" state="full"'), "version 'v1' is not an unsigned"),
        (_winfo(root_attrs='version="1"'), "<watcherinfo> without state"),
        (_winfo(root_attrs='version="1" state="delta"'), "state 'delta' is not one of full"),
        (_winfo(list_attrs='package="presence"'), "<watcher-list> without resource"),
        (_winfo(list_attrs='resource="sip:b@c"'), "<watcher-list> without package"),
        (
            _winfo('<watcher status="active" event="approved">sip:a@b</watcher>'),
            "<watcher> without id",
        ),
        (
            _winfo('<watcher id="w" status="active" event="approved"> </watcher>'),
            "<watcher> without a URI",
        ),
        (
            _winfo('<watcher id="w" status="gone" event="approved">sip:a@b</watcher>'),
            "status 'gone' is not one of active, pending, terminated, waiting",
        ),
        (
            _winfo('<watcher id="w" status="active" event="boom">sip:a@b</watcher>'),
            "event 'boom' is not one of",
        ),
        (
            _winfo(
                '<watcher id="w" status="active" event="approved" expiration="-5">sip:a@b</watcher>'
            ),
            "expiration '-5' is not an unsigned integer",
        ),
    ],
)
def test_invalid_documents(body, reason):
    with pytest.raises(PidfError) as caught:
        parse_watcherinfo(body)
    assert caught.value.status == 400
    assert reason in caught.value.reason


def test_unknown_children_are_ignored():
    body = _winfo(
        '<x:extra xmlns:x="urn:x"/>'
        '<watcher id="w" status="active" event="approved">sip:a@b</watcher>'
    )
    assert [w.id for w in parse_watcherinfo(body)] == ["w"]
    root = etree.fromstring(body)
    assert root.tag == f"{{{WATCHERINFO_NS}}}watcherinfo"
