"""The agent's life in one process: dormant until a server appears, then awake.

At interpreter start :func:`install` only registers import hooks: one for
``socket`` (to see the app's first ``listen()``) and one per server and client
library we instrument. Processes that never serve (pip, compileall, Django
migrations, one-off scripts) therefore pay a few dict inserts and nothing else.

Wake-up happens on the first ``listen()`` of a socket that is not ours (or
when a gRPC server starts, whose C core listens without Python seeing it):

- a process that the owner started with multiprocessing's spawn (``uvicorn
  --workers``/``--reload``, hypercorn workers) attaches to the owner's shared
  memory (found by the parent's pid and the status port) and becomes a
  **worker**; a process forked from the owner (gunicorn workers) is a worker
  from the moment of the fork. Workers only count their requests in their slot;
- otherwise the process that manages to bind the status port becomes the
  **owner**: it creates the per-container shared memory, serves ``:55199``, and
  runs the ``on_wake`` callbacks: :func:`pilotfish.owner.start` (central config, lifecycle,
  registration, graceful offline) and those of the feature packages.
"""

import _thread  # not threading/typing: neither is loaded yet at interpreter start-up
import os
import sys
import time

from . import PACKAGE, importhooks, log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Set, Tuple

    from .settings import Settings

DORMANT, OWNER, WORKER, STANDALONE = "dormant", "owner", "worker", "standalone"
FAILED = "failed"  # the wake raised: what it opened is closed, and it is not tried again

bootstrap_dir = ""
_role = DORMANT
_lock = _thread.RLock()
_wake_callbacks: "List[Callable[[], None]]" = []
_woken_callbacks_ran = False
_started = False  # every wake callback has returned: the readiness gates are all in place
_app_addresses: "List[Tuple[str, Any]]" = []
_listening_since: "Optional[float]" = None
_ignored_fds: "Set[int]" = set()

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


def app_addresses() -> "List[Tuple[str, Any]]":
    """Where the app listens: (family, address) pairs seen through ``listen()``."""
    return list(_app_addresses)


def app_port() -> "Optional[int]":
    """The app's TCP port: the first ``AF_INET``/``AF_INET6`` (or gRPC TCP) address it listens on.

    None while unknown (the app does not listen yet, or only on Unix sockets). What consumers
    connect to, and what the instance registers with.
    """
    for family, address in app_addresses():
        if family in _TCP_FAMILIES and isinstance(address, tuple) and len(address) >= 2:
            port = address[1]
            if isinstance(port, int) and port > 0 and not str(address[0]).startswith("unix"):
                return port
    return None


def listening_since() -> "Optional[float]":
    """``time.monotonic()`` of the app's first ``listen()`` in this container's owner."""
    return _listening_since


def install(bootstrap_dir: str = "") -> None:
    """Register the agent's import hooks. Cheap: imports nothing the app has not."""
    globals()["bootstrap_dir"] = bootstrap_dir
    importhooks.when_imported("socket", _patch_socket)
    for trigger, name in SERVER_INTEGRATIONS:
        importhooks.when_imported(trigger, _integration_hook(name))
    _install_optional(PACKAGE + ".tags.install")
    _install_optional(PACKAGE + ".routing")
    on_wake(_start_owner)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
        os.register_at_fork(before=_wake_before_fork, after_in_child=_wake_after_fork_in_child)


def _start_owner() -> None:
    """Owner only, once the app listens: central config, lifecycle, registration, graceful offline."""
    from . import owner

    owner.start(app_port, _listening_since, on_listener_thread)


def _install_optional(module: str) -> None:
    """Start a feature package if it is present in this build of the agent."""
    try:
        __import__(module, fromlist=["install"]).install()
    except ImportError as error:
        if not (error.name and module.startswith(error.name)):
            log.exception_once("install:" + module, "could not start %s" % module)
    except Exception:
        log.exception_once("install:" + module, "could not start %s" % module)


def _follow_central_config() -> None:
    """Workers: apply what the owner's config client caches (no connection of their own)."""
    try:
        if os.environ.get("PILOTFISH_CONFIG_URL"):
            from .central import follower

            follower.follow()
    except Exception:
        log.exception_once("config-follow", "central config is not followed in this worker")


def _integration_hook(name: str) -> "Callable[[Any], None]":
    def hook(_module: "Any") -> None:
        integration = __import__(PACKAGE + ".integrations." + name, fromlist=["patch"])
        integration.patch()

    hook.__qualname__ = "integration:" + name
    return hook


# -- seeing the app listen ------------------------------------------------------------
#
# What runs on the thread that called listen() is kept to memory: the address, one
# non-blocking lock attempt, and starting the wake thread. An asyncio (or trio) app's
# event loop is that thread, and blocking-call detectors (aiohttp's test suite,
# blockbuster) reject file or network work there; the wake does all of it (imports,
# shared memory, binding the status port, the start-up steps) on its own thread.
# A synchronous caller then waits for it, bounded, so that workers it forks or
# spawns next find the owner's shared memory; an event loop does not wait.

