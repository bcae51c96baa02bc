"""Listen addresses: ``udp:127.0.0.1:5060``, ``tcp:[::1]:5060``, ``tls:127.0.0.1:5061``."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from presence_sip.sip.errors import ConfigError

TRANSPORTS = ("udp", "tcp", "tls")
"""The transports a node can listen on (RFC 3261 §18)."""

DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
"""RFC 3261 §19.1.2: 5060 for sip over UDP/TCP, 5061 for TLS."""

_SPEC = re.compile(
    r"(?P<transport>[A-Za-z]+):(?:\[(?P<v6>[^\]]*)\]|(?P<host>[^:\[\]]+))(?::(?P<port>[0-9]+))?"
)


@dataclass(frozen=True, slots=True)
class ListenSpec:
    """One address a node listens on.

    ``host`` is an IP literal (never a name: nothing here resolves DNS); ``port`` may be 0 to let
    the kernel choose (the driver reports the bound port in ``Driver.local_addresses``).
    """

    transport: str
    """``"udp"``, ``"tcp"`` or ``"tls"``."""
    host: str
    """IPv4 or IPv6 literal, without brackets."""
    port: int
    """Port number, 0..65535."""

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ConfigError(f"unknown transport {self.transport!r} (use udp, tcp or tls)")
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            raise ConfigError(f"listen host must be an IP address, not {self.host!r}") from None
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"listen port out of range: {self.port}")

    @property
    def family_version(self) -> int:
        """4 or 6."""
        return ipaddress.ip_address(self.host).version

    @classmethod
    def parse(cls, text: str) -> ListenSpec:
        """Parse ``transport:host[:port]`` (IPv6 hosts in brackets); :class:`ConfigError` if bad."""
        match = _SPEC.fullmatch(text.strip())
        if match is None:
            raise ConfigError(f"bad listen address {text!r} (expected e.g. udp:127.0.0.1:5060)")
        transport = match["transport"].lower()
        if transport not in TRANSPORTS:
            raise ConfigError(f"bad listen address {text!r}: unknown transport {transport!r}")
        host = match["v6"] if match["v6"] is not None else match["host"]
        version = 6 if match["v6"] is not None else 4
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(f"bad listen address {text!r}: host must be an IP address") from None
        if address.version != version:
            raise ConfigError(f"bad listen address {text!r}: IPv6 addresses go in brackets")
        port = int(match["port"]) if match["port"] is not None else DEFAULT_PORTS[transport]
        if port > 65535:
            raise ConfigError(f"bad listen address {text!r}: port out of range")
        return cls(transport, address.compressed, port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


def parse_listen(text: str) -> ListenSpec:
    """Shorthand for :meth:`ListenSpec.parse`."""
    return ListenSpec.parse(text)
