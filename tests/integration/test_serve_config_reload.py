"""``presence-sip serve CONFIG.toml`` reads its file again on SIGHUP (``systemctl reload``), on a
real node over loopback UDP: what can change at once does, for the next request and for the
watchers it holds; what the node was built around waits for a restart, named in a WARNING line;
a file that does not load changes nothing, in an ERROR line.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from serve_process import ServeProcess, UdpClient, build_request, free_port
from test_serve_subscription_cap import answer_notifies, subscribe

from presence_sip.sip import Response

DOMAIN = "example.test"
CONFIG = """\
[network]
domain = "{domain}"
data = "{data}"
auth = "none"
default_policy = "{policy}"
{extra}

[[node]]
name = "ps1"
roles = ["registrar", "presence"]
listen = ["udp:127.0.0.1:{port}", "tcp:127.0.0.1:{port}"{more_listen}]
"""
RELOADED = "INFO presence_sip.signals: ps1: configuration reloaded: "


def write(config: Path, port: int, policy: str, extra: str = "", more_listen: str = "") -> None:
    data = config.parent / "data"
    config.write_text(
        CONFIG.format(
            domain=DOMAIN, data=data, port=port, policy=policy, extra=extra, more_listen=more_listen
        )
    )


def register_bob(client: UdpClient, node: ServeProcess, expires: int) -> Response:
    request = build_request(
        "REGISTER",
        f"sip:{DOMAIN}",
        client,
        to=f"<sip:bob@{DOMAIN}>",
        from_=f"<sip:bob@{DOMAIN}>",
        headers=[("Contact", f"<sip:bob@{client.host}:{client.port}>"), ("Expires", str(expires))],
    )
    return client.request(request, node)


def test_sighup_takes_the_new_settings_and_leaves_the_rest_for_a_restart(
    serve_factory: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "net.toml"
    write(config, port, "confirm")
    node = serve_factory(config=config, port=port, data_dir=tmp_path / "data")
    with UdpClient() as client, UdpClient() as ua:
        before = register_bob(client, node, 7200)
        assert before.status == 200
        assert before.headers.get("Server") == "presence-sip"
        alice = f"sip:alice@{DOMAIN}"
        assert client.request(subscribe(client, "bob", alice, ua), node).status == 200
        [pending] = answer_notifies(ua, node, 1)
        assert str(pending.headers.get("Subscription-State")).startswith("pending")

        # The watcher Bob never confirmed is let in by the new default policy; the registrar
        # cuts the next REGISTER to the new max_expires; the Server header is the new one.
        # The new listener is named, and not opened, until the next start.
        write(
            config,
            port,
            "allow",
            'server_header = "presence-sip/lab"\n'
            "[network.registrar]\ndefault_expires = 600\nmax_expires = 600",
            more_listen=f', "udp:127.0.0.1:{port + 1}"',
        )
        reloaded = node.hangup(RELOADED)
        [active] = answer_notifies(ua, node, 1)
        assert str(active.headers.get("Subscription-State")).startswith("active")
        assert active.call_id == pending.call_id
        assert b"<basic>open</basic>" in active.body  # (Bob is registered)
        after = register_bob(client, node, 7200)
        assert after.headers.get("Server") == "presence-sip/lab"
        assert str(after.headers.get("Contact")).endswith(";expires=600")
        assert str(before.headers.get("Contact")).endswith(";expires=7200")
        assert (
            "default_policy 'confirm' -> 'allow'; server_header 'presence-sip' ->"
            " 'presence-sip/lab'; [network.registrar] default_expires 3600 -> 600;"
            " [network.registrar] max_expires 86400 -> 600"
        ) in reloaded
        assert (
            f"WARNING presence_sip.node: ps1: configuration reloaded: listen [udp:127.0.0.1:{port},"
            f" tcp:127.0.0.1:{port}] -> [udp:127.0.0.1:{port}, tcp:127.0.0.1:{port},"
            f" udp:127.0.0.1:{port + 1}]: takes a restart, the values in use are kept"
        ) in reloaded
        client.send(build_request("OPTIONS", f"sip:{DOMAIN}", client), ("127.0.0.1", port + 1))
        assert client.recv(0.3) is None  # (not opened)

        # A file that does not load: one ERROR line, the settings in use kept.
        config.write_text(config.read_text() + "[network.presence]\nmax_subscriptions = -1\n")
        failed = node.hangup("configuration reload failed")
        assert (
            "ERROR presence_sip.node: configuration reload failed, the settings in use are kept:"
            " [network.presence] max_subscriptions must be a whole number >= 1, not -1"
        ) in failed
        assert register_bob(client, node, 60).headers.get("Server") == "presence-sip/lab"

        # The same file again: nothing to take; what waits for a restart is named again.
        write(config, port, "allow", 'server_header = "presence-sip/lab"\n'
              "[network.registrar]\ndefault_expires = 600\nmax_expires = 600",
              more_listen=f', "udp:127.0.0.1:{port + 1}"')  # fmt: skip
        again = node.hangup("takes a restart")
        assert f"{RELOADED}no change" not in again  # (one line: the restart's)
        assert RELOADED not in again
    assert node.process is not None
    assert node.process.poll() is None


def test_log_level_from_the_file_is_set_anew_by_a_reload_unless_the_flag_names_one(
    serve_factory: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    """DEBUG for a while on a live node (a line per response), then back, with no restart:
    Kamailio's ``cfg.set_now_int core debug``.  ``--log-level`` on the command line keeps its
    level whatever the file says."""
    port = free_port()
    config = tmp_path / "net.toml"
    write(config, port, "allow")
    node = serve_factory(config=config, port=port, data_dir=tmp_path / "data", log_level=None)
    debug_line = "DEBUG presence_sip.endpoint: OPTIONS"
    with UdpClient() as client:
        assert client.request(build_request("OPTIONS", f"sip:{DOMAIN}", client), node).status == 200
        write(config, port, "allow", 'log_level = "DEBUG"')
        assert "INFO presence_sip.signals: log level INFO -> DEBUG" in node.hangup("log level")
        assert debug_line not in node.log_text()
        assert client.request(build_request("OPTIONS", f"sip:{DOMAIN}", client), node).status == 200
        assert node.log_text().count(debug_line) == 1
        write(config, port, "allow")
        assert "log level DEBUG -> INFO" in node.hangup("log level")
        assert client.request(build_request("OPTIONS", f"sip:{DOMAIN}", client), node).status == 200
        assert node.log_text().count(debug_line) == 1

    node.stop()
    fixed = serve_factory(config=config, port=port, data_dir=tmp_path / "data", log_level="INFO")
    write(config, port, "allow", 'log_level = "DEBUG"')
    assert "log level" not in fixed.hangup("configuration reloaded")
    with UdpClient() as client:
        assert (
            client.request(build_request("OPTIONS", f"sip:{DOMAIN}", client), fixed).status == 200
        )
    assert debug_line not in fixed.log_text()
