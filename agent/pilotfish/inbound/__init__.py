"""Inbound instrumentation: one closure around the app as the server loaded it.

Framework-agnostic by design: we wrap the WSGI or ASGI callable that hypercorn,
waitress, wsgiref or any other server hands requests to (and add a gRPC server
interceptor), so Flask, Django, FastAPI and anything else behave the same. Where
the server already runs a frame around the app, the same accounting is compiled
into it instead and the app is left unwrapped: uvicorn's request cycle
(:mod:`.uvicorn_cycle`) and gunicorn's sync and gthread workers
(:mod:`.gunicorn_worker`).

Per request the wrapper (or the server's own frame): classifies it (kubelet probe / ignored path / traffic),
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
