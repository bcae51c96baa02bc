"""RFC 3903 event state compositor: ETag lifecycle, errors, expiry, composition, the machine."""

from __future__ import annotations

import itertools

import pytest

from presence_sip.ids import CountingIdSource
from presence_sip.presence.pidf import parse_pidf
from presence_sip.presence.publications import (
    TRANSITIONS,
    Compositor,
    PubEffect,
    PubInput,
    PublicationMachine,
    PublishOutcome,
    PublishRefused,
    PubState,
)
from presence_sip.sip.errors import LocalProtocolError, PidfError
from presence_sip.storage.memory_presence import MemoryPresenceStore

BOB = "+447700900123"
ENTITY = f"sip:{BOB}@net-b.test"


def pidf(tuple_id: str = "t1", basic: str = "open", entity: str = ENTITY, extra: str = "") -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="urn:ietf:params:xml:ns:pidf" '
        f'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" entity="{entity}">'
        f'<tuple id="{tuple_id}"><status><basic>{basic}</basic></status></tuple>{extra}</presence>'
    ).encode()


def entity_key(entity: str) -> str | None:
    return BOB if BOB in entity else None


def compositor(
    store: MemoryPresenceStore | None = None, now: float = 0.0, **kw: object
) -> Compositor:
    ids = CountingIdSource()
    return Compositor(store or MemoryPresenceStore(), ids, entity_key, now=now, **kw)  # type: ignore[arg-type]


def put(
    c: Compositor,
    body: bytes = b"",
    *,
    etag: str | None = None,
    expires: int | None = 3600,
    ctype: str | None = "application/pidf+xml",
    now: float = 0.0,
) -> PublishOutcome:
    return c.publish(BOB, if_match=etag, expires=expires, content_type=ctype, body=body, now=now)


# --- the machine ----------------------------------------------------------------------------------

EXPECTED = {
    (PubState.NONE, PubInput.INITIAL): (PubEffect.STORE, PubState.ACTIVE),
    (PubState.ACTIVE, PubInput.REFRESH): (PubEffect.EXTEND, PubState.ACTIVE),
    (PubState.ACTIVE, PubInput.MODIFY): (PubEffect.REPLACE, PubState.ACTIVE),
    (PubState.ACTIVE, PubInput.REMOVE): (PubEffect.DELETE, PubState.REMOVED),
    (PubState.ACTIVE, PubInput.EXPIRE): (PubEffect.DELETE, PubState.REMOVED),
}


def test_table() -> None:
    assert TRANSITIONS == EXPECTED


@pytest.mark.parametrize(("state", "event"), list(itertools.product(PubState, PubInput)))
def test_every_pair(state: PubState, event: PubInput) -> None:
    machine = PublicationMachine(state)
    expected = EXPECTED.get((state, event))
    if expected is None:
        with pytest.raises(LocalProtocolError):
            machine.process(event)
        assert machine.state is PubState.REMOVED
    else:
        assert machine.process(event) is expected[0]
        assert machine.state is expected[1]


# --- RFC 3903 §4 / §10 lifecycle ------------------------------------------------------------------


def test_initial_refresh_modify_remove() -> None:
    store = MemoryPresenceStore()
    c = compositor(store)
    first = put(c, pidf())
    assert first.etag
    assert first.expires == 3600
    assert first.changed
    assert c.document(BOB) == parse_pidf(pidf()).xml
    refreshed = put(c, etag=first.etag, expires=60, now=10)
    assert refreshed.etag not in (None, first.etag)
    assert not refreshed.changed
    assert list(store.publications) == [refreshed.etag]
    assert store.publications[refreshed.etag].expires_at == 70
    with pytest.raises(PublishRefused) as info:
        put(c, etag=first.etag)
    assert info.value.status == 412
    modified = put(c, pidf(basic="closed"), etag=refreshed.etag)
    assert modified.changed
    assert parse_pidf(c.document(BOB) or b"").basic == "closed"
    same = put(c, pidf(basic="closed"), etag=modified.etag)
    assert not same.changed
    removed = put(c, etag=same.etag, expires=0)
    assert removed.etag == same.etag
    assert removed.expires == 0
    assert removed.changed
    assert c.document(BOB) is None
    assert store.publications == {}
    assert len(c) == 0


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"body": pidf(), "expires": 5}, 423),
        ({"body": pidf(), "ctype": "text/plain"}, 415),
        ({"body": pidf(), "ctype": None}, 415),
        ({"body": b""}, 400),
        ({"body": pidf(), "expires": 0}, 400),
        ({"body": pidf(entity="sip:carol@net-b.test")}, 400),
        ({"body": b"<presence/>"}, 400),
    ],
)
def test_refusals_store_nothing(kwargs: dict[str, object], status: int) -> None:
    store = MemoryPresenceStore()
    c = compositor(store)
    with pytest.raises((PublishRefused, PidfError)) as info:
        put(c, **kwargs)  # type: ignore[arg-type]
    assert info.value.status == status
    assert store.publications == {}
    assert store.writes == 0


