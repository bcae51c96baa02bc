"""SubscriberStore contract, run against the memory and the SQLite store alike.

The SQLite-only part at the end covers the database module: pragmas, migrations, transactions,
several connections (processes) on one file.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from presence_sip.hss.msisdn import InvalidMsisdn
from presence_sip.hss.records import (
    InvalidRecord,
    PlanEntry,
    PortEntry,
    PresenceServerRecord,
    Rule,
    RuleAction,
    Subscriber,
    SubscriberField,
    digest_ha1,
    make_subscriber,
)
from presence_sip.hss.store import (
    DuplicateRecord,
    InsufficientCredit,
    SubscriberStore,
    UnknownRecord,
)
from presence_sip.sip.errors import ConfigError, StoreError
from presence_sip.storage import database
from presence_sip.storage.memory_hss import MemorySubscriberStore
from presence_sip.storage.sqlite_hss import HSS_MIGRATIONS, SqliteSubscriberStore

DOMAIN = "net-b.test"
B = "+447700900123"
C = "+447700900456"
A_URI = "sip:+447700900789@net-a.test;user=phone"


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SubscriberStore]:
    made: SubscriberStore
    if request.param == "memory":
        made = MemorySubscriberStore(DOMAIN)
    else:
        made = SqliteSubscriberStore.open(tmp_path / "data", DOMAIN)
    yield made
    made.close()


@pytest.fixture
def populated(store: SubscriberStore) -> SubscriberStore:
    store.add_presence_server("ps1", "sip:127.0.2.11:5060")
    store.add_presence_server("ps2", "sip:127.0.2.12:5060")
    store.add_subscriber(B, "secret", credit=10, presence_server="ps2")
    store.add_subscriber(C, "other")
    store.set_rule(B, A_URI, "allow")
    store.plan_add("+44", "net-b.test")
    store.plan_add("+4477", "net-a.test")
    store.port_add("+447700900999", "net-b.test")
    return store


def snapshot(store: SubscriberStore) -> object:
    """Everything a store holds, to prove a failed write changed nothing."""
    return (
        store.list_subscribers(),
        {s.msisdn: store.list_rules(s.msisdn) for s in store.list_subscribers()},
        store.plan_list(),
        store.port_list(),
        store.presence_servers(),
        store.data_version(),
    )


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- records -----------------------------------------------------------------------------------


def test_ha1_matches_rfc_7616_example() -> None:
    # RFC 7616 section 3.9.1: the published responses follow from these HA1s.
    nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
    cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
    expected = {
        "MD5": "8ca523f5e9506fed4657c9700eebdbec",
        "SHA-256": "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
    }
    for algorithm, h in (("MD5", md5), ("SHA-256", sha256)):
        ha1 = digest_ha1("Mufasa", "http-auth@example.org", "Circle of Life", algorithm)
        ha2 = h("GET:/dir/index.html")
        assert h(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}") == expected[algorithm]


def test_ha1_matches_rfc_2617_example() -> None:
    assert (
        digest_ha1("Mufasa", "testrealm@host.com", "Circle Of Life", "md5")
        == "939e7578ed9e3c518a452acee763bce9"
    )


def test_records_refuse_invalid_values() -> None:
    with pytest.raises(InvalidRecord):
        Subscriber("447700900123", (), "", "", None, 0)
    with pytest.raises(InvalidRecord):
        Subscriber(B, (), "", "", None, -1)
    with pytest.raises(InvalidRecord):
        Rule(B, "tel:+1555", "allow")  # type: ignore[arg-type]
    with pytest.raises(InvalidRecord):
        PresenceServerRecord("ps 1", "sip:ps1.net-b.test")
    with pytest.raises(InvalidRecord):
        PresenceServerRecord("ps1", "http://ps1.net-b.test")
    with pytest.raises(InvalidRecord):
        digest_ha1("u", "r", "p", "SHA-512-256")


def test_rule_action_parse() -> None:
    assert RuleAction.parse(" Polite-Block ") is RuleAction.POLITE_BLOCK
    with pytest.raises(InvalidRecord, match=re.escape("allow|block|polite-block|confirm")):
        RuleAction.parse("deny")


# -- subscribers -------------------------------------------------------------------------------


def test_add_and_get(store: SubscriberStore) -> None:
    record = store.add_subscriber("tel:+44-7700-900123", "secret", credit=5)
    assert record.msisdn == B
    assert record.identities == (f"sip:{B}@{DOMAIN};user=phone", f"tel:{B}")
    assert record.credit == 5
    assert record.presence_server is None
    assert record.ha1_md5 == md5(f"{B}:{DOMAIN}:secret")
    assert record.ha1_sha256 == sha256(f"{B}:{DOMAIN}:secret")
    assert record.ha1_md5_digits == md5(f"{B[1:]}:{DOMAIN}:secret")
    assert record.ha1_sha256_digits == sha256(f"{B[1:]}:{DOMAIN}:secret")
    assert store.get_subscriber(B) == record
    assert store.get_subscriber(C) is None
    assert store.domain == DOMAIN


@pytest.mark.parametrize(
    "identity",
    [
        f"sip:{B}@{DOMAIN};user=phone",
        f"sip:{B}@elsewhere.test",
        f"sip:{B[1:]}@{DOMAIN}",
        f"tel:{B}",
        f"<sip:{B}@{DOMAIN}>",
        B,
        B[1:],
    ],
)
def test_find_by_identity(populated: SubscriberStore, identity: str) -> None:
    record = populated.find_by_identity(identity)
    assert record is not None
    assert record.msisdn == B


@pytest.mark.parametrize(
    "identity", ["sip:bob@net-b.test", "sip:bob@NET-B.TEST;transport=tcp", "<sips:bob@net-b.test>"]
)
def test_find_by_extra_identity(store: SubscriberStore, identity: str) -> None:
    store.add_subscriber(B, "pw")
    store.add_subscriber(C, "pw", identities=["sip:bob@net-b.test", "sips:bob@net-b.test"])
    record = store.find_by_identity(identity)
    assert record is not None
    assert record.msisdn == C
    assert store.find_by_identity("sip:Bob@net-b.test") is None  # user part is case-sensitive


@pytest.mark.parametrize(
    "identity", ["", "sip:alice@net-b.test", "tel:+33123456789", "nonsense <", "+", "\x00"]
)
def test_find_by_identity_unknown_or_malformed(populated: SubscriberStore, identity: str) -> None:
    assert populated.find_by_identity(identity) is None


def test_extra_identities(store: SubscriberStore) -> None:
    record = store.add_subscriber(B, "pw", identities=["sip:Bob@NET-B.test;user=ip", f"tel:{B}"])
    assert record.identities[-1] == "sip:Bob@net-b.test"
    assert len(record.identities) == 3
    with pytest.raises(DuplicateRecord, match=re.escape("sip:Bob@net-b.test")):
        store.add_subscriber(C, "pw", identities=["sip:Bob@net-b.test"])
    with pytest.raises(InvalidRecord, match="another number"):
        store.add_subscriber(C, "pw", identities=[f"tel:{B}"])
    with pytest.raises(InvalidRecord):
        store.add_subscriber(C, "pw", identities=["not a uri"])
    assert store.get_subscriber(C) is None
    store.remove_subscriber(B)
    assert store.find_by_identity("sip:Bob@net-b.test") is None
    store.add_subscriber(C, "pw", identities=["sip:Bob@net-b.test"])


def test_add_refusals_change_nothing(populated: SubscriberStore) -> None:
    before = snapshot(populated)
    with pytest.raises(DuplicateRecord, match="already exists"):
        populated.add_subscriber(f"tel:{B}", "again")
    with pytest.raises(InvalidMsisdn):
        populated.add_subscriber("447700900111", "pw")
    with pytest.raises(UnknownRecord, match="presence server"):
        populated.add_subscriber("+447700900111", "pw", presence_server="ps9")
    with pytest.raises(InvalidRecord, match="credit"):
        populated.add_subscriber("+447700900111", "pw", credit=-1)
    with pytest.raises(InvalidRecord, match="password"):
        populated.add_subscriber("+447700900111", "")
    assert snapshot(populated) == before


def test_update(populated: SubscriberStore) -> None:
    version = populated.data_version()
    updated = populated.update_subscriber(B, password="new", credit=3, presence_server="ps1")
    assert updated.ha1_md5 == md5(f"{B}:{DOMAIN}:new")
    assert updated.ha1_sha256_digits == sha256(f"{B[1:]}:{DOMAIN}:new")
    assert (updated.credit, updated.presence_server) == (3, "ps1")
    assert populated.get_subscriber(B) == updated
    assert populated.data_version() > version
    assert populated.update_subscriber(B) == updated


def test_update_refusals_change_nothing(populated: SubscriberStore) -> None:
    before = snapshot(populated)
    with pytest.raises(UnknownRecord, match="presence server"):
        populated.update_subscriber(B, credit=1, password="x", presence_server="nope")
    with pytest.raises(InvalidRecord):
        populated.update_subscriber(B, password="x", credit=-5)
    with pytest.raises(InvalidRecord):
        populated.update_subscriber(B, password="")
    with pytest.raises(UnknownRecord, match="unknown subscriber"):
        populated.update_subscriber("+447700900111", credit=1)
    assert snapshot(populated) == before


@pytest.mark.parametrize(
    ("password", "character"),
    [("se\x00cret", "U+0000"), ("\tsecret", "U+0009"), ("secret\n", "U+000A"),
     ("se\x1bcret", "U+001B"), ("secret\x7f", "U+007F"), ("se\x80cret", "U+0080"),
     ("secret\x85", "U+0085"), ("\x9fsecret", "U+009F")],
)  # fmt: skip
def test_a_password_with_a_control_character_is_refused_without_echoing_it(
    populated: SubscriberStore, password: str, character: str
) -> None:
    """No softphone can type one, and a NUL cuts the password short in other tools: adding or
    changing such a password is refused, naming the character and not the password."""
    before = snapshot(populated)
    message = f"password contains a control character ({character})"
    with pytest.raises(InvalidRecord) as added:
        populated.add_subscriber("+447700900111", password)
    with pytest.raises(InvalidRecord) as updated:
        populated.update_subscriber(B, password=password, credit=1, add_identities=["sip:b@x.test"])
    assert str(added.value) == str(updated.value) == message
    assert snapshot(populated) == before
    # Spaces and letters beyond ASCII are no control characters, nor is U+00A0 (the first
    # character past the C1 controls).
    populated.update_subscriber(B, password="sé cret ü\xa0~")
    assert populated.get_ha1(B, "MD5") == md5(f"{B}:{DOMAIN}:sé cret ü\xa0~")


def test_update_adds_and_removes_extra_identities(populated: SubscriberStore) -> None:
    version = populated.data_version()
    updated = populated.update_subscriber(B, add_identities=["sip:Bob@NET-B.test", "sip:b2@x.test"])
    assert updated.identities[2:] == ("sip:Bob@net-b.test", "sip:b2@x.test")
    assert populated.find_by_identity("sip:Bob@net-b.test") == updated
    assert populated.extra_identities() == {"sip:Bob@net-b.test": B, "sip:b2@x.test": B}
    assert populated.data_version() > version
    again = populated.update_subscriber(B, add_identities=["sip:Bob@net-b.test;transport=tcp"])
    assert again.identities == updated.identities  # already there: once
    removed = populated.update_subscriber(B, remove_identities=["<sip:Bob@net-b.test>"])
    assert removed.identities[2:] == ("sip:b2@x.test",)
    assert populated.find_by_identity("sip:Bob@net-b.test") is None
    populated.add_subscriber("+447700900111", "pw", identities=["sip:Bob@net-b.test"])  # free


def test_identity_refusals_change_nothing(populated: SubscriberStore) -> None:
    populated.update_subscriber(C, add_identities=["sip:carol@net-b.test"])
    before = snapshot(populated)
    with pytest.raises(DuplicateRecord, match=re.escape(f"already belongs to {C}")):
        populated.update_subscriber(B, credit=1, add_identities=["sip:carol@net-b.test"])
    with pytest.raises(InvalidRecord, match="own identity"):
        populated.update_subscriber(B, remove_identities=[f"sip:{B}@{DOMAIN};user=phone"])
    with pytest.raises(InvalidRecord, match="own identity"):
        populated.update_subscriber(B, remove_identities=[f"tel:{B}"])
    with pytest.raises(InvalidRecord, match="not an identity of"):
        populated.update_subscriber(B, remove_identities=["sip:carol@net-b.test"])
    with pytest.raises(InvalidRecord, match="another number"):
        populated.update_subscriber(B, add_identities=[f"tel:{C}"])
    with pytest.raises(InvalidRecord):
        populated.update_subscriber(B, add_identities=["not a uri"])
    assert snapshot(populated) == before
    assert populated.find_by_identity("sip:carol@net-b.test") == populated.get_subscriber(C)


def test_remove_cascades(populated: SubscriberStore) -> None:
    populated.remove_subscriber(f"sip:{B}@{DOMAIN};user=phone")
    assert populated.get_subscriber(B) is None
    assert populated.find_by_identity(f"tel:{B}") is None
    assert populated.rules_for(B) == {}
    assert [s.msisdn for s in populated.list_subscribers()] == [C]
    with pytest.raises(UnknownRecord):
        populated.remove_subscriber(B)
    populated.add_subscriber(B, "back")
    assert populated.rules_for(B) == {}


def test_a_rule_about_a_number_as_typed_is_about_its_tel_uri(populated: SubscriberStore) -> None:
    """README: WATCHER_URI is one watcher, a URI or a number (Linphone audit: `+44...` was
    refused with "not a URI")."""
    assert populated.set_rule(B, C, "block").watcher_uri == f"tel:{C}"
    assert populated.rules_for(B)[f"tel:{C}"] == "block"
    with pytest.raises(InvalidRecord, match=r"bad watcher URI: not an E\.164 number"):
        populated.set_rule(B, "+44-x", "block")


def test_domain_rules_in_either_form_and_no_rule_about_a_bare_domain(
    populated: SubscriberStore,
) -> None:
    assert populated.set_rule(B, "*@Other.test", "block").watcher_uri == "sip:*@other.test"
    assert populated.set_rule(B, "sip:*@other.test", "allow").watcher_uri == "sip:*@other.test"
    assert populated.rules_for(B)["sip:*@other.test"] == "allow"
    before = snapshot(populated)
    with pytest.raises(InvalidRecord, match=r"names no watcher \(every watcher of a domain: \*@x"):
        populated.set_rule(B, "sip:x.test", "allow")
    assert snapshot(populated) == before
    populated.remove_rule(B, "*@other.test")
    assert "sip:*@other.test" not in populated.rules_for(B)


def test_msisdns_are_every_subscribers_number(populated: SubscriberStore) -> None:
    assert populated.msisdns() == {B, C}
    populated.remove_subscriber(C)
    assert populated.msisdns() == {B}


def test_list_is_ordered(store: SubscriberStore) -> None:
    for msisdn in ("+447700900300", "+15550100", "+447700900100"):
        store.add_subscriber(msisdn, "pw")
    assert [s.msisdn for s in store.list_subscribers()] == [
        "+15550100",
        "+447700900100",
        "+447700900300",
    ]


# -- digest credentials ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "algorithm", "expected"),
    [
        (B, "MD5", md5(f"{B}:{DOMAIN}:secret")),
        (B, "md5", md5(f"{B}:{DOMAIN}:secret")),
        (B, "MD5-sess", md5(f"{B}:{DOMAIN}:secret")),
        (B, "SHA-256", sha256(f"{B}:{DOMAIN}:secret")),
        (B, "sha-256-sess", sha256(f"{B}:{DOMAIN}:secret")),
        (B[1:], "MD5", md5(f"{B[1:]}:{DOMAIN}:secret")),
        (B[1:], "SHA-256", sha256(f"{B[1:]}:{DOMAIN}:secret")),
        (B, "SHA-512-256", None),
        (B, "", None),
        ("+447700900111", "MD5", None),
        ("bob", "MD5", None),
        (f"tel:{B}", "MD5", None),
        ("", "MD5", None),
    ],
)
def test_get_ha1(
    populated: SubscriberStore, username: str, algorithm: str, expected: str | None
) -> None:
    assert populated.get_ha1(username, algorithm) == expected


# -- credit ------------------------------------------------------------------------------------


def test_debit(populated: SubscriberStore) -> None:
    assert populated.debit_credit(B, 4) == 6
    assert populated.debit_credit(f"tel:{B}", 0) == 6
    assert populated.debit_credit(B, 6) == 0
    subscriber = populated.get_subscriber(B)
    assert subscriber is not None
    assert subscriber.credit == 0


def test_debit_refusals_change_nothing(populated: SubscriberStore) -> None:
    before = snapshot(populated)
    with pytest.raises(InsufficientCredit, match="is 10, 11 needed"):
        populated.debit_credit(B, 11)
    with pytest.raises(InsufficientCredit):
        populated.debit_credit(C, 1)
    with pytest.raises(InvalidRecord):
        populated.debit_credit(B, -1)
    with pytest.raises(UnknownRecord):
        populated.debit_credit("+447700900111", 1)
    assert snapshot(populated) == before


def test_insufficient_credit_is_a_store_error() -> None:
    assert issubclass(InsufficientCredit, StoreError)
    assert issubclass(UnknownRecord, StoreError)
    assert issubclass(DuplicateRecord, StoreError)


# -- presence rules ----------------------------------------------------------------------------


def test_rules(populated: SubscriberStore) -> None:
    assert populated.rules_for(B) == {"tel:+447700900789": "allow"}
    rule = populated.set_rule(B, "tel:+44-7700-900789", RuleAction.BLOCK)
    assert rule == Rule(B, "tel:+447700900789", RuleAction.BLOCK)
    populated.set_rule(B, '"Eve" <sip:eve@Net-C.test>', "polite-block")
    populated.set_rule(B, "sip:ann@net-a.test", "confirm")
    assert populated.rules_for(f"sip:{B}@{DOMAIN};user=phone") == {
        "tel:+447700900789": "block",
        "sip:eve@net-c.test": "polite-block",
        "sip:ann@net-a.test": "confirm",
    }
    assert [r.watcher_uri for r in populated.list_rules(B)] == [
        "sip:ann@net-a.test",
        "sip:eve@net-c.test",
        "tel:+447700900789",
    ]
    populated.remove_rule(B, A_URI)
    assert "tel:+447700900789" not in populated.rules_for(B)
    assert populated.rules_for(C) == {}
    assert populated.list_rules(C) == []


@pytest.mark.parametrize("owner", ["", "alice", "+447700900111"])
def test_rules_for_unknown_owner_is_empty(populated: SubscriberStore, owner: str) -> None:
    assert populated.rules_for(owner) == {}


def test_rule_refusals_change_nothing(populated: SubscriberStore) -> None:
    before = snapshot(populated)
    with pytest.raises(InvalidRecord, match="bad action"):
        populated.set_rule(B, A_URI, "deny")
    with pytest.raises(InvalidRecord, match="watcher"):
        populated.set_rule(B, "not a uri", "allow")
    with pytest.raises(UnknownRecord, match="unknown subscriber"):
        populated.set_rule("+447700900111", A_URI, "allow")
    with pytest.raises(InvalidMsisdn):
        populated.set_rule("bob", A_URI, "allow")
    with pytest.raises(UnknownRecord, match="no rule"):
        populated.remove_rule(B, "sip:nobody@net-a.test")
    with pytest.raises(UnknownRecord):
        populated.list_rules("+447700900111")
    assert snapshot(populated) == before


# -- number plan, porting ----------------------------------------------------------------------


def test_plan_and_porting(populated: SubscriberStore) -> None:
    assert populated.plan_list() == [
        PlanEntry("+44", "net-b.test"),
        PlanEntry("+4477", "net-a.test"),
    ]
    assert populated.port_list() == [PortEntry("+447700900999", "net-b.test")]
    assert populated.network_for("+441234567890") == "net-b.test"
    assert populated.network_for("+447712345678") == "net-a.test"
    assert populated.network_for("+447700900999") == "net-b.test"
    assert populated.network_for("tel:+447700900999") == "net-b.test"
    assert populated.network_for("+33123456789") is None
    assert populated.network_for("garbage") is None
    populated.port_remove("+447700900999")
    assert populated.network_for("+447700900999") == "net-a.test"
    populated.plan_remove("+4477")
    assert populated.network_for("+447712345678") == "net-b.test"
    assert populated.plan_list() == [PlanEntry("+44", "net-b.test")]


def test_a_network_keeps_its_last_prefix_while_numbers_are_ported_to_it(
    populated: SubscriberStore,
) -> None:
    populated.port_add("+447700900998", "net-a.test")
    before = snapshot(populated)
    with pytest.raises(StoreError, match=r"last of network net-a\.test, to which 1 number"):
        populated.plan_remove("+4477")
    assert snapshot(populated) == before
    populated.plan_add("+4478", "net-a.test")
    populated.plan_remove("+4477")  # net-a.test is still in the plan
    populated.port_remove("+447700900998")
    populated.plan_remove("+4478")
    populated.plan_remove("+44")  # numbers ported to our own domain need no prefix
    assert populated.plan_list() == []


def test_port_to_own_domain_or_planned_network(store: SubscriberStore) -> None:
    store.port_add("+15550100", DOMAIN)
    store.plan_add("+33", "Net-F.Test.")
    assert store.port_add("+15550101", "net-f.test") == PortEntry("+15550101", "net-f.test")


def test_plan_refusals_change_nothing(populated: SubscriberStore) -> None:
    before = snapshot(populated)
    with pytest.raises(DuplicateRecord, match=r"\+44 is already in the plan"):
        populated.plan_add("+44", "net-x.test")
    with pytest.raises(InvalidMsisdn):
        populated.plan_add("44", "net-x.test")
    with pytest.raises(InvalidRecord, match="domain"):
        populated.plan_add("+33", "net x")
    with pytest.raises(UnknownRecord):
        populated.plan_remove("+33")
    with pytest.raises(UnknownRecord, match=r"unknown network net-x\.test"):
        populated.port_add("+447700900111", "net-x.test")
    with pytest.raises(DuplicateRecord, match="already ported"):
        populated.port_add("+447700900999", "net-a.test")
    with pytest.raises(InvalidMsisdn):
        populated.port_add("447700900111", "net-a.test")
    with pytest.raises(UnknownRecord):
        populated.port_remove("+447700900111")
    assert snapshot(populated) == before


# -- presence servers --------------------------------------------------------------------------


def test_presence_servers(populated: SubscriberStore) -> None:
    assert populated.presence_servers() == [
        PresenceServerRecord("ps1", "sip:127.0.2.11:5060"),
        PresenceServerRecord("ps2", "sip:127.0.2.12:5060"),
    ]
    populated.remove_presence_server("ps1")
    assert [s.name for s in populated.presence_servers()] == ["ps2"]


def test_presence_server_refusals_change_nothing(populated: SubscriberStore) -> None:
    before = snapshot(populated)
    with pytest.raises(DuplicateRecord):
        populated.add_presence_server("ps1", "sip:elsewhere.test")
    with pytest.raises(InvalidRecord):
        populated.add_presence_server("ps3", "ps3.net-b.test")
    with pytest.raises(StoreError, match="still serves 1"):
        populated.remove_presence_server("ps2")
    with pytest.raises(UnknownRecord):
        populated.remove_presence_server("ps9")
    assert snapshot(populated) == before


# -- data version ------------------------------------------------------------------------------


def test_data_version_counts_writes_only(store: SubscriberStore) -> None:
    versions = [store.data_version()]
    writes: list[Callable[[], object]] = [
        lambda: store.add_presence_server("ps1", "sip:ps1.net-b.test"),
        lambda: store.add_subscriber(B, "pw", credit=2),
        lambda: store.update_subscriber(B, credit=3),
        lambda: store.debit_credit(B, 1),
        lambda: store.set_rule(B, A_URI, "allow"),
        lambda: store.remove_rule(B, A_URI),
        lambda: store.plan_add("+44", "net-b.test"),
        lambda: store.port_add("+441111111", "net-b.test"),
        lambda: store.port_remove("+441111111"),
        lambda: store.plan_remove("+44"),
        lambda: store.remove_subscriber(B),
        lambda: store.remove_presence_server("ps1"),
    ]
    for write in writes:
        write()
        store.list_subscribers()
        store.find_by_identity(B)
        versions.append(store.data_version())
    assert versions == sorted(set(versions))
    assert len(versions) == len(writes) + 1


# -- SQLite specifics --------------------------------------------------------------------------


def test_sqlite_pragmas_and_schema(tmp_path: Path) -> None:
    store = SqliteSubscriberStore.open(tmp_path, DOMAIN)
    store.close()
    conn = database.connect(tmp_path / "presence.sqlite")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == database.BUSY_TIMEOUT_MS
        versions = dict(conn.execute("SELECT component, version FROM schema_versions"))
        assert versions == {"core": 1, "hss": 1}
        assert database.get_setting(conn, "domain") == DOMAIN
    finally:
        conn.close()


def test_sqlite_persists_and_shares_between_connections(tmp_path: Path) -> None:
    first = SqliteSubscriberStore.open(tmp_path, DOMAIN)
    second = SqliteSubscriberStore.open(tmp_path)  # no domain: the recorded one
    try:
        assert second.domain == DOMAIN
        seen = second.data_version()
        first.add_subscriber(B, "pw", credit=5)
        first.set_rule(B, A_URI, "block")
        assert second.data_version() == seen + 2
        assert second.rules_for(B) == {"tel:+447700900789": "block"}
        assert second.debit_credit(B, 2) == 3
        assert first.debit_credit(B, 3) == 0
        with pytest.raises(InsufficientCredit):
            second.debit_credit(B, 1)
    finally:
        first.close()
        second.close()
    reopened = SqliteSubscriberStore.open(tmp_path, DOMAIN.upper())
    try:
        subscriber = reopened.get_subscriber(B)
        assert subscriber is not None
        assert subscriber.credit == 0
    finally:
        reopened.close()


def test_sqlite_other_domain_is_refused(tmp_path: Path) -> None:
    SqliteSubscriberStore.open(tmp_path, DOMAIN).close()
    with pytest.raises(ConfigError, match=r"belongs to domain net-b\.test, not net-a\.test"):
        SqliteSubscriberStore.open(tmp_path, "net-a.test")
    with pytest.raises(InvalidRecord):
        SqliteSubscriberStore.open(tmp_path, "bad domain")


def test_a_new_sqlite_store_needs_a_domain_and_makes_nothing_without(tmp_path: Path) -> None:
    """No guessed realm: HA1s stored for example.test would be refused by a net-b.test node."""
    data = tmp_path / "data"
    with pytest.raises(database.DomainNotRecorded, match="needs the network domain"):
        SqliteSubscriberStore.open(data)
    assert not data.exists()
    conn = database.open_network_database(data)  # a database made by another component
    try:
        with pytest.raises(database.DomainNotRecorded, match="no network domain yet"):
            SqliteSubscriberStore(conn)
        assert database.get_setting(conn, "domain") is None
        assert hss_tables(conn) == []  # refused before its migration
    finally:
        conn.close()


def hss_tables(conn: sqlite3.Connection) -> list[str]:
    return [name for (name,) in conn.execute("SELECT name FROM sqlite_master") if "hss" in name]


def test_a_store_refused_for_its_domain_writes_nothing(tmp_path: Path) -> None:
    """An existing database that records no domain (made by another component: the core
    tables only, or an empty file) opened without one, or one recording another domain: the
    refusal comes before anything is written (the switch to WAL, the migrations), and leaves
    no -wal or -shm file behind."""
    data = tmp_path / "data"
    path = data / "presence.sqlite"
    database.open_network_database(data).close()
    made = path.read_bytes()
    for read_only in (False, True):
        with pytest.raises(database.DomainNotRecorded, match="no network domain yet"):
            SqliteSubscriberStore.open(data, read_only=read_only)
    assert (path.read_bytes(), [p.name for p in data.iterdir()]) == (made, ["presence.sqlite"])
    path.write_bytes(b"")  # a file made, and nothing written in it yet
    with pytest.raises(database.DomainNotRecorded, match="no network domain yet"):
        SqliteSubscriberStore.open(data)
    assert (path.read_bytes(), [p.name for p in data.iterdir()]) == (b"", ["presence.sqlite"])
    conn = database.open_network_database(data)
    database.set_setting(conn, "domain", "net-a.test")  # recorded, the HSS not made yet
    conn.close()
    made = path.read_bytes()
    with pytest.raises(database.DomainMismatch):
        SqliteSubscriberStore.open(data, DOMAIN)
    assert (path.read_bytes(), [p.name for p in data.iterdir()]) == (made, ["presence.sqlite"])
    store = SqliteSubscriberStore.open(data, "net-a.test")  # its own domain: made now
    try:
        assert store.domain == "net-a.test"
        assert store.list_subscribers() == []
    finally:
        store.close()


def test_sqlite_rejects_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "presence.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        SqliteSubscriberStore.open(tmp_path, DOMAIN)


def test_sqlite_rejects_a_newer_schema(tmp_path: Path) -> None:
    SqliteSubscriberStore.open(tmp_path, DOMAIN).close()
    conn = database.connect(tmp_path / "presence.sqlite")
    conn.execute("UPDATE schema_versions SET version = 99 WHERE component = 'hss'")
    conn.close()
    with pytest.raises(StoreError, match="version 99"):
        SqliteSubscriberStore.open(tmp_path, DOMAIN)


def test_a_new_file_waits_for_a_writer_before_it_switches_to_wal(tmp_path: Path) -> None:
    # Two processes creating one database (a node and an `hss` command at first start): the
    # one that asks for WAL while the other writes was refused at once ("database is locked",
    # SQLite's deadlock rule skips the busy handler); it waits now, as any write does.
    path = tmp_path / "presence.sqlite"
    path.touch()
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("CREATE TABLE first_writer (x)")
    commit = threading.Timer(0.3, writer.execute, ("COMMIT",))
    commit.start()
    started = time.monotonic()
    try:
        conn = database.connect(path)
        waited = time.monotonic() - started
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = conn.execute("SELECT name FROM sqlite_master").fetchall()
        busy_timeout = conn.execute("PRAGMA busy_timeout").fetchone()[0]
        conn.close()
    finally:
        commit.join()
        writer.close()
    assert waited >= 0.25
    assert tables == [("first_writer",)]
    assert busy_timeout == database.BUSY_TIMEOUT_MS  # its own again after the switch


def test_a_writer_holding_the_lock_fails_the_wal_switch_within_the_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The switch is tried again until BUSY_TIMEOUT_MS, but a try made while another process
    holds the exclusive lock waits in SQLite's busy handler: it waited the whole busy timeout
    again from wherever it began (twice the bound at worst; here 0.5 + 1 s).  Now it waits
    for what is left of the bound, and the connection gets its own busy timeout back.  (The
    margins, 0.3 s above the bound and 0.2 s below the old wait, are for a loaded host.)"""
    monkeypatch.setattr(database, "BUSY_TIMEOUT_MS", 1000)
    path = tmp_path / "presence.sqlite"
    path.touch()
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("PRAGMA locking_mode = EXCLUSIVE")  # keeps its exclusive lock once it commits
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("CREATE TABLE first_writer (x)")  # the tries fail at once until then
    commit = threading.Timer(0.5, writer.execute, ("COMMIT",))
    commit.start()
    started = time.monotonic()
    try:
        with pytest.raises(StoreError, match="database is locked"):
            database.connect(path)
        waited = time.monotonic() - started
        commit.join()
        other = sqlite3.connect(path, timeout=1.234, isolation_level=None)
        try:
            with pytest.raises(sqlite3.OperationalError, match="database is locked"):
                database._enter_wal_mode(other)
            busy_timeout = other.execute("PRAGMA busy_timeout").fetchone()[0]
        finally:
            other.close()
    finally:
        commit.join()
        writer.close()
    assert 0.95 <= waited < 1.3
    assert busy_timeout == 1234  # put back after a failed switch too


