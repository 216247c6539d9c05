"""Clients that authenticate keep working, and keep showing what they sent, with a tag in context.

Against a real server that demands Basic or Digest auth (strict Digest: real
hashes, fresh nonces, growing nonce counts), each client makes the same calls
tagged and untagged, with the agent's patches in place. Spec:

- the call succeeds exactly as without the agent (Digest: one 401 round trip
  on the first call, none on the next, which re-uses the nonce with ``nc=2``);
- the tag header is on the wire of every request of a tagged call, including
  the authorised retry, and on none of an untagged one;
- what the app sees of its request (httpx ``response.request``, requests'
  ``response.request``, aiohttp's ``response.request_info``) carries the
  ``Authorization`` header the client added: the agent must not take away
  anything the client itself put there.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import aiohttp
import httpx
import pytest
import requests
import requests.auth
from pilotfish.integrations import aiohttp_client, http_client, httpx_client
from pilotfish.tags.context import CURRENT_TAG
from support.auth_server import PASSWORD, USER, AuthServer

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*(BasicAuth|'auth' parameter) is deprecated:DeprecationWarning"
)

PATCHES = (http_client, httpx_client, aiohttp_client)
TAG_HEADER = "x-pilotfish-tag"

# What a client call hands back for the checks: (status, Authorization the app sees, tag header the app sees)
Seen = Tuple[int, Optional[str], Optional[str]]


@pytest.fixture(scope="module")
def server() -> Iterator[AuthServer]:
    with AuthServer() as srv:
        yield srv


@pytest.fixture
def patched() -> Iterator[None]:
    for module in PATCHES:
        module.patch()
    yield
    for module in PATCHES:
        module.unpatch()


def _httpx_auth(scheme: str) -> httpx.Auth:
    return httpx.BasicAuth(USER, PASSWORD) if scheme == "basic" else httpx.DigestAuth(USER, PASSWORD)


def httpx_sync(url: str, scheme: str, calls: int) -> List[Seen]:
    with httpx.Client(auth=_httpx_auth(scheme)) as client:
        responses = [client.get("%s/%s/%d" % (url, scheme, i)) for i in range(calls)]
    return [
        (r.status_code, r.request.headers.get("authorization"), r.request.headers.get(TAG_HEADER))
        for r in responses
    ]


def httpx_async(url: str, scheme: str, calls: int) -> List[Seen]:
    async def main() -> List[Seen]:
        async with httpx.AsyncClient(auth=_httpx_auth(scheme)) as client:
            responses = [await client.get("%s/%s/%d" % (url, scheme, i)) for i in range(calls)]
        return [
            (r.status_code, r.request.headers.get("authorization"), r.request.headers.get(TAG_HEADER))
            for r in responses
        ]

    return asyncio.run(main())


def httpx_explicit_request(url: str, scheme: str, calls: int) -> List[Seen]:
    """The app builds the Request itself and sends it with ``client.send``: that object is the one it sees."""
    out: List[Seen] = []
    auth = _httpx_auth(scheme)
    with httpx.Client() as client:
        for i in range(calls):
            request = client.build_request("GET", "%s/%s/%d" % (url, scheme, i))
            response = client.send(request, auth=auth)
            assert response.request is request
            out.append(
                (response.status_code, request.headers.get("authorization"), request.headers.get(TAG_HEADER))
            )
    return out


def requests_session(url: str, scheme: str, calls: int) -> List[Seen]:
    auth: Any = (
        requests.auth.HTTPBasicAuth(USER, PASSWORD)
        if scheme == "basic"
        else requests.auth.HTTPDigestAuth(USER, PASSWORD)
    )
    with requests.Session() as session:
        session.auth = auth
        responses = [session.get("%s/%s/%d" % (url, scheme, i), timeout=5) for i in range(calls)]
    return [
        (r.status_code, r.request.headers.get("Authorization"), r.request.headers.get(TAG_HEADER))  # type: ignore[misc]
        for r in responses
    ]


def aiohttp_session(url: str, scheme: str, calls: int) -> List[Seen]:
    async def main() -> List[Seen]:
        if scheme == "basic":
            session = aiohttp.ClientSession(auth=aiohttp.BasicAuth(USER, PASSWORD))
        else:
            session = aiohttp.ClientSession(middlewares=(aiohttp.DigestAuthMiddleware(USER, PASSWORD),))
        out: List[Seen] = []
        async with session:
            for i in range(calls):
                async with session.get("%s/%s/%d" % (url, scheme, i)) as r:
                    await r.read()
                    out.append((r.status, r.request_info.headers.get("Authorization"), None))
        return out

    return asyncio.run(main())


CLIENTS: List[Tuple[str, Callable[[str, str, int], List[Seen]]]] = [
    ("httpx", httpx_sync),
    ("httpx-async", httpx_async),
    ("httpx-send", httpx_explicit_request),
    ("requests", requests_session),
    ("aiohttp", aiohttp_session),
]


@pytest.fixture(params=CLIENTS, ids=[name for name, _ in CLIENTS])
def client(request: pytest.FixtureRequest) -> Callable[[str, str, int], List[Seen]]:
    if request.param[0] == "aiohttp" and not hasattr(aiohttp, "DigestAuthMiddleware"):
        pytest.skip("aiohttp %s has no DigestAuthMiddleware" % aiohttp.__version__)
    return request.param[1]


def call(server: AuthServer, client: Callable[..., List[Seen]], scheme: str, tag: Optional[str]) -> Any:
    server.take()
    replays = server.rejected_replays
    token = CURRENT_TAG.set(tag)
    try:
        seen = client(server.url, scheme, 2)
    finally:
        CURRENT_TAG.reset(token)
    assert server.rejected_replays == replays, "the client replayed a Digest nonce count"
    return seen, server.take()


def wire_tags(requests_seen: List[Tuple[str, List[Tuple[str, str]]]]) -> List[Optional[str]]:
    return [dict(headers).get(TAG_HEADER) for _, headers in requests_seen]


def wire_auth(requests_seen: List[Tuple[str, List[Tuple[str, str]]]]) -> List[str]:
    return [dict(headers).get("authorization", "").split(" ")[0] for _, headers in requests_seen]


@pytest.mark.parametrize("tag", ["gray", None], ids=["tagged", "untagged"])
def test_basic_auth_works_and_the_app_sees_its_authorization_header(server, client, patched, tag) -> None:
    seen, wire = call(server, client, "basic", tag)
    assert [status for status, _, _ in seen] == [200, 200]
    assert all(auth is not None and auth.startswith("Basic ") for _, auth, _ in seen)
    assert wire_auth(wire) == ["Basic", "Basic"]
    assert wire_tags(wire) == [tag, tag]
    assert all(app_tag is None for _, _, app_tag in seen)  # the tag is on the wire only


@pytest.mark.parametrize("tag", ["gray", None], ids=["tagged", "untagged"])
def test_digest_auth_works_and_the_app_sees_its_authorization_header(server, client, patched, tag) -> None:
    seen, wire = call(server, client, "digest", tag)
    assert [status for status, _, _ in seen] == [200, 200]
    assert all(auth is not None and auth.startswith("Digest ") for _, auth, _ in seen)
    # first call: challenge round trip; second: the saved nonce, next count, no 401
    assert [path for path, _ in wire] == ["/digest/0", "/digest/0", "/digest/1"]
    assert wire_auth(wire) == ["", "Digest", "Digest"]
    assert "nc=00000002" in dict(wire[2][1])["authorization"]
    assert wire_tags(wire) == [tag, tag, tag]
    assert all(app_tag is None for _, _, app_tag in seen)


def test_httpx_responses_show_the_request_as_httpx_built_it(server, patched) -> None:
    """Tagged or not, ``response.request.headers`` are the same: everything httpx added, no tag."""
    shown: Dict[Optional[str], List[List[str]]] = {}
    for tag in (None, "gray"):
        token = CURRENT_TAG.set(tag)
        try:
            with httpx.Client(auth=httpx.BasicAuth(USER, PASSWORD), cookies={"c": "1"}) as c:
                shown[tag] = [
                    sorted(c.get(server.url + "/basic/%d" % i).request.headers.keys()) for i in range(2)
                ]
        finally:
            CURRENT_TAG.reset(token)
    assert shown["gray"] == shown[None]
    assert "authorization" in shown["gray"][0] and "cookie" in shown["gray"][0]
