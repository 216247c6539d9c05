"""Requests read in bounded time and space, in front of every endpoint of the server.

uvicorn times out idle keep-alive connections after a response, but not a connection that
never completes a request: one that sends nothing after the TLS handshake, or half a header
block, or announces ``Content-Length: 1000`` and sends ten bytes, would hold its socket, a
buffer and (for a body) a handler forever. Two guards, one deadline each:

- :func:`with_header_deadline` (the HTTP protocol): a connection must complete a request's
  headers within ``deadline`` seconds of opening, or of the first bytes after a response;
  else ``408`` (when it sent something) and the connection is closed;
- :func:`with_body_limits` (ASGI, outermost): the body is read before the app runs, within
  ``deadline`` seconds of the headers and within the path's size limit, then handed to
  the app as one message. Not complete in time: ``408``; larger than the limit (announced or
  counted): ``413``; the connection is closed either way.

Requests without a body (the long-polls, ``/healthz``) pay one ``receive`` call; a parked
long-poll is past its headers, so neither deadline applies to it.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Dict, Optional, Tuple, Type

from pilotfish_webhook.asgi import ASGIApp, Message, Receive, Scope, Send

DEFAULT_DEADLINE_SECONDS = 10.0
# The config API's bodies (register, deregister) are a few hundred bytes.
DEFAULT_MAX_BYTES = 64 * 1024


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def with_body_limits(
    app: ASGIApp,
    deadline: float = DEFAULT_DEADLINE_SECONDS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_bytes_by_path: Optional[Dict[str, int]] = None,
) -> ASGIApp:
    """``app`` behind a body gate: complete within ``deadline`` s, at most the path's limit."""
    limits = dict(max_bytes_by_path or {})

    async def gate(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        limit = limits.get(scope.get("path", ""), max_bytes)
        try:
            first = await _read_body(scope, receive, limit, time.monotonic() + deadline)
        except _Refused as refused:
            await _refuse(send, refused.status, str(refused))
            return
        if first is None:  # the client went away before the body was complete
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return first
            return await receive()  # after the body only http.disconnect comes

        await app(scope, replay, send)

    return gate


async def _read_body(scope: Scope, receive: Receive, limit: int, deadline: float) -> Optional[Message]:
    """The body as one ``http.request`` message, or None when the client disconnected."""
    for name, value in scope.get("headers") or ():
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise _Refused(413, "request body of %s bytes exceeds the limit of %d" % (value.decode(), limit))
    timeout = getattr(asyncio, "timeout_at", None)  # one timer per request (Python 3.11+)
    try:
        if timeout is not None:
            loop_deadline = asyncio.get_running_loop().time() + (deadline - time.monotonic())
            async with timeout(loop_deadline):
                return await _collect(receive, limit)
        return await asyncio.wait_for(_collect(receive, limit), max(0.0, deadline - time.monotonic()))
    except asyncio.TimeoutError:
        raise _Refused(408, "request body not received within the deadline; closing the connection")


async def _collect(receive: Receive, limit: int) -> Optional[Message]:
    message = await receive()
    if message["type"] != "http.request":
        return None
    if not message.get("more_body", False):
        if len(message.get("body", b"")) > limit:
            raise _Refused(413, "request body exceeds the limit of %d bytes" % limit)
        return message  # the common case: the whole body in one message, nothing copied
    body = bytearray(message.get("body", b""))
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        body += message.get("body", b"")
        if len(body) > limit:
            raise _Refused(413, "request body exceeds the limit of %d bytes" % limit)
        if not message.get("more_body", False):
            return {"type": "http.request", "body": bytes(body), "more_body": False}


async def _refuse(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers: Tuple[Tuple[bytes, bytes], ...] = (
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"connection", b"close"),
    )
    await send({"type": "http.response.start", "status": status, "headers": list(headers)})
    await send({"type": "http.response.body", "body": body})


class _HeaderDeadline(asyncio.Protocol):
    """The timer of :func:`with_header_deadline`, mixed in before uvicorn's protocol class."""

    header_deadline = DEFAULT_DEADLINE_SECONDS
    _header_timer: Optional[asyncio.TimerHandle] = None
    _header_bytes = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_request():
            self._disarm_header_timer()
        else:
            self._header_bytes = True
            if self._header_timer is None:
                self._arm_header_timer()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _in_request(self) -> bool:
        cycle = getattr(self, "cycle", None)
        return cycle is not None and not cycle.response_complete

    def _arm_header_timer(self) -> None:
        self._header_timer = asyncio.get_running_loop().call_later(self.header_deadline, self._headers_late)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._header_bytes = False

    def _headers_late(self) -> None:
        self._header_timer = None
        transport = getattr(self, "transport", None)
        if self._in_request() or transport is None or transport.is_closing():
            return
        if self._header_bytes:
            transport.write(_LATE_HEADERS)
        transport.close()


def with_header_deadline(base: Type[asyncio.Protocol], deadline: float) -> Type[asyncio.Protocol]:
    """A subclass of uvicorn's HTTP protocol ``base`` that closes connections stuck before a request.

    The timer runs while no request is in progress (its headers not yet complete): armed when
    the connection opens and when bytes of a next request arrive after a response; a request
    whose headers complete disarms it. Idle keep-alive connections are uvicorn's own business
    (``timeout_keep_alive``).
    """
    name = "HeaderDeadline" + base.__name__
    subclass: Type[asyncio.Protocol] = type(name, (_HeaderDeadline, base), {"header_deadline": deadline})
    subclass.__qualname__ = name
    return subclass


_LATE_BODY = json.dumps({"error": "request headers not received within the deadline; closing the connection"})
_LATE_HEADERS = (
    "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
    "connection: close\r\n\r\n%s" % (len(_LATE_BODY), _LATE_BODY)
).encode()