def test_a_file_that_is_not_a_database_is_refused_at_once(tmp_path: Path) -> None:
    path = tmp_path / "presence.sqlite"
    path.write_bytes(b"not an sqlite file, " * 100)
    started = time.monotonic()
    with pytest.raises(StoreError, match=r"cannot open database .*not a database"):
        database.connect(path)
    assert time.monotonic() - started < database.BUSY_TIMEOUT_MS / 1000 / 2  # not retried
    assert path.read_bytes() == b"not an sqlite file, " * 100


def test_migrations_apply_once_and_in_order(tmp_path: Path) -> None:
    steps = (
        "CREATE TABLE t_demo (x INTEGER); INSERT INTO t_demo VALUES (1);",
        """
        CREATE TRIGGER t_demo_double AFTER INSERT ON t_demo BEGIN
            INSERT INTO t_demo_log VALUES (new.x * 2);
        END;
        CREATE TABLE t_demo_log (y INTEGER);
        """,
    )
    database.register_migrations("test-demo", steps[:1])
    conn = database.open_network_database(tmp_path)
    try:
        assert database.migrate(conn, "test-demo") == 1
        assert database.migrate(conn, "test-demo") == 1
        assert conn.execute("SELECT count(*) FROM t_demo").fetchone()[0] == 1
        database._MIGRATIONS["test-demo"] = steps  # a later release appends a migration
        assert database.migrate(conn, "test-demo") == 2
        conn.execute("INSERT INTO t_demo VALUES (21)")
        assert conn.execute("SELECT y FROM t_demo_log").fetchall() == [(42,)]
        assert database.schema_version(conn, "test-demo") == 2
    finally:
        conn.close()
        del database._MIGRATIONS["test-demo"]


