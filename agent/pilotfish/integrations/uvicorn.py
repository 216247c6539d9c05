"""uvicorn: count requests in uvicorn's own request cycle; wake the supervisor on bind.

``Config.load`` is the one place every way of running uvicorn goes through
(CLI, ``uvicorn.run``, ``--workers``, ``--reload``, gunicorn's UvicornWorker).
When its HTTP protocol is uvicorn's httptools or h11 protocol and their request
cycle's ``run_asgi`` looks as expected, requests are counted inside that
``run_asgi`` (:mod:`pilotfish.inbound.uvicorn_cycle`) and the app is left as it
is; otherwise (another protocol, internals that moved, no source to recompile)
the app is wrapped with :func:`~pilotfish.inbound.asgi.wrap_asgi` as for any server.
``Config.bind_socket`` runs in the supervisor of ``--workers``/``--reload``,
which binds but never listens: waking there makes it the owner, so the
workers it spawns find its shared memory. ``Server.startup`` covers the event
loops that listen in C (uvloop), where ``socket.listen`` is never called.
"""

from __future__ import annotations

from typing import Any, List

from .. import importhooks, log, patching, runtime
from ..inbound import WRAPPED_MARK, uvicorn_cycle
from ..inbound.asgi import wrap_asgi

KEY = "uvicorn"
PROTOCOL_MODULES = {
    "uvicorn.protocols.http.httptools_impl": "HttpToolsProtocol",
    "uvicorn.protocols.http.h11_impl": "H11Protocol",
}

# Protocol classes whose request cycle counts requests itself.
_counting: List[type] = []


def counts_in_cycle(config: Any) -> bool:
    """Whether requests of ``config`` are counted by the request cycle (app left unwrapped)."""
    protocol = getattr(config, "http_protocol_class", None)
    return any(protocol is counting for counting in _counting) and not getattr(
        config.loaded_app, WRAPPED_MARK, False
    )


def _load(original: Any) -> Any:
    def load(self: Any) -> None:
        original(self)
        try:
            if counts_in_cycle(self):
                uvicorn_cycle.count_app(self.loaded_app)
            else:
                self.loaded_app = wrap_asgi(self.loaded_app)
        except Exception:
            log.exception_once("uvicorn-wrap", "could not wrap the uvicorn app; it runs unmodified")

    return load


def _patch_protocol(module: Any) -> None:
    """Count in the module's request cycle, when the cycle and its protocol look as expected."""
    protocol = getattr(module, PROTOCOL_MODULES[module.__name__], None)
    cycle = getattr(module, "RequestResponseCycle", None)
    original = getattr(cycle, "__dict__", {}).get("run_asgi")
    if not patching.is_patched(original):
        counting = uvicorn_cycle.counting_run_asgi(original) if isinstance(protocol, type) else None
        if counting is None or not patching.replace(KEY, cycle, "run_asgi", lambda _original: counting):
            log.once(
                "uvicorn-cycle-shape:" + module.__name__,
                "info",
                "%s does not look as expected; its apps are wrapped instead" % module.__name__,
            )
            return
    if isinstance(protocol, type) and protocol not in _counting:
        _counting.append(protocol)


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
    for name in PROTOCOL_MODULES:
        importhooks.when_imported(name, _patch_protocol)


def unpatch() -> None:
    patching.restore(KEY)
    uvicorn_cycle.forget_apps()
    del _counting[:]
