"""Where a request's tag comes from: tag headers, then W3C baggage, then lane rules.

Called by the inbound wrappers (:mod:`pilotfish.inbound`) once per request,
which then set :data:`pilotfish.tags.context.CURRENT_TAG` to the result (None
included). Order of precedence:

1. the configured tag headers (setting ``tag_headers``, default
   ``x-pilotfish-tag``; add ``x-mse-tag`` to join lanes MSE's Java agents
   already use), in the configured order;
2. the ``baggage`` header's entry named by setting ``baggage_key`` (default
   ``pilotfish-tag``), several ``baggage`` headers read as one list;
3. entry tagging: the first matching lane of the app's central ``lanes``
   (:mod:`pilotfish.tags.lanes`), only for requests that are still untagged.

A value that is not a valid tag (see :func:`pilotfish.tags.context.valid_tag`)
counts as absent. These functions never raise: a failure is logged once and the
request is simply untagged.

Speed: every request pays this, so the settings are compiled into one
immutable :class:`InboundState` when they change (a settings subscription), and the
per-request work is a few dict lookups (WSGI) or one pass over the header list
with a set-membership test per header (ASGI, gRPC).
"""

from __future__ import annotations

from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Tuple

from .. import log, settings
from . import baggage
from .context import valid_tag
from .lanes import Lane, compile_lanes, entry_tag, headers_read


class InboundState:
    """Everything the extractors need, derived from one settings snapshot."""

    __slots__ = (
        "tag_headers",
        "environ_keys",
        "baggage_key",
        "lanes",
        "lane_environ",
        "wanted",
        "wanted_bytes",
    )

    def __init__(self, tag_headers: Tuple[str, ...], baggage_key: str, lanes: Tuple[Lane, ...]) -> None:
        self.tag_headers = tag_headers
        self.environ_keys = tuple("HTTP_" + h.upper().replace("-", "_") for h in tag_headers)
        self.baggage_key = baggage_key
        self.lanes = lanes
        lane_headers = headers_read(lanes)
        # WSGI: lower-case header name -> environ key, for the lane getter.
        self.lane_environ: Dict[str, str] = {h: "HTTP_" + h.upper().replace("-", "_") for h in lane_headers}
        wanted: FrozenSet[str] = frozenset(tag_headers) | frozenset(lane_headers)
        if baggage_key:
            wanted |= {baggage.HEADER}
        self.wanted = wanted
        self.wanted_bytes: FrozenSet[bytes] = frozenset(h.encode("latin-1") for h in wanted)


def _build(snapshot: settings.Settings) -> InboundState:
    headers = tuple(h for h in snapshot.tag_headers if h)
    return InboundState(headers, snapshot.baggage_key, compile_lanes(snapshot.central_extra.get("lanes")))


current_state = _build(settings.current())
"""What the inbound paths look for (header names, lanes); rebuilt by a settings subscriber."""


def _on_settings(old: settings.Settings, new: settings.Settings) -> None:
    global current_state
    if (
        old.tag_headers != new.tag_headers
        or old.baggage_key != new.baggage_key
        or old.central_extra.get("lanes") != new.central_extra.get("lanes")
    ):
        current_state = _build(new)


settings.subscribe(_on_settings)


def refresh() -> None:
    """Recompile from ``settings.current()`` (tests, and after ``settings.load()``)."""
    global current_state
    current_state = _build(settings.current())


def lanes() -> Tuple[Lane, ...]:
    """The lanes in force (for /status)."""
    return current_state.lanes


def _header_tag(raw: str) -> Optional[str]:
    if "," in raw:  # the header was sent twice and joined: the first one counts
        raw = raw.split(",", 1)[0]
    return valid_tag(raw)


def _resolve(state: InboundState, found: Dict[str, str], baggages: List[str]) -> Optional[str]:
    """The tag from headers collected by a scan (lower-case names, first value of each)."""
    for name in state.tag_headers:
        raw = found.get(name)
        if raw:
            tag = _header_tag(raw)
            if tag is not None:
                return tag
    if baggages:
        tag = _baggage_tag(baggages, state.baggage_key)
        if tag is not None:
            return tag
    if state.lanes:
        return entry_tag(state.lanes, found.get)
    return None


def _baggage_tag(values: List[str], key: str) -> Optional[str]:
    if len(values) == 1:
        raw = baggage.lookup(values[0], key)
    else:
        raw = None
        for k, v in baggage.parse(values):
            if k == key:
                raw = v
                break
    return valid_tag(raw) if raw is not None else None


def tag_from_environ(environ: Dict[str, Any]) -> Optional[str]:
    """The tag of a WSGI request (``environ`` as the server built it), or None."""
    try:
        state = current_state
        for key in state.environ_keys:
            raw = environ.get(key)
            if raw:
                tag = _header_tag(raw)
                if tag is not None:
                    return tag
        if state.baggage_key:
            raw = environ.get("HTTP_BAGGAGE")
            if raw:
                tag = _baggage_tag([raw], state.baggage_key)
                if tag is not None:
                    return tag
        if state.lanes:
            lane_environ = state.lane_environ
            return entry_tag(state.lanes, lambda name: environ.get(lane_environ[name]))
        return None
    except Exception:
        log.exception_once("tags:environ", "reading the request's tag failed; request left untagged")
        return None


def tag_from_asgi_headers(headers: Iterable[Tuple[bytes, bytes]]) -> Optional[str]:
    """The tag of an ASGI request (``scope["headers"]``: lower-case name/value bytes), or None."""
    try:
        state = current_state
        wanted = state.wanted_bytes
        found: Optional[Dict[str, str]] = None
        baggages: List[str] = []
        for name, value in headers:
            if name in wanted:
                text = name.decode("latin-1")
                if text == baggage.HEADER:
                    baggages.append(value.decode("latin-1"))
                    continue
                if found is None:
                    found = {}
                if text not in found:
                    found[text] = value.decode("latin-1")
        if found is None and not baggages and not state.lanes:
            return None
        return _resolve(state, found or {}, baggages)
    except Exception:
        log.exception_once("tags:asgi", "reading the request's tag failed; request left untagged")
        return None


def tag_from_grpc_metadata(metadata: Optional[Iterable[Tuple[str, Any]]]) -> Optional[str]:
    """The tag of a gRPC call (invocation metadata: lower-case keys), or None."""
    try:
        state = current_state
        if not metadata:
            return entry_tag(state.lanes, lambda name: None) if state.lanes else None
        wanted = state.wanted
        found: Dict[str, str] = {}
        baggages: List[str] = []
        for item in metadata:
            name, value = item[0], item[1]
            if name in wanted:
                if isinstance(value, bytes):
                    value = value.decode("latin-1")
                if name == baggage.HEADER:
                    baggages.append(value)
                elif name not in found:
                    found[name] = value
        if not found and not baggages and not state.lanes:
            return None
        return _resolve(state, found, baggages)
    except Exception:
        log.exception_once("tags:grpc", "reading the call's tag failed; call left untagged")
        return None
