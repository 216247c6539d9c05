"""gRPC clients, sync and asyncio, write the tag into the call's metadata.

A real grpc server on loopback records the metadata of every call (user
metadata as the server sees it after HTTP/2 + HPACK decoding). The same calls
are made unpatched (the reference), patched with no tag (identical metadata),
and patched with a tag.
"""

from __future__ import annotations

import asyncio
from concurrent import futures
from typing import Any, Callable, Iterator, List, Tuple

import grpc
import grpc.aio
import pytest
from pilotfish.integrations import grpc_client
from pilotfish.tags.context import CURRENT_TAG

SERVICE = "pilotfish.test.Echo"
_SYSTEM = ("user-agent", "grpc-accept-encoding", "grpc-encoding")


class Recorder:
    def __init__(self) -> None:
        self.calls: List[Tuple[Tuple[str, str], ...]] = []

    def _record(self, context: Any) -> None:
        self.calls.append(tuple((k, v) for k, v in context.invocation_metadata() if k not in _SYSTEM))

    def unary(self, request: bytes, context: Any) -> bytes:
        self._record(context)
        return request

    def stream(self, requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        self._record(context)
        yield from requests


@pytest.fixture(scope="module")
def server() -> Iterator[Tuple[str, Recorder]]:
    recorder = Recorder()
    srv = grpc.server(futures.ThreadPoolExecutor(4))
    srv.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Unary": grpc.unary_unary_rpc_method_handler(recorder.unary),
                    "UnaryStream": grpc.unary_stream_rpc_method_handler(
                        lambda req, ctx: recorder.stream(iter([req]), ctx)
                    ),
                    "StreamUnary": grpc.stream_unary_rpc_method_handler(
                        lambda reqs, ctx: b"".join(recorder.stream(reqs, ctx))
                    ),
                    "StreamStream": grpc.stream_stream_rpc_method_handler(recorder.stream),
                },
            ),
        )
    )
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    yield "127.0.0.1:%d" % port, recorder
    srv.stop(0)


def sync_calls(target: str, metadata: Any, positional: bool = False) -> None:
    with grpc.insecure_channel(target) as channel:
        unary = channel.unary_unary("/%s/Unary" % SERVICE)
        if positional:
            unary(b"x", 5, metadata)
        else:
            unary(b"x", timeout=5, metadata=metadata)
            unary.with_call(b"x", timeout=5, metadata=metadata)
            unary.future(b"x", timeout=5, metadata=metadata).result()
            list(channel.unary_stream("/%s/UnaryStream" % SERVICE)(b"x", timeout=5, metadata=metadata))
            channel.stream_unary("/%s/StreamUnary" % SERVICE)(iter([b"x"]), timeout=5, metadata=metadata)
            list(
                channel.stream_stream("/%s/StreamStream" % SERVICE)(
                    iter([b"x"]), timeout=5, metadata=metadata
                )
            )


def aio_calls(target: str, metadata: Any, positional: bool = False) -> None:
    async def main() -> None:
        async with grpc.aio.insecure_channel(target) as channel:
            await channel.unary_unary("/%s/Unary" % SERVICE)(b"x", timeout=5, metadata=metadata)
            async for _ in channel.unary_stream("/%s/UnaryStream" % SERVICE)(
                b"x", timeout=5, metadata=metadata
            ):
                pass
            await channel.stream_unary("/%s/StreamUnary" % SERVICE)(
                iter([b"x"]), timeout=5, metadata=metadata
            )
            async for _ in channel.stream_stream("/%s/StreamStream" % SERVICE)(
                iter([b"x"]), timeout=5, metadata=metadata
            ):
                pass

    asyncio.run(main())


@pytest.fixture(params=[sync_calls, aio_calls], ids=["sync", "aio"])
def calls(request) -> Callable[..., None]:
    return request.param


def record(server, calls, metadata, tag, patched: bool, **kw) -> List[Tuple[Tuple[str, str], ...]]:
    target, recorder = server
    recorder.calls.clear()
    if patched:
        grpc_client.patch()
    token = CURRENT_TAG.set(tag)
    try:
        calls(target, metadata, **kw)
    finally:
        CURRENT_TAG.reset(token)
        grpc_client.unpatch()
    return list(recorder.calls)


def test_with_no_tag_every_call_carries_exactly_the_callers_metadata(server, calls) -> None:
    for metadata in (None, (("k", "v"), ("baggage", "a=1"))):
        alone = record(server, calls, metadata, None, patched=False)
        assert record(server, calls, metadata, None, patched=True) == alone
        assert len(alone) >= 4


def test_a_tag_in_context_is_written_on_every_kind_of_call(server, calls) -> None:
    seen = record(server, calls, None, "gray", patched=True)
    assert len(seen) >= 4
    for metadata in seen:
        assert metadata == (("baggage", "pilotfish-tag=gray"), ("x-pilotfish-tag", "gray"))


def test_the_callers_metadata_is_kept_and_baggage_merged(server, calls) -> None:
    seen = record(server, calls, [("k", "v"), ("baggage", "a=1"), ("x-pilotfish-tag", "blue")], "gray", True)
    for metadata in seen:
        assert metadata == (("k", "v"), ("baggage", "a=1,pilotfish-tag=gray"), ("x-pilotfish-tag", "blue"))


def test_metadata_passed_positionally_is_tagged_too(server) -> None:
    seen = record(server, sync_calls, (("k", "v"),), "gray", True, positional=True)
    assert seen == [(("k", "v"), ("baggage", "pilotfish-tag=gray"), ("x-pilotfish-tag", "gray"))]


def test_an_intercepted_channel_is_tagged_once_and_sees_its_interceptors_metadata(server) -> None:
    def calls(target: str, metadata: Any) -> None:
        import collections

        base = collections.namedtuple("D", "method timeout metadata credentials wait_for_ready compression")  # type: ignore[name-match]

        class D(base, grpc.ClientCallDetails):
            pass

        class Add(grpc.UnaryUnaryClientInterceptor):
            def intercept_unary_unary(self, continuation, details, request):
                new = D(
                    details.method,
                    details.timeout,
                    [*(details.metadata or ()), ("x-pilotfish-tag", "mine")],
                    details.credentials,
                    details.wait_for_ready,
                    details.compression,
                )
                return continuation(new, request)

        with grpc.insecure_channel(target) as channel:
            grpc.intercept_channel(channel, Add()).unary_unary("/%s/Unary" % SERVICE)(b"x", timeout=5)

    seen = record(server, calls, None, "gray", patched=True)
    assert seen == [(("x-pilotfish-tag", "mine"), ("baggage", "pilotfish-tag=gray"))]


def test_a_failure_inside_the_patch_sends_the_call_untagged(server, calls, monkeypatch) -> None:
    from pilotfish.tags import outbound

    monkeypatch.setattr(outbound, "additions", lambda *a: 1 / 0)
    assert record(server, calls, None, "gray", patched=True) == record(
        server, calls, None, "gray", patched=False
    )


def test_patch_and_unpatch_are_symmetric() -> None:
    from grpc import _channel
    from grpc.aio import _channel as aio_channel

    before = (_channel._UnaryUnaryMultiCallable.__call__, aio_channel.UnaryUnaryMultiCallable.__call__)
    grpc_client.patch()
    grpc_client.patch()
    assert _channel._UnaryUnaryMultiCallable.__call__ is not before[0]
    grpc_client.unpatch()
    assert (
        _channel._UnaryUnaryMultiCallable.__call__,
        aio_channel.UnaryUnaryMultiCallable.__call__,
    ) == before
