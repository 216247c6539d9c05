"""The agent's life in one process: dormant until a server appears, then awake.

At interpreter start :func:`install` only registers import hooks: one for
``socket`` (to see the app's first ``listen()``) and one per server and client
library we instrument. Processes that never serve (pip, compileall, Django
migrations, one-off scripts) therefore pay a few dict inserts and nothing else.

Wake-up happens on the first ``listen()`` of a socket that is not ours (or
when a gRPC server starts, whose C core listens without Python seeing it):

- the process that manages to bind the status port becomes the **owner**: it
  creates the per-container shared memory, serves ``:55199``, and runs the
  ``on_wake`` callbacks (lifecycle, config client, registration);
- a process that finds the port taken and the owner's shared memory in its
  environment (``uvicorn --workers``, hypercorn workers: spawned) becomes a
  **worker**; a process forked from the owner (gunicorn workers) is a worker
  from the moment of the fork. Workers only count their requests in their slot.
"""

from __future__ import annotations

import _thread  # not threading/typing: neither is loaded yet at interpreter start-up
import os
import sys
import time

from . import PACKAGE, importhooks, log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, List, Optional, Tuple

DORMANT, OWNER, WORKER, STANDALONE = "dormant", "owner", "worker", "standalone"

bootstrap_dir = ""
_role = DORMANT
_lock = _thread.RLock()
_wake_callbacks: List[Callable[[], None]] = []
_woken_callbacks_ran = False
_started = False  # every wake callback has returned: the readiness gates are all in place
_app_addresses: List[Tuple[str, Any]] = []
_listening_since: Optional[float] = None
_ignored_fds: set = set()
_waking = False  # our own status socket's listen() during wake-up is not the app's

# Integrations: (module that triggers the patch, integration module in pilotfish.integrations).
SERVER_INTEGRATIONS = (
    ("gunicorn.workers.base", "gunicorn"),
    ("uvicorn.config", "uvicorn"),
    ("hypercorn.utils", "hypercorn"),
    ("waitress.server", "waitress"),
    ("wsgiref.simple_server", "wsgiref"),
    ("grpc", "grpc_server"),
)


def role() -> str:
    return _role


def app_addresses() -> List[Tuple[str, Any]]:
    """Where the app listens: (family, address) pairs seen through ``listen()``."""
    return list(_app_addresses)


def listening_since() -> Optional[float]:
    """``time.monotonic()`` of the app's first ``listen()`` in this container's owner."""
    return _listening_since


def install(bootstrap_dir: str = "") -> None:
    """Register the agent's import hooks. Cheap: imports nothing the app has not."""
    globals()["bootstrap_dir"] = bootstrap_dir
    importhooks.when_imported("socket", _patch_socket)
    for trigger, name in SERVER_INTEGRATIONS:
        importhooks.when_imported(trigger, _integration_hook(name))
    _install_optional(PACKAGE + ".tags.install")
    _install_optional(PACKAGE + ".routing.install")
    on_wake(_start_central_config)  # first: central config may set the lifecycle's delay and warm-up
    on_wake(_start_lifecycle)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)


def _start_lifecycle() -> None:
    """Owner only, once the app listens: lifecycle, readiness gates, graceful offline (issue 5)."""
    from . import lifecycle

    lifecycle.start()


def _install_optional(module: str) -> None:
    """Start a feature package if it is present in this build of the agent."""
    try:
        __import__(module, fromlist=["install"]).install()
    except ImportError as error:
        if not (error.name and module.startswith(error.name)):
            log.exception_once("install:" + module, "could not start %s" % module)
    except Exception:
        log.exception_once("install:" + module, "could not start %s" % module)


def _start_central_config() -> None:
    """Owner only, after wake-up: live config from PILOTFISH_CONFIG_URL (a no-op without it)."""
    from . import config_client

    config_client.start()


def _follow_central_config() -> None:
    """Workers: apply what the owner's config client caches (no connection of their own)."""
    try:
        if os.environ.get("PILOTFISH_CONFIG_URL"):
            from . import config_client

            config_client.follow()
    except Exception:
        log.exception_once("config-follow", "central config is not followed in this worker")


def _integration_hook(name: str) -> Callable[[Any], None]:
    def hook(_module: Any) -> None:
        integration = __import__(PACKAGE + ".integrations." + name, fromlist=["patch"])
        integration.patch()

    hook.__qualname__ = "integration:" + name
    return hook


# -- seeing the app listen ------------------------------------------------------------


