"""hypercorn: wrap the raw app before hypercorn adapts it; wake the parent on bind."""

from __future__ import annotations

from typing import Any

from .. import importhooks, log, patching, runtime
from ..inbound.asgi import wrap_asgi
from ..inbound.wsgi import wrap_wsgi

KEY = "hypercorn"


def _wrap_app(original: Any) -> Any:
    def wrap_app(app: Any, wsgi_max_body_size: int, mode: Any = None) -> Any:
        try:
            from hypercorn.utils import is_asgi

            if mode is None:
                mode = "asgi" if is_asgi(app) else "wsgi"
            app = wrap_asgi(app) if mode == "asgi" else wrap_wsgi(app)
        except Exception:
            log.exception_once("hypercorn-wrap", "could not wrap the hypercorn app; it runs unmodified")
        return original(app, wsgi_max_body_size, mode)

    return wrap_app


def _create_sockets(original: Any) -> Any:
    def create_sockets(self: Any) -> Any:
        sockets = original(self)
        try:
            for sock in list(sockets.secure_sockets) + list(sockets.insecure_sockets):
                runtime.wake(getattr(sock.family, "name", ""), sock.getsockname())
        except Exception:
            log.exception_once("hypercorn-bind", "could not start the agent in the hypercorn parent")
        return sockets

    return create_sockets


def _rebind(module: Any) -> None:
    """Modules that did ``from ..utils import wrap_app`` hold the original: update them."""
    utils = __import__("hypercorn.utils", fromlist=["wrap_app"])
    if getattr(module, "wrap_app", None) is getattr(utils.wrap_app, "__wrapped__", None):
        patching.replace(KEY, module, "wrap_app", lambda _original: utils.wrap_app)


def patch() -> None:
    from hypercorn import config, utils

    patching.replace(KEY, utils, "wrap_app", _wrap_app)
    patching.replace(KEY, config.Config, "create_sockets", _create_sockets)
    for name in ("hypercorn.asyncio", "hypercorn.asyncio.run", "hypercorn.trio", "hypercorn.trio.run"):
        importhooks.when_imported(name, _rebind)


def unpatch() -> None:
    patching.restore(KEY)
