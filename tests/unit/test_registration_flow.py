"""Which registration connection reaches a watcher whose Contact does not (registrar/flows.py)."""

from __future__ import annotations

from presence_sip.registrar.bindings import Binding
from presence_sip.registrar.flows import registration_flow
from presence_sip.sip.peer import Peer

AOR = "+447700900123"
OLD_TARGET = "sip:+447700900123@192.0.2.10:40001;transport=tcp;ob"
CAME_FROM = Peer("tcp", "192.0.2.10", 40001)
FAILED = Peer("tcp", "192.0.2.10", 40001)


def every(peer: Peer) -> bool:
    """Every address has a connection up."""
    return True


def binding(contact: str, source: str, *, path: tuple[str, ...] = ()) -> Binding:
    return Binding(
        aor=AOR,
        contact=contact,
        params="",
        expires_at=1000.0,
        q=1.0,
        call_id="c",
        cseq=1,
        path=path,
        source=source,
    )


NEW = binding("sip:+447700900123@192.0.2.10:40002;transport=tcp;ob", "tcp:192.0.2.10:40002")


def test_the_one_registration_from_the_same_host_with_the_same_user_and_host_is_chosen() -> None:
    assert registration_flow([NEW], OLD_TARGET, CAME_FROM, FAILED, every) == Peer(
        "tcp", "192.0.2.10", 40002
    )


def test_the_host_of_a_contact_is_compared_without_case() -> None:
    target = "sip:alice@PC.Example.com:40001;transport=tcp"
    new = binding("sip:alice@pc.example.COM:40002;transport=tcp", "tcp:192.0.2.10:40002")
    assert registration_flow([new], target, CAME_FROM, FAILED, every) == Peer(
        "tcp", "192.0.2.10", 40002
    )


def test_two_user_agents_of_one_user_on_one_host_are_ambiguous() -> None:
    other = binding("sip:+447700900123@192.0.2.10:40003;transport=tcp", "tcp:192.0.2.10:40003")
    assert registration_flow([NEW, other], OLD_TARGET, CAME_FROM, FAILED, every) is None


def test_of_two_user_agents_the_one_whose_contact_is_the_target_is_chosen() -> None:
    """pjsua keeps its first Contact when it registers over a new connection (outbound or
    not): that binding names the dialog's remote target itself."""
    kept = binding(OLD_TARGET, "tcp:192.0.2.10:40005")
    assert registration_flow([NEW, kept], OLD_TARGET, CAME_FROM, FAILED, every) == Peer(
        "tcp", "192.0.2.10", 40005
    )


def test_two_bindings_over_one_connection_are_one_way() -> None:
    again = binding("sip:+447700900123@192.0.2.10:40002;transport=tcp", "tcp:192.0.2.10:40002")
    assert registration_flow([NEW, again], OLD_TARGET, CAME_FROM, FAILED, every) == Peer(
        "tcp", "192.0.2.10", 40002
    )


def test_what_does_not_reach_the_same_user_agent_is_not_chosen() -> None:
    cases = [
        binding("sip:+447700900123@192.0.2.10:40002", "udp:192.0.2.10:40002"),  # transport
        binding("sip:+447700900123@192.0.2.10:40002", "tls:192.0.2.10:40002"),  # transport
        binding("sip:+447700900123@192.0.2.10:40002", "tcp:192.0.2.99:40002"),  # another host
        binding("sip:other@192.0.2.10:40002;transport=tcp", "tcp:192.0.2.10:40002"),  # user
        binding("sip:+447700900123@192.0.2.11:40002", "tcp:192.0.2.10:40002"),  # Contact host
        binding("sip:+447700900123@192.0.2.10:40001", "tcp:192.0.2.10:40001"),  # what failed
        binding("tel:+447700900123", "tcp:192.0.2.10:40002"),  # not a SIP URI
        binding(  # registered through a proxy: its connection is the proxy's
            "sip:+447700900123@192.0.2.10:40002",
            "tcp:192.0.2.10:40002",
            path=("<sip:192.0.2.10;lr>",),
        ),
    ]
    for case in cases:
        assert registration_flow([case], OLD_TARGET, CAME_FROM, FAILED, every) is None, case


def test_nothing_is_chosen_over_udp_or_for_a_target_that_is_not_a_sip_uri() -> None:
    udp = Peer("udp", "192.0.2.10", 40001)
    assert registration_flow([NEW], OLD_TARGET, udp, udp, every) is None
    assert registration_flow([NEW], "tel:+447700900123", CAME_FROM, FAILED, every) is None
    assert registration_flow([NEW], "sip:<bad", CAME_FROM, FAILED, every) is None


def test_tls_registrations_reach_tls_targets() -> None:
    target = "sips:+447700900123@192.0.2.10:40001"
    failed = Peer("tls", "192.0.2.10", 40001)
    new = binding("sips:+447700900123@192.0.2.10:40002", "tls:192.0.2.10:40002")
    assert registration_flow([new], target, failed, failed, every) == Peer(
        "tls", "192.0.2.10", 40002
    )


def test_a_binding_whose_connection_has_closed_is_left_out() -> None:
    """pjsua removes its old Contact only when its first REGISTER after a loss succeeds: after
    a second restart the binding of the connection before is still there, its connection gone.
    It is not a second user agent."""
    stale = binding("sip:+447700900123@192.0.2.10:40003;transport=tcp", "tcp:192.0.2.10:40003")

    def up(peer: Peer) -> bool:
        return peer.port == 40002

    assert registration_flow([stale, NEW], OLD_TARGET, CAME_FROM, FAILED, up) == Peer(
        "tcp", "192.0.2.10", 40002
    )
    assert registration_flow([stale], OLD_TARGET, CAME_FROM, FAILED, up) is None


def test_the_failed_connection_does_not_make_another_one_the_way() -> None:
    """Two user agents of one user on one host, both connected: ambiguous, also once one of
    them failed (else NOTIFYs would go from one to the other, each failing in turn)."""
    failed = Peer("tcp", "192.0.2.10", 40002)
    other = binding("sip:+447700900123@192.0.2.10:40003;transport=tcp", "tcp:192.0.2.10:40003")
    assert registration_flow([NEW, other], OLD_TARGET, CAME_FROM, failed, every) is None
    assert registration_flow([NEW], OLD_TARGET, CAME_FROM, failed, every) is None
