"""What the servers' recompiled request methods share (``uvicorn_cycle``, ``gunicorn_worker``).

Both add a ``begin`` before the app call and :func:`count_out` in a ``finally`` to the
server's own method, recompiled from its source; :func:`locate_added` gives the added
statements a line of their own so tracebacks keep the server's file and line numbers.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Sequence, Set, Tuple

from .. import log, shared


def count_out(state: Tuple[shared.Slot, int]) -> None:
    """Count a request out (same thread as its ``begin``: each server's method runs in one)."""
    counter, cell = state
    try:
        if cell > 0:
            counter.words[cell + 1] += 1
        else:
            counter.end(cell)
    except Exception:
        log.exception_once("inbound-count-out", "could not count a request out")


def source_lines(function: Any) -> Tuple[List[str], int]:
    """``inspect.getsourcelines(function)``, without keeping the file in ``linecache``.

    Reading the source caches the whole server module there (~40 KiB for uvicorn's
    protocol, per process, for good); an entry that was not there before goes again.
    A traceback later reads the file afresh. OSError/TypeError as ``getsourcelines``."""
    import inspect
    import linecache

    filename = getattr(getattr(function, "__code__", None), "co_filename", None)
    cached = filename in linecache.cache
    try:
        return inspect.getsourcelines(function)
    finally:
        if not cached:
            linecache.cache.pop(filename, None)  # type: ignore[arg-type]


def locate_added(nodes: Any, line: int, keep: Any = ()) -> None:
    """Put the lines a rewrite adds (``nodes``) on ``line``; the statements in ``keep`` (the
    original body, inside an added ``try``) keep their own lines."""
    import ast

    kept: Set[int] = set()
    for statement in keep:
        kept.update(id(child) for child in ast.walk(statement))
    for node in nodes:
        for child in ast.walk(node):
            if id(child) in kept or not hasattr(child, "lineno"):
                continue
            for attribute, value in (("lineno", line), ("end_lineno", line), ("col_offset", 0)):
                setattr(child, attribute, value)
            setattr(child, "end_col_offset", 0)  # noqa: B010


def rebuild(
    function: Any,
    definition: Any,
    first: int,
    added: Any,
    at: Any,
    keep: Any = (),
    names: Sequence[str] = ("_pilotfish_begin", "_pilotfish_end"),
) -> Callable[..., Any]:
    """Compile ``definition`` (the server method's AST, with the ``added`` statements) in the
    method's own file and globals; returns a maker that binds ``names`` (by default
    ``_pilotfish_begin``/``_pilotfish_end``: this package's begin and count-out) and returns
    the method. ``first`` is the method's first line in its file, and the added statements
    take the line of the node ``at``."""
    import ast

    maker = ast.parse("def _pilotfish_make(%s):\n    pass\n" % ", ".join(names)).body[0]
    assert isinstance(maker, ast.FunctionDef)
    maker.body = [definition, ast.Return(value=ast.Name(id=definition.name, ctx=ast.Load()))]
    module = ast.Module(body=[maker], type_ignores=[])
    ast.increment_lineno(module, first - 1)
    locate_added(added, at.lineno, keep=keep)
    ast.fix_missing_locations(module)
    code = compile(module, function.__code__.co_filename, "exec")
    namespace: Dict[str, Any] = {}
    exec(code, function.__globals__, namespace)  # the server's own source, recompiled
    return namespace["_pilotfish_make"]  # type: ignore[no-any-return]
