"""Counting inside uvicorn's request cycle, with no ASGI layer around the app.

uvicorn's HTTP protocols (httptools and h11) run each request as the task
``RequestResponseCycle.run_asgi(app)``: it calls the app, handles what the app
did wrong, and returns. That coroutine already sits exactly where the generic
ASGI wrapper would (in the request's own task, around the app), so instead of a
coroutine of ours around the app, the cycle's ``run_asgi`` is recompiled from
uvicorn's own source with lines added around its body (``_ADDED``)::

    <the usual request: counted in here; else _pilotfish_ordinary = begin(self, app)>
    try:
        <run_asgi's body, unchanged>
    finally:
        <counted out here; else recompile.count_out(_pilotfish_ordinary)>

Same file name and line numbers as uvicorn's (tracebacks read the same), same
module globals. A coroutine layer costs every resumption of the task a frame of
its own; the added lines cost the request a few reads of one object.

The usual request (the app and server of the cache, not offline, no header to
notice) is counted by the added lines themselves, from :class:`Fast`: no call.
Measured in a loaded server, what cost was not the instructions but the memory
each request read (module dicts, the slot, a ``threading.local``), cold again by
the next request; the added lines read one cached object. :func:`begin` does the
rest as :func:`asgi.wrap_asgi` does for the app uvicorn loaded (registered by the
uvicorn integration with :func:`count_app`): this thread's cell, or
:func:`asgi.begin_full` (probes, ignored paths, tags set in the task's context,
consumer marks); while the pod is offline the cycle's ``send`` adds
``connection: close`` and the offline marker. Any other app uvicorn passes
(``service_unavailable`` under ``--limit-concurrency``, an app already wrapped) is
not counted here, as it was not by the wrapper. In-flight ends when ``run_asgi``
is done: after the app's last body message and any background task.

Only when ``run_asgi`` looks as expected (:func:`rewritable`): otherwise the
integration wraps the app with :func:`asgi.wrap_asgi` as for any server.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Tuple

from .. import log, shared
from . import asgi as _asgi
from . import request as rq
from .recompile import count_out, rebuild, source_lines

_USER_AGENT = _asgi.USER_AGENT
_PROBE_AGENT = rq.PROBE_AGENT_BYTES
_OFFLINE_WORD = shared.OFFLINE_WORD
STATE = "_pilotfish_state"
ORDINARY = "_pilotfish_ordinary"

# id(app) -> app: the apps counted in the cycle (the ones uvicorn's Config.load made).
_apps: Dict[int, Any] = {}
_last: Any = None  # the last registered: one app per process is the usual case


class Fast:
    """What the usual request needs, in one object: the short path's cache for one server.

    Measured in a loaded uvicorn, the short path's cost was not its instructions but the
    memory it touched between two requests (three module dicts, the slot, a
    ``threading.local`` and its per-thread dict): each read that misses the CPU cache
    costs more than the arithmetic. So the first request a server's thread serves the
    usual way fills one of these (the app, the server, the slot's counter list and the
    thread's cell in it, the header names to notice), and every later one reads only it.

    A cell is written only by its own thread, so the cache must not serve a request on
    another thread. ``server`` is the key that says so at no cost: the list of default
    headers the cycle was given (``self.default_headers``, uvicorn's
    ``ServerState.default_headers``). Each uvicorn ``Server`` has its own, and a server
    runs on one event loop, so on one thread; its tick replaces the list every second,
    which costs one request a second the ordinary way (which takes its own thread's cell). The
    earlier keys cost more: ``_thread.get_ident()`` is a call that makes a new int each
    request (~0.5k instructions with the comparison), and asyncio's ``_get_running_loop``
    checks the loop's process with ``getpid()``, a system call on every request (which
    instruction counts do not show). A cycle with no such list is never cached.

    Dropped (:func:`forget`) when the slot or a cell may have changed
    (:func:`shared.on_change`: claim, fork, a dead thread's cell handed back to another
    thread) and when the header names or "always full" change (:data:`asgi.refreshed`).
    """

    __slots__ = ("app", "server", "words", "begun", "ended", "noticed")

    def __init__(self, app: Any, server: Any, words: Any, cell: int, noticed: FrozenSet[bytes]) -> None:
        self.app = app
        self.server = server
        self.words = words
        self.begun = cell
        self.ended = cell + 1
        self.noticed = noticed


EMPTY = Fast(object(), None, None, 0, frozenset())
"""No cache: an app that no request has, so every request goes the ordinary way (and the next
usual one fills the cache). Not None, so the added lines test the app only."""
_cache: List[Fast] = [EMPTY]
"""``_cache[0]``: the short path's cache, or :data:`EMPTY`. A list, bound into the recompiled
``run_asgi``, so that reading it touches nothing else."""
_generation = 0  # changes on every forget(): a Fast built from older state is not kept


def forget() -> None:
    """Drop the short path's cache (the next usual request fills it again)."""
    global _generation
    _generation += 1
    _cache[0] = EMPTY


shared.on_change(forget)
_asgi.refreshed.append(forget)


def count_app(app: Any) -> None:
    """Count requests to ``app`` in the request cycle (it is left unwrapped)."""
    global _last
    _apps[id(app)] = app
    _last = app
    forget()


def forget_apps() -> None:
    global _last
    _apps.clear()
    _last = None
    forget()


def begin(cycle: Any, app: Any) -> Optional[Tuple[shared.Slot, int]]:
    """Count a request in the ordinary way: any app, thread or request; what
    :func:`recompile.count_out` needs, or None. Fills the short path's cache when it can."""
    try:
        return _begin(cycle, app)
    except Exception:
        log.exception_once("uvicorn-cycle", "inbound accounting failed for a request; served unmodified")
        return None


def _begin(cycle: Any, app: Any) -> Optional[Tuple[shared.Slot, int]]:
    if app is not _last and _apps.get(id(app)) is not app:
        return None
    generation = _generation
    scope = cycle.scope
    headers = scope["headers"]
    full = _asgi.always_full
    noticed = _asgi.noticed_headers
    for name, value in headers:
        if name in noticed and (name != _USER_AGENT or value.startswith(_PROBE_AGENT)):
            full = True
    current = shared.process_slot
    if full or current is None:
        original = cycle.send
        counter, cell, send = _asgi.begin_full(scope, headers, original)
        if send is not original:
            cycle.send = send
        return None if counter is None else (counter, cell)
    cell = current.begin(None)  # > 0: this thread's own cell (0 the first time, or shared)
    counts = current.words
    if counts[_OFFLINE_WORD]:
        cycle.send = _asgi.offline_send(cycle.send)
    elif cell > 0 and type(getattr(cycle, "default_headers", None)) is list:
        # always_full and noticed were read after `generation`: a refresh since shows
        _cache[0] = Fast(app, cycle.default_headers, counts, cell, noticed)
        if generation != _generation:  # forgotten meanwhile: built from what may be stale
            _cache[0] = EMPTY
    return current, cell


def failed() -> None:
    """The added lines of ``run_asgi`` raised: log once; the request is served uncounted."""
    log.exception_once("uvicorn-cycle", "inbound accounting failed for a request; served unmodified")


# Added to ``run_asgi`` around its body. The usual request (the cached app and server, not
# offline, no header to notice) is counted in and out here, by the cycle itself: no call, and
# nothing read but the cache; {state} stays the cache's Fast, to count out. Anything else goes
# through begin() and recompile.count_out() with {ordinary} ({state} None). As few steps as
# can be: the cache is never None (EMPTY), and counting out tests {state} only.
_ADDED = """\
{state} = _pilotfish_cache[0]
try:
    if (
        app is {state}.app
        and self.default_headers is {state}.server
        and not {state}.words[{offline}]
    ):
        _pilotfish_noticed = {state}.noticed
        for _pilotfish_name, _pilotfish_value in self.scope["headers"]:
            if _pilotfish_name in _pilotfish_noticed and (
                _pilotfish_name != {agent!r} or _pilotfish_value.startswith({probe!r})
            ):
                {state} = None
                {ordinary} = _pilotfish_begin(self, app)
                break
        else:
            {state}.words[{state}.begun] += 1
    else:
        {state} = None
        {ordinary} = _pilotfish_begin(self, app)
except Exception:
    {state} = None
    {ordinary} = _pilotfish_failed()
try:
    pass
finally:
    try:
        if {state} is not None:
            {state}.words[{state}.ended] += 1
        elif {ordinary} is not None:
            _pilotfish_end({ordinary})
    except Exception:
        _pilotfish_failed()
"""
_NAMES = (
    "_pilotfish_cache",
    "_pilotfish_begin",
    "_pilotfish_end",
    "_pilotfish_failed",
)


def rewritable(function: Any) -> bool:
    """Whether ``function`` is a ``run_asgi`` this module knows how to recompile."""
    return (
        inspect.iscoroutinefunction(function)
        and getattr(function, "__name__", None) == "run_asgi"
        and list(inspect.signature(function).parameters) == ["self", "app"]
        and not function.__code__.co_freevars
        and STATE not in function.__code__.co_varnames
        and ORDINARY not in function.__code__.co_varnames
    )


def counting_run_asgi(function: Any) -> Optional[Callable[..., Any]]:
    """``function`` (a cycle's ``run_asgi``) recompiled with begin and end around its body.

    None when it does not look as expected or its source is not available.
    """
    import ast
    import textwrap

    if not rewritable(function):
        return None
    try:
        lines, first = source_lines(function)
        tree = ast.parse(textwrap.dedent("".join(lines)))
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None
    if len(tree.body) != 1:
        return None
    definition = tree.body[0]
    if (
        not isinstance(definition, ast.AsyncFunctionDef)
        or definition.name != "run_asgi"
        or definition.decorator_list
    ):
        return None
    added = ast.parse(
        _ADDED.format(
            state=STATE, ordinary=ORDINARY, offline=_OFFLINE_WORD, agent=_USER_AGENT, probe=_PROBE_AGENT
        )
    ).body
    guarded = added[2]
    assert isinstance(guarded, ast.Try) and not guarded.handlers
    body = definition.body
    guarded.body = body
    definition.body = added
    # The body keeps its own lines (uvicorn's file, uvicorn's line numbers); the added lines
    # take the line of the ``async def``.
    maker = rebuild(function, definition, first, added, definition, keep=body, names=_NAMES)
    made: Callable[..., Any] = maker(_cache, begin, count_out, failed)
    made.__qualname__ = function.__qualname__
    made.__module__ = function.__module__
    return made
