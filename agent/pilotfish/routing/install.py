"""Wire consumer-side routing into a process: client hooks on import, the long-poll on wake-up.

:func:`install` runs at interpreter start-up (from :func:`pilotfish.runtime.install`)
and, like the tag patches, imports nothing: it registers post-import hooks, so
a client library is hooked when the app imports it, and :mod:`.core` (with its
long-poll) loads only then or at wake-up.
"""

from __future__ import annotations

from .. import PACKAGE, importhooks, log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, List

# module to watch -> (integration module, function called with the imported module)
HOOKS = (
    ("http.client", PACKAGE + ".integrations.routing_http_client", "patch"),
    ("urllib3.poolmanager", PACKAGE + ".integrations.routing_urllib3", "patch"),
    ("httpcore", PACKAGE + ".integrations.routing_httpx", "patch"),
    ("aiohttp", PACKAGE + ".integrations.routing_aiohttp", "patch"),
    ("grpc", PACKAGE + ".integrations.routing_grpc", "patch"),
    ("grpc.aio", PACKAGE + ".integrations.routing_grpc", "patch_aio"),
)

installed: List[str] = []
"""Modules whose routing hook is in place in this process (for /status and tests)."""


def _hook(watched: str, module_path: str, function: str) -> Callable[[Any], None]:
    def hook(module: Any) -> None:
        integration = __import__(module_path, fromlist=[function])
        getattr(integration, function)(module)
        installed.append(watched)

    hook.__qualname__ = "routing:" + watched
    return hook


def _start() -> None:
    from . import core

    core.start()


def install() -> None:
    """Register the routing hooks and the owner's wake-up start. Never raises."""
    try:
        for watched, module_path, function in HOOKS:
            importhooks.when_imported(watched, _hook(watched, module_path, function))
        from .. import runtime

        runtime.on_wake(_start)
    except Exception:
        log.exception_once("routing:install", "routing is off in this process")
