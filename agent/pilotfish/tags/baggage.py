"""W3C Baggage (``baggage`` header): read one entry, and add one entry to what a caller set.

Grammar (w3c/baggage, HTTP_HEADER_FORMAT.md)::

    baggage-string = list-member 0*179( OWS "," OWS list-member )
    list-member    = key OWS "=" OWS value *( OWS ";" OWS property )
    key            = token
    value          = *baggage-octet       ; percent-encoded UTF-8

Why our own ~100 lines instead of OpenTelemetry's propagator: the agent may use
the standard library only, and OTel's decoder uses ``unquote_plus`` (a ``+`` in
a value turns into a space, open-telemetry/opentelemetry-python#5566). Here
values are decoded with plain percent-decoding and encoded with ``%20``.

Robustness rules, all from the spec's "limits are minimums, invalid entries MAY
be dropped":
- a malformed list-member is skipped; the rest of the header still counts;
- a header longer than :data:`MAX_HEADER_LENGTH` is ignored on the way in, and
  never produced on the way out (we then leave the caller's baggage untouched);
- several ``baggage`` headers are one list, in order (RFC 7230 §3.2.2).
Nothing in this module raises on bad input.
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple

HEADER = "baggage"
MAX_HEADER_LENGTH = 8192
MAX_MEMBERS = 180
MAX_MEMBER_LENGTH = 4096

# RFC 7230 tchar
_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# baggage-octet = %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E
_VALUE_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F) if c not in (0x22, 0x2C, 0x3B, 0x5C))
# What may stay unescaped when we encode a value: baggage-octets except "%" itself.
_SAFE_SET = _VALUE_CHARS - {"%"}
_SAFE_UNENCODED = "".join(sorted(_SAFE_SET))
_OWS = " \t"


def _decode(value: str) -> Optional[str]:
    if "%" not in value:
        return value
    from urllib.parse import unquote

    try:
        return unquote(value, errors="strict")
    except UnicodeDecodeError:
        return None


def encode_value(value: str) -> str:
    """Percent-encode ``value`` (UTF-8) so it is a valid baggage value."""
    if _SAFE_SET.issuperset(value):
        return value  # every valid tag: no import, no copy
    from urllib.parse import quote

    return quote(value, safe=_SAFE_UNENCODED)


def parse_member(member: str) -> Optional[Tuple[str, str]]:
    """``(key, decoded value)`` of one list-member, or None if it is malformed."""
    if len(member) > MAX_MEMBER_LENGTH:
        return None
    pair = member.split(";", 1)[0]
    key, eq, value = pair.partition("=")
    if not eq:
        return None
    key = key.strip(_OWS)
    value = value.strip(_OWS)
    if not key or not _TOKEN_CHARS.issuperset(key) or not _VALUE_CHARS.issuperset(value):
        return None
    decoded = _decode(value)
    if decoded is None:
        return None
    return key, decoded


def parse(headers: Iterable[str]) -> List[Tuple[str, str]]:
    """Every well-formed ``(key, value)`` of one or more ``baggage`` header values, in order.

    Oversized input yields nothing; members past :data:`MAX_MEMBERS` are dropped.
    """
    values = [h for h in headers if isinstance(h, str)]
    joined = ",".join(values)
    if len(joined) > MAX_HEADER_LENGTH:
        return []
    result: List[Tuple[str, str]] = []
    for member in joined.split(","):
        if len(result) >= MAX_MEMBERS:
            break
        if not member.strip(_OWS):
            continue
        parsed = parse_member(member)
        if parsed is not None:
            result.append(parsed)
    return result


def lookup(header: str, key: str) -> Optional[str]:
    """The decoded value of ``key`` in a ``baggage`` header value (first one wins), or None.

    The fast path of inbound extraction: a header that does not even contain
    the key's text costs one substring search.
    """
    if key not in header or len(header) > MAX_HEADER_LENGTH:
        return None
    count = 0
    for member in header.split(","):
        count += 1
        if count > MAX_MEMBERS:
            return None
        if key not in member:
            continue
        parsed = parse_member(member)
        if parsed is not None and parsed[0] == key:
            return parsed[1]
    return None


def has_key(headers: Sequence[str], key: str) -> bool:
    """True when any list-member of ``headers`` has ``key``, even a malformed one.

    Used before adding our entry: if the caller wrote the key in any form, we
    leave their baggage exactly as it is.
    """
    for header in headers:
        if key not in header:
            continue
        for member in header.split(","):
            if member.split(";", 1)[0].partition("=")[0].strip(_OWS) == key:
                return True
    return False


def with_entry(existing: Sequence[str], key: str, value: str) -> Optional[str]:
    """One ``baggage`` header value: ``existing`` (joined in order) plus ``key=value``.

    None means "write nothing": the key is already there (the caller's value
    wins), or adding the entry would break the size limits. The caller's own
    members are kept byte for byte, malformed ones included: fixing other
    people's baggage is not our business.
    """
    if has_key(existing, key):
        return None
    member = "%s=%s" % (key, encode_value(value))
    kept = [h.strip(_OWS) for h in existing if h.strip(_OWS)]
    if not kept:
        return member
    joined = ",".join(kept)
    members = joined.count(",") + 1
    if members + 1 > MAX_MEMBERS or len(joined) + 1 + len(member) > MAX_HEADER_LENGTH:
        return None
    return joined + "," + member
