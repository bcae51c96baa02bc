"""The SIPp runner itself works: pysipp (through the shim) drives real SIPp processes on loopback.

A SIPp UAS (``harness/uas_options.xml``) plays the server, so these tests need no presence-sip
node; ``scenarios/options.xml`` is the real client scenario later run against ``presence-sip``.
"""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

import pysipp
import pytest
from sipp_runner import HARD_KILL_AFTER, bound_sockets, run_scenario, start_scenario

pytestmark = pytest.mark.sipp

ROOT = Path(__file__).resolve().parents[2]
OPTIONS_XML = ROOT / "scenarios" / "options.xml"
UAS_XML = Path(__file__).resolve().parent / "harness" / "uas_options.xml"


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_options_gets_200_from_a_sipp_uas(transport, free_port):
    port = free_port()
    with start_scenario(UAS_XML, None, transport=transport, local_port=port, timeout=20) as uas:
        uas.wait_listening()
        client = run_scenario(OPTIONS_XML, ("127.0.0.1", port), transport=transport, timeout=20)
    server = uas.wait()

    assert client.ok, client
    assert (client.successful, client.failed) == (1, 0)
    assert "SIP/2.0 200 OK" in client.messages_log
    assert "Accept: application/pidf+xml" in client.messages_log
    assert server.ok, server  # its ereg checks of Max-Forwards and Accept passed


def test_several_calls_are_counted(free_port):
    port = free_port()
    with start_scenario(UAS_XML, None, local_port=port, calls=5, timeout=20) as uas:
        uas.wait_listening()
        client = run_scenario(OPTIONS_XML, ("127.0.0.1", port), calls=5, rate=50, timeout=20)
    assert (client.returncode, client.successful, client.failed) == (0, 5, 0)
    assert uas.wait().successful == 5


def test_sipp_binds_loopback_only(free_port):
    port = free_port()
    with start_scenario(UAS_XML, None, local_port=port, timeout=20) as uas:
        uas.wait_listening()
        sockets = bound_sockets(uas.pid)
        run_scenario(OPTIONS_XML, ("127.0.0.1", port), timeout=20)
    assert any(s.port == port for s in sockets)
    assert sockets
    assert all(ipaddress.ip_address(s.host).is_loopback for s in sockets), sockets


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_no_server_is_a_failure_within_the_timeout(transport, free_port):
    timeout = 6
    started = time.monotonic()
    result = run_scenario(OPTIONS_XML, ("127.0.0.1", free_port()), transport=transport,
                          timeout=timeout)  # fmt: skip
    elapsed = time.monotonic() - started

    assert not result.ok
    assert result.returncode != 0
    assert result.successful == 0
    assert elapsed < timeout + HARD_KILL_AFTER + 1


def test_udp_retransmissions_are_counted(free_port):
    # Nobody answers: SIPp retransmits the OPTIONS (500 ms, 1 s, 2 s) before recv_timeout.
    result = run_scenario(OPTIONS_XML, ("127.0.0.1", free_port()), timeout=10, recv_timeout=4)
    assert result.failed == 1
    assert result.retransmissions >= 2


def test_a_sipp_that_ignores_signals_is_killed(tmp_path):
    stubborn = tmp_path / "stubborn-sipp"
    stubborn.write_text("#!/bin/sh\ntrap '' TERM USR1 INT\nexec sleep 60\n")
    stubborn.chmod(0o700)
    started = time.monotonic()
    result = run_scenario(OPTIONS_XML, ("127.0.0.1", 9), timeout=1, sipp_binary=str(stubborn))
    assert result.timed_out
    assert result.returncode < 0
    assert not result.ok
    assert time.monotonic() - started < 1 + HARD_KILL_AFTER + 2 + 2


def test_non_loopback_targets_are_refused():
    with pytest.raises(ValueError, match="loopback"):
        run_scenario(OPTIONS_XML, ("192.0.2.1", 5060))
    with pytest.raises(ValueError, match="IP literal"):
        run_scenario(OPTIONS_XML, ("localhost", 5060))


def test_pysipp_conf_prefix_hooks_still_work(tmp_path):
    # The shim's reason to keep implprefix: undecorated pysipp_* functions in pysipp_conf.py.
    (tmp_path / "uac_options.xml").write_text(OPTIONS_XML.read_text())
    (tmp_path / "pysipp_conf.py").write_text(
        "def pysipp_conf_scen(agents, scen):\n"
        "    scen.clientdefaults.key_vals = {'marker': 'from-conf'}\n"
    )
    scen = pysipp.scenario(
        dirpath=str(tmp_path),
        defaults={"local_host": "127.0.0.1", "logdir": str(tmp_path)},
        clientdefaults={"destaddr": ("127.0.0.1", 5060)},
    )
    assert "-key marker 'from-conf'" in scen.pformat_cmds()
