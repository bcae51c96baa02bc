"""A small scripted SIP user agent over UDP (the demo's watcher and publisher, and tests).

It speaks through the same sans-IO message layer as the nodes: builds requests, retransmits them
on RFC 3261 Timer E (T1 doubling to T2) until a final response or Timer F, answers a 401/407 once
with digest credentials, and answers every incoming request (NOTIFY) with 200 while queueing it
for the script to read.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from presence_sip.auth.digest import build_authorization
from presence_sip.sip import (
    Request,
    Response,
    SipParseError,
    make_response,
    parse_message,
    to_bytes,
)
from presence_sip.sip.uri import hostport

T1 = 0.5
T2 = 4.0


@dataclass(slots=True)
class Dialog:
    """What an agent remembers of a subscription dialog it created."""

    call_id: str
    local_tag: str
    remote_tag: str | None = None
    cseq: int = 1
    route: list[str] = field(default_factory=list)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, agent: SipAgent) -> None:
        self.agent = agent

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.agent._received(data, addr)


class SipAgent:
    """See the module docstring.  ``async with SipAgent(...) as agent:`` binds and closes."""

    def __init__(self, user: str, domain: str, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.user = user
        self.domain = domain
        self.host = host
        self.port = port
        self.transport: asyncio.DatagramTransport | None = None
        self.requests: asyncio.Queue[Request] = asyncio.Queue()
        self._waiting: dict[str, asyncio.Future[Response]] = {}
        self._branches = itertools.count(1)
        self._seen: set[tuple[str, str]] = set()

    async def __aenter__(self) -> SipAgent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(self.host, self.port)
        )
        self.transport = transport
        self.port = transport.get_extra_info("sockname")[1]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain}"

    @property
    def contact(self) -> str:
        return f"<sip:{self.user}@{hostport(self.host, self.port)}>"

    def new_dialog(self) -> Dialog:
        return Dialog(
            call_id=secrets.token_hex(8) + "@" + self.host, local_tag=secrets.token_hex(4)
        )

    async def request(
        self,
        method: str,
        uri: str,
        destination: tuple[str, int],
        *,
        to: str | None = None,
        dialog: Dialog | None = None,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        password: str | None = None,
        timeout: float = 32.0,
    ) -> Response:
        """Send a request (a new one, or in ``dialog``) and return its final response."""
        dialog = dialog or self.new_dialog()
        response = await self._transaction(
            method, uri, destination, to, dialog, headers, body, timeout
        )
        if response.status in (401, 407) and password is not None:
            challenge_name = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
            challenge = response.headers.get(challenge_name) or ""
            credentials = build_authorization(
                challenge,
                username=self.user,
                password=password,
                method=method,
                uri=uri,
                cnonce=secrets.token_hex(8),
            )
            auth_header = "Authorization" if response.status == 401 else "Proxy-Authorization"
            dialog.cseq += 1
            response = await self._transaction(
                method,
                uri,
                destination,
                to,
                dialog,
                [*headers, (auth_header, credentials)],
                body,
                timeout,
            )
        if response.status < 300 and dialog.remote_tag is None:
            dialog.remote_tag = response.to.tag
            dialog.route = list(reversed(response.headers.values("Record-Route")))
        return response

    async def _transaction(
        self,
        method: str,
        uri: str,
        destination: tuple[str, int],
        to: str | None,
        dialog: Dialog,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        timeout: float,
    ) -> Response:
        branch = f"z9hG4bK-{secrets.token_hex(6)}-{next(self._branches)}"
        to_value = f"<{to or uri}>" + (f";tag={dialog.remote_tag}" if dialog.remote_tag else "")
        lines = [
            ("Via", f"SIP/2.0/UDP {hostport(self.host, self.port)};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<{self.aor}>;tag={dialog.local_tag}"),
            ("To", to_value),
            ("Call-ID", dialog.call_id),
            ("CSeq", f"{dialog.cseq} {method}"),
            ("Contact", self.contact),
            *[("Route", route) for route in dialog.route],
            *headers,
        ]
        dialog.cseq += 1
        request = Request(method, uri, lines, body)
        data = to_bytes(request)
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiting[branch] = future
        try:
            return await asyncio.wait_for(self._retransmit(data, destination, future), timeout)
        finally:
            self._waiting.pop(branch, None)

    async def _retransmit(
        self, data: bytes, destination: tuple[str, int], future: asyncio.Future[Response]
    ) -> Response:
        interval = T1
        while True:
            assert self.transport is not None
            self.transport.sendto(data, destination)
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(future), interval)
            interval = min(interval * 2, T2)

    async def next_request(self, method: str = "NOTIFY", timeout: float = 10.0) -> Request:
        """The next incoming request with ``method`` (others are discarded)."""
        async with asyncio.timeout(timeout):
            while True:
                request = await self.requests.get()
                if request.method == method:
                    return request

    def _received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            message = parse_message(data)
        except SipParseError:
            return
        if isinstance(message, Response):
            if message.status < 200:
                return
            future = self._waiting.get(message.top_via.branch or "")
            if future is not None and not future.done():
                future.set_result(message)
            return
        if message.method != "ACK" and self.transport is not None:
            self.transport.sendto(to_bytes(make_response(message, 200)), addr)
        key = (message.top_via.branch or "", message.method)
        if key not in self._seen:  # a retransmission is answered again, not queued again
            self._seen.add(key)
            self.requests.put_nowait(message)
