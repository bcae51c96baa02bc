"""RFC 3261 §25 grammar pieces as compiled regular expressions and small scanners.

Each pattern quotes the ABNF rule it implements.  LWS inside a header value has already been folded
to single spaces by the parser (RFC 3261 §7.3.1), so ``SWS`` here is ``[ \\t]*``.
"""

from __future__ import annotations

import re

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" )
TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"  # noqa: S105 - a character class, not a password
TOKEN = re.compile(rf"[{TOKEN_CHARS}]+")

# Method = INVITEm / ... / extension-method ; extension-method = token
METHOD = TOKEN

# word = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" /
#        "(" / ")" / "<" / ">" / ":" / "\" / DQUOTE / "/" / "[" / "]" / "?" / "{" / "}" )
# callid = word [ "@" word ]
CALL_ID = re.compile(
    r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+(?:@[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+)?"
)

# SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT
SIP_VERSION = re.compile(r"SIP/(\d+)\.(\d+)", re.IGNORECASE)

# Status-Code = 3DIGIT
STATUS_CODE = re.compile(r"[0-9]{3}")

# escaped = "%" HEXDIG HEXDIG
_ESCAPED = r"%[0-9A-Fa-f]{2}"
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"

# user = 1*( unreserved / escaped / user-unreserved ) ; user-unreserved = "&" / "=" / "+" / "$" /
#        "," / ";" / "?" / "/"
USER = re.compile(rf"(?:[{_UNRESERVED}&=+$,;?/]|{_ESCAPED})+")
# password = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
PASSWORD = re.compile(rf"(?:[{_UNRESERVED}&=+$,]|{_ESCAPED})*")

# hostname = *( domainlabel "." ) toplabel [ "." ] ; IPv4address
# IPv6reference = "[" IPv6address "]"
# (Hostname kept liberal on label shape; IPv6 per RFC 5118 §4.10 tolerates the 3-colon ABNF bug.)
HOSTNAME = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.?"
)
IPV6_REFERENCE = re.compile(r"\[[0-9A-Fa-f:.]+\]")
HOST = re.compile(rf"{IPV6_REFERENCE.pattern}|{HOSTNAME.pattern}")

# paramchar = param-unreserved / unreserved / escaped ; param-unreserved = "[" / "]" / "/" / ":" /
#             "&" / "+" / "$"
PARAMCHARS = re.compile(rf"(?:[{_UNRESERVED}\[\]/:&+$]|{_ESCAPED})+")

# hname / hvalue = *( hnv-unreserved / unreserved / escaped ) ; hnv-unreserved = "[" / "]" / "/" /
#                  "?" / ":" / "+" / "$"
HNV = re.compile(rf"(?:[{_UNRESERVED}\[\]/?:+$]|{_ESCAPED})*")

# scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
# absoluteURI opaque part: uric-no-slash *uric (no LWS, no brackets, no quotes)
OPAQUE = re.compile(r"[^\s<>\"]+")

# telephone-subscriber (RFC 3966), liberal: global or local number with visual separators
TEL_NUMBER = re.compile(r"\+?[0-9A-Fa-f*#\-.()]+")

# quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
QUOTED_STRING = re.compile(r'"(?:[^"\\\r\n]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*"')

# display-name = *(token LWS) / quoted-string
DISPLAY_TOKENS = re.compile(rf"[{TOKEN_CHARS}]+(?:[ \t]+[{TOKEN_CHARS}]+)*")

# gen-value = token / host / quoted-string
# (plus a bare IPv6address, the form RFC 3261 gives via-received: RFC 5118 §4.5)
GEN_VALUE = re.compile(
    rf"{QUOTED_STRING.pattern}|{IPV6_REFERENCE.pattern}|[0-9A-Fa-f.]*:[0-9A-Fa-f:.]+|[{TOKEN_CHARS}]+"
)

# via-parm = sent-protocol LWS sent-by ; sent-protocol = protocol-name SLASH protocol-version SLASH
# transport ; SLASH = SWS "/" SWS ; sent-by = host [ COLON port ]
VIA_SENT = re.compile(
    rf"[ \t]*([{TOKEN_CHARS}]+)[ \t]*/[ \t]*([{TOKEN_CHARS}]+)[ \t]*/[ \t]*([{TOKEN_CHARS}]+)"
    rf"[ \t]+({HOST.pattern})(?:[ \t]*:[ \t]*([0-9]{{1,5}}))?[ \t]*"
)

