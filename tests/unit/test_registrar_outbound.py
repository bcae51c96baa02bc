"""RFC 5626 §6 at the registrar: bindings keyed by instance ID and reg-id, byte-exact REGISTERs."""

from __future__ import annotations

import pytest

from presence_sip.registrar.bindings import MemoryBindingStore
from presence_sip.registrar.registrar import Registrar, RegistrarPolicy
from presence_sip.sip import parse_message
from presence_sip.sip.message import Request

AOR = "+447700900001"
INSTANCE = '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'
FIRST_FLOW = "tcp:127.0.0.1:40001"


def register(
    contact: str,
    *,
    cseq: int = 1,
    call_id: str = "ob-1@127.0.0.1",
    expires: int = 600,
    supported: str | None = "path, outbound",
    vias: int = 1,
    path: str | None = None,
) -> Request:
    """A REGISTER as pjsua sends it with outbound on (``contact`` carries reg-id and instance)."""
    lines = ["REGISTER sip:net-a.test SIP/2.0"]
    if vias == 2:
        lines.append("Via: SIP/2.0/TCP 127.0.0.9:5060;branch=z9hG4bK-edge")
    lines += [
        "Via: SIP/2.0/TCP 127.0.0.1:40001;rport;branch=z9hG4bK-ob1",
        "Max-Forwards: 70",
        "From: <sip:+447700900001@net-a.test;user=phone>;tag=f1",
        "To: <sip:+447700900001@net-a.test;user=phone>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
    ]
    if supported is not None:
        lines.append(f"Supported: {supported}")
    if path is not None:
        lines.append(f"Path: {path}")
    lines += [f"Contact: {contact}", f"Expires: {expires}", "Content-Length: 0"]
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def flow_contact(port: int, reg_id: str = "1", instance: str = INSTANCE) -> str:
    return f"<sip:alice@127.0.0.1:{port};transport=tcp;ob>;reg-id={reg_id};+sip.instance={instance}"


def make_registrar(store: MemoryBindingStore | None = None) -> Registrar:
    return Registrar(
        store or MemoryBindingStore(),
        policy=RegistrarPolicy(min_expires=60, max_expires=3600, max_contacts=5),
        now=1000.0,
    )


def contacts_of(registrar: Registrar) -> list[str]:
    return [b.contact for b in registrar.bindings(AOR, 1000.0)]


def test_an_outbound_register_is_answered_require_outbound() -> None:
    registrar = make_registrar()
    response = registrar.register(register(flow_contact(40001)), AOR, FIRST_FLOW, 1000.0)
    assert response.status == 200
    assert response.headers.get_all("Require") == ["outbound"]
    # The binding's parameters go back as registered (RFC 3261 §10.3 step 8).
    assert response.headers.get_all("Contact") == [
        "<sip:alice@127.0.0.1:40001;transport=tcp;ob>;reg-id=1;+sip.instance="
        '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";expires=600'
    ]


def test_flow_timer_goes_to_a_flow_only_when_set() -> None:
    """RFC 5626 §5.4/§4.4.1: ``Flow-Timer`` sets the user agent's keep-alive interval; off by
    default (the user agent's own), never to a REGISTER that registered no flow."""
    paced = Registrar(MemoryBindingStore(), policy=RegistrarPolicy(flow_timer=20), now=1000.0)
    flow = paced.register(register(flow_contact(40001)), AOR, FIRST_FLOW, 1000.0)
    assert flow.headers.get_all("Flow-Timer") == ["20"]
    plain = paced.register(
        register("<sip:alice@127.0.0.1:40002>", call_id="plain@x"), AOR, FIRST_FLOW, 1000.0
    )
    assert plain.status == 200
    assert plain.headers.get_all("Flow-Timer") == []
    unpaced = make_registrar().register(register(flow_contact(40001)), AOR, FIRST_FLOW, 1000.0)
    assert unpaced.headers.get_all("Flow-Timer") == []


