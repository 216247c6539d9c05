"""Entry tagging: lane rules that tag untagged requests at the first Python service.

A gray release usually starts at a gateway that stamps a tag header. When the
first hop is a Python service, its own policy can do that instead: the app's
central config may carry a ``lanes`` list (kept by the agent in
``settings.current().central_extra["lanes"]``), tried in order on every
*untagged* request; the first lane that matches gives the request its tag.

A lane is an object::

    {"name": "beta-users",            # required, unique; shows in logs and /status
     "tag": "gray",                   # required; a valid tag (k8s label value)
     "match": {...}}                  # required; exactly one of the forms below

Match forms:

``{"header": "x-user-group", "values": ["beta", "staff"]}``
    the request header (case-insensitive name) equals one of ``values``
    (``"value": "beta"`` is shorthand for one value). Header values compare
    exactly, after trimming spaces.
``{"cookie": "lane", "values": ["gray"]}``
    the named cookie equals one of ``values``.
``{"percent": 10, "hash_on": {"header": "x-user-id"}}`` (or ``{"cookie": "uid"}``)
    a stable share of keys: ``crc32(lane name + ":" + key) % 10000 < percent*100``.
    The same key always lands in the same lane, in every process and every
    service; raising ``percent`` only adds keys (nobody flips back and forth).
    A request without the key never matches: an anonymous request is never
    gray by chance.

An invalid lane is skipped with one warning naming the field
(``lanes[2].match.percent: ...``); the other lanes keep working.
"""

from __future__ import annotations

import zlib
from typing import Any, Callable, List, Optional, Tuple

from pilotfish import log
from pilotfish.tags.context import valid_tag

HeaderGetter = Callable[[str], Optional[str]]


class Lane:
    """One compiled lane rule. ``source`` is ``header`` or ``cookie``; ``name`` is lower-case for headers."""

    __slots__ = ("name", "tag", "source", "key", "environ_key", "values", "threshold")

    def __init__(
        self,
        name: str,
        tag: str,
        source: str,
        key: str,
        values: Optional[frozenset] = None,
        percent: Optional[float] = None,
    ) -> None:
        self.name = name
        self.tag = tag
        self.source = source
        self.key = key.lower() if source == "header" else key
        self.environ_key = "HTTP_" + key.upper().replace("-", "_") if source == "header" else ""
        self.values = values
        self.threshold = None if percent is None else int(round(percent * 100))

    def matches(self, value: Optional[str]) -> bool:
        if value is None:
            return False
        if self.values is not None:
            return value.strip(" \t") in self.values
        bucket = zlib.crc32(("%s:%s" % (self.name, value)).encode("utf-8", "surrogatepass")) % 10000
        return bucket < (self.threshold or 0)

    def describe(self) -> dict:
        out: dict = {"name": self.name, "tag": self.tag, self.source: self.key}
        if self.values is not None:
            out["values"] = sorted(self.values)
        else:
            out["percent"] = (self.threshold or 0) / 100.0
        return out


class LaneError(ValueError):
    """A lane rule is invalid; the message starts with the field's path."""


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise LaneError("%s: expected a non-empty string, got %r" % (where, value))
    return value.strip()


def _source(spec: Any, where: str) -> Tuple[str, str]:
    if not isinstance(spec, dict):
        raise LaneError("%s: expected an object with 'header' or 'cookie', got %r" % (where, spec))
    kinds = [k for k in ("header", "cookie") if k in spec]
    if len(kinds) != 1:
        raise LaneError("%s: expected exactly one of 'header' or 'cookie'" % where)
    return kinds[0], _text(spec[kinds[0]], "%s.%s" % (where, kinds[0]))


def compile_lane(raw: Any, index: int) -> Lane:
    """Check one raw lane object and turn it into a :class:`Lane`; raise :class:`LaneError`."""
    where = "lanes[%d]" % index
    if not isinstance(raw, dict):
        raise LaneError("%s: expected an object, got %r" % (where, raw))
    name = _text(raw.get("name"), where + ".name")
    tag = valid_tag(raw.get("tag", None) or "")
    if tag is None:
        raise LaneError(
            "%s.tag: expected a tag (letters, digits, '-', '_', '.'; at most 63), got %r"
            % (where, raw.get("tag"))
        )
    match = raw.get("match")
    if not isinstance(match, dict):
        raise LaneError("%s.match: expected an object, got %r" % (where, match))
    if "percent" in match:
        percent = match["percent"]
        if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 <= percent <= 100:
            raise LaneError("%s.match.percent: expected a number from 0 to 100, got %r" % (where, percent))
        source, key = _source(match.get("hash_on"), where + ".match.hash_on")
        return Lane(name, tag, source, key, percent=float(percent))
    source, key = _source({k: v for k, v in match.items() if k in ("header", "cookie")}, where + ".match")
    if "values" in match:
        values = match["values"]
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            raise LaneError("%s.match.values: expected a non-empty list of strings, got %r" % (where, values))
    elif "value" in match:
        values = [_text(match["value"], where + ".match.value")]
    else:
        raise LaneError("%s.match: expected 'values' (or 'value') or 'percent'" % where)
    return Lane(name, tag, source, key, values=frozenset(v.strip() for v in values))


def compile_lanes(raw: Any) -> Tuple[Lane, ...]:
    """The valid lanes of ``raw`` in order; each invalid one is skipped with a warning naming its field."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        log.once("lanes:%r" % (raw,), "warning", "lanes: expected a list of lane objects; entry tagging off")
        return ()
    lanes: List[Lane] = []
    seen = set()
    for index, item in enumerate(raw):
        try:
            lane = compile_lane(item, index)
            if lane.name in seen:
                raise LaneError("lanes[%d].name: %r is used by an earlier lane" % (index, lane.name))
        except LaneError as problem:
            log.once("lane:%s" % problem, "warning", "%s; this lane is skipped" % problem)
            continue
        seen.add(lane.name)
        lanes.append(lane)
    return tuple(lanes)


def cookie_value(cookie_header: Optional[str], name: str) -> Optional[str]:
    """The value of cookie ``name`` in a ``Cookie`` header (quotes removed), or None."""
    if not cookie_header or name not in cookie_header:
        return None
    for part in cookie_header.split(";"):
        key, eq, value = part.partition("=")
        if eq and key.strip() == name:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value
    return None


def entry_tag(lanes: Tuple[Lane, ...], header: HeaderGetter) -> Optional[str]:
    """The tag of the first lane that matches; ``header(lower_name)`` reads a request header."""
    cookies: Optional[str] = None
    cookies_read = False
    for lane in lanes:
        if lane.source == "header":
            value = header(lane.key)
        else:
            if not cookies_read:
                cookies, cookies_read = header("cookie"), True
            value = cookie_value(cookies, lane.key)
        if lane.matches(value):
            return lane.tag
    return None
