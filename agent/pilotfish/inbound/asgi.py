"""The ASGI wrapper: one ``async def`` around the app, for HTTP requests only.

In-flight holds until the app's coroutine returns: after its last body message,
and after any background task the framework runs before returning (work a drain
should wait for too). Lifespan and other scope types pass straight through.
While the pod is offline, ``connection: close`` and the offline marker are
added to the response head; uvicorn and hypercorn honour an app's
``connection: close`` and end keep-alive after that response.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, MutableMapping, Optional

from pilotfish import log, shared
from pilotfish.inbound import WRAPPED_MARK
from pilotfish.inbound import request as rq

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_OFFLINE_HEADERS = [(b"connection", b"close"), (rq.OFFLINE_HEADER.lower().encode(), b"1")]


def _user_agent(headers: Any) -> Optional[str]:
    for name, value in headers:
        if name == b"user-agent":
            return value.decode("latin-1")
    return None


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
    """Return ``app`` wrapped once (wrapping a wrapped app returns it unchanged)."""
    if getattr(app, WRAPPED_MARK, False):
        return app
    classify, get_slot, is_offline = rq.classify, rq.slot, shared.is_offline
    tag_from_headers, set_tag = rq.tag_from_asgi_headers, rq.set_tag
    TRAFFIC, PROBE = rq.TRAFFIC, rq.PROBE

    async def pilotfish_asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await app(scope, receive, send)
            return
        slot = None
        try:
            headers = scope.get("headers") or ()
            kind = classify(scope.get("path") or "/", _user_agent(headers))
            tag = tag_from_headers(headers) if (kind == TRAFFIC and tag_from_headers is not None) else None
            if set_tag is not None:
                set_tag(tag)
            counter = get_slot()
            if counter is not None:
                if kind == TRAFFIC:
                    counter.begin(tag)
                    slot = counter
                elif kind == PROBE:
                    counter.probe()
                else:
                    counter.ignore()
            if is_offline():
                send = _offline_send(send)
        except Exception:
            log.exception_once("asgi-inbound", "inbound accounting failed for a request; served unmodified")
        if slot is None:
            await app(scope, receive, send)
            return
        try:
            await app(scope, receive, send)
        finally:
            slot.end()

    setattr(pilotfish_asgi, WRAPPED_MARK, True)
    pilotfish_asgi.__wrapped__ = app  # type: ignore[attr-defined]
    return pilotfish_asgi