def test_a_failing_migration_leaves_no_trace(tmp_path: Path) -> None:
    database.register_migrations("test-broken", ("CREATE TABLE t_ok (x); CREATE TABLE t_ok (x);",))
    conn = database.open_network_database(tmp_path)
    try:
        with pytest.raises(StoreError, match="already exists"):
            database.migrate(conn, "test-broken")
        assert database.schema_version(conn, "test-broken") == 0
        tables = conn.execute("SELECT name FROM sqlite_master WHERE name = 't_ok'").fetchall()
        assert tables == []
    finally:
        conn.close()
        del database._MIGRATIONS["test-broken"]


def test_register_migrations_conflict() -> None:
    database.register_migrations("hss", HSS_MIGRATIONS)  # the same list again: fine
    with pytest.raises(ValueError, match="different content"):
        database.register_migrations("hss", ("CREATE TABLE x (y);",))
    conn = sqlite3.connect(":memory:")
    try:
        with pytest.raises(ValueError, match="no migrations"):
            database.migrate(conn, "never-registered")
    finally:
        conn.close()


def _failing_write(conn: sqlite3.Connection, key: str) -> None:
    with database.transaction(conn):
        database.set_setting(conn, key, "written")
        raise RuntimeError("fails after writing")


def test_nested_transaction_is_a_savepoint(tmp_path: Path) -> None:
    conn = database.open_network_database(tmp_path)
    try:
        with database.transaction(conn):
            database.set_setting(conn, "outer", "1")
            with pytest.raises(RuntimeError):
                _failing_write(conn, "inner")
        assert database.get_setting(conn, "outer") == "1"
        assert database.get_setting(conn, "inner") is None
        with pytest.raises(RuntimeError):
            _failing_write(conn, "outer")
        assert database.get_setting(conn, "outer") == "1"
        with pytest.raises(StoreError, match="database error"), database.transaction(conn):
            conn.execute("INSERT INTO no_such_table VALUES (1)")
        assert not conn.in_transaction
    finally:
        conn.close()


