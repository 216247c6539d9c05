"""Counting inside gunicorn's worker loop, with no WSGI layer around the app.

gunicorn's sync and gthread workers serve each request in ``handle_request``:
build the environ, call ``self.wsgi(environ, resp.start_response)``, write the
body, close the iterable, and (in the ``finally`` of the whole request) run the
``post_request`` hook. That method is recompiled from gunicorn's own source with
three lines added::

    _pilotfish_state = None                                   # first statement
    ...
    _pilotfish_state = _pilotfish_begin(environ, resp)        # just before the app call
    respiter = self.wsgi(environ, resp.start_response)
    ...
    finally:
        if _pilotfish_state is not None:                      # first in the outer finally
            _pilotfish_end(_pilotfish_state)

Same file name and line numbers as gunicorn's. :func:`begin` classifies, tags and
counts exactly as :func:`wsgi.wrap_wsgi` does, and while the pod is offline has
the response carry the offline marker (``connection: close`` comes from the
gunicorn integration's ``should_close``); in-flight ends once the response has
been written and its iterable closed (streamed bodies count to their last byte),
or when the request failed. The app itself is left unwrapped.

Only when ``handle_request`` looks as expected (:func:`counting_handle_request`);
otherwise the integration wraps the app with :func:`wsgi.wrap_wsgi`.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, FrozenSet, List, Optional, Tuple

from .. import log, settings, shared
from . import request as rq
from .recompile import count_out as end
from .recompile import rebuild, source_lines
from .wsgi import offline_start_response

STATE = "_pilotfish_state"
_classify, _get_slot = rq.classify, rq.slot
_tag_from_environ, _set_tag, _get_tag = rq.tag_from_environ, rq.set_tag, rq.get_tag
_on_marked, _CONSUMER_KEY = rq.on_marked_request, rq.CONSUMER_ENVIRON_KEY
_OFFLINE_WORD = shared.OFFLINE_WORD
_TRAFFIC, _PROBE = rq.TRAFFIC, rq.PROBE
_PROBE_AGENT = rq.PROBE_AGENT


# What the short path needs from the settings, recomputed on every change (not per
# request): the environ keys that send a request to the full path (tag headers, baggage,
# the consumer mark), and whether every request takes the full path anyway (lanes or
# ignored paths are configured).
noticed_keys: FrozenSet[str] = frozenset()
always_full = True


def _environ_keys(tags_state: Any) -> FrozenSet[str]:
    keys = set(getattr(tags_state, "environ_keys", None) or ())
    if getattr(tags_state, "baggage_key", None):
        keys.add("HTTP_BAGGAGE")
    keys.add(_CONSUMER_KEY)
    return frozenset(keys)


def refresh() -> None:
    """Recompute the short path's settings from the tag settings and ignored paths in force."""
    global noticed_keys, always_full
    state = rq.tags_inbound.current_state if rq.tags_inbound is not None else None
    noticed_keys = _environ_keys(state)
    always_full = bool(rq.ignore_paths_set or (state is not None and state.lanes))


def _on_settings(old: settings.Settings, new: settings.Settings) -> None:
    # Subscribed after pilotfish.tags.inbound and request.py (both imported above),
    # so their state for ``new`` is already rebuilt when this runs.
    refresh()


refresh()
settings.subscribe(_on_settings)


def begin(environ: Any, resp: Any) -> Optional[Tuple[shared.Slot, int]]:
    """Classify, tag and count a request just before gunicorn calls the app; None when not counted.

    Short path for the usual request (no lanes or ignored paths configured; no probe
    User-Agent, tag, baggage or consumer header; a slot already claimed): what
    :func:`begin_full` would do for it, without classifying or looking for a tag.
    """
    try:
        if not always_full:
            agent = environ.get("HTTP_USER_AGENT")
            counter = shared.process_slot
            if (
                counter is not None
                and (agent is None or not agent.startswith(_PROBE_AGENT))
                and environ.keys().isdisjoint(noticed_keys)
            ):
                # Threads are reused from request to request: clear a previous request's tag.
                if _get_tag is not None and _get_tag() is not None:
                    _set_tag(None)  # type: ignore[misc]
                counts = counter.words
                if counts[_OFFLINE_WORD]:
                    resp.start_response = offline_start_response(resp.start_response)
                # Slot.begin(None) inlined for this thread's own cell (> 0). Counting in is
                # the last step: nothing after it can raise before the state is returned.
                cell = counter.per_thread.cell
                if cell > 0:
                    counts[cell] += 1
                    return counter, cell
                return counter, counter.begin(None)
    except Exception:
        log.exception_once("gunicorn-inbound", "inbound accounting failed for a request; served unmodified")
        return None
    return begin_full(environ, resp)


