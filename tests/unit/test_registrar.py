"""Registrar machine (RFC 3261 §10.3) on a virtual clock, byte-exact REGISTERs."""

from __future__ import annotations

import pytest

from presence_sip.registrar.bindings import MemoryBindingStore
from presence_sip.registrar.registrar import Registrar, RegistrarPolicy, aor_key
from presence_sip.sip import parse_message, parse_uri
from presence_sip.sip.message import Request

SOURCE = "udp:127.0.0.1:5070"


def register(
    contact: str = "<sip:alice@127.0.0.1:5070>",
    *,
    expires: str | None = "600",
    call_id: str = "reg-1@127.0.0.1",
    cseq: int = 1,
    extra: str = "",
    to: str = "<sip:+447700900001@net-a.test;user=phone>",
) -> Request:
    lines = [
        "REGISTER sip:net-a.test SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-r1",
        "Max-Forwards: 70",
        f"From: {to};tag=f1",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
    ]
    if contact:
        lines.append(f"Contact: {contact}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if extra:
        lines.append(extra)
    lines.append("Content-Length: 0")
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def make_registrar(
    store: MemoryBindingStore | None = None, now: float = 1000.0
) -> tuple[Registrar, list[tuple[str, bool, float]]]:
    events: list[tuple[str, bool, float]] = []
    registrar = Registrar(
        store or MemoryBindingStore(),
        policy=RegistrarPolicy(min_expires=60, max_expires=3600, max_contacts=2),
        listeners=[lambda aor, registered, now: events.append((aor, registered, now))],
        now=now,
    )
    return registrar, events


@pytest.mark.parametrize(
    "uri",
    [
        "sip:+447700900001@net-a.test;user=phone",
        "sip:447700900001@net-a.test",
        "tel:+447700900001",
        "tel:+44-7700-900001",
    ],
)
def test_aor_forms_agree(uri: str) -> None:
    assert aor_key(parse_uri(uri)) == "+447700900001"


def test_non_numeric_aor_is_sip_user_at_host() -> None:
    assert aor_key(parse_uri("sips:Alice@NET-A.test:5061;transport=tls")) == "sip:Alice@net-a.test"


def test_register_binds_and_reports_registration() -> None:
    registrar, events = make_registrar()
    response = registrar.register(register(), "+447700900001", SOURCE, 1000.0)
    assert response.status == 200
    assert response.headers.get_all("Contact") == ["<sip:alice@127.0.0.1:5070>;expires=600"]
    assert registrar.is_registered("+447700900001", 1000.0)
    assert events == [("+447700900001", True, 1000.0)]


def test_binding_expires_on_timer_and_reports_once() -> None:
    registrar, events = make_registrar()
    registrar.register(register(expires="60"), "+447700900001", SOURCE, 1000.0)
    assert registrar.get_timer() == 1060.0
    registrar.handle_timer(1059.9)
    assert registrar.is_registered("+447700900001", 1059.9)
    registrar.handle_timer(1060.0)
    assert not registrar.is_registered("+447700900001", 1060.0)
    assert events[-1] == ("+447700900001", False, 1060.0)
    assert registrar.get_timer() is None


def test_interval_too_brief_gets_423_with_min_expires() -> None:
    registrar, _ = make_registrar()
    response = registrar.register(register(expires="10"), "+447700900001", SOURCE, 1000.0)
    assert response.status == 423
    assert response.headers.get("Min-Expires") == "60"
    assert not registrar.is_registered("+447700900001", 1000.0)


def test_contact_params_kept_exactly_cparam01_and_02() -> None:
    registrar, _ = make_registrar()
    registrar.register(
        register("sip:+19725552222@gw1.example.net;unknownparam"), "+447700900001", SOURCE, 1000.0
    )
    response = registrar.register(
        register("<sip:+19725552223@gw1.example.net;unknownparam>", cseq=2),
        "+447700900001",
        SOURCE,
        1000.0,
    )
    contacts = sorted(response.headers.get_all("Contact"))
    assert contacts == [
        "<sip:+19725552222@gw1.example.net>;unknownparam;expires=600",
        "<sip:+19725552223@gw1.example.net;unknownparam>;expires=600",
    ]


def test_escaped_route_header_in_contact_kept_regescrt() -> None:
    registrar, _ = make_registrar()
    response = registrar.register(
        register("<sip:user@host?Route=%3Csip:sip.example.com%3E>"), "+447700900001", SOURCE, 1000.0
    )
    assert (
        response.headers.get("Contact")
        == "<sip:user@host?Route=%3Csip:sip.example.com%3E>;expires=600"
    )


def test_expires_zero_removes_binding() -> None:
    registrar, events = make_registrar()
    registrar.register(register(), "+447700900001", SOURCE, 1000.0)
    response = registrar.register(register(expires="0", cseq=2), "+447700900001", SOURCE, 1001.0)
    assert response.status == 200
    assert response.headers.get("Contact") is None
    assert events[-1] == ("+447700900001", False, 1001.0)


def test_wildcard_removes_all_and_needs_expires_zero() -> None:
    registrar, _ = make_registrar()
    registrar.register(register(), "+447700900001", SOURCE, 1000.0)
    bad = registrar.register(register("*", expires="60", cseq=2), "+447700900001", SOURCE, 1000.0)
    assert bad.status == 400
    good = registrar.register(register("*", expires="0", cseq=3), "+447700900001", SOURCE, 1000.0)
    assert good.status == 200
    assert registrar.bindings("+447700900001", 1000.0) == []


def test_out_of_order_cseq_same_call_id_rejected() -> None:
    registrar, _ = make_registrar()
    registrar.register(register(cseq=5), "+447700900001", SOURCE, 1000.0)
    response = registrar.register(register(cseq=5, expires="300"), "+447700900001", SOURCE, 1000.0)
    assert response.status == 500
    assert registrar.bindings("+447700900001", 1000.0)[0].expires_at == 1600.0


def test_an_equivalent_contact_is_the_same_binding() -> None:
    """RFC 3261 §10.3 step 7 compares contacts with §19.1.4: host case and parameter order do
    not make a new binding (max_contacts is 2 here); the binding takes the newest writing."""
    store = MemoryBindingStore()
    registrar, _ = make_registrar(store)
    aor = "+447700900001"
    registrar.register(register("<sip:alice@Phone.Test;transport=TCP>"), aor, SOURCE, 1000.0)
    response = registrar.register(
        register("<sip:alice@phone.test;transport=tcp>", expires="300", cseq=2), aor, SOURCE, 1010.0
    )
    assert response.status == 200
    assert response.headers.values("Contact") == [
        "<sip:alice@phone.test;transport=tcp>;expires=300"
    ]
    assert list(store.rows) == [(aor, "sip:alice@phone.test;transport=tcp")]
    # The out-of-order check applies to the equivalent binding too.
    stale = registrar.register(
        register("<sip:alice@PHONE.test;transport=tcp>", cseq=2), aor, SOURCE, 1020.0
    )
    assert stale.status == 500
    # Removing by an equivalent writing removes it.
    gone = registrar.register(
        register("<sip:alice@PHONE.TEST;Transport=tcp>", expires="0", cseq=3), aor, SOURCE, 1030.0
    )
    assert gone.status == 200
    assert registrar.bindings(aor, 1030.0) == []


def test_contacts_that_differ_in_port_or_transport_are_different_bindings() -> None:
    registrar, _ = make_registrar()
    aor = "+447700900001"
    registrar.register(register("<sip:alice@127.0.0.1>"), aor, SOURCE, 1000.0)
    registrar.register(register("<sip:alice@127.0.0.1:5060>", cseq=2), aor, SOURCE, 1000.0)
    assert len(registrar.bindings(aor, 1000.0)) == 2


def test_max_contacts_per_aor() -> None:
    registrar, _ = make_registrar()
    for i in range(2):
        registrar.register(
            register(f"<sip:a{i}@127.0.0.1>", call_id=f"c{i}"), "+447700900001", SOURCE, 1000.0
        )
    response = registrar.register(
        register("<sip:a9@127.0.0.1>", call_id="c9"), "+447700900001", SOURCE, 1000.0
    )
    assert response.status == 503
    assert len(registrar.bindings("+447700900001", 1000.0)) == 2


def test_q_values_order_bindings_and_bad_q_is_400() -> None:
    registrar, _ = make_registrar()
    registrar.register(
        register("<sip:low@127.0.0.1>;q=0.1, <sip:high@127.0.0.1>;q=0.9"),
        "+447700900001",
        SOURCE,
        1000.0,
    )
    assert [b.contact for b in registrar.bindings("+447700900001", 1000.0)] == [
        "sip:high@127.0.0.1",
        "sip:low@127.0.0.1",
    ]
    bad = registrar.register(
        register("<sip:x@127.0.0.1>;q=7", cseq=2), "+447700900001", SOURCE, 1000.0
    )
    assert bad.status == 400


def test_path_stored_and_echoed_to_a_ua_that_supports_it() -> None:
    """RFC 3327 §5.3: stored in any case, in the 200 only with ``Supported: path``."""
    registrar, _ = make_registrar()
    path = "Path: <sip:edge.net-a.test;lr>"
    response = registrar.register(
        register(extra=f"{path}\r\nSupported: timer, Path"), "+447700900001", SOURCE, 1000.0
    )
    assert response.headers.get("Path") == "<sip:edge.net-a.test;lr>"
    assert registrar.bindings("+447700900001", 1000.0)[0].path == ("<sip:edge.net-a.test;lr>",)
    silent = registrar.register(register(extra=path, cseq=2), "+447700900001", SOURCE, 1001.0)
    assert silent.status == 200
    assert silent.headers.get("Path") is None
    assert registrar.bindings("+447700900001", 1001.0)[0].path == ("<sip:edge.net-a.test;lr>",)


def test_the_200_carries_the_date() -> None:
    """RFC 3261 §10.3 step 8: a UA without a clock sets it from the registrar's Date."""
    registrar, _ = make_registrar()
    response = registrar.register(register(), "+447700900001", SOURCE, 1_795_773_600.4)
    assert response.headers.get("Date") == "Fri, 27 Nov 2026 10:00:00 GMT"


def test_bindings_reload_from_store_and_expired_ones_purged_by_the_first_timer() -> None:
    store = MemoryBindingStore()
    registrar, _ = make_registrar(store)
    registrar.register(register(expires="60"), "+447700900001", SOURCE, 1000.0)
    registrar.register(
        register(
            "<sip:+447700900002@127.0.0.1>", to="<sip:+447700900002@net-a.test>", expires="3600"
        ),
        "+447700900002",
        SOURCE,
        1000.0,
    )
    reloaded, events = make_registrar(store, now=2000.0)
    assert not reloaded.is_registered("+447700900001", 2000.0)
    assert reloaded.is_registered("+447700900002", 2000.0)
    # Expired while the node was down: purged by the first timer call, and reported (presence
    # tells the watchers), not silently at load.
    assert reloaded.get_timer() == 1060.0
    reloaded.handle_timer(2000.0)
    assert events == [("+447700900001", False, 2000.0)]
    assert ("+447700900001", "sip:alice@127.0.0.1:5070") not in store.rows


def test_refreshes_do_not_pile_up_expiry_entries() -> None:
    """Each re-REGISTER moves the binding's deadline; the old one goes at once (issue 8)."""
    registrar, events = make_registrar()
    now = 1000.0
    for cseq in range(1, 200):
        now += 1.0
        registrar.register(register(cseq=cseq), "+447700900001", SOURCE, now)
    assert len(registrar._expiry) == 1  # the deadlines held: one per binding
    registrar.handle_timer(now + 599.0)
    assert registrar.is_registered("+447700900001", now + 599.0)
    registrar.handle_timer(now + 600.0)
    assert registrar.bindings("+447700900001", now + 600.0) == []
    assert events[-1] == ("+447700900001", False, now + 600.0)