def test_a_new_data_directory_and_its_database_are_closed_to_other_users(tmp_path: Path) -> None:
    """The HA1 digests are as good as the passwords for the realm: not world-readable."""
    data = tmp_path / "net"
    store = SqliteSubscriberStore.open(data, "example.test")
    try:
        store.add_subscriber("+447700900123", "secret")
        modes = {
            path.name: path.stat().st_mode & 0o777
            for path in (data, *data.glob("presence.sqlite*"))
        }
    finally:
        store.close()
    assert modes == {
        "net": 0o750,
        "presence.sqlite": 0o640,
        "presence.sqlite-wal": 0o640,
        "presence.sqlite-shm": 0o640,
    }


def test_a_batch_keeps_all_its_changes_or_none(populated: SubscriberStore) -> None:
    before = snapshot(populated)

    def import_twice() -> None:
        with populated.batch():
            populated.add_subscriber("+447700900701", "pw")
            populated.set_rule("+447700900701", "sip:x@net-a.test", RuleAction.BLOCK)
            populated.add_subscriber("+447700900701", "pw")  # the second time: refused

    with pytest.raises(DuplicateRecord):
        import_twice()
    assert snapshot(populated) == before
    with populated.batch():
        populated.add_subscriber("+447700900701", "pw")
        populated.add_subscriber("+447700900702", "pw")
    assert populated.get_subscriber("+447700900702") is not None
    assert snapshot(populated) != before


