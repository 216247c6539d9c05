"""The one way tests wait: on a condition, never for a fixed time.

``eventually(check, timeout=..., what=...)`` calls ``check`` until it returns something true
(and returns that) or stops raising; past ``timeout`` it fails with an AssertionError naming
``what`` and the last value or exception. A check may assert: a failed assertion is retried
like any other exception, and reported if it is the last thing that happened.

Raise :class:`GiveUp` from a check (for example when the process being watched exited) to
stop at once instead of waiting out the timeout.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, TypeVar

T = TypeVar("T")

INTERVAL = 0.02  # between two checks; a check is cheap next to the process it watches


class GiveUp(AssertionError):
    """Raised by a check when waiting longer cannot help; ``eventually`` lets it through."""


def eventually(
    check: Callable[[], T],
    timeout: float = 10.0,
    what: str = "condition",
    *,
    interval: float = INTERVAL,
    context: Optional[Callable[[], str]] = None,
) -> T:
    """``check()``'s first true value; AssertionError naming ``what`` if none came within ``timeout`` s.

    ``context`` (e.g. a server's output) is called once, on failure, and appended to the message.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    problem: Optional[BaseException] = None
    while True:
        try:
            last = check()
            problem = None
            if last:
                return last  # type: ignore[return-value]
        except GiveUp:
            raise
        except Exception as raised:  # retried; the last one is reported
            last, problem = raised, raised
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
    raise AssertionError(message) from problem
