"""FastAPI hello wrapped by hand in pilotfish's ``wrap_asgi``, timed from inside the server.

For ``hack/bench/insitu_asgi.py``: no sitecustomize (``PYTHONPATH`` is the agent's
``lib``), the agent is woken by hand, and two ``perf_counter_ns`` layers around the
wrapper tell what ``pilotfish_asgi`` costs per request inside a loaded uvicorn
(written to stderr at exit as ``INSITU n=... wrapper_us=...``).
"""

from __future__ import annotations

import atexit
import sys
import time
from typing import Any, Dict

from fastapi_hello import app as fastapi_app
from pilotfish import runtime
from pilotfish.inbound.asgi import wrap_asgi

runtime.wake("AF_INET", ("127.0.0.1", 0))
_ns = time.perf_counter_ns
_acc: Dict[str, int] = {"outer": 0, "inner": 0, "n": 0}


async def _inner(scope: Any, receive: Any, send: Any) -> None:
    start = _ns()
    try:
        await fastapi_app(scope, receive, send)
    finally:
        _acc["inner"] += _ns() - start


_wrapped = wrap_asgi(_inner)


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        await fastapi_app(scope, receive, send)
        return
    start = _ns()
    try:
        await _wrapped(scope, receive, send)
    finally:
        _acc["outer"] += _ns() - start
        _acc["n"] += 1


def _report() -> None:
    n = _acc["n"] or 1
    sys.stderr.write(
        "INSITU n=%d wrapper_us=%.2f app_us=%.2f\n"
        % (_acc["n"], (_acc["outer"] - _acc["inner"]) / n / 1e3, _acc["inner"] / n / 1e3)
    )


atexit.register(_report)
