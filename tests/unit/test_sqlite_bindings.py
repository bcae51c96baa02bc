"""SQLite bindings: the same rows whether written through or by a group commit on its thread."""

from __future__ import annotations

from pathlib import Path

from presence_sip.registrar.bindings import Binding
from presence_sip.storage import database
from presence_sip.storage.database import database_path, open_network_database
from presence_sip.storage.group_commit import GroupCommit
from presence_sip.storage.sqlite_bindings import SqliteBindingStore

AOR = "+447700900123"


def binding(contact: str, cseq: int = 1) -> Binding:
    return Binding(
        AOR,
        contact,
        ';+sip.instance="<urn:uuid:1>"',
        1_800_000_000.5,
        0.7,
        "call-1@127.0.0.1",
        cseq,
        path=("<sip:p1.example.test;lr>", "<sip:p2.example.test;lr>"),
        source="udp:127.0.0.1:5090",
        user_agent="baresip",
    )


def stored(data: Path) -> list[Binding]:
    """What a fresh connection reads back (a restart's view)."""
    conn = open_network_database(data)
    try:
        return sorted(SqliteBindingStore(conn).load_bindings(), key=lambda b: b.contact)
    finally:
        conn.close()


def test_written_through_bindings_read_back_field_for_field(tmp_path: Path) -> None:
    conn = open_network_database(tmp_path)
    store = SqliteBindingStore(conn)
    store.save_bindings(AOR, [binding("sip:a@127.0.0.1"), binding("sip:b@127.0.0.1")], [])
    store.save_bindings(AOR, [binding("sip:a@127.0.0.1", cseq=2)], ["sip:b@127.0.0.1"])
    conn.close()
    assert stored(tmp_path) == [binding("sip:a@127.0.0.1", cseq=2)]


def test_a_group_commit_on_its_thread_writes_the_newest_state_of_each_binding(
    tmp_path: Path,
) -> None:
    conn = open_network_database(tmp_path)
    group = GroupCommit(conn, path=database_path(tmp_path))
    store = SqliteBindingStore(conn, group)
    store.save_bindings(AOR, [binding("sip:a@127.0.0.1"), binding("sip:b@127.0.0.1")], [])
    group.handle_timer(1.0)  # handed to the commit thread
    store.save_bindings(AOR, [binding("sip:a@127.0.0.1", cseq=2)], ["sip:b@127.0.0.1"])
    store.save_bindings(AOR, [binding("sip:c@127.0.0.1")], [])
    store.delete_expired(AOR, ["sip:c@127.0.0.1"])  # coalesced: c never reaches the disk
    assert [b.contact for b in store.load_bindings()] == ["sip:a@127.0.0.1"]  # flushes first
    group.close()
    conn.close()
    assert stored(tmp_path) == [binding("sip:a@127.0.0.1", cseq=2)]
    assert group.commits == 2


def test_each_node_of_a_shared_database_reads_and_deletes_only_its_own_bindings(
    tmp_path: Path,
) -> None:
    conn = open_network_database(tmp_path)
    ps1 = SqliteBindingStore(conn, node="ps1")
    ps2 = SqliteBindingStore(conn, node="ps2")
    ps1.save_bindings(AOR, [binding("sip:a@127.0.0.1")], [])
    ps2.save_bindings(AOR, [binding("sip:b@127.0.0.1")], [])
    assert [b.contact for b in ps1.load_bindings()] == ["sip:a@127.0.0.1"]
    assert [b.contact for b in ps2.load_bindings()] == ["sip:b@127.0.0.1"]
    ps2.delete_expired(AOR, ["sip:a@127.0.0.1"])  # ps2's old copy of a binding ps1 has now
    ps2.save_bindings(AOR, [], ["sip:a@127.0.0.1"])
    assert [b.contact for b in ps1.load_bindings()] == ["sip:a@127.0.0.1"]
    # The same phone registered at both (one Contact): a binding of each, neither replaced.
    ps2.save_bindings(AOR, [binding("sip:a@127.0.0.1", cseq=2)], [])
    assert [(b.contact, b.cseq) for b in ps1.load_bindings()] == [("sip:a@127.0.0.1", 1)]
    assert len(ps2.load_bindings()) == 2
    conn.close()


def test_rows_written_before_nodes_owned_them_go_to_the_first_node_that_loads(
    tmp_path: Path,
) -> None:
    conn = open_network_database(tmp_path)
    SqliteBindingStore(conn).save_bindings(AOR, [binding("sip:a@127.0.0.1")], [])  # node ''
    assert [b.contact for b in SqliteBindingStore(conn, node="ps1").load_bindings()] == [
        "sip:a@127.0.0.1"
    ]
    assert SqliteBindingStore(conn, node="ps2").load_bindings() == []
    conn.close()


def test_only_a_node_that_claims_takes_the_rows_written_before(tmp_path: Path) -> None:
    """A presence-only node builds a registrar too, but must not take the registrar's rows."""
    conn = open_network_database(tmp_path)
    SqliteBindingStore(conn).save_bindings(AOR, [binding("sip:a@127.0.0.1")], [])
    assert SqliteBindingStore(conn, node="ps1", claim=False).load_bindings() == []
    assert len(SqliteBindingStore(conn, node="registrar").load_bindings()) == 1
    conn.close()


def test_a_database_of_the_first_schema_keeps_its_bindings(tmp_path: Path) -> None:
    conn = open_network_database(tmp_path)
    database.register_migrations("test-registrar-v1", database._MIGRATIONS["registrar"][:1])
    database.migrate(conn, "test-registrar-v1")
    conn.execute("INSERT INTO schema_versions (component, version) VALUES ('registrar', 1)")
    conn.execute(
        "INSERT INTO bindings VALUES ('+447700900123', 'sip:a@127.0.0.1', '', 1.8e9, 1.0,"
        " 'c1', 1, '[]', 'udp:127.0.0.1:5090', 'baresip')"
    )
    store = SqliteBindingStore(conn, node="ps1")
    assert database.schema_version(conn, "registrar") == len(database._MIGRATIONS["registrar"])
    assert [(b.aor, b.contact) for b in store.load_bindings()] == [(AOR, "sip:a@127.0.0.1")]
    conn.close()
