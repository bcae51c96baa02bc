"""The driver's table of stream connections by peer address (``transport/address_table.py``)."""

from __future__ import annotations

from presence_sip.transport.address_table import AddressTable

P = ("tcp", "127.0.0.1", 5060)
Q = ("tls", "127.0.0.1", 5061)


def test_an_address_keeps_its_first_connection_in_use_and_the_others_for_later() -> None:
    table: AddressTable[str] = AddressTable()
    table.add(P, "inbound-1", use_now=False)
    table.add(P, "inbound-2", use_now=False)
    table.add(P, "inbound-2", use_now=False)  # (told twice: one entry)
    table.add(Q, "other", use_now=False)
    assert table.get(P) == "inbound-1"
    table.remove(P, "inbound-1")
    assert table.get(P) == "inbound-2"
    table.remove(P, "inbound-2")
    assert table.get(P) is None
    assert table.get(Q) == "other"


def test_one_the_node_opens_is_in_use_at_once_and_the_newest_other_takes_over() -> None:
    table: AddressTable[str] = AddressTable()
    table.add(P, "closing", use_now=False)
    table.add(P, "inbound", use_now=False)
    table.add(P, "opened", use_now=True)
    assert table.get(P) == "opened"
    table.remove(P, "inbound")  # not in use: the one in use stays
    assert table.get(P) == "opened"
    table.remove(P, "opened")
    assert table.get(P) == "closing"
    table.remove(P, "unknown")  # never added: nothing changes
    assert table.get(P) == "closing"
    table.remove(P, "closing")
    assert table.get(P) is None
    table.remove(P, "closing")  # (twice: nothing left to remove)
    table.add(P, "new", use_now=False)
    table.clear()
    assert table.get(P) is None
