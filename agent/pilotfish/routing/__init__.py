"""Consumer-side routing: each outbound call to a known Service picks its instance here.

Like MSE, Dubbo and Sermant, the *caller's* agent chooses the instance, per
request and not per TCP connection: lane first (the request's tag), then a
weighted random pick by the provider's warm-up weight, never an offline or
recently unreachable instance. Only the TCP destination changes; the URL,
Host, cookies and TLS names stay the Service's.

- :mod:`.hosts`: which host names and addresses mean which Service.
- :mod:`.table`: the Services and instances of one registry answer, and the pick.
- :mod:`.core`: the process's current table (long-polled from the config
  service), offline eviction, connect-failure ejection, ``/status`` and
  ``/metrics``; what the client hooks call.
- this package itself: :func:`install`, the import hooks that put the client hooks in
  place (``pilotfish.integrations.routing_*``).

Standard library only. Only this ``__init__`` is imported at interpreter start (from
:func:`pilotfish.runtime.install`, one module: each more costs a pod's every process
start-up ~0.1 ms), and it imports nothing: it registers post-import hooks, so a client
library is hooked when the app imports it, and :mod:`.core` (with its long-poll) loads
only then or at wake-up.

The routing table comes only from the config service. Without one (``PILOTFISH_CONFIG_URL``
unset, read once at start like every setting the config service cannot change) no call
could be routed: no hook is put in place, nothing else of the package loads, and
``/status`` says why routing is off.
"""

import os

from .. import PACKAGE, importhooks, log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, List

# module to watch -> (integration module, function called with the imported module)
HOOKS = (
    ("http.client", PACKAGE + ".integrations.routing_http_client", "patch"),
    ("urllib3.poolmanager", PACKAGE + ".integrations.routing_urllib3", "patch"),
    ("httpcore", PACKAGE + ".integrations.routing_httpx", "patch"),
    ("aiohttp", PACKAGE + ".integrations.routing_aiohttp", "patch"),
    ("grpc", PACKAGE + ".integrations.routing_grpc", "patch"),
    ("grpc.aio", PACKAGE + ".integrations.routing_grpc", "patch_aio"),
)

installed: "List[str]" = []
"""Modules whose routing hook is in place in this process (for /status and tests)."""
OFF_WITHOUT_CONFIG_SERVICE = {
    "enabled": False,
    "reason": "no config service (PILOTFISH_CONFIG_URL unset): outbound calls take the ordinary path",
}


def _start() -> None:
    from . import core

    core.start()


def _show_off() -> None:
    import importlib

    status_server: Any = importlib.import_module(PACKAGE + ".status_server")
    status_server.add_status_section("routing", lambda: dict(OFF_WITHOUT_CONFIG_SERVICE))


def install() -> None:
    """Register the routing hooks and the owner's wake-up start. Never raises."""
    try:
        from .. import runtime

        if not os.environ.get("PILOTFISH_CONFIG_URL", "").strip():  # not settings: not loaded yet
            runtime.on_wake(_show_off)
            return
        for watched, module_path, function in HOOKS:
            importhooks.patch_when_imported(watched, module_path, function, "routing", installed)
        runtime.on_wake(_start)
    except Exception:
        log.exception_once("routing:install", "routing is off in this process")