def test_423_names_the_minimum_and_415_lists_types() -> None:
    c = compositor(partial=False)
    with pytest.raises(PublishRefused) as info:
        put(c, pidf(), expires=59)
    assert info.value.headers == (("Min-Expires", "60"),)
    with pytest.raises(PublishRefused) as info:
        put(c, pidf(), ctype="application/pidf-diff+xml")
    assert info.value.headers == (("Accept", "application/pidf+xml"),)


def test_max_and_default_expires() -> None:
    c = compositor(max_expires=600, default_expires=300)
    assert put(c, pidf(), expires=10_000).expires == 600
    assert put(c, pidf("t2"), expires=None).expires == 300


def test_composition_of_two_publications_and_their_expiry() -> None:
    c = compositor()
    a = put(c, pidf("phone", "closed"), expires=60)
    b = put(c, pidf("pc", "open", extra='<dm:person id="p"/>'), expires=120)
    doc = parse_pidf(c.document(BOB) or b"")
    assert doc.tuple_ids == ("phone", "pc")
    assert doc.basic == "open"
    assert doc.person_ids == ("p",)
    assert c.get_timer() == 60
    assert c.handle_timer(59) == set()
    assert c.handle_timer(60) == {BOB}
    assert parse_pidf(c.document(BOB) or b"").tuple_ids == ("pc",)
    assert c.etags(BOB) == [b.etag]
    assert c.handle_timer(200) == {BOB}
    assert c.document(BOB) is None
    assert c.get_timer() is None
    assert a.etag != b.etag


def test_refreshed_publication_is_not_expired_by_its_old_deadline() -> None:
    c = compositor()
    first = put(c, pidf(), expires=60)
    put(c, etag=first.etag, expires=120, now=50)
    assert c.handle_timer(61) == set()
    assert c.document(BOB) is not None
    assert c.handle_timer(171) == {BOB}


def test_refreshes_do_not_pile_up_expiry_entries() -> None:
    """Each refresh moves the deadline (and the entity-tag); the old deadline goes at once
    instead of waiting an hour in the heap (issue 8)."""
    c = compositor()
    etag = put(c, pidf(), expires=3600).etag
    for second in range(1, 200):
        etag = put(c, etag=etag, expires=3600, now=float(second)).etag
    assert len(c._expiry) == 1  # the deadlines held: one per publication
    last = 199
    assert c.get_timer() is not None
    assert c.handle_timer(last + 3599.0) == set()
    assert c.handle_timer(last + 3600.0) == {BOB}


def test_expiry_in_batches() -> None:
    c = compositor()
    for i in range(5):
        put(c, pidf(f"t{i}"), expires=60)
    assert c.handle_timer(100, limit=2) == {BOB}
    assert len(c) == 3
    c.handle_timer(100, limit=10)
    assert len(c) == 0


def test_unwatched_presentity_is_composed_when_asked() -> None:
    c = compositor()
    c.watched = lambda key: False
    put(c, pidf())
    assert c._composed == {}  # nobody watches: not composed at the PUBLISH
    assert c.document(BOB) == parse_pidf(pidf()).xml


