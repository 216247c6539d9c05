"""grpc (sync server): add our interceptor to ``grpc.server``; wake when it starts.

The gRPC C core listens without Python's ``socket`` module, so the agent learns
that the app serves from ``Server.start()`` and the ports it was given.
"""

from __future__ import annotations

from typing import Any

from .. import log, patching, runtime
from ..inbound.grpc_server import make_interceptor

KEY = "grpc-server"


def _server(original: Any) -> Any:
    def server(
        thread_pool: Any, handlers: Any = None, interceptors: Any = None, *args: Any, **kwargs: Any
    ) -> Any:
        try:
            interceptors = [make_interceptor(), *(interceptors or ())]
        except Exception:
            log.exception_once("grpc-server-wrap", "could not instrument grpc.server; it runs unmodified")
        created = original(thread_pool, handlers, interceptors, *args, **kwargs)
        try:
            _watch(created)
        except Exception:
            log.exception_once("grpc-server-watch", "could not watch the gRPC server start")
        return created

    return server


def _watch(server: Any) -> None:
    cls = type(server)

    def add_port(original: Any) -> Any:
        def add(self: Any, address: str, *args: Any, **kwargs: Any) -> Any:
            port = original(self, address, *args, **kwargs)
            try:
                ports = self.__dict__.setdefault("_pilotfish_ports", [])
                ports.append((address.rsplit(":", 1)[0], port))
            except Exception:
                pass
            return port

        return add

    def start(original: Any) -> Any:
        def start_server(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = original(self, *args, **kwargs)
            try:
                for address in getattr(self, "_pilotfish_ports", None) or [("", None)]:
                    runtime.wake("grpc", address)
                from .. import offline

                offline.add_grpc_server(self)  # drained with stop(grace) after the quiet period
            except Exception:
                log.exception_once("grpc-wake", "could not start the agent for a gRPC server")
            return result

        return start_server

    patching.replace(KEY, cls, "add_insecure_port", add_port)
    patching.replace(KEY, cls, "add_secure_port", add_port)
    patching.replace(KEY, cls, "start", start)


def patch() -> None:
    import grpc

    patching.replace(KEY, grpc, "server", _server)


def unpatch() -> None:
    patching.restore(KEY)