def test_a_register_over_a_new_flow_replaces_the_binding_of_the_old_one() -> None:
    """pjsua after its connection closed: a new ephemeral port in its Contact, same instance
    and reg-id, a new Call-ID.  RFC 3261 alone would keep both bindings."""
    store = MemoryBindingStore()
    registrar = make_registrar(store)
    registrar.register(register(flow_contact(40001)), AOR, FIRST_FLOW, 1000.0)
    response = registrar.register(
        register(flow_contact(40002), call_id="ob-2@127.0.0.1"), AOR, "tcp:127.0.0.1:40002", 1000.0
    )
    assert response.status == 200
    assert contacts_of(registrar) == ["sip:alice@127.0.0.1:40002;transport=tcp;ob"]
    (binding,) = registrar.bindings(AOR, 1000.0)
    assert binding.source == "tcp:127.0.0.1:40002"
    assert store.rows.keys() == {(AOR, "sip:alice@127.0.0.1:40002;transport=tcp;ob")}


def test_instance_ids_compare_without_regard_to_case() -> None:
    registrar = make_registrar()
    registrar.register(register(flow_contact(40001)), AOR, FIRST_FLOW, 1000.0)
    registrar.register(
        register(flow_contact(40002, instance=INSTANCE.lower()), call_id="ob-2@127.0.0.1"),
        AOR,
        FIRST_FLOW,
        1000.0,
    )
    assert contacts_of(registrar) == ["sip:alice@127.0.0.1:40002;transport=tcp;ob"]


def test_another_reg_id_or_instance_is_another_binding() -> None:
    registrar = make_registrar()
    registrar.register(register(flow_contact(40001)), AOR, FIRST_FLOW, 1000.0)
    registrar.register(
        register(flow_contact(40002, reg_id="2"), call_id="ob-2@1"), AOR, FIRST_FLOW, 1000.0
    )
    other = '"<urn:uuid:11111111-0000-1000-8000-000A95A0E128>"'
    registrar.register(
        register(flow_contact(40003, instance=other), call_id="ob-3@1"), AOR, FIRST_FLOW, 1000.0
    )
    assert sorted(contacts_of(registrar)) == [
        f"sip:alice@127.0.0.1:{port};transport=tcp;ob" for port in (40001, 40002, 40003)
    ]


def test_expires_zero_removes_the_flow_whatever_its_contact() -> None:
    registrar = make_registrar()
    registrar.register(register(flow_contact(40001)), AOR, FIRST_FLOW, 1000.0)
    response = registrar.register(
        register(flow_contact(40009), cseq=2, expires=0), AOR, FIRST_FLOW, 1000.0
    )
    assert response.status == 200
    assert contacts_of(registrar) == []
    assert not registrar.is_registered(AOR, 1000.0)


def test_an_older_request_of_the_flow_is_refused() -> None:
    registrar = make_registrar()
    registrar.register(register(flow_contact(40001), cseq=5), AOR, FIRST_FLOW, 1000.0)
    response = registrar.register(register(flow_contact(40002), cseq=4), AOR, FIRST_FLOW, 1000.0)
    assert (response.status, response.reason) == (500, "Out of order request")
    assert contacts_of(registrar) == ["sip:alice@127.0.0.1:40001;transport=tcp;ob"]


@pytest.mark.parametrize(
    "supported",
    [None, "path", "outbound-not"],
    ids=["no-supported", "path-only", "other-tag"],
)
def test_without_outbound_in_supported_reg_id_is_ignored(supported: str | None) -> None:
    registrar = make_registrar()
    registrar.register(register(flow_contact(40001), supported=supported), AOR, FIRST_FLOW, 1000.0)
    response = registrar.register(
        register(flow_contact(40002), supported=supported, call_id="x@1"), AOR, FIRST_FLOW, 1000.0
    )
    assert response.status == 200
    assert response.headers.get("Require") is None
    assert len(contacts_of(registrar)) == 2  # RFC 3261: two Contact URIs, two bindings