def begin_full(environ: Any, resp: Any) -> Optional[Tuple[shared.Slot, int]]:
    """Classify, tag and count a request the short path does not handle."""
    state = None
    try:
        kind = _classify(environ.get("PATH_INFO") or "/", environ.get("HTTP_USER_AGENT"))
        tag = _tag_from_environ(environ) if (kind == _TRAFFIC and _tag_from_environ is not None) else None
        # Threads are reused from request to request: clear a previous request's tag, but
        # skip the (costlier) set when there is nothing to change.
        if _set_tag is not None and (tag is not None or _get_tag() is not None):  # type: ignore[misc]
            _set_tag(tag)
        counter = shared.process_slot or _get_slot()
        if counter is not None:
            if kind == _TRAFFIC:
                state = counter, counter.begin(tag)
                if _on_marked is not None and _CONSUMER_KEY in environ:
                    _on_marked()
            elif kind == _PROBE:
                counter.probe()
            else:
                counter.ignore()
        segment = shared.process_segment
        if segment is not None and segment.ints[_OFFLINE_WORD]:
            resp.start_response = offline_start_response(resp.start_response)
    except Exception:
        log.exception_once("gunicorn-inbound", "inbound accounting failed for a request; served unmodified")
    return state


def _is_app_call(node: Any) -> bool:
    """``respiter = self.wsgi(environ, resp.start_response)``."""
    import ast

    if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)):
        return False
    call = node.value
    return (
        ast.dump(call.func) == ast.dump(ast.parse("self.wsgi", mode="eval").body)
        and [ast.dump(a) for a in call.args]
        == [ast.dump(ast.parse(s, mode="eval").body) for s in ("environ", "resp.start_response")]
        and not call.keywords
    )


def counting_handle_request(function: Any) -> Optional[Callable[..., Any]]:
    """``function`` (a worker's ``handle_request``) recompiled with begin and end; None when it
    does not look as expected (one app call inside a ``try`` that has a ``finally``, at the
    top level of the method) or its source is not available."""
    import ast
    import textwrap

    if (
        not inspect.isfunction(function)
        or function.__name__ != "handle_request"
        or function.__code__.co_freevars
        or STATE in function.__code__.co_varnames
        or "environ" not in function.__code__.co_varnames
        or "resp" not in function.__code__.co_varnames
    ):
        return None
    try:
        lines, first = source_lines(function)
        tree = ast.parse(textwrap.dedent("".join(lines)))
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.FunctionDef):
        return None
    definition = tree.body[0]
    if definition.decorator_list:
        return None
    calls: List[Any] = [node for node in ast.walk(definition) if _is_app_call(node)]
    outer = [
        node
        for node in definition.body
        if isinstance(node, ast.Try) and node.finalbody and any(_is_app_call(n) for n in node.body)
    ]
    if len(calls) != 1 or len(outer) != 1:
        return None
    added: List[Any] = []
    start = ast.parse("%s = None" % STATE).body
    call_index = outer[0].body.index(calls[0])
    counted = ast.parse("%s = _pilotfish_begin(environ, resp)" % STATE).body
    finish = ast.parse("if %s is not None:\n    _pilotfish_end(%s)" % (STATE, STATE)).body
    added += start + counted + finish
    outer[0].body[call_index:call_index] = counted
    outer[0].finalbody[0:0] = finish
    definition.body[0:0] = start
    made: Callable[..., Any] = rebuild(function, definition, first, added, calls[0])(begin, end)
    made.__qualname__ = function.__qualname__
    made.__module__ = function.__module__
    return made
