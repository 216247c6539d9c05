"""wsgiref and everything built on it (Django ``runserver``): wrap ``set_app``.

While offline, ``Connection: close`` is added in ``cleanup_headers`` (after the
app, where PEP 3333 lets the server add hop-by-hop headers); Django's handler
then closes the persistent connection itself.
"""

from __future__ import annotations

from typing import Any

from .. import importhooks, log, patching, shared
from ..inbound.wsgi import wrap_wsgi

KEY = "wsgiref"


def _set_app(original: Any) -> Any:
    def set_app(self: Any, application: Any) -> None:
        try:
            application = wrap_wsgi(application)
        except Exception:
            log.exception_once("wsgiref-wrap", "could not wrap the wsgiref app; it runs unmodified")
        original(self, application)

    return set_app


def _cleanup_headers(original: Any) -> Any:
    is_offline = shared.is_offline

    def cleanup_headers(self: Any) -> None:
        original(self)
        if is_offline():
            try:
                self.headers["Connection"] = "close"
            except Exception:
                pass

    return cleanup_headers


def _patch_handlers(module: Any) -> None:
    patching.replace(KEY, module.BaseHandler, "cleanup_headers", _cleanup_headers)


def patch() -> None:
    from wsgiref import simple_server

    patching.replace(KEY, simple_server.WSGIServer, "set_app", _set_app)
    importhooks.when_imported("wsgiref.handlers", _patch_handlers)


def unpatch() -> None:
    patching.restore(KEY)