# rfc1123-date = wkday "," SP date1 SP time SP "GMT"
RFC1123_DATE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)

# m-type "/" m-subtype
MEDIA_TYPE = re.compile(rf"([{TOKEN_CHARS}]+)[ \t]*/[ \t]*([{TOKEN_CHARS}]+)")
# media-range = ( "*/*" / ( m-type SLASH "*" ) / ( m-type SLASH m-subtype ) ) *( SEMI m-parameter )
MEDIA_RANGE = MEDIA_TYPE

DIGITS = re.compile(r"[0-9]+")

MAX_UINT32 = 2**32 - 1


def split_commas(value: str) -> list[str]:
    """Split a header value at top-level commas (not inside quotes or ``<...>``).

    Items are stripped of surrounding whitespace; empty items are kept so callers can reject them
    (RFC 4475 badinv01).
    """
    if "," not in value:
        return [value.strip()]
    items: list[str] = []
    start = 0
    quoted = False
    angle = False
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            angle = True
        elif ch == ">":
            angle = False
        elif ch == "," and not angle:
            items.append(value[start:i].strip())
            start = i + 1
        i += 1
    items.append(value[start:].strip())
    return items


def unquote(text: str) -> str:
    """Remove the quotes and quoted-pair escapes of a quoted-string (input must be quoted)."""
    inner = text[1:-1]
    if "\\" not in inner:
        return inner
    out: list[str] = []
    i = 0
    while i < len(inner):
        ch = inner[i]
        if ch == "\\" and i + 1 < len(inner):
            i += 1
            ch = inner[i]
        out.append(ch)
        i += 1
    return "".join(out)


