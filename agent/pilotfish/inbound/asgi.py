"""The ASGI wrapper: one ``async def`` around the app, for HTTP requests only.

In-flight holds until the app's coroutine returns: after its last body message,
and after any background task the framework runs before returning (work a drain
should wait for too). Lifespan and other scope types pass straight through.
While the pod is offline, ``connection: close`` and the offline marker are
added to the response head; uvicorn and hypercorn honour an app's
``connection: close`` and end keep-alive after that response.

Two paths. Every request pays for the wrapper, and a hello-world FastAPI request
costs the server ~70 µs of CPU, so the 3 % budget is ~2 µs; measured inside a
loaded server, each attribute read or call we add costs several times what it
costs in a micro-benchmark. So the usual request (no probe User-Agent, no tag or
consumer header, no lanes or ignored paths configured, this thread's own counter
cell) takes a short path: one pass over the header names, one increment before
the app, one after. Anything else takes :func:`begin_full`, which classifies,
tags and counts as the specification says.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, FrozenSet, List, MutableMapping, Optional, Tuple

from .. import log, settings, shared
from . import WRAPPED_MARK
from . import request as rq

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

USER_AGENT = b"user-agent"
_OFFLINE_HEADERS = [(b"connection", b"close"), (rq.OFFLINE_HEADER.lower().encode(), b"1")]
_PROBE_AGENT = rq.PROBE_AGENT_BYTES
_OFFLINE_WORD = shared.OFFLINE_WORD

# What the short path needs from the settings, recomputed on every change (not per
# request): the header names one pass must notice, and whether every request
# must take the full path anyway (lanes or ignored paths are configured).
noticed_headers: FrozenSet[bytes] = frozenset()
always_full = True


def _header_names(tags_state: Any) -> FrozenSet[bytes]:
    """The header names one pass over a request's headers must notice."""
    wanted = getattr(tags_state, "wanted_bytes", None) or frozenset()
    return frozenset(wanted) | {USER_AGENT, rq.CONSUMER_HEADER_BYTES}


refreshed: List[Callable[[], None]] = []
"""Called after every :func:`refresh`: short paths that cache ``noticed_headers`` or
``always_full`` (:mod:`.uvicorn_cycle`) drop what they cached."""


def refresh() -> None:
    """Recompute the short path's settings from the tag settings and ignored paths in force."""
    global noticed_headers, always_full
    state = rq.tags_inbound.current_state if rq.tags_inbound is not None else None
    noticed_headers = _header_names(state)
    always_full = bool(rq.ignore_paths_set or (state is not None and state.lanes))
    for listener in list(refreshed):
        listener()


def _on_settings(old: settings.Settings, new: settings.Settings) -> None:
    # Subscribed after pilotfish.tags.inbound and request.py (both imported above),
    # so their state for ``new`` is already rebuilt when this runs.
    refresh()


refresh()
settings.subscribe(_on_settings)


def offline_send(send: Send) -> Send:
    async def offline_send(message: Any) -> None:
        try:
            if message.get("type") == "http.response.start":
                message = dict(message)
                message["headers"] = list(message.get("headers") or []) + _OFFLINE_HEADERS
        except Exception:
            pass
        await send(message)

    return offline_send


def begin_full(scope: Scope, headers: Any, send: Send) -> Tuple[Optional[shared.Slot], int, Send]:
    """Classify, tag and count a request the short path does not handle.

    Returns the slot that counted it in (``None`` for a probe, an ignored path, or
    when there is no shared memory: nothing to count out), the cell ``begin``
    returned, and ``send`` (wrapped while the pod is offline).
    """
    user_agent = None
    marked = tagged = False
    noticed = noticed_headers
    for name, value in headers:
        if name in noticed:
            if name == USER_AGENT:
                user_agent = value
            elif name == rq.CONSUMER_HEADER_BYTES:
                marked = True
            else:
                tagged = True
    if user_agent is not None and user_agent.startswith(_PROBE_AGENT):
        kind = rq.PROBE
    elif rq.ignore_paths_set:
        kind = rq.classify_path(scope.get("path") or "/")
    else:
        kind = rq.TRAFFIC
    counter = rq.slot()
    if kind != rq.TRAFFIC:
        if counter is not None:
            counter.probe() if kind == rq.PROBE else counter.ignore()
        return None, 0, send
    tag = None
    state = rq.tags_inbound.current_state if rq.tags_inbound is not None else None
    if (tagged or (state is not None and state.lanes)) and rq.tag_from_asgi_headers is not None:
        tag = rq.tag_from_asgi_headers(headers)
        # Each ASGI request runs in its own task, with its own copy of the context:
        # nothing leaks in from another request, so untagged requests set nothing.
        if tag is not None and rq.set_tag is not None:
            rq.set_tag(tag)
    if counter is None:
        return None, 0, send
    if marked and rq.on_marked_request is not None:
        rq.on_marked_request()
    if counter.words[_OFFLINE_WORD]:
        send = offline_send(send)
    # Counting in is the last step: once it is done, nothing here can raise before
    # the wrapper holds the slot that counts the request out.
    return counter, counter.begin(tag), send


def _count_out(counter: shared.Slot, cell: int) -> None:
    try:
        counter.end(cell)
    except Exception:
        log.exception_once("asgi-inbound-end", "could not count a request out")


def wrap_asgi(app: ASGIApp) -> ASGIApp:
    """Return ``app`` wrapped once (wrapping a wrapped app returns it unchanged)."""
    if getattr(app, WRAPPED_MARK, False):
        return app

    async def pilotfish_asgi(scope: Scope, receive: Receive, send: Send) -> None:
        counter = None
        cell = 0
        try:
            if scope["type"] == "http":
                headers = scope["headers"]
                full = always_full
                noticed = noticed_headers
                for name, value in headers:
                    if name in noticed and (name != USER_AGENT or value.startswith(_PROBE_AGENT)):
                        full = True
                current = shared.process_slot
                if full or current is None:
                    counter, cell, send = begin_full(scope, headers, send)
                else:
                    # Slot.begin(None) inlined for this thread's own cell (> 0).
                    cell = current.per_thread.cell
                    counts = current.words
                    if cell > 0:
                        counts[cell] += 1
                    else:
                        cell = current.begin(None)
                    counter = current
                    if counts[_OFFLINE_WORD]:
                        send = offline_send(send)
        except Exception:
            log.exception_once("asgi-inbound", "inbound accounting failed for a request; served unmodified")
        if counter is None:
            await app(scope, receive, send)
            return
        try:
            await app(scope, receive, send)
        finally:
            # Same task, same thread: the cell begin() counted in (Slot.end(cell) inlined).
            if cell > 0:
                counts = counter.words
                counts[cell + 1] += 1
            else:
                _count_out(counter, cell)

    setattr(pilotfish_asgi, WRAPPED_MARK, True)
    pilotfish_asgi.__wrapped__ = app  # type: ignore[attr-defined]
    return pilotfish_asgi
