"""What an outbound call carries when a tag is in context: shared by every client integration.

Two things are written: the tag header (the *first* configured tag header, so
a fleet that reads ``x-mse-tag`` first also gets ``x-mse-tag`` from us) and our
entry in the W3C ``baggage`` header, appended to whatever baggage the caller
already set. Rules every integration follows:

- no tag in context: touch nothing (the request is byte-for-byte the one the
  app would have sent without the agent);
- a header the caller set explicitly is never added twice or overwritten: an
  explicit tag header wins, and an explicit baggage entry with our key wins;
- several caller ``baggage`` headers become one (same list, same order) with
  our entry at the end, unless that would exceed the W3C size limits, in which
  case the caller's baggage is left exactly as it was.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple

from .. import settings
from . import baggage

BAGGAGE = baggage.HEADER


class _Out:
    __slots__ = ("header", "baggage_key")

    def __init__(self, snapshot: settings.Settings) -> None:
        headers = snapshot.tag_headers
        self.header: str = headers[0] if headers else ""
        self.baggage_key: str = snapshot.baggage_key


_out = _Out(settings.current())


def _on_settings(old: settings.Settings, new: settings.Settings) -> None:
    global _out
    if old.tag_headers != new.tag_headers or old.baggage_key != new.baggage_key:
        _out = _Out(new)


settings.subscribe(_on_settings)


def refresh() -> None:
    """Re-read ``settings.current()`` (tests, and after ``settings.load()``)."""
    global _out
    _out = _Out(settings.current())


def tag_header() -> str:
    """The header name we write the tag into (lower case), or "" when none is configured."""
    return _out.header


def additions(
    tag: str, has_header: Callable[[str], bool], baggage_values: Sequence[str]
) -> Tuple[Optional[Tuple[str, str]], Optional[str]]:
    """``(tag header to add or None, new single baggage value or None)`` for one request.

    ``has_header(lower_name)`` answers whether the caller already set a header
    (case-insensitive); ``baggage_values`` are the caller's ``baggage`` values in order.
    """
    out = _out
    header = None
    if out.header and not has_header(out.header):
        header = (out.header, tag)
    merged = baggage.with_entry(baggage_values, out.baggage_key, tag) if out.baggage_key else None
    return header, merged


def merge_pairs(pairs: Sequence[Tuple[str, Any]], tag: str) -> Optional[List[Tuple[str, Any]]]:
    """A new (name, value) list with the tag written, or None when nothing changes.

    For list-shaped carriers (gRPC metadata). Names compare case-insensitively;
    a merged baggage value takes the place of the first caller ``baggage`` item.
    """
    names = {str(p[0]).lower() for p in pairs}
    existing = [p[1] for p in pairs if str(p[0]).lower() == BAGGAGE and isinstance(p[1], str)]
    header, merged = additions(tag, names.__contains__, existing)
    if header is None and merged is None:
        return None
    result: List[Tuple[str, Any]] = []
    placed = False
    for name, value in pairs:
        if merged is not None and str(name).lower() == BAGGAGE and isinstance(value, str):
            if not placed:
                result.append((name, merged))
                placed = True
            continue
        result.append((name, value))
    if merged is not None and not placed:
        result.append((BAGGAGE, merged))
    if header is not None:
        result.append(header)
    return result
