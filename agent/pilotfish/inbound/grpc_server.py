"""gRPC server interceptor: count each RPC from its start until its handler returns.

Streaming responses are counted until the response iterator is exhausted or
closed. The lane tag comes from the call's metadata.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional

from .. import log
from . import request as rq


def _begin(metadata: Any) -> Optional[Any]:
    try:
        tag = rq.tag_from_grpc_metadata(metadata) if rq.tag_from_grpc_metadata is not None else None
        if rq.set_tag is not None:
            rq.set_tag(tag)
        counter = rq.slot()
        if counter is not None:
            counter.begin(tag)
        if rq.on_marked_request is not None and any(
            key == "x-pilotfish-consumer" for key, _ in (metadata or ())
        ):
            rq.on_marked_request()
        return counter
    except Exception:
        log.exception_once("grpc-inbound", "inbound accounting failed for an RPC; served unmodified")
        return None


def _unary(behavior: Callable[..., Any]) -> Callable[..., Any]:
    def handle(request: Any, context: Any) -> Any:
        counter = _begin(context.invocation_metadata())
        try:
            return behavior(request, context)
        finally:
            if counter is not None:
                counter.end()

    return handle


def _streaming(behavior: Callable[..., Any]) -> Callable[..., Any]:
    def handle(request: Any, context: Any) -> Iterator[Any]:
        counter = _begin(context.invocation_metadata())
        try:
            yield from behavior(request, context)
        finally:
            if counter is not None:
                counter.end()

    return handle


def make_interceptor() -> Any:
    import grpc

    class PilotfishServerInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
        """Wraps each method handler's behaviour; the handler itself is otherwise unchanged."""

        def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
            handler = continuation(handler_call_details)
            if handler is None:
                return None
            try:
                if handler.unary_unary is not None:
                    return handler._replace(unary_unary=_unary(handler.unary_unary))
                if handler.stream_unary is not None:
                    return handler._replace(stream_unary=_unary(handler.stream_unary))
                if handler.unary_stream is not None:
                    return handler._replace(unary_stream=_streaming(handler.unary_stream))
                if handler.stream_stream is not None:
                    return handler._replace(stream_stream=_streaming(handler.stream_stream))
            except Exception:
                log.exception_once("grpc-intercept", "could not instrument a gRPC method; served unmodified")
            return handler

    return PilotfishServerInterceptor()
