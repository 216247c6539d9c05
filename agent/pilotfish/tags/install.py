"""Wire traffic tags into a process: thread propagation, client patches, the /status section.

:func:`install` is called once at start-up by :func:`pilotfish.runtime.install`.
It imports no client library: each patch is registered as a post-import hook
and runs when the app imports the library (or at once, if it already has).

Hooks go through :func:`pilotfish.importhooks.when_imported` when the runtime
provides it; until then through :func:`register` below, a minimal hook with the
same contract (``fn(module)`` runs once after ``module_name`` is imported,
guarded so that a failing hook never fails the app's import).
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Callable, Dict, List, Optional

from pilotfish import log

Hook = Callable[[Any], None]

# module to watch -> (integration module, function to call with the imported module)
PATCHES = (
    ("threading", "pilotfish.tags.propagation", "patch_threading"),
    ("concurrent.futures.thread", "pilotfish.tags.propagation", "patch_futures"),
    ("http.client", "pilotfish.integrations.http_client", "patch"),
    ("httpx", "pilotfish.integrations.httpx_client", "patch"),
    ("aiohttp", "pilotfish.integrations.aiohttp_client", "patch"),
    ("grpc._channel", "pilotfish.integrations.grpc_client", "patch_sync"),
    ("grpc.aio._channel", "pilotfish.integrations.grpc_client", "patch_aio"),
)

installed: List[str] = []
"""Modules whose tag patch is in place (for /status and tests)."""


# --- minimal post-import hooks (used only when pilotfish.importhooks is absent) ---

_hooks: Dict[str, List[Hook]] = {}
_lock = threading.RLock()
_busy = threading.local()


def _run(fn: Hook, module: Any) -> None:
    try:
        fn(module)
    except Exception:
        log.exception_once("hook:%s:%r" % (getattr(module, "__name__", "?"), fn), "a patch failed")


class _HookLoader:
    """Wraps a module's real loader: runs it, restores it on the module, then fires the hooks."""

    def __init__(self, loader: Any, name: str) -> None:
        self._loader = loader
        self._name = name

    def create_module(self, spec: Any) -> Any:
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module: Any) -> None:
        try:
            module.__loader__ = self._loader
            if getattr(module, "__spec__", None) is not None:
                module.__spec__.loader = self._loader
        except Exception:
            pass
        self._loader.exec_module(module)
        with _lock:
            hooks = _hooks.pop(self._name, [])
        for fn in hooks:
            _run(fn, sys.modules.get(self._name, module))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _HookFinder:
    """First on ``sys.meta_path``; only answers for watched names, by asking the finders after it."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in _hooks:
            return None
        busy = getattr(_busy, "names", None)
        if busy is None:
            busy = _busy.names = set()
        if fullname in busy:
            return None
        busy.add(fullname)
        try:
            for finder in list(sys.meta_path):
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            busy.discard(fullname)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        spec.loader = _HookLoader(loader, fullname)  # type: ignore[assignment]
        return spec


_finder: Optional[_HookFinder] = None


def register(module_name: str, fn: Hook) -> None:
    """Call ``fn(module)`` once ``module_name`` is imported (now, if it already is). Never raises."""
    try:
        module = sys.modules.get(module_name)
        if module is not None:
            _run(fn, module)
            return
        global _finder
        with _lock:
            _hooks.setdefault(module_name, []).append(fn)
            if _finder is None:
                _finder = _HookFinder()
                sys.meta_path.insert(0, _finder)
    except Exception:
        log.exception_once("hook-register:%s" % module_name, "could not watch %s" % module_name)


def _when_imported() -> Callable[[str, Hook], None]:
    try:
        from pilotfish import importhooks  # type: ignore[attr-defined,unused-ignore]

        return importhooks.when_imported  # type: ignore[no-any-return,unused-ignore]
    except Exception:
        return register


# --- the tag's /status section ---


def status() -> Dict[str, Any]:
    """What /status shows under ``tag``: this instance's own tag and how requests are tagged."""
    from pilotfish import settings
    from pilotfish.tags import inbound

    current = settings.current()
    return {
        "tag": current.tag or None,
        "tag_headers": list(current.tag_headers),
        "baggage_key": current.baggage_key,
        "lanes": [lane.describe() for lane in inbound.lanes()],
        "patched": list(installed),
    }


def _add_status_section() -> None:
    try:
        from pilotfish import status_server  # type: ignore[attr-defined,unused-ignore]

        status_server.add_status_section("tag", status)
    except Exception:
        log.exception_once("tags:status", "could not add the tag section to /status")


def _hook(watched: str, module_path: str, function: str) -> Hook:
    def hook(module: Any) -> None:
        import importlib

        integration = importlib.import_module(module_path)
        getattr(integration, function)(module)
        installed.append(watched)

    return hook


def install() -> None:
    """Register every tag patch as a post-import hook, and the /status section on wake. Never raises."""
    try:
        when_imported = _when_imported()
        for watched, module_path, function in PATCHES:
            when_imported(watched, _hook(watched, module_path, function))
        from pilotfish import runtime

        on_wake = getattr(runtime, "on_wake", None)
        if on_wake is not None:
            on_wake(_add_status_section)
    except Exception:
        log.exception_once("tags:install", "traffic tags are off in this process")
