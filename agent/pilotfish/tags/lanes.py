"""Entry tagging: lane rules that tag untagged requests at the first Python service.

A gray release usually starts at a gateway that stamps a tag header. When the
first hop is a Python service, its own policy can do that instead: the app's
central config may carry a ``lanes`` list (kept by the agent in
``settings.current().central_extra["lanes"]``), tried in order on every
*untagged* request; the first lane that matches gives the request its tag.

The config service is the only producer of that list, so this module reads
exactly the shape it sends (``flat_lanes()`` in
``webhook/pilotfish_webhook/config/merge.py``; the policy YAML that users write
is documented in ``docs/policies.md``)::

    {"name": "testers",                      # unique; part of the hash, shows in /status
     "tag": "gray",                          # a valid tag (k8s label value)
     "match": [                              # conditions, all must hold (AND); [] = every request
         {"source": "header",                # "header" or "cookie" (of the Cookie header)
          "name": "x-user-group",            # header names compare case-insensitively
          "op": "in",                        # exact | prefix | regex | in | present
          "values": ["testers", "qa"]},
     ],
     "percentage": 100.0,                    # share of the matching requests tagged, 0-100
     "hash": {"source": "header", "name": "x-user-id"}}   # or None

Operators, on the request's value with surrounding spaces/tabs trimmed (a
condition on a header or cookie the request lacks is false, whatever the op):

``exact`` / ``in``  the value equals one of ``values``;
``prefix``          the value starts with one of ``values``;
``regex``           ``re.search`` of one of ``values`` finds a match (compiled once);
``present``         the header or cookie exists (``values`` ignored).

The schema documents one value for exact/prefix/regex but does not reject more;
the agent reads several as "any of them", the only reading that loses nothing.
A missing ``op`` means ``exact``, a missing ``percentage`` 100 and a missing
``hash`` none (what the server would have filled in); unknown keys are ignored.

Percentage, for requests that satisfy every condition:

- 100: every one is tagged; the hash key is not needed.
- with ``hash``: stable, ``crc32(lane name + ":" + key) % 10000 < percentage*100``.
  The same key always lands in the same lane, in every process and every
  service; raising the percentage only adds keys (nobody flips back and forth).
  A request without the key (or with an empty one) never matches: an anonymous
  request is never gray by chance.
- without ``hash``: random per request, as the schema documents for an absent
  ``hashKey`` ("absent = random"), which the server accepts with any percentage.
- 0: none.

An invalid lane is skipped with one warning naming the field path
(``lanes[1].match[0].op: ...``); the other lanes keep working.
"""

from __future__ import annotations

import random
import re
import zlib
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Tuple

from .. import log
from .context import valid_tag

HeaderGetter = Callable[[str], Optional[str]]

SOURCES = ("header", "cookie")
OPS = ("exact", "prefix", "regex", "in", "present")


def _always(value: str) -> bool:
    return True


class Condition:
    """One compiled condition; ``test(value)`` is called only when the value exists."""

    __slots__ = ("source", "name", "op", "values", "test")

    def __init__(self, source: str, name: str, op: str, values: Tuple[str, ...]) -> None:
        self.source = source
        self.name = name.lower() if source == "header" else name
        self.op = op
        self.values = values
        self.test: Callable[[str], bool]
        if op == "present":
            self.test = _always
        elif op in ("exact", "in"):
            self.test = frozenset(values).__contains__
        elif op == "prefix":
            prefixes = values

            def starts(value: str) -> bool:
                return value.startswith(prefixes)

            self.test = starts
        else:
            searches = tuple(re.compile(v).search for v in values)
            first = searches[0]

            def found_one(value: str) -> bool:
                return first(value) is not None

            def found_any(value: str) -> bool:
                return any(search(value) is not None for search in searches)

            self.test = found_one if len(searches) == 1 else found_any

    def describe(self) -> Dict[str, Any]:
        return {"source": self.source, "name": self.name, "op": self.op, "values": list(self.values)}


class Lane:
    """One compiled lane rule: conditions (AND), then the percentage gate."""

    __slots__ = (
        "name",
        "tag",
        "conditions",
        "percentage",
        "threshold",
        "hash_source",
        "hash_name",
        "headers",
    )

    def __init__(
        self,
        name: str,
        tag: str,
        conditions: Tuple[Condition, ...],
        percentage: float = 100.0,
        hash_source: Optional[str] = None,
        hash_name: Optional[str] = None,
    ) -> None:
        self.name = name
        self.tag = tag
        self.conditions = conditions
        self.percentage = percentage
        self.threshold = percentage * 100  # in crc32 buckets of 10000
        self.hash_source = hash_source
        self.hash_name = hash_name.lower() if hash_source == "header" and hash_name else hash_name
        # The request headers this lane reads (lower-case), so the extractors collect them.
        wanted = {c.name if c.source == "header" else "cookie" for c in conditions}
        if hash_source is not None:
            wanted.add(self.hash_name if hash_source == "header" else "cookie")  # type: ignore[arg-type]
        self.headers: FrozenSet[str] = frozenset(wanted)

    def in_share(self, key: Optional[str]) -> bool:
        """The percentage gate for a request whose conditions all hold (``key``: its hash key)."""
        if self.percentage >= 100:
            return True
        if self.percentage <= 0:
            return False
        if self.hash_source is None:
            return random.random() * 100 < self.percentage
        if not key:
            return False
        return (
            zlib.crc32(("%s:%s" % (self.name, key)).encode("utf-8", "surrogatepass")) % 10000 < self.threshold
        )

    def describe(self) -> Dict[str, Any]:
        """The lane as /status shows it: the server's shape, normalised."""
        return {
            "name": self.name,
            "tag": self.tag,
            "match": [c.describe() for c in self.conditions],
            "percentage": self.percentage,
            "hash": None
            if self.hash_source is None
            else {"source": self.hash_source, "name": self.hash_name},
        }


