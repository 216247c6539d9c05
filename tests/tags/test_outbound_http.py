"""Every HTTP client writes the tag, and writes nothing at all when there is none.

A loopback server keeps the raw bytes of each request. For every client the
same call is made three ways in one process: without the agent's patch (the
reference), patched with no tag (must be byte-for-byte the reference), and
patched with a tag (must carry the tag header and baggage entry exactly once).
"""

from __future__ import annotations

import asyncio
import http.client
import urllib.request
from typing import Callable, Dict, Iterator, List, Tuple

import aiohttp
import httpx
import pytest
import requests
import urllib3
from pilotfish.integrations import aiohttp_client, http_client, httpx_client
from pilotfish.tags.context import CURRENT_TAG
from support.capture import CaptureServer, header, headers_of

Headers = Dict[str, str]


def send_http_client(url: str, headers: Headers) -> None:
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("POST", "/p?q=1", body=b"body", headers=headers)
    conn.getresponse().read()
    conn.close()


def send_urllib(url: str, headers: Headers) -> None:
    urllib.request.urlopen(urllib.request.Request(url + "/p", headers=headers), timeout=5).read()


def send_urllib3(url: str, headers: Headers) -> None:
    with urllib3.PoolManager() as pool:
        pool.request("GET", url + "/p", headers=headers, timeout=5)


def send_requests(url: str, headers: Headers) -> None:
    with requests.Session() as session:
        session.get(url + "/p", headers=headers, timeout=5)


def send_httpx(url: str, headers: Headers) -> None:
    with httpx.Client() as client:
        client.get(url + "/p", headers=headers, timeout=5)


def send_httpx_async(url: str, headers: Headers) -> None:
    async def main() -> None:
        async with httpx.AsyncClient() as client:
            await client.get(url + "/p", headers=headers, timeout=5)

    asyncio.run(main())


def send_aiohttp(url: str, headers: Headers) -> None:
    async def main() -> None:
        async with aiohttp.ClientSession() as session, session.get(url + "/p", headers=headers) as response:
            await response.read()

    asyncio.run(main())


CLIENTS: List[Tuple[str, Callable[[str, Headers], None]]] = [
    ("http.client", send_http_client),
    ("urllib", send_urllib),
    ("urllib3", send_urllib3),
    ("requests", send_requests),
    ("httpx", send_httpx),
    ("httpx-async", send_httpx_async),
    ("aiohttp", send_aiohttp),
]
PATCHES = (http_client, httpx_client, aiohttp_client)


@pytest.fixture(scope="module")
def server() -> Iterator[CaptureServer]:
    with CaptureServer() as srv:
        yield srv


@pytest.fixture(params=CLIENTS, ids=[name for name, _ in CLIENTS])
def send(request):
    return request.param[1]


def patch_all() -> None:
    for module in PATCHES:
        module.patch()


def unpatch_all() -> None:
    for module in PATCHES:
        module.unpatch()


def capture(server: CaptureServer, send, headers: Headers, tag, patched: bool) -> bytes:
    server.take()
    if patched:
        patch_all()
    token = CURRENT_TAG.set(tag)
    try:
        send(server.url, dict(headers))
    finally:
        CURRENT_TAG.reset(token)
        unpatch_all()
    (raw,) = server.take()
    return raw


def names(raw: bytes) -> List[str]:
    return [name for name, _ in headers_of(raw)]


def test_with_no_tag_the_request_is_byte_for_byte_what_the_app_sends_alone(server, send) -> None:
    for caller_headers in ({}, {"Baggage": "a=1", "X-Other": "x"}):
        alone = capture(server, send, caller_headers, None, patched=False)
        with_agent = capture(server, send, caller_headers, None, patched=True)
        assert with_agent == alone


def test_a_tag_in_context_adds_the_tag_header_and_baggage_once(server, send) -> None:
    alone = capture(server, send, {}, "gray", patched=False)
    raw = capture(server, send, {}, "gray", patched=True)
    assert header(raw, "x-pilotfish-tag") == "gray"
    assert header(raw, "baggage") == "pilotfish-tag=gray"
    assert names(raw).count("x-pilotfish-tag") == 1 and names(raw).count("baggage") == 1
    # and nothing else changed: same request line, same other headers, same body
    assert sorted(h for h in headers_of(raw) if h[0] not in ("x-pilotfish-tag", "baggage")) == sorted(
        headers_of(alone)
    )
    assert raw.split(b"\r\n", 1)[0] == alone.split(b"\r\n", 1)[0]
    assert raw.split(b"\r\n\r\n", 1)[1] == alone.split(b"\r\n\r\n", 1)[1]


