"""Tag every request sent with ``http.client``, and so urllib, urllib3 and requests.

The one place all of them pass through exactly once per request is
``HTTPConnection.endheaders``: ``HTTPConnection.request`` (urllib) calls it,
and urllib3 (which requests uses) builds the request with
``putrequest``/``putheader`` and then calls it too. At that moment the request
line and the caller's headers sit in ``self._buffer`` (one ``bytes`` line each,
a private attribute unchanged from Python 3.0 to 3.13) and nothing has been
sent yet, so the tag header is appended there, and an existing ``baggage``
line is merged in place. Patching one level only also means the header can
never be added twice by nested clients (requests -> urllib3 -> http.client).

With no tag in context the patched method is one ContextVar read and a call
of the original: the bytes on the wire are exactly what the app would send.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional

from .. import log
from ..tags import outbound
from ..tags.context import CURRENT_TAG

_original: Optional[Callable[..., Any]] = None
_patched_class: Any = None


def tag_buffer(buffer: List[bytes], tag: str) -> None:
    """Write the tag into an http.client request buffer (request line + header lines)."""
    names = [line.split(b":", 1)[0].strip().lower() for line in buffer]
    names[0] = b""  # the request line
    baggage_at = [i for i, name in enumerate(names) if name == b"baggage"]
    existing = [buffer[i].split(b":", 1)[1].strip(b" \t").decode("latin-1") for i in baggage_at]
    present = set(names)
    header, merged = outbound.additions(tag, lambda name: name.encode("latin-1") in present, existing)
    if merged is not None:
        line = b"baggage: " + merged.encode("latin-1")
        if baggage_at:
            buffer[baggage_at[0]] = line
            for i in reversed(baggage_at[1:]):
                del buffer[i]
        else:
            buffer.append(line)
    if header is not None:
        buffer.append(("%s: %s" % header).encode("latin-1"))


def _endheaders(self: Any, *args: Any, **kwargs: Any) -> Any:
    tag = CURRENT_TAG.get()
    if tag is not None:
        try:
            buffer = self._buffer
            if buffer:
                tag_buffer(buffer, tag)
        except Exception:
            log.exception_once("tags:http.client", "could not tag an http.client request; sent untagged")
    return _original(self, *args, **kwargs)  # type: ignore[misc]


def patch(module: Any = None) -> None:
    """Patch ``http.client.HTTPConnection.endheaders`` (idempotent)."""
    global _original, _patched_class
    if module is None:
        import http.client as module
    if _original is not None:
        return
    cls = module.HTTPConnection
    _original, _patched_class = cls.endheaders, cls
    cls.endheaders = _endheaders


def unpatch() -> None:
    global _original, _patched_class
    if _original is not None and _patched_class is not None and _patched_class.endheaders is _endheaders:
        _patched_class.endheaders = _original
    _original = _patched_class = None
