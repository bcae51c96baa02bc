"""``GET /metrics``: the nodes' figures in the Prometheus text format, and the small HTTP server
that answers it (its responses byte-exact; the real socket in ``test_serve_basic``)."""

from __future__ import annotations

import re

import pytest

from presence_sip.cli.main import build_parser
from presence_sip.cli.serve_config import load_configs
from presence_sip.runtime.metrics_http import MetricsServer
from presence_sip.sip.errors import ConfigError
from presence_sip.status import METRICS, NodeStatus, metrics_text

PS1 = NodeStatus(
    name="ps1", uptime=90.25, aors=3, bindings=4, subscriptions=7, publications=2,
    transactions=5, connections=1, received=120, responses_sent=110, by_class={2: 100, 4: 10},
    requests_sent=9, auth_failed=6, auth_blocked=2, flood_dropped=40, source_refused=1,
    publications_ended=3, tls_failed=8, keepalives=11, subscriptions_refused=4, stun_answered=5,
)  # fmt: skip
REGISTRAR = NodeStatus(
    name='odd "name"', uptime=5, aors=0, bindings=0, subscriptions=None, publications=None,
    transactions=0, connections=0, received=0, responses_sent=0, storage_ok=False,
)  # fmt: skip
SAMPLE = re.compile(
    r'presence_sip_[a-z_]+\{node="(?:[^"\\]|\\.)*"(?:,class="[1-6]xx")?\} \d+(\.\d+)?'
)


def samples(text: str) -> dict[str, str]:
    return dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))


def test_every_figure_of_the_status_line_is_a_metric_labelled_by_node() -> None:
    text = metrics_text([PS1, REGISTRAR])
    got = samples(text)
    assert got['presence_sip_uptime_seconds{node="ps1"}'] == "90.250"
    assert got['presence_sip_subscriptions{node="ps1"}'] == "7"
    assert got['presence_sip_publications_ended_total{node="ps1"}'] == "3"
    assert got['presence_sip_subscriptions_refused_total{node="ps1"}'] == "4"
    assert got['presence_sip_responses_sent_total{node="ps1",class="2xx"}'] == "100"
    assert got['presence_sip_responses_sent_total{node="ps1",class="4xx"}'] == "10"
    assert got['presence_sip_auth_failures_total{node="ps1"}'] == "6"
    assert got['presence_sip_tls_handshakes_failed_total{node="ps1"}'] == "8"
    assert got['presence_sip_udp_keepalives_total{node="ps1"}'] == "11"
    assert got['presence_sip_stun_answered_total{node="ps1"}'] == "5"
    assert got['presence_sip_flood_dropped_total{node="ps1"}'] == "40"
    assert got['presence_sip_source_connections_refused_total{node="ps1"}'] == "1"
    assert got['presence_sip_storage_ok{node="ps1"}'] == "1"
    # A registrar-only node has no presence figures and no flood guard: no sample, not 0.
    odd = 'node="odd \\"name\\""'
    assert got[f"presence_sip_storage_ok{{{odd}}}"] == "0"
    assert f"presence_sip_subscriptions{{{odd}}}" not in got
    assert f"presence_sip_publications_ended_total{{{odd}}}" not in got
    assert f"presence_sip_subscriptions_refused_total{{{odd}}}" not in got
    assert f"presence_sip_flood_dropped_total{{{odd}}}" not in got
    for name, kind, _, _ in METRICS:
        assert f"# TYPE presence_sip_{name} {kind}\n" in text
    assert all(
        line.startswith(("# HELP presence_sip_", "# TYPE presence_sip_")) or SAMPLE.fullmatch(line)
        for line in text.splitlines()
    )
    assert text.endswith("\n")


def test_a_metric_no_node_has_is_left_out_whole() -> None:
    text = metrics_text([REGISTRAR])
    assert "presence_sip_subscriptions" not in text
    assert "presence_sip_responses_sent_total" not in text  # (nothing answered yet)


def server() -> MetricsServer:
    return MetricsServer("127.0.0.1", 0, lambda: metrics_text([PS1]))


def test_get_metrics_is_the_exposition_with_its_media_type() -> None:
    answer = server().respond(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9091\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close"
    )
    assert body == metrics_text([PS1]).encode()
    head_only = server().respond(b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n")
    assert head_only == answer[: len(head) + 4]


@pytest.mark.parametrize(
    ("request_head", "status_line", "extra"),
    [
        (
            b"POST /metrics HTTP/1.1\r\nHost: a\r\n\r\n",
            b"HTTP/1.1 405 Method Not Allowed",
            b"Allow: GET, HEAD",
        ),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"HTTP/1.1 404 Not Found", None),
        (b"GET /metrics/x HTTP/1.0\r\n\r\n", b"HTTP/1.1 404 Not Found", None),
        (b"GET /metrics\r\n\r\n", b"HTTP/1.1 400 Bad Request", None),
        # RFC 9112 §3.2: an HTTP/1.1 request needs exactly one Host, any request at most one
        (b"GET /metrics HTTP/1.1\r\nAccept: */*\r\n\r\n", b"HTTP/1.1 400 Bad Request", None),
        (
            b"GET /metrics HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n",
            b"HTTP/1.1 400 Bad Request",
            None,
        ),
        (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
            b"HTTP/1.1 400 Bad Request",
            None,
        ),
    ],
)
def test_anything_else_gets_its_error_and_no_figures(
    request_head: bytes, status_line: bytes, extra: bytes | None
) -> None:
    answer = server().respond(request_head)
    assert answer.split(b"\r\n", 1)[0] == status_line
    assert b"presence_sip_" not in answer
    if extra is not None:
        assert extra in answer.split(b"\r\n")


def test_a_figure_that_cannot_be_read_is_a_500_not_a_crash() -> None:
    def broken() -> str:
        raise RuntimeError("a bug")

    answer = MetricsServer("127.0.0.1", 0, broken).respond(b"GET /metrics HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("127.0.0.1:9091", ("127.0.0.1", 9091)), ("[::1]:9100", ("::1", 9100))],
)
def test_metrics_listen_takes_an_ip_and_a_port(value: str, expected: tuple[str, int]) -> None:
    args = build_parser().parse_args(["serve", "--metrics-listen", value])
    [config] = load_configs(args)
    assert config.metrics_listen == expected


@pytest.mark.parametrize("value", ["localhost:9091", "127.0.0.1", "127.0.0.1:http", ":9091",
                                   "127.0.0.1:70000"])  # fmt: skip
def test_metrics_listen_refuses_names_and_bad_ports(value: str) -> None:
    args = build_parser().parse_args(["serve", "--metrics-listen", value])
    with pytest.raises(ConfigError, match="metrics_listen must be IP:PORT"):
        load_configs(args)