# --- Fast paths ---------------------------------------------------------------------------------
# One compiled regex per common header shape, tried before the general scanner.  Each accepts a
# strict SUBSET of what the scanner accepts (no LWS around separators, lower-case ``sip:``, plain
# hostnames, token or plain quoted parameter values), so a match proves the value valid and anything
# else simply takes the general path, which alone decides and names the defect.  The subset property
# is checked by tests/unit/test_parser.py.  Quantifiers are possessive (``++``, ``*+``) wherever the
# next character cannot belong to the repeated part: no backtracking, no super-linear input.
_TOK = rf"[{TOKEN_CHARS}]++"
_FAST_HOSTNAME = r"[A-Za-z0-9]++(?:[.\-][A-Za-z0-9]++)*+"
_FAST_HOST = rf"(?:\[[0-9A-Fa-f:.]++\]|{_FAST_HOSTNAME})"
_FAST_PORT = r"(?:[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]|[0-9]{1,4})"
_FAST_HOSTPORT = rf"{_FAST_HOST}(?::{_FAST_PORT}(?![0-9]))?"
_FAST_QUOTED = r'"[^"\\\r\n<>]*+"'
_FAST_PARAMS = rf"(?:;{_TOK}(?:=(?:{_TOK}|{_FAST_QUOTED}))?)*+"
_FAST_USER = rf"(?:[{_UNRESERVED}&=+$,;?/]++|{_ESCAPED})++"
_FAST_PASSWORD = rf"(?:[{_UNRESERVED}&=+$,]++|{_ESCAPED})*+"
_FAST_URI_PARAM = rf"(?:[{_UNRESERVED}\[\]/:&+$]++|{_ESCAPED})++"
# SIP-URI = "sip:" [ userinfo ] hostport uri-parameters   (no "?" headers on the fast path)
FAST_SIP_URI = re.compile(
    rf"sips?:(?:{_FAST_USER}(?::{_FAST_PASSWORD})?@)?{_FAST_HOSTPORT}"
    rf"(?:;{_FAST_URI_PARAM}(?:={_FAST_URI_PARAM})?)*+"
)
# name-addr = [ display-name ] LAQUOT addr-spec RAQUOT ; or a bare addr-spec (no ';' , '?' in it)
_FAST_BARE_USER = rf"(?:[{_UNRESERVED}&=+$/]++|{_ESCAPED})++"
_FAST_BARE_PASSWORD = rf"(?:[{_UNRESERVED}&=+$]++|{_ESCAPED})*+"
_FAST_NAME_ADDR = (
    rf"(?:(?:{_FAST_QUOTED}[ \t]*+|{_TOK}(?:[ \t]++{_TOK})*+[ \t]*+)?<{FAST_SIP_URI.pattern}>"
    rf"|sips?:(?:{_FAST_BARE_USER}(?::{_FAST_BARE_PASSWORD})?@)?{_FAST_HOSTPORT}){_FAST_PARAMS}"
)
_FAST_LIST_SEP = r"[ \t]*+,[ \t]*+"
FAST_NAME_ADDR = re.compile(_FAST_NAME_ADDR)
FAST_NAME_ADDR_LIST = re.compile(rf"{_FAST_NAME_ADDR}(?:{_FAST_LIST_SEP}{_FAST_NAME_ADDR})*+")
FAST_CONTACT = re.compile(rf"\*|{FAST_NAME_ADDR_LIST.pattern}")
# via-parm with RFC 3261 §20.42 / RFC 3581 rules: branch, received, maddr need a value; ttl and
# rport values are digits.  Other names are generic params.
_VIA_SPECIAL = rf"(?i:branch|received|maddr|ttl|rport)(?![{TOKEN_CHARS}])"
_FAST_VIA_PARAM = (
    rf"(?:;(?:branch|maddr)={_TOK}|;received=(?:{_TOK}|\[[0-9A-Fa-f:.]++\])|;rport(?:=[0-9]++)?"
    rf"|;ttl=[0-9]++|;(?!{_VIA_SPECIAL}){_TOK}(?:=(?:{_TOK}|{_FAST_QUOTED}))?)"
)
_FAST_VIA = rf"SIP/2\.0/{_TOK} {_FAST_HOSTPORT}{_FAST_VIA_PARAM}*+"
FAST_VIA_LIST = re.compile(rf"{_FAST_VIA}(?:{_FAST_LIST_SEP}{_FAST_VIA})*+")
FAST_CSEQ = re.compile(rf"[0-9]{{1,9}} {_TOK}")
FAST_TOKEN_PARAMS = re.compile(rf"{_TOK}{_FAST_PARAMS}")
FAST_MEDIA_TYPE = re.compile(rf"{_TOK}/{_TOK}{_FAST_PARAMS}")
FAST_ACCEPT = re.compile(
    rf"(?:{FAST_MEDIA_TYPE.pattern}(?:{_FAST_LIST_SEP}{FAST_MEDIA_TYPE.pattern})*+)?"
)
FAST_TOKEN_LIST = re.compile(rf"(?:{_TOK}(?:{_FAST_LIST_SEP}{_TOK})*+)?")
FAST_DIGITS = re.compile(r"[0-9]++")
FAST_UINT32 = re.compile(r"[0-9]{1,9}")
FAST_MAX_FORWARDS = re.compile(r"[0-9]{1,2}|[01][0-9]{2}|2[0-4][0-9]|25[0-5]")
# generic-param list alone, for the parameter fast path of the scanner
FAST_PARAMS = re.compile(_FAST_PARAMS)
FAST_PARAM_ITEM = re.compile(rf";({_TOK})(?:=({_TOK}|{_FAST_QUOTED}))?")
# The common Via and SIP-URI shapes in one match each, with groups, for ``uri.py`` to split
# instead of scan: no quoted parameter values, so parameters split on ';' then '=' (same subset
# rule as above: a match is valid, anything else takes the general path).
_SPLIT_VIA_PARAM = (
    rf"(?:;(?:branch|maddr)={_TOK}|;received=(?:{_TOK}|\[[0-9A-Fa-f:.]++\])|;rport(?:=[0-9]++)?"
    rf"|;ttl=[0-9]++|;(?!{_VIA_SPECIAL}){_TOK}(?:={_TOK})?)"
)
SPLIT_VIA = re.compile(
    rf"SIP/2\.0/([A-Za-z]++) ({_FAST_HOSTNAME})(?::({_FAST_PORT}))?((?:{_SPLIT_VIA_PARAM})*+)"
)
SPLIT_SIP_URI = re.compile(
    rf"(sips?):(?:({_FAST_BARE_USER})@)?({_FAST_HOSTNAME})(?::({_FAST_PORT}))?"
    rf"((?:;{_FAST_URI_PARAM}(?:={_FAST_URI_PARAM})?)*+)"
)
