"""Post-import hooks: run a function right after a module is first imported.

This is how the agent patches libraries without importing them itself: at
start-up it only registers names here (a dict insert each); when the app
imports ``gunicorn.workers.base`` or ``httpx``, the hook runs and installs the
patch. A hook that raises is logged once and forgotten: a raising import hook
would otherwise fail the app's own import.

Mechanism: a finder at the front of ``sys.meta_path`` that, for a watched name
only, asks the rest of the import system for the real spec and wraps the
loader's ``exec_module``. After the module has executed, ``__loader__`` and
``__spec__.loader`` are put back to the real loader, so ``importlib.resources``,
``pkgutil`` and ``isinstance`` checks see exactly what they would without us.
"""

import _thread  # not threading/typing: neither is loaded yet at interpreter start-up
import sys

from . import log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional

    Hook = Callable[[Any], None]

_hooks: "Dict[str, List[Hook]]" = {}
_lock = _thread.RLock()
_resolving = _thread._local()


def when_imported(name: str, hook: "Hook") -> None:
    """Run ``hook(module)`` once ``name`` is imported (now, if it already is)."""
    module = sys.modules.get(name)
    if module is not None and getattr(getattr(module, "__spec__", None), "_initializing", False) is False:
        _run(name, hook, module)
        return
    with _lock:
        _hooks.setdefault(name, []).append(hook)
    _install_finder()


def patch_when_imported(watched: str, module_path: str, function: str, label: str, done: "List[str]") -> None:
    """Once ``watched`` is imported, call ``function`` of ``module_path`` with it and append
    ``watched`` to ``done`` (a feature's list of what is patched, for /status). The patching
    module is imported only then; ``label`` names the hook in the log if it raises."""

    def hook(module: "Any") -> None:
        integration = __import__(module_path, fromlist=[function])
        getattr(integration, function)(module)
        done.append(watched)

    hook.__qualname__ = label + ":" + watched
    when_imported(watched, hook)


def pending() -> "List[str]":
    """Names still waiting for their import (for /status)."""
    with _lock:
        return sorted(_hooks)


def _run(name: str, hook: "Hook", module: "Any") -> None:
    try:
        hook(module)
    except Exception:
        log.exception_once(
            "hook:%s:%s" % (name, getattr(hook, "__qualname__", hook)),
            "could not instrument %s; it runs unmodified" % name,
        )


def _fire(name: str, module: "Any") -> None:
    with _lock:
        hooks = _hooks.pop(name, [])
    for hook in hooks:
        _run(name, hook, module)


class _HookedLoader:
    """Delegates to the real loader and fires the hooks after ``exec_module``."""

    def __init__(self, loader: "Any", name: str) -> None:
        self._loader = loader
        self._name = name

    def __getattr__(self, attr: str) -> "Any":
        return getattr(self._loader, attr)

    def create_module(self, spec: "Any") -> "Any":
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module: "Any") -> None:
        try:
            module.__loader__ = self._loader
            if getattr(module, "__spec__", None) is not None:
                module.__spec__.loader = self._loader
        except Exception:
            pass
        self._loader.exec_module(module)
        _fire(self._name, sys.modules.get(self._name, module))


class _Finder:
    """A meta-path finder that only ever answers for watched module names."""

    def find_spec(self, fullname: str, path: "Any" = None, target: "Any" = None) -> "Optional[Any]":
        if fullname not in _hooks:
            return None
        busy = getattr(_resolving, "names", None)
        if busy is None:
            busy = _resolving.names = set()
        if fullname in busy:
            return None
        busy.add(fullname)
        try:
            spec = _find_real_spec(fullname, path, target)
        except Exception:
            return None
        finally:
            busy.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        spec.loader = _HookedLoader(spec.loader, fullname)
        return spec

    def invalidate_caches(self) -> None:
        pass


def _find_real_spec(fullname: str, path: "Any", target: "Any") -> "Optional[Any]":
    for finder in list(sys.meta_path):
        if isinstance(finder, _Finder):
            continue
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        spec = find_spec(fullname, path, target)
        if spec is not None:
            return spec
    return None


_finder: "Optional[_Finder]" = None


def _install_finder() -> None:
    global _finder
    if _finder is not None and _finder in sys.meta_path:
        return
    with _lock:
        if _finder is None:
            _finder = _Finder()
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)


def uninstall() -> None:
    """Remove the finder and forget pending hooks (tests; the kill switch at run time)."""
    global _finder
    with _lock:
        _hooks.clear()
        if _finder is not None and _finder in sys.meta_path:
            sys.meta_path.remove(_finder)
        _finder = None