@pytest.mark.parametrize("how", ["expiry", "removal"])
def test_unwatched_presentity_is_forgotten_with_its_last_publication(how: str) -> None:
    """RSS audit of 2026-11-27: each presentity nobody watched stayed in the compositor's
    tables once its publications were gone (~100 B each, for good)."""
    c = compositor()
    watchers = {BOB}
    c.watched = watchers.__contains__
    first = put(c, pidf(), expires=60)  # composed: watched
    assert c.document(BOB) is not None
    watchers.clear()  # its watcher left
    put(c, pidf("t2"), expires=60)  # a second publication: stale, composed when asked
    if how == "expiry":
        assert c.handle_timer(60) == {BOB}
    else:
        put(c, etag=first.etag, expires=0)
        put(c, etag=c.etags(BOB)[0], expires=0)
    assert len(c) == 0
    assert (c._stale, c._composed) == (set(), {})  # (before document(): it would clear them)
    assert c.document(BOB) is None


def test_reload_from_store_expires_expired_rows_and_skips_bad_ones() -> None:
    store = MemoryPresenceStore()
    c = compositor(store)
    keep = put(c, pidf("a"), expires=3600)
    put(c, pidf("b"), expires=60)
    c2 = compositor(store, now=100)
    # Expired while down: expired by the first timer call, which reports the change.
    assert c2.handle_timer(100) == {BOB}
    assert c2.etags(BOB) == [keep.etag]
    assert parse_pidf(c2.document(BOB) or b"").tuple_ids == ("a",)
    # a row that is not PIDF any more is dropped on load
    assert keep.etag is not None
    record = store.publications[keep.etag]
    store.publications[keep.etag] = type(record)(BOB, keep.etag, 9999, b"junk", record.seq)
    c3 = compositor(store, now=100)
    assert c3.document(BOB) is None
    assert store.publications == {}


