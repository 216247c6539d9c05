"""Wire traffic tags into a process: thread propagation, client patches, the /status section.

:func:`install` is called once at interpreter start-up by
:func:`pilotfish.runtime.install`. Start-up budget: it imports nothing (not
even ``threading`` or ``typing``) and only registers post-import hooks with
:func:`pilotfish.importhooks.when_imported`; each patch runs when the app
imports the library, or at once if it already has.
"""

from .. import PACKAGE, importhooks, log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List

# module to watch -> (integration module, function called with the imported module)
PATCHES = (
    ("threading", PACKAGE + ".tags.propagation", "patch_threading"),
    ("concurrent.futures.thread", PACKAGE + ".tags.propagation", "patch_futures"),
    ("http.client", PACKAGE + ".integrations.http_client", "patch"),
    ("httpx", PACKAGE + ".integrations.httpx_client", "patch"),
    ("aiohttp", PACKAGE + ".integrations.aiohttp_client", "patch"),
    ("grpc._channel", PACKAGE + ".integrations.grpc_client", "patch_sync"),
    ("grpc.aio._channel", PACKAGE + ".integrations.grpc_client", "patch_aio"),
)

installed: "List[str]" = []
"""Modules whose tag patch is in place in this process (for /status and tests)."""


def status() -> "Dict[str, Any]":
    """The ``tags`` section of /status: how requests are tagged here, and what is patched.

    (This instance's own tag is the top-level ``tag`` of /status, from the status server.)
    """
    from .. import settings
    from . import inbound

    current = settings.current()
    return {
        "tag_headers": list(current.tag_headers),
        "baggage_key": current.baggage_key,
        "lanes": [lane.describe() for lane in inbound.lanes()],
        "patched": list(installed),
    }


def _add_status_section() -> None:
    try:
        from .. import status_server

        status_server.add_status_section("tags", status)
    except Exception:
        log.exception_once("tags:status", "could not add the tags section to /status")


def install() -> None:
    """Register every tag patch as a post-import hook, and the /status section on wake. Never raises."""
    try:
        for watched, module_path, function in PATCHES:
            importhooks.patch_when_imported(watched, module_path, function, "tags", installed)
        from .. import runtime

        runtime.on_wake(_add_status_section)
    except Exception:
        log.exception_once("tags:install", "traffic tags are off in this process")