def test_reg_id_without_instance_is_ignored() -> None:
    registrar = make_registrar()
    response = registrar.register(
        register("<sip:alice@127.0.0.1:40001;transport=tcp>;reg-id=1"), AOR, FIRST_FLOW, 1000.0
    )
    assert response.status == 200
    assert response.headers.get("Require") is None


def test_require_outbound_alone_asks_for_outbound() -> None:
    registrar = make_registrar()
    request = register(flow_contact(40001), supported=None)
    request.headers.add("Require", "outbound")
    response = registrar.register(request, AOR, FIRST_FLOW, 1000.0)
    assert response.headers.get_all("Require") == ["outbound"]


def test_two_contacts_with_a_reg_id_are_refused() -> None:
    registrar = make_registrar()
    both = f"{flow_contact(40001)}, <sip:alice@127.0.0.1:5070>"
    response = registrar.register(register(both), AOR, FIRST_FLOW, 1000.0)
    assert (response.status, response.reason) == (400, "More than one Contact with reg-id")
    assert contacts_of(registrar) == []


@pytest.mark.parametrize("reg_id", ["0", "2147483648", "-1", "1a", "01x"])
def test_a_reg_id_out_of_range_is_refused(reg_id: str) -> None:
    registrar = make_registrar()
    response = registrar.register(
        register(flow_contact(40001, reg_id=reg_id)), AOR, FIRST_FLOW, 1000.0
    )
    assert (response.status, response.reason) == (400, "Invalid reg-id")


@pytest.mark.parametrize("instance", ['"urn:uuid:1"', '"<>"', "token", '""'])
def test_a_malformed_instance_is_refused(instance: str) -> None:
    registrar = make_registrar()
    response = registrar.register(
        register(flow_contact(40001, instance=instance)), AOR, FIRST_FLOW, 1000.0
    )
    assert (response.status, response.reason) == (400, "Invalid +sip.instance")


@pytest.mark.parametrize("path", ["<sip:127.0.0.9;lr>", None], ids=["path-without-ob", "no-path"])
def test_through_a_proxy_without_outbound_the_binding_is_a_plain_one(path: str | None) -> None:
    """§6 would answer 439, which pjsua never recovers from: the REGISTER is an RFC 3261 one
    instead (no Require: outbound, pjsua's cue that outbound is not available)."""
    registrar = make_registrar()
    for port, call_id in ((40001, "a@1"), (40002, "b@1")):
        request = register(flow_contact(port), vias=2, path=path, call_id=call_id)
        response = registrar.register(request, AOR, "tcp:127.0.0.9:5060", 1000.0)
        assert response.status == 200
        assert response.headers.get("Require") is None
    assert len(contacts_of(registrar)) == 2  # keyed by Contact, not by flow


def test_an_edge_proxy_with_ob_in_its_path_keeps_the_flow() -> None:
    registrar = make_registrar()
    request = register(flow_contact(40001), vias=2, path="<sip:token@127.0.0.9;lr;ob>")
    response = registrar.register(request, AOR, "tcp:127.0.0.9:5060", 1000.0)
    assert response.status == 200
    assert response.headers.get_all("Require") == ["outbound"]
    (binding,) = registrar.bindings(AOR, 1000.0)
    assert binding.path == ("<sip:token@127.0.0.9;lr;ob>",)


def test_a_plain_binding_of_the_same_contact_is_taken_over_by_the_flow() -> None:
    """The user agent registered without outbound, then with it: one binding, not two."""
    registrar = make_registrar()
    registrar.register(
        register("<sip:alice@127.0.0.1:40001;transport=tcp;ob>", supported=None),
        AOR,
        FIRST_FLOW,
        1000.0,
    )
    registrar.register(register(flow_contact(40001), call_id="ob-2@1"), AOR, FIRST_FLOW, 1000.0)
    (binding,) = registrar.bindings(AOR, 1000.0)
    assert "reg-id=1" in binding.params