def test_a_publication_past_max_publications_ends_the_one_sent_least_recently(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A publisher that never refreshes with SIP-If-Match (or a hostile one) made a new
    publication each time, each kept until it expired: memory and each composition grew
    without end.  Past the limit, the one its publisher sent least recently goes: a phone
    that refreshes (Expires 600) outlives a broken client's hour-long publications, where
    ending the one expiring first ended the phone's, again after each of its new ones."""
    store = MemoryPresenceStore()
    c = compositor(store, max_publications=4)
    c.watched = lambda key: True
    caplog.set_level("WARNING", logger="presence_sip.presence.publications")
    phone = put(c, pidf("phone"), expires=600)
    junk = []
    for second in range(10, 130, 10):  # a new publication every 10 s, a phone refresh every 20
        if second % 20 == 0:
            phone = put(c, etag=phone.etag, expires=600, now=float(second - 5))
        junk.append(put(c, pidf(f"junk{second}"), expires=3600, now=float(second)))
        assert len(c) <= 4
    assert phone.etag in c.etags(BOB)
    composed = parse_pidf(c.document(BOB) or b"")
    assert composed.tuple_ids == ("phone", "junk100", "junk110", "junk120")
    assert sorted(store.publications) == sorted(c.etags(BOB))  # the ended ones left the store
    assert c.evicted == len(junk) - 3
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2  # once a minute: at 40 s and 100 s
    assert f"{BOB} reached 4 publications (max_publications)" in warnings[0]
    assert "ends the one sent least recently (1 so far;" in warnings[0]
    assert "(7 so far;" in warnings[1]
    # A modify is sent too: junk100, modified, outlives junk110 and junk120.
    put(c, pidf("junk100", "closed"), etag=junk[-3].etag, expires=3600, now=130)
    put(c, pidf("late"), expires=3600, now=131)
    assert parse_pidf(c.document(BOB) or b"").tuple_ids == ("phone", "junk120", "junk100", "late")
    # the expiry heap has no entry left of the ended ones: the next expiry is the phone's
    assert c.get_timer() == 115 + 600  # (its last refresh: at 115 s, Expires 600)
    assert c.handle_timer(715) == {BOB}
    assert parse_pidf(c.document(BOB) or b"").tuple_ids == ("junk120", "junk100", "late")
    c.handle_timer(10_000)
    assert len(c) == 0
    assert store.publications == {}


def test_max_publications_below_one_is_refused_when_the_compositor_is_made() -> None:
    with pytest.raises(ValueError, match="max_publications must be at least 1, not 0"):
        compositor(max_publications=0)


def test_a_lowered_max_publications_takes_effect_at_the_next_initial_publish(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryPresenceStore()
    c = compositor(store)
    for i in range(5):
        put(c, pidf(f"t{i}"), expires=100 + i)
    lowered = compositor(store, max_publications=2)
    assert len(lowered) == 5  # what was stored is loaded as it is
    etag = lowered.etags(BOB)[4]
    put(lowered, etag=etag, expires=3600)  # a refresh ends nothing
    assert len(lowered) == 5
    caplog.set_level("WARNING", logger="presence_sip.presence.publications")
    put(lowered, pidf("new"))
    assert parse_pidf(lowered.document(BOB) or b"").tuple_ids == ("t4", "new")
    assert len(store.publications) == 2
    assert lowered.evicted == 4
    # The warning counts the publications ended, as the metric does (4 at once here), not the
    # PUBLISHes that ended some (1).
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "(4 so far;" in warning


def test_at_max_publications_the_expired_ones_go_as_expired_not_as_ended(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A publication whose time had passed but that the timer had not purged yet (here: it
    expired while the node was down, and was loaded at start) counted towards the limit, and
    an initial PUBLISH ended a live one "for max_publications" while the expired one stayed in
    the document until the timer ran.  Now the expired ones are expired first, as the timer
    does it (row deleted, out of the expiry heap), and nothing is ended nor warned about."""
    store = MemoryPresenceStore()
    before = compositor(store, max_publications=3)
    desk = put(before, pidf("desk"), expires=3600)
    laptop = put(before, pidf("laptop"), expires=100)  # sent after the desk phone's
    tablet = put(before, pidf("tablet"), expires=200)
    c = compositor(store, now=500, max_publications=3)  # a restart after both expired
    c.watched = lambda key: True
    assert len(c) == 3
    caplog.set_level("WARNING", logger="presence_sip.presence.publications")
    new = put(c, pidf("new"), expires=3600, now=500)
    assert new.changed
    assert parse_pidf(c.document(BOB) or b"").tuple_ids == ("desk", "new")
    assert set(c.etags(BOB)) == {desk.etag, new.etag}
    assert sorted(store.publications) == sorted(c.etags(BOB))
    assert laptop.etag not in store.publications
    assert tablet.etag not in store.publications
    assert (c.evicted, caplog.records) == (0, [])
    assert c.get_timer() == 3600  # no entry left of the expired ones: the desk phone's is next
    assert c.handle_timer(500) == set()


def test_at_max_publications_the_least_recently_sent_goes_only_past_the_expired_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Still at the limit once the expired ones are gone (it was lowered since): the
    publications sent least recently are ended, and only they are counted and warned of."""
    store = MemoryPresenceStore()
    before = compositor(store)
    put(before, pidf("gone"), expires=100)
    for name in ("one", "two", "three"):
        put(before, pidf(name), expires=3600)
    lowered = compositor(store, now=500, max_publications=2)
    lowered.watched = lambda key: True
    caplog.set_level("WARNING", logger="presence_sip.presence.publications")
    put(lowered, pidf("new"), expires=3600, now=500)
    assert parse_pidf(lowered.document(BOB) or b"").tuple_ids == ("three", "new")
    assert sorted(store.publications) == sorted(lowered.etags(BOB))
    assert lowered.evicted == 2  # "one" and "two"; "gone" expired
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "(2 so far;" in warning


def test_partial_publication_applies_to_the_current_state() -> None:
    c = compositor()
    first = put(c, pidf("a"))
    diff = (
        b'<p:pidf-diff xmlns="urn:ietf:params:xml:ns:pidf" '
        b'xmlns:p="urn:ietf:params:xml:ns:pidf-diff" entity="' + ENTITY.encode() + b'" version="1">'
        b"<p:replace sel=\"*/tuple[@id='a']/status/basic/text()\">"
        b"closed</p:replace></p:pidf-diff>"
    )
    out = put(c, diff, etag=first.etag, ctype="application/pidf-diff+xml")
    assert out.changed
    assert parse_pidf(c.document(BOB) or b"").basic == "closed"
    with pytest.raises(PidfError):
        put(c, diff, ctype="application/pidf-diff+xml")  # a diff needs a base
