"""The one way tests wait: on a condition, never for a fixed time.

``eventually(check, timeout=..., what=...)`` calls ``check`` until it returns something true
(and returns that) or stops raising; past ``timeout`` it fails with an AssertionError naming
``what`` and the last value or exception. A check may assert: a failed assertion is retried
like any other exception, and reported if it is the last thing that happened.

Raise :class:`GiveUp` from a check (for example when the process being watched exited) to
stop at once instead of waiting out the timeout.

The loop is ``hack.cluster.wait.wait_for``, the one hack/ (the demo, the benchmarks) uses too.
"""

from __future__ import annotations

from typing import Callable, Optional, TypeVar

from hack.cluster import wait

T = TypeVar("T")

INTERVAL = 0.02  # between two checks; a check is cheap next to the process it watches


class GiveUp(wait.GiveUp, AssertionError):
    """Raised by a check when waiting longer cannot help; ``eventually`` lets it through."""


def eventually(
    check: Callable[[], Optional[T]],
    timeout: float = 10.0,
    what: str = "condition",
    *,
    interval: float = INTERVAL,
    context: Optional[Callable[[], str]] = None,
) -> T:
    """``check()``'s first true value; AssertionError naming ``what`` if none came within ``timeout`` s.

    ``context`` (e.g. a server's output) is called once, on failure, and appended to the message.
    """
    return wait.wait_for(
        check,
        timeout,
        what,
        interval=interval,
        retry=(Exception,),
        failure=AssertionError,
        context=context,
    )
