"""Tag every gRPC call made by a client, sync (``grpc``) and asyncio (``grpc.aio``) channels.

Where: the channel's multi-callables (what ``stub.Method`` is), whose
``__call__`` / ``with_call`` / ``future`` receive the call's ``metadata``.
Every call from every channel passes there exactly once, including channels
wrapped with ``grpc.intercept_channel`` (interceptors end in these methods,
so metadata an interceptor adds is seen and never duplicated) and channels
created before this patch was installed.

Why not client interceptors added at channel creation (OpenTelemetry's way):
an intercepted sync channel runs every call through grpc's interceptor
machinery, and on ``grpc.aio`` any interceptor makes each call spawn an extra
asyncio Task. Both cost microseconds per call even when there is no tag, and
change the objects the app gets back. Here, with no tag in context, a call
costs one ContextVar read more and the metadata object is passed on untouched.

The classes patched are grpc's own implementation classes
(``grpc._channel._UnaryUnaryMultiCallable`` ..., ``grpc.aio._channel.UnaryUnaryMultiCallable``
...), unchanged in name and signature from grpcio 1.32 to 1.85; a class or
method that is missing is skipped with one warning, never an error.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Tuple

from .. import log
from ..tags import outbound
from ..tags.context import CURRENT_TAG

# (module name, class name, methods). Positional metadata sits right after
# (request, timeout) in the sync API; aio takes it by keyword only.
SYNC_TARGETS = (
    ("_UnaryUnaryMultiCallable", ("__call__", "with_call", "future")),
    ("_UnaryStreamMultiCallable", ("__call__",)),
    ("_StreamUnaryMultiCallable", ("__call__", "with_call", "future")),
    ("_StreamStreamMultiCallable", ("__call__",)),
)
AIO_TARGETS = (
    ("UnaryUnaryMultiCallable", ("__call__",)),
    ("UnaryStreamMultiCallable", ("__call__",)),
    ("StreamUnaryMultiCallable", ("__call__",)),
    ("StreamStreamMultiCallable", ("__call__",)),
)

_patched: Dict[str, List[Tuple[Any, str, Any, Any]]] = {}


def with_tag(
    args: Tuple[Any, ...], kwargs: Dict[str, Any], tag: str
) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
    """The call's (args, kwargs) after ``request`` with the tag written into its metadata."""
    if len(args) >= 2:
        merged = outbound.merge_pairs(list(args[1] or ()), tag)
        if merged is not None:
            args = (args[0], tuple(merged), *args[2:])
        return args, kwargs
    merged = outbound.merge_pairs(list(kwargs.get("metadata") or ()), tag)
    if merged is not None:
        kwargs = dict(kwargs)
        kwargs["metadata"] = tuple(merged)
    return args, kwargs


def _wrap(original: Callable[..., Any]) -> Callable[..., Any]:
    def call_with_tag(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        tag = CURRENT_TAG.get()
        if tag is not None:
            try:
                args, kwargs = with_tag(args, kwargs, tag)
            except Exception:
                log.exception_once("tags:grpc", "could not tag a gRPC call; sent untagged")
        return original(self, request, *args, **kwargs)

    call_with_tag.__wrapped__ = original  # type: ignore[attr-defined]
    call_with_tag.__name__ = getattr(original, "__name__", "__call__")
    call_with_tag.__doc__ = getattr(original, "__doc__", None)
    return call_with_tag


def _patch(key: str, module: Any, targets: Tuple[Tuple[str, Tuple[str, ...]], ...]) -> None:
    if key in _patched:
        return
    done: List[Tuple[Any, str, Any, Any]] = []
    for class_name, methods in targets:
        cls = getattr(module, class_name, None)
        if cls is None:
            log.once(
                "grpc:%s.%s" % (key, class_name),
                "warning",
                "grpc %s.%s not found; its calls are not tagged" % (module.__name__, class_name),
            )
            continue
        for method in methods:
            original = cls.__dict__.get(method)
            if original is None:
                continue
            wrapper = _wrap(original)
            setattr(cls, method, wrapper)
            done.append((cls, method, original, wrapper))
    _patched[key] = done


def patch_sync(module: Any = None) -> None:
    """Patch the sync channel's multi-callables (``grpc._channel``), idempotent."""
    if module is None:
        import grpc._channel

        module = grpc._channel
    _patch("sync", module, SYNC_TARGETS)


def patch_aio(module: Any = None) -> None:
    """Patch the asyncio channel's multi-callables (``grpc.aio._channel``), idempotent."""
    if module is None:
        import grpc.aio._channel

        module = grpc.aio._channel
    _patch("aio", module, AIO_TARGETS)


def patch() -> None:
    patch_sync()
    patch_aio()


def unpatch() -> None:
    for done in _patched.values():
        for cls, method, original, wrapper in reversed(done):
            if cls.__dict__.get(method) is wrapper:
                setattr(cls, method, original)
    _patched.clear()
