"""``POST /mutate``: the HTTP face of the admission webhook.

The body is read and parsed by hand instead of through a pydantic model: the
AdmissionReview is passed on as plain dicts (unknown fields must survive), and
skipping validation models keeps the hot path short. The handler is ``async`` and
does the (sub-millisecond, CPU-only) mutation on the event loop, avoiding a thread hop,
and is registered as a plain Starlette route (no dependency injection on the hot path).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from pilotfish_webhook.admission.jsonio import dumps, loads
from pilotfish_webhook.admission.mutate import InjectionConfig
from pilotfish_webhook.admission.review import BadReview, review

# The API server's request limit is 3 MiB; an AdmissionReview of the largest pod it accepts
# is below that plus envelope. Anything larger is not from a healthy API server.
DEFAULT_MAX_BODY_BYTES = 3 * 1024 * 1024 + 64 * 1024


def _error(status: int, message: str) -> Response:
    return Response(dumps({"error": message}), status_code=status, media_type="application/json")


def admission_router(config: InjectionConfig, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> APIRouter:
    router = APIRouter()

    async def mutate(request: Request) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                return _error(400, "Content-Length: not a number")
            if int(declared) > max_body_bytes:
                return _error(
                    413, "request body of %s bytes exceeds the limit of %d" % (declared, max_body_bytes)
                )
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:
                return _error(413, "request body exceeds the limit of %d bytes" % max_body_bytes)
        if not body:
            return _error(400, "empty request body: expected an AdmissionReview (JSON)")
        try:
            doc: Any = loads(body)
        except ValueError as exc:
            return _error(400, "request body is not JSON: %s" % exc)
        try:
            # A second parse is the pod we mutate in place: cheaper than a deep copy.
            answer = review(doc, config, scratch=loads(body))
        except BadReview as exc:
            return _error(400, "malformed AdmissionReview: %s" % exc)
        return Response(dumps(answer), media_type="application/json")

    # A plain Starlette route: FastAPI's dependency resolution and OpenAPI model add ~100 us
    # per call and nothing here (the body is parsed by hand on purpose).
    router.add_route("/mutate", mutate, methods=["POST"], include_in_schema=False)
    return router