def test_an_import_adds_and_replaces_in_one_write(populated: SubscriberStore) -> None:
    """``--update``: the password and the named fields are replaced, the rest (presence
    server, rules) kept; an identity an updated subscriber gives up may go to a new one."""
    populated.update_subscriber(B, add_identities=["sip:bob@net-b.test"])
    version = populated.data_version()
    bob = make_subscriber(B, "new secret", DOMAIN, credit=3, identities=["sip:robert@net-b.test"])
    dave = make_subscriber("+447700900700", "pw", DOMAIN, identities=["sip:bob@net-b.test"])
    fields = {SubscriberField.CREDIT, SubscriberField.IDENTITIES}
    populated.import_subscribers([dave], [bob], fields=fields)

    updated = populated.get_subscriber(B)
    assert updated is not None
    assert (updated.credit, updated.presence_server) == (3, "ps2")
    assert updated.identities[2:] == ("sip:robert@net-b.test",)
    expected = digest_ha1(B, DOMAIN, "new secret", "SHA-256")
    assert populated.get_ha1(B, "SHA-256") == expected
    assert populated.rules_for(B) == {"tel:+447700900789": "allow"}
    found = populated.find_by_identity("sip:bob@net-b.test")
    assert found is not None
    assert found.msisdn == "+447700900700"
    assert populated.data_version() == version + 1


