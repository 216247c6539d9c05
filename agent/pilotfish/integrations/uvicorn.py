"""uvicorn: wrap the ASGI app where uvicorn loads it; wake the supervisor on bind.

``Config.load`` is the one place every way of running uvicorn goes through
(CLI, ``uvicorn.run``, ``--workers``, ``--reload``, gunicorn's UvicornWorker).
``Config.bind_socket`` runs in the supervisor of ``--workers``/``--reload``,
which binds but never listens: waking there makes it the owner, so the
workers it spawns find its shared memory. ``Server.startup`` covers the event
loops that listen in C (uvloop), where ``socket.listen`` is never called.
"""

from __future__ import annotations

from typing import Any

from .. import importhooks, log, patching, runtime
from ..inbound.asgi import wrap_asgi

KEY = "uvicorn"


def _load(original: Any) -> Any:
    def load(self: Any) -> None:
        original(self)
        try:
            self.loaded_app = wrap_asgi(self.loaded_app)
        except Exception:
            log.exception_once("uvicorn-wrap", "could not wrap the uvicorn app; it runs unmodified")

    return load


def _bind_socket(original: Any) -> Any:
    def bind_socket(self: Any) -> Any:
        sock = original(self)
        try:
            runtime.wake(getattr(sock.family, "name", ""), sock.getsockname())
        except Exception:
            log.exception_once("uvicorn-bind", "could not start the agent in the uvicorn supervisor")
        return sock

    return bind_socket


def _startup(original: Any) -> Any:
    async def startup(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = await original(self, *args, **kwargs)
        try:
            for server in getattr(self, "servers", None) or ():
                for sock in getattr(server, "sockets", None) or ():
                    runtime.wake(getattr(sock.family, "name", ""), sock.getsockname())
        except Exception:
            log.exception_once("uvicorn-startup", "could not start the agent when uvicorn started")
        return result

    return startup


def _patch_server(module: Any) -> None:
    patching.replace(KEY, module.Server, "startup", _startup)


def patch() -> None:
    from uvicorn import config

    patching.replace(KEY, config.Config, "load", _load)
    patching.replace(KEY, config.Config, "bind_socket", _bind_socket)
    # uvloop listens in C, unseen by socket.listen: learn the sockets once startup is done.
    importhooks.when_imported("uvicorn.server", _patch_server)


def unpatch() -> None:
    patching.restore(KEY)
