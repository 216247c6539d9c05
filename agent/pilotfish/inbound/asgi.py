"""The ASGI wrapper: one ``async def`` around the app, for HTTP requests only.

In-flight holds until the app's coroutine returns: after its last body message,
and after any background task the framework runs before returning (work a drain
should wait for too). Lifespan and other scope types pass straight through.
While the pod is offline, ``connection: close`` and the offline marker are
added to the response head; uvicorn and hypercorn honour an app's
``connection: close`` and end keep-alive after that response.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, FrozenSet, MutableMapping

from pilotfish import log, shared
from pilotfish.inbound import WRAPPED_MARK
from pilotfish.inbound import request as rq

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

USER_AGENT = b"user-agent"
_OFFLINE_HEADERS = [(b"connection", b"close"), (rq.OFFLINE_HEADER.lower().encode(), b"1")]


def _header_names(tags_state: Any) -> FrozenSet[bytes]:
    """The header names one pass over a request's headers must notice."""
    wanted = getattr(tags_state, "wanted_bytes", None) or frozenset()
    return frozenset(wanted) | {USER_AGENT, rq.CONSUMER_HEADER_BYTES}


def _offline_send(send: Send) -> Send:
    async def offline_send(message: Any) -> None:
        try:
            if message.get("type") == "http.response.start":
                message = dict(message)
                message["headers"] = list(message.get("headers") or []) + _OFFLINE_HEADERS
        except Exception:
            pass
        await send(message)

    return offline_send


def wrap_asgi(app: ASGIApp) -> ASGIApp:
    """Return ``app`` wrapped once (wrapping a wrapped app returns it unchanged).

    Why it is written as one flat function: every request pays for it, and on a
    hello-world FastAPI app a request costs ~430k instructions, so the 3 % budget
    is ~13k. The headers are walked once, noticing only the names in a set
    (User-Agent, the consumer marker, and the tag headers of the current
    settings); the tag is worked out only when a tag header was seen or lanes
    are configured.
    """
    if getattr(app, WRAPPED_MARK, False):
        return app
    get_slot, classify_path = rq.slot, rq.classify_path
    tag_from_headers, set_tag = rq.tag_from_asgi_headers, rq.set_tag
    tags_module = rq.tags_inbound
    on_marked, consumer = rq.on_marked_request, rq.CONSUMER_HEADER_BYTES
    probe_agent, offline_at = rq.PROBE_AGENT_BYTES, shared.OFFLINE_OFFSET
    TRAFFIC, PROBE = rq.TRAFFIC, rq.PROBE
    tags_state: Any = None
    names: FrozenSet[bytes] = _header_names(None)

    async def pilotfish_asgi(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal tags_state, names
        if scope.get("type") != "http":
            await app(scope, receive, send)
            return
        slot = None
        cell = 0
        counts: Any = None
        try:
            state = tags_module._state if tags_module is not None else None
            if state is not tags_state:
                tags_state, names = state, _header_names(state)
            user_agent = None
            marked = tagged = False
            headers = scope["headers"]  # required in an http scope (a KeyError is caught below)
            for name, value in headers:
                if name in names:
                    if name == USER_AGENT:
                        user_agent = value
                    elif name == consumer:
                        marked = True
                    else:
                        tagged = True
            if user_agent is not None and user_agent.startswith(probe_agent):
                kind = PROBE
            elif rq.ignore_paths_set:
                kind = classify_path(scope.get("path") or "/")
            else:
                kind = TRAFFIC
            tag = None
            if (
                kind == TRAFFIC
                and (tagged or (state is not None and state.lanes))
                and tag_from_headers is not None
            ):
                tag = tag_from_headers(headers)
                # Each ASGI request runs in its own task, with its own copy of the
                # context: nothing leaks in from another request, so untagged
                # requests set nothing.
                if tag is not None and set_tag is not None:
                    set_tag(tag)
            counter = shared._slot or get_slot()
            if counter is not None:
                if kind == TRAFFIC:
                    # Slot.begin() inlined for the common case (this thread's own cell,
                    # no tag): a method call costs more than the increment it makes.
                    cell = counter._local.cell
                    if cell > 0 and not tag:
                        counts = counter._q
                        counts[cell] += 1
                    else:
                        cell = counter.begin(tag)
                        counts = counter._q
                    slot = counter
                    if marked and on_marked is not None:
                        on_marked()
                elif kind == PROBE:
                    counter.probe()
                else:
                    counter.ignore()
            segment = shared._segment
            if segment is not None and segment.buf[offline_at]:
                send = _offline_send(send)
        except Exception:
            log.exception_once("asgi-inbound", "inbound accounting failed for a request; served unmodified")
        if slot is None:
            await app(scope, receive, send)
            return
        try:
            await app(scope, receive, send)
        finally:
            # Same task, same thread: the cell begin() wrote (Slot.end(cell) inlined).
            if cell > 0:
                counts[cell + 1] += 1
            else:
                slot.end(0)

    setattr(pilotfish_asgi, WRAPPED_MARK, True)
    pilotfish_asgi.__wrapped__ = app  # type: ignore[attr-defined]
    return pilotfish_asgi
