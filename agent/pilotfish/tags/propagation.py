"""Carry the tag into threads and thread pools the app uses on a request's behalf.

What Python does by itself (3.8 to 3.13):
- asyncio tasks run in a copy of the context that created them: the tag
  follows ``create_task``/``gather``/``ensure_future`` with no help.
- ``asyncio.to_thread`` (3.9+) copies the context itself.
- ``threading.Thread`` starts with an *empty* context, and
  ``ThreadPoolExecutor.submit`` (so also ``loop.run_in_executor``, which is
  ``executor.submit`` with no context copy in any version up to 3.13) runs the
  function in the worker thread's own context. Both lose the tag.

So two patches, both a single ContextVar read when no tag is set:
- ``Thread.start``: a thread started while a tag is set runs its ``run`` with
  that tag set.
- ``ThreadPoolExecutor.submit``: a function submitted while a tag is set runs
  with that tag set and reset afterwards, so the pooled worker thread is
  untagged again for the next task (no leak from one request to the next).
  Worker threads the pool starts inside ``submit`` are started untagged: a
  pool thread must never keep the tag of the request that happened to create it.

Why only the tag and not a copy of the whole context: the app's other context
variables must behave exactly as without the agent, and in particular the same
for tagged and untagged requests. A gray request that behaves differently from
a baseline one, because the agent changed what the app's own ContextVars see,
would be a bug we introduced.
"""

from __future__ import annotations

import threading

from .. import log
from .context import CURRENT_TAG

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing may not be loaded yet when the app imports threading
    from typing import Any, Callable, Optional

_original_start: Optional[Callable[..., Any]] = None
_original_submit: Optional[Callable[..., Any]] = None


def _bind_thread(thread: threading.Thread, tag: str) -> None:
    run = thread.run

    def run_with_tag() -> None:
        try:
            CURRENT_TAG.set(tag)
            run()
        finally:
            # The instance attribute refers to the thread: drop it to break the cycle.
            thread.__dict__.pop("run", None)

    thread.run = run_with_tag  # type: ignore[method-assign]


def _start(self: threading.Thread) -> None:
    tag = CURRENT_TAG.get()
    if tag is None:
        _original_start(self)  # type: ignore[misc]
        return
    bound = False
    try:
        if "run" not in self.__dict__:
            _bind_thread(self, tag)
            bound = True
    except Exception:
        log.exception_once("tags:thread", "could not carry the tag into a thread; it runs untagged")
    try:
        _original_start(self)  # type: ignore[misc]
    except BaseException:
        if bound:
            self.__dict__.pop("run", None)
        raise


def _tagged(tag: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def call_with_tag(*args: Any, **kwargs: Any) -> Any:
        token = CURRENT_TAG.set(tag)
        try:
            return fn(*args, **kwargs)
        finally:
            CURRENT_TAG.reset(token)

    return call_with_tag


def _submit(*args: Any, **kwargs: Any) -> Any:
    # (self, fn, /, *args, **kwargs) spelled generically: Python 3.8's own
    # signature still accepted fn= as a keyword, and we must not turn that into a TypeError.
    tag = CURRENT_TAG.get()
    if tag is None or len(args) < 2:
        return _original_submit(*args, **kwargs)  # type: ignore[misc]
    # Any worker thread the pool starts now must start untagged (see module doc).
    token = CURRENT_TAG.set(None)
    try:
        return _original_submit(args[0], _tagged(tag, args[1]), *args[2:], **kwargs)  # type: ignore[misc]
    finally:
        CURRENT_TAG.reset(token)


def patch_threading(module: Any = None) -> None:
    """Patch ``threading.Thread.start`` (idempotent)."""
    global _original_start
    if _original_start is None:
        _original_start = threading.Thread.start
        threading.Thread.start = _start  # type: ignore[method-assign]


def unpatch_threading() -> None:
    global _original_start
    if _original_start is not None and threading.Thread.start is _start:
        threading.Thread.start = _original_start  # type: ignore[method-assign]
    _original_start = None


def patch_futures(module: Any = None) -> None:
    """Patch ``concurrent.futures.ThreadPoolExecutor.submit`` (idempotent)."""
    global _original_submit
    if module is None:
        import concurrent.futures.thread as module
    if _original_submit is None:
        _original_submit = module.ThreadPoolExecutor.submit
        module.ThreadPoolExecutor.submit = _submit


def unpatch_futures() -> None:
    global _original_submit
    import concurrent.futures.thread as module

    if _original_submit is not None and module.ThreadPoolExecutor.submit is _submit:
        module.ThreadPoolExecutor.submit = _original_submit  # type: ignore[method-assign]
    _original_submit = None


def patch() -> None:
    patch_threading()
    patch_futures()


def unpatch() -> None:
    unpatch_threading()
    unpatch_futures()