def _patch_socket(socket_module: Any) -> None:
    cls = socket_module.socket
    original = cls.listen
    if getattr(original, "__pilotfish__", False):
        return

    def listen(self: Any, *args: Any) -> None:
        original(self, *args)
        try:
            if not _waking and self.fileno() not in _ignored_fds:
                _on_listen(self)
        except Exception:
            log.exception_once("listen-hook", "could not observe a listening socket")

    listen.__pilotfish__ = True  # type: ignore[attr-defined]
    listen.__wrapped__ = original  # type: ignore[attr-defined]
    listen.__doc__ = original.__doc__
    cls.listen = listen


def ignore_socket(sock: Any) -> None:
    """Our own listening sockets (the status server) are not the app's."""
    _ignored_fds.add(sock.fileno())


def _on_listen(sock: Any) -> None:
    try:
        address = sock.getsockname()
    except OSError:
        address = None
    family = getattr(sock.family, "name", str(sock.family))
    wake(family, address)


def wake(family: str = "", address: Any = None) -> None:
    """The app listens (or serves gRPC): decide this process's role, once."""
    global _role, _listening_since, _waking
    with _lock:
        if address is not None and (family, address) not in _app_addresses:
            _app_addresses.append((family, address))
        if _role != DORMANT:
            return
        from . import settings, shared

        current = settings.load()
        if not current.enabled:
            return
        log.set_level(current.log_level)
        settings.subscribe(_follow_log_level)
        if shared.attach_from_env() is not None:
            _role = WORKER
            shared.claim()
            log.debug("worker %d attached to %s" % (os.getpid(), shared.segment().path))  # type: ignore[union-attr]
            _follow_central_config()
            return
        _waking = True
        try:
            _role = _become_owner(current)
        finally:
            _waking = False
        _listening_since = time.monotonic()
    _run_wake_callbacks()


def _follow_log_level(old: Any, new: Any) -> None:
    if old.log_level != new.log_level:
        log.set_level(new.log_level)


def _become_owner(current: Any) -> str:
    from . import shared, status_server

    server = status_server.bind(current.status_host, current.status_port)
    shared.create("%d" % current.status_port)  # slots are claimed by processes that serve requests
    if server is None:
        log.once(
            "status-port-taken",
            "warning",
            "status port %s:%d is in use by another process; this process serves the app without "
            "readiness or /status (set PILOTFISH_STATUS_PORT to a free port)"
            % (current.status_host, current.status_port),
        )
        return STANDALONE
    ignore_socket(server.socket)
    status_server.serve(server)
    status_server.add_gate("app-listening", _listening_gate)
    status_server.add_status_section("runtime", describe)
    log.info(
        "agent %s serving status on %s:%d (pid %d)"
        % (__import__(PACKAGE).__version__, current.status_host, current.status_port, os.getpid())
    )
    return OWNER


def _listening_gate() -> Tuple[bool, str]:
    if not _app_addresses:
        return False, "the app has not opened its listening socket yet"
    if not _started:
        # The status server answers before the lifecycle has added its gates; with this
        # gate alone passing, /readiness would say 200 during the registration delay.
        return False, "the app listens; the agent is still adding its readiness gates"
    return True, "app listens on %s" % ", ".join(_describe(a) for _, a in _app_addresses)


def _describe(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return "%s:%s" % (address[0], address[1])
    return str(address)


def on_wake(callback: Callable[[], None]) -> None:
    """Run ``callback()`` in the owner once the app listens (now, if that already happened)."""
    with _lock:
        if not _woken_callbacks_ran:
            _wake_callbacks.append(callback)
            return
    if _role == OWNER:
        _call(callback)


def _run_wake_callbacks() -> None:
    global _woken_callbacks_ran, _started
    with _lock:
        callbacks = list(_wake_callbacks) if _role == OWNER else []
        _wake_callbacks.clear()
        _woken_callbacks_ran = True
    try:
        for callback in callbacks:
            _call(callback)
    finally:
        _started = True  # even if a step failed: its gates are absent, the others decide


def _call(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:
        log.exception_once("on-wake:%r" % (callback,), "an agent start-up step failed")


# -- fork -----------------------------------------------------------------------------


def _after_fork_in_child() -> None:
    """A forked child is a worker of its parent's owner: new locks, own slot, no server."""
    global _role, _lock
    try:
        _lock = _thread.RLock()
        log.reset_for_fork()
        if _role == DORMANT:
            return
        from . import shared, status_server

        status_server.reset_after_fork()
        shared.forget_slot_after_fork()
        if _role in (OWNER, STANDALONE, WORKER):
            _role = WORKER
            shared.claim()
            _follow_central_config()
    except Exception:
        log.exception_once("after-fork", "could not set up the agent in a forked worker")


def describe() -> dict:
    """For ``/status``: this process's view of the runtime."""
    return {
        "role": _role,
        "pid": os.getpid(),
        "python": "%d.%d.%d" % sys.version_info[:3],
        "app_addresses": [_describe(a) for _, a in _app_addresses],
        "pending_hooks": importhooks.pending(),
    }
