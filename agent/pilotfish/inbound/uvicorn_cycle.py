"""Counting inside uvicorn's request cycle, with no ASGI layer around the app.

uvicorn's HTTP protocols (httptools and h11) run each request as a
``RequestResponseCycle``: its constructor sets ``self.on_response`` once, and
``run_asgi`` sets it again in its ``finally``, after the app's coroutine
returned (after the last body message and any background task the framework
ran). Those two assignments are where the generic ASGI wrapper begins and ends
a request, so a descriptor on the class that only intercepts *setting*
``on_response`` counts the request in and out there. It has no ``__get__``:
reading ``self.on_response`` still finds the instance's own value, at no cost.

What the descriptor does when the cycle is built (the ``scope`` is already set):

- the usual request (the same test as :func:`asgi.wrap_asgi`'s short path): one
  pass over the header names, ``+= 1`` in this thread's cell, and while the pod
  is offline, the cycle's ``send`` replaced by one that adds ``connection: close``
  and the offline marker (uvicorn ends keep-alive on it);
- anything else (probe, tag or consumer header, lanes or ignored paths set, no
  slot yet): the cycle's ``run_asgi`` is replaced on the instance by one that runs
  the app through :func:`asgi.wrap_asgi`, inside the request's task, so tags are
  set in the app's context exactly as with the wrapper.

A request queued behind another on a pipelining connection is counted when its
cycle is built; if the connection is lost before it runs, the protocol's
``connection_lost`` hook counts it out (:func:`drop_pipelined`).

Installed only when the cycle class looks as expected (see :func:`looks_usable`);
otherwise the uvicorn integration wraps the app with :func:`asgi.wrap_asgi`.
"""

from __future__ import annotations

import inspect
from types import MethodType
from typing import Any, Dict, List, Optional, Tuple

from .. import log, shared
from . import WRAPPED_MARK
from . import asgi as _asgi
from .asgi import wrap_asgi

_KEY = "_pilotfish_count"
_USER_AGENT = _asgi.USER_AGENT
_PROBE_AGENT = _asgi._PROBE_AGENT
_OFFLINE_WORD = shared.OFFLINE_WORD

# id(app) -> (app, the same app wrapped by wrap_asgi): what a full-path request runs.
_full: Dict[int, Tuple[Any, Any]] = {}
# Set when some server with a counting cycle class still wraps its app (it had to fall
# back): from then on each cycle checks that its protocol's app is not a wrapped one.
check_app = False
_installed: List[type] = []


def full_path_app(app: Any) -> None:
    """Remember ``app`` (as the protocol will pass it to ``run_asgi``) and its wrapped form."""
    _full[id(app)] = (app, wrap_asgi(app))


async def _run_full(cycle: Any, app: Any) -> None:
    entry = _full.get(id(app))
    if entry is not None and entry[0] is app:
        app = entry[1]
    await type(cycle).run_asgi(cycle, app)


def _count_out(counter: shared.Slot, cell: int) -> None:
    try:
        counter.end(cell)
    except Exception:
        log.exception_once("uvicorn-cycle-end", "could not count a request out")


def _serves_wrapped(on_response: Any) -> bool:
    protocol = getattr(on_response, "__self__", None)
    return getattr(getattr(protocol, "app", None), WRAPPED_MARK, False) is True


class CountingOnResponse:
    """Data descriptor for ``RequestResponseCycle.on_response``: intercepts setting only."""

    def __set__(self, cycle: Any, value: Any) -> None:
        d = cycle.__dict__
        if "on_response" in d:
            # run_asgi's finally: the app's coroutine has returned.
            d["on_response"] = value
            entry = d.pop(_KEY, None)
            if entry is not None:
                counter, cell = entry
                if cell > 0:
                    counter._q[cell + 1] += 1
                else:
                    _count_out(counter, cell)
            return
        d["on_response"] = value
        try:
            # on_response is the protocol's bound method: its app tells whether the protocol
            # serves a wrapped app, which counts for itself.
            if check_app and _serves_wrapped(value):
                return
            full = _asgi._always_full
            noticed = _asgi._noticed
            for name, header in d["scope"]["headers"]:
                if name in noticed and (name != _USER_AGENT or header.startswith(_PROBE_AGENT)):
                    full = True
            current = shared._slot
            if full or current is None:
                d["run_asgi"] = MethodType(_run_full, cycle)
                return
            cell = current._local.cell
            counts = current._q
            if cell > 0:
                counts[cell] += 1
            else:
                cell = current.begin(None)
            d[_KEY] = (current, cell)
            if counts[_OFFLINE_WORD]:
                d["send"] = _asgi._offline_send(cycle.send)
        except Exception:
            log.exception_once("uvicorn-cycle", "inbound accounting failed for a request; served unmodified")


def stores(function: Any) -> List[str]:
    """The attribute names ``function`` assigns, in order (none for what is not a function)."""
    import dis  # only when a uvicorn protocol is imported, not at the agent's start-up

    code = getattr(function, "__code__", None)
    if code is None:
        return []
    return [i.argval for i in dis.get_instructions(code) if i.opname == "STORE_ATTR"]


def looks_usable(cls: Any) -> bool:
    """Whether ``cls`` is a request cycle shaped as the descriptor expects.

    ``__init__`` assigns ``scope`` and then ``on_response``, ``run_asgi`` (a coroutine
    function taking ``app``) assigns ``on_response``, no other function of the
    class assigns it, instances have a ``__dict__``, and nothing sits on the class
    under ``on_response`` yet.
    """
    try:
        if not isinstance(cls, type) or "__slots__" in cls.__dict__ or "on_response" in cls.__dict__:
            return False
        init = cls.__dict__.get("__init__")
        run = cls.__dict__.get("run_asgi")
        if init is None or run is None or not inspect.iscoroutinefunction(run):
            return False
        if list(inspect.signature(run).parameters) != ["self", "app"]:
            return False
        init_stores = stores(init)
        if init_stores.count("on_response") != 1 or "scope" not in init_stores:
            return False
        if init_stores.index("scope") > init_stores.index("on_response"):
            return False
        # Once, in its ``finally`` (compiled twice since 3.9: the normal and the exception exit).
        if "on_response" not in stores(run):
            return False
        for name, member in cls.__dict__.items():
            if name not in ("__init__", "run_asgi") and "on_response" in stores(member):
                return False
        return True
    except Exception:
        return False


def install(cls: Any) -> bool:
    """Put the descriptor on ``cls`` if it looks usable; True when it is (now) there."""
    if isinstance(cls, type) and isinstance(cls.__dict__.get("on_response"), CountingOnResponse):
        return True
    if not looks_usable(cls):
        return False
    cls.on_response = CountingOnResponse()
    _installed.append(cls)
    return True


def installed(cls: Any) -> bool:
    return isinstance(cls, type) and isinstance(cls.__dict__.get("on_response"), CountingOnResponse)


def uninstall() -> None:
    global check_app
    while _installed:
        cls = _installed.pop()
        if isinstance(cls.__dict__.get("on_response"), CountingOnResponse):
            del cls.on_response  # type: ignore[attr-defined]
    _full.clear()
    check_app = False


def drop_pipelined(cycles: Any) -> None:
    """Count out the requests of ``cycles`` that were counted in but never ran."""
    for item in list(cycles or ()):
        cycle = item[0] if isinstance(item, tuple) else item
        d = getattr(cycle, "__dict__", None)
        entry: Optional[Tuple[shared.Slot, int]] = d.pop(_KEY, None) if d is not None else None
        if entry is not None:
            _count_out(*entry)