WAKE_WAIT_SECONDS = 5.0
"""How long a synchronous ``listen()`` (or a fork) waits for the wake to finish."""

_INET_FAMILIES = ("AF_INET", "AF_INET6")
_TCP_FAMILIES = _INET_FAMILIES + ("grpc",)  # gRPC's C core listens on TCP without Python's listen()
_wake_claim = _thread.allocate_lock()  # taken, never released, by the one wake of this process
_wake_done = _thread.allocate_lock()  # held while the wake runs
_wake_thread = 0  # ident of the wake thread: its own listen() (the status port) is not the app's
_waker_thread = 0  # ident of the thread whose listen() started the wake
_waker_loop: "Any" = None  # that thread's running event loop, if any
_listener_steps: "List[Callable[[], Any]]" = []
_REAL_START_THREAD = _thread.start_new_thread  # taken at interpreter start, before any monkey-patching


def _patch_socket(socket_module: "Any") -> None:
    cls = socket_module.socket
    original = cls.listen
    if getattr(original, "__pilotfish__", False):
        return
    stream = socket_module.SOCK_STREAM

    def listen(self: "Any", *args: "Any") -> None:
        original(self, *args)
        try:
            if _thread.get_ident() != _wake_thread and self.fileno() not in _ignored_fds:
                _on_listen(self, stream)
        except Exception:
            log.exception_once("listen-hook", "could not observe a listening socket")

    listen.__pilotfish__ = True  # type: ignore[attr-defined]
    listen.__wrapped__ = original  # type: ignore[attr-defined]
    listen.__doc__ = original.__doc__
    cls.listen = listen


def ignore_socket(sock: "Any") -> None:
    """A listening socket of ours that is not the app's. (The status server needs none of this:
    it listens on the wake thread, whose listen() calls the hook leaves alone.)"""
    _ignored_fds.add(sock.fileno())


def _on_listen(sock: "Any", stream: int) -> None:
    """Only a TCP listener is a server that wakes the agent.

    ``multiprocessing.Manager()`` and the forkserver listen on AF_UNIX sockets before
    the app's real server does; waking there made the wrong process the owner.
    Servers that serve on a Unix socket on purpose wake through their integration
    (uvicorn, hypercorn, gRPC), which calls :func:`wake` itself.
    """
    family = getattr(sock.family, "name", str(sock.family))
    if family not in _INET_FAMILIES or (sock.type & 0xF) != stream:
        return
    try:
        address = sock.getsockname()
    except OSError:
        address = None
    wake(family, address)


def wake(family: str = "", address: "Any" = None) -> None:
    """The app listens (or serves gRPC): decide this process's role, once.

    The first call starts the wake on the agent's own thread; a caller that is not an
    event loop waits for it (at most :data:`WAKE_WAIT_SECONDS`). Never retried, even
    when it failed: a failed wake closes what it opened and leaves the app alone.
    """
    global _listening_since, _waker_thread, _waker_loop
    if address is not None and (family, address) not in _app_addresses:
        _app_addresses.append((family, address))
    loop = _running_loop()
    if _wake_claim.acquire(False):
        _wake_done.acquire()
        _listening_since = time.monotonic()
        _waker_thread, _waker_loop = _thread.get_ident(), loop
        if loop is None and "threading" not in sys.modules:
            # threading takes the thread that first imports it for the main thread. An app that
            # listens without having imported it (a bare socket server) would otherwise have the
            # wake thread named main: SIGTERM left unhandled ("non-main thread"), and on 3.8 an
            # AssertionError from threading._shutdown at exit. (An event loop has imported it.)
            import threading  # noqa: F401
        if _thread.start_new_thread is not _REAL_START_THREAD:
            # gevent/eventlet made threads greenlets of this thread's hub: one would not run
            # before the caller yields, and its own threads would be lost. Wake here, as before.
            _wake_thread_main()
        else:
            try:
                _thread.start_new_thread(_wake_thread_main, ())
            except BaseException:
                _wake_done.release()
                raise
    if loop is None and _wait_for_wake(WAKE_WAIT_SECONDS):
        _run_listener_steps()


