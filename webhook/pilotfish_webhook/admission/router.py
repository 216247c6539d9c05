"""``POST /mutate``: the HTTP face of the admission webhook.

The endpoint is a small ASGI callable mounted as a plain Starlette route inside the
FastAPI app, rather than a FastAPI path operation: the AdmissionReview is passed on as
plain dicts (unknown fields must survive, so no pydantic model), and skipping the
Request/Response objects and dependency resolution keeps the hot path short;
:func:`with_fast_path` goes further and answers ``/mutate`` before FastAPI's middleware.
The mutation of an ordinary review (sub-millisecond, CPU only) runs on the event loop, avoiding
a thread hop; a large body (above ``INLINE_BODY_BYTES``) is parsed and mutated in a worker
thread, so one huge review never stalls the other requests.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Tuple

from fastapi import APIRouter

from pilotfish_webhook.admission.jsonio import dumps, loads
from pilotfish_webhook.admission.mutate import InjectionConfig
from pilotfish_webhook.admission.review import BadReview, review
from pilotfish_webhook.asgi import ASGIApp, Receive, Scope, Send

# The API server's request limit is 3 MiB; an AdmissionReview of the largest pod it accepts
# is below that plus envelope. Anything larger is not from a healthy API server.
DEFAULT_MAX_BODY_BYTES = 3 * 1024 * 1024 + 64 * 1024
# A pod of a few containers is a few KiB; larger reviews are handled in a worker thread.
INLINE_BODY_BYTES = 64 * 1024


class MutateEndpoint:
    """The ASGI endpoint: read the body within the limit, review it, answer JSON."""

    def __init__(self, config: InjectionConfig, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.config = config
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status, payload = await self._answer(scope, receive)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(payload)),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _answer(self, scope: Scope, receive: Receive) -> Tuple[int, bytes]:
        for name, value in scope.get("headers") or ():
            if name == b"content-length":
                if not value.isdigit():
                    return _error(400, "Content-Length: not a number")
                if int(value) > self.max_body_bytes:
                    return _error(
                        413,
                        "request body of %s bytes exceeds the limit of %d"
                        % (value.decode(), self.max_body_bytes),
                    )
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return 400, b""
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                return _error(413, "request body exceeds the limit of %d bytes" % self.max_body_bytes)
            more = message.get("more_body", False)
        if len(body) > INLINE_BODY_BYTES:
            # Parsing and mutating take time linear in the body (about 20 ms per MiB here):
            # off the event loop, so /healthz, the config long-polls and small reviews go on.
            return await asyncio.to_thread(self.review_body, body)
        return self.review_body(body)

    def review_body(self, body: bytes | bytearray) -> Tuple[int, bytes]:
        """The answer to one complete request body (CPU only; safe in a worker thread)."""
        if not body:
            return _error(400, "empty request body: expected an AdmissionReview (JSON)")
        try:
            doc: Any = loads(body)
        except ValueError as exc:
            return _error(400, "request body is not JSON: %s" % exc)
        try:
            # A second parse is the pod we mutate in place: cheaper than a deep copy.
            answer = review(doc, self.config, scratch=loads(body))
        except BadReview as exc:
            return _error(400, "malformed AdmissionReview: %s" % exc)
        seen = self.config.namespace_seen
        if seen is not None:
            try:
                seen(str(doc["request"].get("namespace") or ""))
            except Exception:
                logging.getLogger(__name__).exception("namespace hook failed")
        return 200, dumps(answer)


def _error(status: int, message: str) -> Tuple[int, bytes]:
    return status, dumps({"error": message})


def admission_router(config: InjectionConfig, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> APIRouter:
    router = APIRouter()
    endpoint: Any = MutateEndpoint(config, max_body_bytes)  # an ASGI app: Starlette calls it as is
    router.add_route("/mutate", endpoint, methods=["POST"], include_in_schema=False)
    return router


def with_fast_path(
    app: ASGIApp, config: InjectionConfig, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> ASGIApp:
    """``app`` with ``POST /mutate`` answered before FastAPI's middleware and routing.

    The same endpoint as the router's, reached without the framework's per-request work
    (about a fifth of the server's CPU per review, measured with hack/bench_admission.py).
    Everything else (``/healthz``, the config API, lifespan) goes to ``app`` unchanged.
    """
    endpoint = MutateEndpoint(config, max_body_bytes)

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/mutate" and scope["method"] == "POST":
            await endpoint(scope, receive, send)
        else:
            await app(scope, receive, send)

    return dispatch
