"""gunicorn: wrap the WSGI app each worker loads; close keep-alive while offline.

ASGI workers (``-k uvicorn_worker.UvicornWorker``) are left to the uvicorn
integration, which wraps the app where uvicorn loads it.
"""

from __future__ import annotations

import inspect
from typing import Any

from .. import importhooks, log, patching, runtime, shared
from ..inbound.wsgi import wrap_wsgi

KEY = "gunicorn"


def _is_asgi(worker: Any, app: Any) -> bool:
    module = type(worker).__module__
    if module.startswith(("uvicorn", "uvicorn_worker")) or "asgi" in type(worker).__name__.lower():
        return True
    if inspect.iscoroutinefunction(app):
        return True
    call = getattr(app, "__call__", None)  # noqa: B004 - a class instance's async __call__
    return inspect.iscoroutinefunction(call)


def _load_wsgi(original: Any) -> Any:
    def load_wsgi(self: Any) -> None:
        original(self)
        try:
            if not _is_asgi(self, self.wsgi):
                self.wsgi = wrap_wsgi(self.wsgi)
        except Exception:
            log.exception_once("gunicorn-wrap", "could not wrap the gunicorn app; it runs unmodified")

    return load_wsgi


def _should_close(original: Any) -> Any:
    is_offline = shared.is_offline

    def should_close(self: Any) -> bool:
        return original(self) or is_offline()

    return should_close


def _create_sockets(original: Any) -> Any:
    """The arbiter's listeners: a Unix socket (``-b unix:...``) wakes the agent here, since the
    ``listen()`` hook wakes only on TCP listeners (the Unix sockets of multiprocessing helpers
    are not servers)."""

    def create_sockets(*args: Any, **kwargs: Any) -> Any:
        listeners = original(*args, **kwargs)
        try:
            for listener in listeners or ():
                sock = getattr(listener, "sock", listener)
                if getattr(sock.family, "name", "") == "AF_UNIX":
                    runtime.wake("AF_UNIX", sock.getsockname())
        except Exception:
            log.exception_once("gunicorn-unix", "could not start the agent for gunicorn's Unix socket")
        return listeners

    return create_sockets


def _patch_sock(module: Any) -> None:
    patching.replace(KEY, module, "create_sockets", _create_sockets)


def _patch_response(module: Any) -> None:
    patching.replace(KEY, module.Response, "should_close", _should_close)


def patch() -> None:
    from gunicorn.workers import base

    if not patching.replace(KEY, base.Worker, "load_wsgi", _load_wsgi):
        log.once("gunicorn-missing", "info", "gunicorn Worker.load_wsgi not found; gunicorn not instrumented")
    importhooks.when_imported("gunicorn.http.wsgi", _patch_response)
    importhooks.when_imported("gunicorn.sock", _patch_sock)


def unpatch() -> None:
    patching.restore(KEY)
