"""The WSGI wrapper: one closure, no proxies, nothing the app can observe.

In-flight holds until the server calls ``close()`` on the response iterable
(PEP 3333 requires it), so streamed responses count until their last byte.
``__len__`` is forwarded so servers that derive Content-Length from a
one-element body (wsgiref, Django runserver) keep doing so, and file wrappers
keep their ``sendfile`` fast path.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from .. import log, shared
from . import WRAPPED_MARK
from . import request as rq

StartResponse = Callable[..., Any]
WSGIApp = Callable[[Dict[str, Any], StartResponse], Iterable[bytes]]

_OFFLINE = (rq.OFFLINE_HEADER, "1")


class _Finishing:
    """Wraps a response iterable to end the request's accounting on ``close()``."""

    __slots__ = ("_inner", "_slot", "_open")

    def __init__(self, inner: Iterable[bytes], slot: shared.Slot) -> None:
        self._inner = inner
        self._slot = slot
        self._open = True

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._inner)

    def close(self) -> None:
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            if self._open:
                self._open = False
                self._slot.end()


class _SizedFinishing(_Finishing):
    """For sized bodies only: servers test ``hasattr(body, "__len__")`` before ``len()``."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self._inner)  # type: ignore[arg-type]


def offline_start_response(start_response: StartResponse) -> StartResponse:
    def start(status: str, headers: List[Tuple[str, str]], exc_info: Any = None) -> Any:
        try:
            headers = list(headers) + [_OFFLINE]
        except Exception:
            pass
        return (
            start_response(status, headers, exc_info)
            if exc_info is not None
            else start_response(status, headers)
        )

    return start


def _is_instance(result: Any, file_wrapper: Any) -> bool:
    """``isinstance``, for a ``wsgi.file_wrapper`` that may not be a class."""
    return isinstance(file_wrapper, type) and isinstance(result, file_wrapper)


def _finish_file(result: Any, slot: shared.Slot) -> Optional[Iterable[bytes]]:
    """Keep a ``wsgi.file_wrapper`` response as it is (sendfile) and hook its close()."""
    inner_close = getattr(result, "close", None)
    done: List[bool] = []

    def close() -> None:
        try:
            if inner_close is not None:
                inner_close()
        finally:
            if not done:
                done.append(True)
                slot.end()

    try:
        result.close = close
    except Exception:
        return None
    finished: Iterable[bytes] = result
    return finished


def wrap_wsgi(app: WSGIApp) -> WSGIApp:
    """Return ``app`` wrapped once (wrapping a wrapped app returns it unchanged)."""
    if getattr(app, WRAPPED_MARK, False):
        return app
    classify, get_slot = rq.classify, rq.slot
    tag_from_environ, set_tag, get_tag = rq.tag_from_environ, rq.set_tag, rq.get_tag
    on_marked, consumer_key = rq.on_marked_request, rq.CONSUMER_ENVIRON_KEY
    offline_word = shared.OFFLINE_WORD
    TRAFFIC, PROBE = rq.TRAFFIC, rq.PROBE

    def pilotfish_wsgi(environ: Dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        slot = None
        try:
            kind = classify(environ.get("PATH_INFO") or "/", environ.get("HTTP_USER_AGENT"))
            tag = tag_from_environ(environ) if (kind == TRAFFIC and tag_from_environ is not None) else None
            # Threads are reused from request to request: clear a previous request's
            # tag, but skip the (costlier) set when there is nothing to change.
            if set_tag is not None and (tag is not None or get_tag() is not None):  # type: ignore[misc]
                set_tag(tag)
            counter = shared.process_slot or get_slot()
            if counter is not None:
                if kind == TRAFFIC:
                    counter.begin(tag)
                    slot = counter
                    if on_marked is not None and consumer_key in environ:
                        on_marked()
                elif kind == PROBE:
                    counter.probe()
                else:
                    counter.ignore()
            segment = shared.process_segment
            if segment is not None and segment.ints[offline_word]:
                start_response = offline_start_response(start_response)
        except Exception:
            log.exception_once("wsgi-inbound", "inbound accounting failed for a request; served unmodified")
        if slot is None:
            return app(environ, start_response)
        try:
            result = app(environ, start_response)
        except BaseException:
            slot.end()
            raise
        try:
            file_wrapper = environ.get("wsgi.file_wrapper")
            if file_wrapper is not None and _is_instance(result, file_wrapper):
                finished = _finish_file(result, slot)
                if finished is not None:
                    return finished
            if hasattr(result, "__len__"):
                return _SizedFinishing(result, slot)
            return _Finishing(result, slot)
        except Exception:
            slot.end()
            return result

    setattr(pilotfish_wsgi, WRAPPED_MARK, True)
    pilotfish_wsgi.__wrapped__ = app  # type: ignore[attr-defined]
    return pilotfish_wsgi
