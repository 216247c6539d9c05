"""Waiting on a condition: the one polling loop of hack/ (the demo, the benchmarks) and the tests.

``wait_for(check, timeout, what)`` calls ``check`` until it returns something true and returns
that; past ``timeout`` seconds it raises ``failure`` (RuntimeError unless told) with a message
naming ``what`` and the last value seen. An exception from ``check`` ends the wait at once,
unless its type is in ``retry``: then it counts as "not yet" and, if it is the last thing that
happened, is reported and chained. :class:`GiveUp` always ends the wait at once, even when
``retry`` would catch it (a watched process exited, say). The tests' ``eventually``
(tests/support/wait.py) is this loop with ``retry=(Exception,)`` and ``failure=AssertionError``.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Tuple, Type, TypeVar

T = TypeVar("T")

INTERVAL = 0.05
"""Seconds between two checks: a check is cheap next to what it watches."""


class GiveUp(Exception):
    """Raised by a check when waiting longer cannot help; :func:`wait_for` lets it through."""


def wait_for(
    check: Callable[[], Optional[T]],
    timeout: float,
    what: str,
    *,
    interval: float = INTERVAL,
    retry: Tuple[Type[BaseException], ...] = (),
    failure: Callable[[str], BaseException] = RuntimeError,
    context: Optional[Callable[[], str]] = None,
) -> T:
    """``check()``'s first true value; ``failure`` naming ``what`` if none came within ``timeout`` s.

    ``context`` (e.g. a server's output) is called once, on failure, and appended to the message.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    problem: Optional[BaseException] = None
    while True:
        try:
            value = check()
        except GiveUp:
            raise
        except retry as raised:
            last, problem = raised, raised
        else:
            if value:
                return value
            last, problem = value, None
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)  # the poll interval, not a wait for something
    message = "%s never held within %ss; last %s: %r" % (
        what,
        timeout,
        "exception" if problem is not None else "value",
        last,
    )
    if context is not None:
        message += "\n" + context()
    raise failure(message) from problem
