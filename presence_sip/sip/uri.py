"""URIs and the structured header values built on them: SipUri, TelUri, AbsoluteUri, NameAddr, Via.

Everything keeps the text exactly as received (%-escapes are never decoded here: RFC 4475 §3.1.1.3,
"never unescape twice"), and ``str()`` gives the canonical text back.  Comparisons that need
unescaping use :func:`unescape` explicitly.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from typing import Final, NamedTuple

from . import grammar
from .errors import SipParseError
from .memo import remember

Params = tuple[tuple[str, str | None], ...]
"""Ordered ``;name[=value]`` parameters, names and values exactly as received."""

# The value types below are NamedTuples: immutable as frozen dataclasses are, but built without one
# object.__setattr__ call per field (4-5x cheaper), and every message makes several (issue 8).

_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")


def unescape(text: str) -> str:
    """Decode %HH escapes once (RFC 3261 §19.1.4 comparison)."""
    if "%" not in text:
        return text
    return _PERCENT.sub(lambda m: chr(int(m.group(1), 16)), text)


def get_param(params: Params, name: str) -> str | None:
    """Value of the first parameter called ``name`` (case-insensitive); ``""`` for a flag."""
    lname = name.lower()
    for key, value in params:
        if key == lname or key.lower() == lname:  # the usual lower-case name: no lower() call
            return "" if value is None else value
    return None


def has_param(params: Params, name: str) -> bool:
    lname = name.lower()
    return any(key.lower() == lname for key, _ in params)


def format_params(params: Params) -> str:
    return "".join([f";{k}" if v is None else f";{k}={v}" for k, v in params])


def _parse_uri_params(text: str, what: str) -> Params:
    """``*( ";" uri-parameter )`` where text starts after the first ';' (no LWS allowed)."""
    params: list[tuple[str, str | None]] = []
    for item in text.split(";"):
        name, sep, value = item.partition("=")
        if not grammar.PARAMCHARS.fullmatch(name) or (
            sep and not grammar.PARAMCHARS.fullmatch(value)
        ):
            raise SipParseError(f"Malformed {what} parameter")
        params.append((name, value if sep else None))
    return tuple(params)


class SipUri(NamedTuple):
    """A ``sip:`` or ``sips:`` URI (RFC 3261 §19.1)."""

    scheme: str
    user: str | None
    host: str
    port: int | None = None
    password: str | None = None
    params: Params = ()
    headers: str | None = None
    """The raw ``?hname=hvalue&...`` part without the '?', or None."""

    def __str__(self) -> str:
        user = self.user
        if user is None:
            text = f"{self.scheme}:{self.host}"
        elif self.password is None:
            text = f"{self.scheme}:{user}@{self.host}"
        else:
            text = f"{self.scheme}:{user}:{self.password}@{self.host}"
        if self.port is not None:
            text += f":{self.port}"
        if self.params:
            text += format_params(self.params)
        if self.headers is not None:
            text += "?" + self.headers
        return text

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    @property
    def transport(self) -> str | None:
        value = self.param("transport")
        return value.lower() if value else None

    @property
    def aor(self) -> str:
        """Address of record: scheme, user and host (lower-case host), no port or params."""
        user = f"{unescape(self.user)}@" if self.user else ""
        return f"{self.scheme.lower()}:{user}{self.host.lower()}"

    def with_params(self, params: Params) -> SipUri:
        return SipUri(
            self.scheme, self.user, self.host, self.port, self.password, params, self.headers
        )


class TelUri(NamedTuple):
    """A ``tel:`` URI (RFC 3966), number with visual separators as received."""

    number: str
    params: Params = ()

    def __str__(self) -> str:
        return f"tel:{self.number}{format_params(self.params)}"

    @property
    def scheme(self) -> str:
        return "tel"

    @property
    def aor(self) -> str:
        return "tel:" + "".join(ch for ch in self.number if ch not in "-.()")


class AbsoluteUri(NamedTuple):
    """Any other URI scheme (RFC 4475 unkscm, novelsc, unksm2): parsed, never routed on."""

    scheme: str
    opaque: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.opaque}"

    @property
    def aor(self) -> str:
        return str(self)


Uri = SipUri | TelUri | AbsoluteUri


_URI_CACHE: Final[dict[str, Uri]] = {}
"""URIs already parsed, by text (the same Request-URIs, From and To URIs recur between messages;
the values are frozen, so sharing them is safe)."""


def parse_uri(text: str) -> Uri:
    """Parse a URI; raises :class:`SipParseError` (400) when it is malformed."""
    uri = _URI_CACHE.get(text)
    if uri is None:
        uri = remember(_URI_CACHE, text, _parse_uri(text))
    return uri


_SPLIT_SIP_URI = grammar.SPLIT_SIP_URI
"""``sip:user@host:port;params`` (the usual shape) in one match; anything else is scanned."""


def _parse_uri(text: str) -> Uri:
    match = _SPLIT_SIP_URI.fullmatch(text)
    if match is not None:
        scheme, user, host, port, param_text = match.groups()
        params = _split_params(param_text) if param_text else ()
        return SipUri(scheme, user, host, None if port is None else int(port), None, params)
    scheme, sep, rest = text.partition(":")
    if not sep or not grammar.SCHEME.fullmatch(scheme):
        raise SipParseError("Malformed URI")
    lscheme = scheme.lower()
    if lscheme in ("sip", "sips"):
        return _parse_sip_uri(lscheme, rest)
    if lscheme == "tel":
        return _parse_tel_uri(rest)
    if not grammar.OPAQUE.fullmatch(rest):
        raise SipParseError("Malformed URI")
    return AbsoluteUri(scheme, rest)


def _parse_sip_uri(scheme: str, rest: str) -> SipUri:
    user: str | None = None
    password: str | None = None
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, colon, pw = userinfo.partition(":")
        if not grammar.USER.fullmatch(user) or (colon and not grammar.PASSWORD.fullmatch(pw)):
            raise SipParseError("Malformed URI user part")
        password = pw if colon else None
    headers: str | None = None
    qmark = rest.find("?")
    if qmark >= 0:
        rest, headers = rest[:qmark], rest[qmark + 1 :]
        for item in headers.split("&"):
            hname, eq, hvalue = item.partition("=")
            if (
                not hname
                or not eq
                or not grammar.HNV.fullmatch(hname)
                or not grammar.HNV.fullmatch(hvalue)
            ):
                raise SipParseError("Malformed URI headers")
    hostport, semi, param_text = rest.partition(";")
    params = _parse_uri_params(param_text, "URI") if semi else ()
    host, port = _split_hostport(hostport)
    return SipUri(scheme, user, host, port, password, params, headers)


def _split_hostport(hostport: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        end = hostport.find("]")
        host, port_text = hostport[: end + 1], hostport[end + 1 :]
        if end < 0 or not grammar.IPV6_REFERENCE.fullmatch(host):
            raise SipParseError("Malformed IPv6 reference")
        if port_text and not port_text.startswith(":"):
            raise SipParseError("Malformed host")
        port_text = port_text[1:] if port_text else ""
        has_port = bool(port_text) or hostport.endswith(":")
    else:
        host, colon, port_text = hostport.partition(":")
        has_port = bool(colon)
        if not grammar.HOSTNAME.fullmatch(host):
            raise SipParseError("Malformed host")
    if not has_port:
        return host, None
    if not port_text.isdigit() or len(port_text) > 5 or int(port_text) > 65535:
        raise SipParseError("Malformed port")
    return host, int(port_text)


def _parse_tel_uri(rest: str) -> TelUri:
    number, semi, param_text = rest.partition(";")
    if not grammar.TEL_NUMBER.fullmatch(number):
        raise SipParseError("Malformed tel URI")
    params = _parse_uri_params(param_text, "tel URI") if semi else ()
    return TelUri(number, params)


_SIMPLE_PARAMS = re.compile(rf"(?:;[{grammar.TOKEN_CHARS}]+(?:=[{grammar.TOKEN_CHARS}]+)?)+")
"""``;name=value;flag``... with token names and values and no LWS: split, not scanned."""


def _split_params(text: str) -> Params:
    """``;name=value;flag``... already proven well-formed (no LWS, no quoted values)."""
    params: list[tuple[str, str | None]] = []
    for item in text[1:].split(";"):
        name, sep, given = item.partition("=")
        params.append((name, given if sep else None))
    return tuple(params)


def parse_header_params(text: str, what: str) -> Params:
    """``*( SEMI generic-param )`` with LWS allowed around ';' and '='.

    ``text`` starts at (or before whitespace preceding) the first ';'.  Empty parameters
    (``;;``) are malformed (RFC 4475 badinv01).
    """
    if not text:
        return ()
    if _SIMPLE_PARAMS.fullmatch(text):  # the usual shape: one regex instead of a scan per char
        return _split_params(text)
    params: list[tuple[str, str | None]] = []
    pos = 0
    n = len(text)
    while pos < n:
        while pos < n and text[pos] in " \t":
            pos += 1
        if pos == n:
            break
        if text[pos] != ";":
            raise SipParseError(f"Malformed {what}")
        pos += 1
        while pos < n and text[pos] in " \t":
            pos += 1
        match = grammar.TOKEN.match(text, pos)
        if match is None:
            raise SipParseError(f"Malformed {what} parameter")
        name = match.group()
        pos = match.end()
        while pos < n and text[pos] in " \t":
            pos += 1
        value: str | None = None
        if pos < n and text[pos] == "=":
            pos += 1
            while pos < n and text[pos] in " \t":
                pos += 1
            vmatch = grammar.GEN_VALUE.match(text, pos)
            if vmatch is None:
                raise SipParseError(f"Malformed {what} parameter")
            value = vmatch.group()
            pos = vmatch.end()
        params.append((name, value))
    return tuple(params)


class NameAddr(NamedTuple):
    """``name-addr`` or ``addr-spec`` plus header parameters (From, To, Contact, Route...)."""

    uri: Uri
    display_name: str | None = None
    """As received: a quoted-string with its quotes, or a token sequence; None when absent."""
    params: Params = ()
    bracketed: bool = True

    def __str__(self) -> str:
        uri = str(self.uri)
        if self.bracketed:
            head = f"{self.display_name} <{uri}>" if self.display_name else f"<{uri}>"
        else:
            head = uri
        return head + format_params(self.params) if self.params else head

    @property
    def tag(self) -> str | None:
        return get_param(self.params, "tag")

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    def with_param(self, name: str, value: str | None) -> NameAddr:
        kept = tuple(p for p in self.params if p[0].lower() != name.lower())
        return NameAddr(
            self.uri, self.display_name, (*kept, (name, value)), self.bracketed or bool(kept)
        )


_NAME_ADDR_CACHE: Final[dict[str, NameAddr]] = {}
"""Name-addrs already parsed, by text (without the tag: see :func:`_tagged_name_addr`)."""

_TAG_PARAM: Final = ";tag="


def parse_name_addr(text: str, what: str) -> NameAddr:
    """Parse one ``(name-addr / addr-spec) *(SEMI param)`` item; ``what`` names the header in
    the error raised."""
    found = _NAME_ADDR_CACHE.get(text)
    if found is None:
        found = _tagged_name_addr(text, what)
        if found is None:
            found = remember(_NAME_ADDR_CACHE, text, _parse_name_addr(text, what))
    return found


def _tagged_name_addr(text: str, what: str) -> NameAddr | None:
    """``<uri>;tag=TOKEN`` from the memo entry of ``<uri>``, or None for any other shape.

    A From or To with a tag is new with every dialog (every call of a load test): memoised by
    whole text, each would be parsed once and only push the recurring entries out.  The part
    before the tag recurs (the same user, To before the dialog), so that part is memoised.  The
    shape is the one the full parse reads the same way: the tag is the only header parameter,
    right after the '>', and its value is a token, so the ';tag=' found last cannot sit in a
    quoted display name or inside the brackets."""
    cut = text.rfind(_TAG_PARAM)
    if cut <= 0 or text[cut - 1] != ">":
        return None
    tag = text[cut + len(_TAG_PARAM) :]
    if grammar.TOKEN.fullmatch(tag) is None:
        return None
    head = parse_name_addr(text[:cut], what)
    if head.params or not head.bracketed:
        return None
    return NameAddr(head.uri, head.display_name, (("tag", tag),), True)


def _parse_name_addr(text: str, what: str) -> NameAddr:
    text = text.strip(" \t")
    display: str | None = None
    rest = text
    if text.startswith('"'):
        match = grammar.QUOTED_STRING.match(text)
        if match is None:
            raise SipParseError(f"Malformed {what}: unterminated quoted string")
        display = match.group()
        rest = text[match.end() :].lstrip(" \t")
        if not rest.startswith("<"):
            raise SipParseError(f"Malformed {what}")
    else:
        lt = text.find("<")
        if lt > 0:
            candidate = text[:lt].rstrip(" \t")
            if not grammar.DISPLAY_TOKENS.fullmatch(candidate):
                raise SipParseError(f"Malformed {what}: bad display name")
            display = candidate
            rest = text[lt:]
    if rest.startswith("<"):
        gt = rest.find(">")
        if gt < 0:
            raise SipParseError(f"Malformed {what}: missing '>'")
        uri_text = rest[1:gt]
        if not uri_text or uri_text != uri_text.strip(" \t"):
            raise SipParseError(f"Malformed {what}: spaces in addr-spec")
        uri = parse_uri(uri_text)
        params = parse_header_params(rest[gt + 1 :], what)
        return NameAddr(uri, display, params, True)
    # addr-spec without brackets: parameters after ';' belong to the header (RFC 3261 §20.10)
    semi = rest.find(";")
    uri_text = rest if semi < 0 else rest[:semi]
    uri_text = uri_text.rstrip(" \t")
    if not uri_text or " " in uri_text or "\t" in uri_text:
        raise SipParseError(f"Malformed {what}: spaces in addr-spec")
    uri = parse_uri(uri_text)
    if isinstance(uri, SipUri) and uri.headers is not None:
        # RFC 3261 §20: a URI with '?' headers must be enclosed in <> (RFC 4475 regbadct)
        raise SipParseError(f"Malformed {what}: URI with headers must be in <>")
    params = parse_header_params(rest[semi:], what) if semi >= 0 else ()
    return NameAddr(uri, None, params, False)


class Via(NamedTuple):
    """One ``via-parm`` (RFC 3261 §20.42, RFC 3581 rport)."""

    transport: str
    host: str
    port: int | None = None
    params: Params = ()
    protocol: str = "SIP/2.0"

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.protocol}/{self.transport} {self.host}{port}{format_params(self.params)}"

    @property
    def branch(self) -> str | None:
        return get_param(self.params, "branch")

    @property
    def received(self) -> str | None:
        return get_param(self.params, "received")

    @property
    def rport(self) -> int | bool | None:
        """None: absent; True: present without a value (a request); int: filled in."""
        for key, value in self.params:
            if key.lower() == "rport":
                if value is None:
                    return True
                return int(value) if value.isdigit() else None
        return None

    @property
    def maddr(self) -> str | None:
        return get_param(self.params, "maddr")

    @property
    def ttl(self) -> int | None:
        value = get_param(self.params, "ttl")
        return int(value) if value and value.isdigit() else None

    def with_params(self, params: Params) -> Via:
        return Via(self.transport, self.host, self.port, params, self.protocol)


_SIMPLE_VIA_SENT = re.compile(
    r"SIP/2\.0/([A-Za-z]++) ([A-Za-z0-9]++(?:[.\-][A-Za-z0-9]++)*+)(?::([0-9]{1,5}))?(?=;|$)"
)
"""``SIP/2.0/UDP host[:port]`` with a plain hostname or IPv4 address and no LWS: a subset of
:data:`grammar.VIA_SENT` that needs no backtracking (the shape every common UA sends)."""


_SPLIT_VIA = grammar.SPLIT_VIA
"""A whole usual via-parm, its parameters already checked (branch, received, rport...)."""

_c_split_via: Callable[[str, type[Via]], Via | None] | None = None
"""The C extension's first path of :func:`parse_via` (``_speedups.c`` ``split_via``: a subset of
:data:`_SPLIT_VIA`, the same Via; issue 8); None when not compiled or ``PRESENCE_SIP_PURE=1``."""
if not os.environ.get("PRESENCE_SIP_PURE"):
    try:
        from . import _speedups
    except ImportError:  # not compiled: the regex paths
        pass
    else:
        _c_split_via = _speedups.split_via


def parse_via(item: str) -> Via:
    """Parse one comma-separated item of a Via header."""
    if _c_split_via is not None:
        via = _c_split_via(item, Via)
        if via is not None:
            return via
    split = _SPLIT_VIA.fullmatch(item)
    if split is not None:
        transport, host, port, param_text = split.groups()
        params = _split_params(param_text) if param_text else ()
        return Via(transport.upper(), host, None if port is None else int(port), params)
    match = _SIMPLE_VIA_SENT.match(item)
    if match is not None:
        transport, host, port = match.groups()
        protocol = "SIP/2.0"
    else:
        match = grammar.VIA_SENT.match(item)
        if match is None:
            raise SipParseError("Malformed Via")
        name, version, transport, host, port = match.groups()
        protocol = f"{name.upper()}/{version}"
    if port is not None and int(port) > 65535:
        raise SipParseError("Malformed Via")
    params = parse_header_params(item[match.end() :], "Via")
    for key, value in params:
        lkey = key.lower()
        if lkey in ("ttl", "rport") and value is not None and not value.isdigit():
            raise SipParseError("Malformed Via")
        if lkey in ("branch", "received", "maddr") and not value:
            raise SipParseError("Malformed Via")
    return Via(transport.upper(), host, int(port) if port else None, params, protocol)


_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")

_IP_HOSTS: Final[dict[str, bool]] = {}
"""Answers of :func:`is_ip` (the same few hosts recur: a dict hit instead of a regex match)."""


def hostport(host: str, port: int | None = None) -> str:
    """``host[:port]`` as a SIP URI or Via writes it: an IPv6 address as a ``[reference]``
    (RFC 3261 §25.1 ``IPv6reference``; ``sip:::1:5060`` is no URI)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return host if port is None else f"{host}:{port}"


def is_ip(host: str) -> bool:
    """Is ``host`` an IPv4 address, or an IPv6 address bare or as a ``[reference]``?"""
    found = _IP_HOSTS.get(host)
    if found is None:
        found = remember(_IP_HOSTS, host, _is_ip(host))
    return found


def _is_ip(host: str) -> bool:
    if _IPV4.fullmatch(host):
        return True
    if ":" not in host:
        return False
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
