"""gunicorn: count requests in the worker's request loop; close keep-alive while offline.

The sync and gthread workers' ``handle_request`` is recompiled with the count
around the app call (:mod:`pilotfish.inbound.gunicorn_worker`), and the app is
left as it is. Any other worker class (gevent, eventlet, a worker of one's own),
or a ``handle_request`` that does not look as expected, gets the app wrapped
with :func:`~pilotfish.inbound.wsgi.wrap_wsgi` when the worker loads it.
ASGI workers (``-k uvicorn_worker.UvicornWorker``) are left to the uvicorn
integration, which counts where uvicorn serves the app.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any, List

from .. import importhooks, log, patching, runtime, shared
from ..inbound import gunicorn_worker
from ..inbound.wsgi import wrap_wsgi

KEY = "gunicorn"
WORKER_CLASSES = {"gunicorn.workers.sync": "SyncWorker", "gunicorn.workers.gthread": "ThreadWorker"}

# The recompiled handle_request functions (each counts its requests).
_counting: List[Any] = []


def counts_in_worker(worker: Any) -> bool:
    """Whether ``worker``'s class serves requests with a counting ``handle_request``."""
    handle = getattr(type(worker), "handle_request", None)
    return any(handle is counting for counting in _counting)


def _is_asgi(worker: Any, app: Any) -> bool:
    module = type(worker).__module__
    if module.startswith(("uvicorn", "uvicorn_worker")) or "asgi" in type(worker).__name__.lower():
        return True
    if inspect.iscoroutinefunction(app):
        return True
    call = getattr(app, "__call__", None)  # noqa: B004 - a class instance's async __call__
    return inspect.iscoroutinefunction(call)


def _patch_loaded_workers() -> None:
    """Patch the worker classes already imported.

    The worker modules import gunicorn.workers.base, whose import installs the hooks: the
    worker module importing at that moment is past the import hook's reach. The arbiter
    imported it before it creates its sockets, so this runs there, before any fork: the
    recompile's allocations after a fork would unshare most of the heap a worker shares
    with the arbiter (the collector writes to every object it visits), ~0.6 MiB a worker.
    """
    for name in WORKER_CLASSES:
        module = sys.modules.get(name)
        if module is not None:
            _patch_worker(module)


def _load_wsgi(original: Any) -> Any:
    def load_wsgi(self: Any) -> None:
        original(self)
        try:
            _patch_loaded_workers()  # normally done in the arbiter already (create_sockets)
            if not _is_asgi(self, self.wsgi) and not counts_in_worker(self):
                self.wsgi = wrap_wsgi(self.wsgi)
        except Exception:
            log.exception_once("gunicorn-wrap", "could not wrap the gunicorn app; it runs unmodified")

    return load_wsgi


def _should_close(original: Any) -> Any:
    is_offline = shared.is_offline

    def should_close(self: Any) -> bool:
        return original(self) or is_offline()

    return should_close


def _create_sockets(original: Any) -> Any:
    """The arbiter's listeners: a Unix socket (``-b unix:...``) wakes the agent here, since the
    ``listen()`` hook wakes only on TCP listeners (the Unix sockets of multiprocessing helpers
    are not servers). The worker class is recompiled here too, before the first fork."""

    def create_sockets(*args: Any, **kwargs: Any) -> Any:
        listeners = original(*args, **kwargs)
        try:
            _patch_loaded_workers()
        except Exception:
            log.exception_once("gunicorn-worker-early", "gunicorn's worker class is patched in each worker")
        try:
            for listener in listeners or ():
                sock = getattr(listener, "sock", listener)
                if getattr(sock.family, "name", "") == "AF_UNIX":
                    runtime.wake("AF_UNIX", sock.getsockname())
        except Exception:
            log.exception_once("gunicorn-unix", "could not start the agent for gunicorn's Unix socket")
        return listeners

    return create_sockets


def _patch_sock(module: Any) -> None:
    patching.replace(KEY, module, "create_sockets", _create_sockets)


def _patch_response(module: Any) -> None:
    patching.replace(KEY, module.Response, "should_close", _should_close)


def _patch_worker(module: Any) -> None:
    """Count in the worker class's ``handle_request`` when it looks as expected."""
    worker = getattr(module, WORKER_CLASSES[module.__name__], None)
    original = getattr(worker, "__dict__", {}).get("handle_request")
    if patching.is_patched(original):
        if original not in _counting:
            _counting.append(original)
        return
    counting = gunicorn_worker.counting_handle_request(original)
    if counting is None or not patching.replace(KEY, worker, "handle_request", lambda _original: counting):
        log.once(
            "gunicorn-worker-shape:" + module.__name__,
            "info",
            "%s does not look as expected; its apps are wrapped instead" % module.__name__,
        )
        return
    _counting.append(counting)


def patch() -> None:
    from gunicorn.workers import base

    if not patching.replace(KEY, base.Worker, "load_wsgi", _load_wsgi):
        log.once("gunicorn-missing", "info", "gunicorn Worker.load_wsgi not found; gunicorn not instrumented")
    importhooks.when_imported("gunicorn.http.wsgi", _patch_response)
    importhooks.when_imported("gunicorn.sock", _patch_sock)
    for name in WORKER_CLASSES:
        importhooks.when_imported(name, _patch_worker)


def unpatch() -> None:
    patching.restore(KEY)
    del _counting[:]