def test_the_callers_own_tag_header_is_kept_and_never_doubled(server, send) -> None:
    raw = capture(server, send, {"X-Pilotfish-Tag": "blue"}, "gray", patched=True)
    assert [v for k, v in headers_of(raw) if k == "x-pilotfish-tag"] == ["blue"]


def test_the_callers_baggage_is_kept_and_our_entry_appended(server, send) -> None:
    raw = capture(server, send, {"baggage": "userId=alice;p=1"}, "gray", patched=True)
    assert [v for k, v in headers_of(raw) if k == "baggage"] == ["userId=alice;p=1,pilotfish-tag=gray"]


def test_a_baggage_entry_the_caller_set_for_our_key_wins(server, send) -> None:
    raw = capture(server, send, {"baggage": "pilotfish-tag=blue"}, "gray", patched=True)
    assert [v for k, v in headers_of(raw) if k == "baggage"] == ["pilotfish-tag=blue"]
    assert header(raw, "x-pilotfish-tag") == "gray"


def test_the_first_configured_tag_header_is_the_one_written(server, send, central) -> None:
    central(tag_headers=["x-mse-tag", "x-pilotfish-tag"])
    raw = capture(server, send, {}, "gray", patched=True)
    assert header(raw, "x-mse-tag") == "gray" and header(raw, "x-pilotfish-tag") is None


def test_requests_session_default_headers_count_as_set_by_the_caller(server) -> None:
    def send(url: str, headers: Headers) -> None:
        with requests.Session() as session:
            session.headers["X-Pilotfish-Tag"] = "blue"
            session.get(url + "/p", timeout=5)

    raw = capture(server, send, {}, "gray", patched=True)
    assert [v for k, v in headers_of(raw) if k == "x-pilotfish-tag"] == ["blue"]


def test_aiohttp_session_default_headers_count_as_set_by_the_caller(server) -> None:
    def send(url: str, headers: Headers) -> None:
        async def main() -> None:
            defaults = {"X-Pilotfish-Tag": "blue", "baggage": "a=1"}
            async with aiohttp.ClientSession(headers=defaults) as s, s.get(url + "/p") as response:
                await response.read()

        asyncio.run(main())

    raw = capture(server, send, {}, "gray", patched=True)
    assert [v for k, v in headers_of(raw) if k == "x-pilotfish-tag"] == ["blue"]
    assert [v for k, v in headers_of(raw) if k == "baggage"] == ["a=1,pilotfish-tag=gray"]


def test_an_httpx_request_object_is_left_as_the_app_built_it(server) -> None:
    request_box = []

    def send(url: str, headers: Headers) -> None:
        with httpx.Client() as client:
            request = client.build_request("GET", url + "/p", headers={"baggage": "a=1"})
            request_box.append(request)
            client.send(request)
            assert dict(request.headers)["baggage"] == "a=1" and "x-pilotfish-tag" not in request.headers
            CURRENT_TAG.set(None)
            client.send(request)  # re-sent untagged: no stale tag

    patch_all()
    token = CURRENT_TAG.set("gray")
    try:
        send(server.url, {})
    finally:
        CURRENT_TAG.reset(token)
        unpatch_all()
    first, second = server.take()
    assert header(first, "x-pilotfish-tag") == "gray" and header(first, "baggage") == "a=1,pilotfish-tag=gray"
    assert header(second, "x-pilotfish-tag") is None and header(second, "baggage") == "a=1"


def test_a_failure_inside_the_patch_sends_the_request_untagged(server, monkeypatch) -> None:
    from pilotfish.tags import outbound

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(outbound, "additions", broken)
    for _, send in CLIENTS:
        alone = capture(server, send, {}, "gray", patched=False)
        assert capture(server, send, {}, "gray", patched=True) == alone


def test_patch_and_unpatch_are_symmetric_and_idempotent() -> None:
    originals = (
        http.client.HTTPConnection.endheaders,
        httpx.Client._transport_for_url,
        httpx.AsyncClient._transport_for_url,
        aiohttp.ClientSession._request,
    )
    patch_all()
    patch_all()
    assert http.client.HTTPConnection.endheaders is not originals[0]
    unpatch_all()
    unpatch_all()
    assert (
        http.client.HTTPConnection.endheaders,
        httpx.Client._transport_for_url,
        httpx.AsyncClient._transport_for_url,
        aiohttp.ClientSession._request,
    ) == originals
