"""The lane tag of the request being handled, in a ``contextvars`` variable.

Why a ContextVar and not a thread-local: asyncio servers (uvicorn, aiohttp)
handle many requests on one thread, each in its own task, and every task runs
in its own copy of the context. A ContextVar therefore keeps concurrent
requests apart on one thread, and :mod:`pilotfish.tags.propagation` carries it
into threads and pools the app starts.

The inbound wrapper sets :data:`CURRENT_TAG` at the start of *every* request,
to ``None`` when the request is untagged, so a reused worker thread never
hands one request's tag to the next.
"""

from __future__ import annotations

from contextvars import ContextVar

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not loaded yet when the threading hook pulls this module in
    from contextvars import Token
    from typing import Optional

CURRENT_TAG: ContextVar[Optional[str]] = ContextVar("pilotfish_tag", default=None)
"""The lane tag (``gray``, ``v2``, ...) of the current request, or None for baseline."""

MAX_TAG_LENGTH = 63

# A tag names a lane, and an instance's lane comes from its pod label
# (``pilotfish.io/tag``), so a tag is exactly what a Kubernetes label value may
# be: at most 63 characters, alphanumerics plus ``-_.`` inside. Anything else
# on the wire is ignored: it could never match an instance, and refusing it
# here means every outbound writer can copy the tag into a header or a baggage
# value without escaping.
# (No `re`: this module is imported at interpreter start-up.)
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_TAG_CHARS = _ALNUM | frozenset("-_.")


def valid_tag(value: str) -> Optional[str]:
    """``value`` stripped if it is a usable tag, else None (never raises)."""
    if not isinstance(value, str):
        return None
    value = value.strip(" \t")
    if (
        0 < len(value) <= MAX_TAG_LENGTH
        and value[0] in _ALNUM
        and value[-1] in _ALNUM
        and _TAG_CHARS.issuperset(value)
    ):
        return value
    return None


def current_tag() -> Optional[str]:
    """The tag of the request being handled in this context, or None."""
    return CURRENT_TAG.get()


def set_tag(tag: Optional[str]) -> Token[Optional[str]]:
    """Set the current tag; keep the token to :func:`reset_tag` afterwards."""
    return CURRENT_TAG.set(tag)


def reset_tag(token: Token[Optional[str]]) -> None:
    """Undo a :func:`set_tag` (in the same context that set it)."""
    CURRENT_TAG.reset(token)