class LaneError(ValueError):
    """A lane rule is invalid; the message starts with the field's path."""


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise LaneError("%s: expected a non-empty string, got %r" % (where, value))
    return value


def _source(value: Any, where: str) -> str:
    if value not in SOURCES:
        raise LaneError("%s: expected 'header' or 'cookie', got %r" % (where, value))
    return str(value)


def compile_condition(raw: Any, where: str) -> Condition:
    """Check one raw condition (``where`` is its path) and compile it; raise :class:`LaneError`."""
    if not isinstance(raw, dict):
        raise LaneError("%s: expected an object, got %r" % (where, raw))
    source = _source(raw.get("source"), where + ".source")
    name = _text(raw.get("name"), where + ".name").strip()
    op = raw.get("op", "exact")
    if op not in OPS:
        raise LaneError("%s.op: expected one of %s, got %r" % (where, ", ".join(OPS), op))
    values = raw.get("values")
    if values is None:
        values = []
    if not isinstance(values, list):
        raise LaneError("%s.values: expected a list of strings, got %r" % (where, values))
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise LaneError("%s.values[%d]: expected a string, got %r" % (where, i, value))
        if op == "regex":
            try:
                re.compile(value)
            except re.error as problem:
                raise LaneError("%s.values[%d]: not a valid regular expression (%s)" % (where, i, problem))
    if op != "present" and not values:
        raise LaneError("%s.values: op %r needs at least one value" % (where, op))
    return Condition(source, name, str(op), tuple(values) if op != "present" else ())


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
    if match is None:
        match = []
    if not isinstance(match, list):
        raise LaneError("%s.match: expected a list of conditions, got %r" % (where, match))
    conditions = tuple(compile_condition(c, "%s.match[%d]" % (where, i)) for i, c in enumerate(match))
    percentage = raw.get("percentage", 100)
    if isinstance(percentage, bool) or not isinstance(percentage, (int, float)) or not 0 <= percentage <= 100:
        raise LaneError("%s.percentage: expected a number from 0 to 100, got %r" % (where, percentage))
    hashed = raw.get("hash")
    hash_source = hash_name = None
    if hashed is not None:
        if not isinstance(hashed, dict):
            raise LaneError(
                "%s.hash: expected an object with 'source' and 'name' or null, got %r" % (where, hashed)
            )
        hash_source = _source(hashed.get("source"), where + ".hash.source")
        hash_name = _text(hashed.get("name"), where + ".hash.name").strip()
    return Lane(name, tag, conditions, float(percentage), hash_source, hash_name)


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


def headers_read(lanes: Tuple[Lane, ...]) -> FrozenSet[str]:
    """Every request header (lower-case) the lanes may read; ``cookie`` if any reads a cookie."""
    out: FrozenSet[str] = frozenset()
    for lane in lanes:
        out |= lane.headers
    return out


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


_UNREAD = object()


def entry_tag(lanes: Tuple[Lane, ...], header: HeaderGetter) -> Optional[str]:
    """The tag of the first lane that matches; ``header(lower_name)`` reads a request header.

    The Cookie header is read (and only then) by the first condition on a cookie.
    """
    cookies: Any = _UNREAD
    for lane in lanes:
        for condition in lane.conditions:
            if condition.source == "header":
                value = header(condition.name)
                if value is not None:
                    value = value.strip(" \t")
            else:
                if cookies is _UNREAD:
                    cookies = header("cookie")
                value = cookie_value(cookies, condition.name)
            if value is None or not condition.test(value):
                break
        else:
            key: Optional[str] = None
            if lane.hash_source is not None and 0 < lane.percentage < 100:
                if lane.hash_source == "header":
                    key = header(lane.hash_name)  # type: ignore[arg-type]
                    if key is not None:
                        key = key.strip(" \t")
                else:
                    if cookies is _UNREAD:
                        cookies = header("cookie")
                    key = cookie_value(cookies, lane.hash_name)  # type: ignore[arg-type]
            if lane.in_share(key):
                return lane.tag
    return None
