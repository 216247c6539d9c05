"""waitress: wrap the app given to ``create_server``; close keep-alive while offline."""

from __future__ import annotations

from typing import Any

from .. import importhooks, log, patching, runtime, shared
from ..inbound.wsgi import wrap_wsgi

KEY = "waitress"


def _create_server(original: Any) -> Any:
    def create_server(application: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            application = wrap_wsgi(application)
        except Exception:
            log.exception_once("waitress-wrap", "could not wrap the waitress app; it runs unmodified")
        server = original(application, *args, **kwargs)
        try:
            # --unix-socket: the listen() hook wakes only on TCP listeners.
            sock = getattr(server, "socket", None)
            if sock is not None and getattr(sock.family, "name", "") == "AF_UNIX":
                runtime.wake("AF_UNIX", sock.getsockname())
        except Exception:
            log.exception_once("waitress-unix", "could not start the agent for waitress's Unix socket")
        return server

    return create_server


def _build_response_header(original: Any) -> Any:
    is_offline = shared.is_offline

    def build_response_header(self: Any) -> Any:
        if is_offline():
            try:
                self.set_close_on_finish()
            except Exception:
                pass
        return original(self)

    return build_response_header


def _patch_task(module: Any) -> None:
    patching.replace(KEY, module.Task, "build_response_header", _build_response_header)


def _rebind(module: Any) -> None:
    server = __import__("waitress.server", fromlist=["create_server"])
    if getattr(module, "create_server", None) is getattr(server.create_server, "__wrapped__", None):
        patching.replace(KEY, module, "create_server", lambda _original: server.create_server)


def patch() -> None:
    from waitress import server

    patching.replace(KEY, server, "create_server", _create_server)
    importhooks.when_imported("waitress.task", _patch_task)
    importhooks.when_imported("waitress", _rebind)


def unpatch() -> None:
    patching.restore(KEY)