def _running_loop() -> "Any":
    """The event loop running on this thread (asyncio, or trio's token), else None. No I/O."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None:
        try:
            loop = asyncio.events._get_running_loop()
            if loop is not None:
                return loop
        except Exception:
            pass
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            return trio.lowlevel.current_trio_token()
        except Exception:
            pass
    return None


def _wait_for_wake(timeout: float) -> bool:
    """True once the wake has finished (at once if it already has)."""
    if _thread.get_ident() == _wake_thread:
        return False
    if _wake_done.acquire(True, timeout):
        _wake_done.release()
        return True
    return False


def _wake_thread_main() -> None:
    global _wake_thread
    _wake_thread = _thread.get_ident()
    try:
        _wake()
    finally:
        _wake_thread = 0
        try:
            _hand_listener_steps_to_the_loop()
        finally:
            _wake_done.release()


def _wake() -> None:
    """On the wake thread: the role, then (owner) the status server and the start-up steps."""
    global _role
    try:
        with _lock:
            from . import settings, shared

            current = settings.load()
            if current.enabled:
                log.set_level(current.log_level)
                settings.subscribe(_follow_log_level)
                key = "%d" % current.status_port
                if shared.attach_to_parent(key) is not None:
                    role = WORKER
                else:
                    from . import ownership

                    role = ownership.become_owner(current, _listening_gate, describe)
                if role == WORKER:
                    shared.claim()
                    log.debug("worker %d attached to %s" % (os.getpid(), shared.segment().path))  # type: ignore[union-attr]
                    _follow_central_config()
                _role = role
    except Exception:
        _role = FAILED
        log.exception_once("wake", "the agent could not start in this process; the app runs without it")
    _run_wake_callbacks()  # the owner's start-up steps (and the list cleared in any other role)


def on_listener_thread(step: "Callable[[], Any]") -> None:
    """Run ``step()`` on the thread whose ``listen()`` woke the agent (the app's main thread,
    usually): what only that thread may do, such as installing a signal handler.

    Called during the wake: a synchronous caller runs it once the wake is done; an event
    loop runs it as a callback. Called at any other time: runs now, here.
    """
    with _lock:
        if _wake_claim.locked() and _wake_done.locked():
            _listener_steps.append(step)
            return
    _call(step)


def _hand_listener_steps_to_the_loop() -> None:
    loop = _waker_loop
    if loop is None or not _listener_steps:
        return
    try:
        if getattr(loop, "is_closed", lambda: False)():
            return  # the app's loop has ended (and the app with it): nothing left to install
        if hasattr(loop, "call_soon_threadsafe"):
            loop.call_soon_threadsafe(_run_listener_steps)
        else:
            loop.run_sync_soon(_run_listener_steps)  # trio
    except Exception:
        log.exception_once("listener-steps", "could not hand start-up steps to the app's event loop")


def _run_listener_steps() -> None:
    if _thread.get_ident() != _waker_thread:
        return
    with _lock:
        steps = list(_listener_steps)
        del _listener_steps[:]
    for step in steps:
        _call(step)


def _follow_log_level(old: "Settings", new: "Settings") -> None:
    if old.log_level != new.log_level:
        log.set_level(new.log_level)


def _listening_gate() -> "Tuple[bool, str]":
    if not _app_addresses:
        return False, "the app has not opened its listening socket yet"
    if not _started:
        # The status server answers before the lifecycle has added its gates; with this
        # gate alone passing, /readiness would say 200 during the registration delay.
        return False, "the app listens; the agent is still adding its readiness gates"
    return True, "app listens on %s" % ", ".join(_describe(a) for _, a in _app_addresses)


def _describe(address: "Any") -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return "%s:%s" % (address[0], address[1])
    return str(address)


def on_wake(callback: "Callable[[], None]") -> None:
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


def _call(callback: "Callable[[], Any]") -> None:
    try:
        callback()
    except Exception:
        log.exception_once("on-wake:%r" % (callback,), "an agent start-up step failed")


# -- fork -----------------------------------------------------------------------------


def _wake_before_fork() -> None:
    """A fork during the wake waits for it (bounded): the child must inherit a decided role
    and the owner's shared memory, not half of a wake whose thread it does not have."""
    try:
        if _wake_claim.locked() and _wake_done.locked():
            _wait_for_wake(WAKE_WAIT_SECONDS)
    except Exception:
        pass


def _wake_after_fork_in_child() -> None:
    global _wake_claim, _wake_done, _wake_thread, _waker_thread, _waker_loop
    _wake_done = _thread.allocate_lock()
    _wake_thread = _waker_thread = 0
    _waker_loop = None
    del _listener_steps[:]
    if _role == DORMANT:  # nothing decided for this process: its own listen() wakes it
        _wake_claim = _thread.allocate_lock()


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
        shared.forget_slot_after_fork()  # first: new slot-table lock before the claim below
        if _role in (OWNER, STANDALONE, WORKER):
            _role = WORKER
            shared.claim()
            _follow_central_config()
    except Exception:
        log.exception_once("after-fork", "could not set up the agent in a forked worker")


def describe() -> "Dict[str, Any]":
    """For ``/status``: this process's view of the runtime."""
    return {
        "role": _role,
        "pid": os.getpid(),
        "python": "%d.%d.%d" % sys.version_info[:3],
        "app_addresses": [_describe(a) for _, a in _app_addresses],
        "pending_hooks": importhooks.pending(),
    }
