"""``metrics_listen``: the nodes' figures over HTTP for Prometheus (``GET /metrics``).

Kamailio exports the same kind of figures through its ``xhttp_prom`` module; an operator's
monitoring scrapes them every 15 s or so instead of sending SIGUSR1 and reading logs.  This is
the smallest HTTP/1.1 server that does the job, on the event loop beside the nodes: one request
per connection (``Connection: close``), a request head of at most 8 KiB within 5 s, at most 16
connections at once, ``GET``/``HEAD /metrics`` only (404 for another path, 405 for another
method, 400 for a request line it cannot read or an HTTP/1.1 request without one ``Host``).
The figures are read from the parts' own counters when asked for: nothing is counted for this
on the request path.  It has no authentication: listen on loopback or a management
network only (``serve`` warns about any other address).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format's media type."""
MAX_HEAD = 8192
"""Bytes a request head may take (its request line and headers)."""
READ_TIMEOUT = 5.0
"""Seconds a client has to send its request head."""
MAX_CLIENTS = 16
"""Connections served at once; more are closed at once."""


class MetricsServer:
    """Serves ``render()`` at ``GET /metrics`` on ``host:port``."""

    def __init__(self, host: str, port: int, render: Callable[[], str]) -> None:
        self.host = host
        self.port = port
        self._render = render
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen (OSError when the address cannot be bound); :attr:`port` is the real one."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics on http://%s/metrics", _authority(self.host, self.port))
        if not ipaddress.ip_address(self.host).is_loopback:
            log.warning(
                "metrics on %s, not a loopback address: anyone who reaches it reads the node's "
                "figures (no authentication; a management network or a firewall rule)",
                self.host,
            )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._clients):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*self._clients, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or len(self._clients) >= MAX_CLIENTS:
            writer.close()
            return
        self._clients.add(task)
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            except asyncio.LimitOverrunError:
                answer = _response(431, "Request Header Fields Too Large")
            else:
                answer = self.respond(head)
            writer.write(answer)
            await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, OSError):
            pass  # (a client that went away or sent no whole head: nothing to answer)
        finally:
            self._clients.discard(task)
            writer.close()

    def respond(self, head: bytes) -> bytes:
        """The whole response to a request head (sans-IO: the tests call it with bytes)."""
        request_line, *fields = head.decode("latin-1").split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return _response(400, "Bad Request")
        method, target, version = parts
        hosts = sum(f.split(":", 1)[0].strip().lower() == "host" for f in fields if f)
        if hosts > 1 or (version != "HTTP/1.0" and hosts != 1):
            # RFC 9112 §3.2: a 400 to an HTTP/1.1 request without one Host, to any with two
            return _response(400, "Bad Request")
        if target.split("?", 1)[0] != "/metrics":
            return _response(404, "Not Found")
        if method not in ("GET", "HEAD"):
            return _response(405, "Method Not Allowed", extra="Allow: GET, HEAD\r\n")
        try:
            body = self._render().encode()
        except Exception:  # a figure that cannot be read must not stop the node
            log.exception("cannot render the metrics")
            return _response(500, "Internal Server Error")
        return _response(200, "OK", body, CONTENT_TYPE, head_only=method == "HEAD")


def _response(
    status: int,
    reason: str,
    body: bytes = b"",
    content_type: str = "text/plain; charset=utf-8",
    *,
    extra: str = "",
    head_only: bool = False,
) -> bytes:
    if not body and status != 200:
        body = f"{status} {reason}\n".encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    )
    return head.encode() + (b"" if head_only else body)


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


__all__ = ["MetricsServer"]