def test_an_import_without_fields_keeps_identities_and_credit(populated: SubscriberStore) -> None:
    bob = make_subscriber(B, "new secret", DOMAIN)
    populated.import_subscribers([], [bob])
    updated = populated.get_subscriber(B)
    assert updated is not None
    assert (updated.credit, updated.presence_server) == (10, "ps2")
    assert populated.get_ha1(B, "MD5") == digest_ha1(B, DOMAIN, "new secret", "MD5")


@pytest.mark.parametrize(
    ("new", "replacing"),
    [
        ([B], []),  # added by another process since the checks
        (["+447700900700"], ["+447700900701"]),  # an updated one removed meanwhile
    ],
)
def test_an_import_the_store_refuses_writes_nothing(
    populated: SubscriberStore, new: list[str], replacing: list[str]
) -> None:
    before = snapshot(populated)
    records = [make_subscriber(msisdn, "pw", DOMAIN) for msisdn in new]
    others = [make_subscriber(msisdn, "pw", DOMAIN) for msisdn in replacing]
    with pytest.raises(StoreError):
        populated.import_subscribers(records, others)
    assert snapshot(populated) == before


def test_an_import_with_an_unknown_presence_server_writes_nothing(
    populated: SubscriberStore,
) -> None:
    before = snapshot(populated)
    record = make_subscriber("+447700900700", "pw", DOMAIN, presence_server="ps9")
    with pytest.raises(StoreError):
        populated.import_subscribers([record])
    assert snapshot(populated) == before
