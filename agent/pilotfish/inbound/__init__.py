"""Inbound instrumentation: one closure around the app as the server loaded it.

Framework-agnostic by design: we wrap the WSGI or ASGI callable that gunicorn,
uvicorn, hypercorn, waitress or wsgiref hand requests to (and add a gRPC server
interceptor), so Flask, Django, FastAPI and anything else behave the same.

Per request the wrapper: classifies it (kubelet probe / ignored path / traffic),
sets the lane tag in its ContextVar, counts it in this process's shared-memory
slot until the response is really finished (a WSGI iterable until ``close()``,
an ASGI response until its last body message), and while the pod is offline
marks responses so keep-alive clients reconnect elsewhere.
"""

from __future__ import annotations

from typing import Any

WRAPPED_MARK = "__pilotfish_inbound__"


def is_wrapped(app: Any) -> bool:
    return getattr(app, WRAPPED_MARK, False) is True
