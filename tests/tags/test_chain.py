"""A tag set at the edge reaches the last hop of a chain of three real services under the agent.

    test --HTTP--> A: Flask under gunicorn (gthread)
                     requests, in a ThreadPoolExecutor
                   B: FastAPI under uvicorn
                     httpx.AsyncClient in an asyncio task --> capture server (/b-httpx-task)
                     grpc.aio in an asyncio task
                   C: sync grpc server
                     urllib in a threading.Thread       --> capture server (/c-urllib-thread)
                     aiohttp in an asyncio task          --> capture server (/c-aiohttp-task)

Every process runs with ``PYTHONPATH=build/agent-tree/bootstrap`` only, as in a
pod. The capture server keeps the raw bytes of every request it gets, so the
untagged case is checked byte for byte against the same chain run without the
agent.

The apps contain no pilotfish code at all: the agent's inbound wrappers
read each request's tag, and the outbound patches (docs/tags.md) carry it on.
"""

from __future__ import annotations

import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
from support.capture import CaptureServer, header
from support.interpreters import matrix_versions, require_app_python
from support.ports import free_port
from support.servers import RunningServer, http_get

APPS = Path(__file__).resolve().parent / "apps"
HOPS = ("/b-httpx-task", "/c-urllib-thread", "/c-aiohttp-task")


class Chain:
    """The three services, started with or without the agent, calling ``capture``.

    B and A are servers of the one table (support.servers) on port 0, C a gRPC script; each
    is told the address of the next, so they start from the last hop back.
    """

    def __init__(self, python: str, capture_url: str, agent: bool, logs: Path) -> None:
        self.python, self.capture_url, self.agent, self.logs = python, capture_url, agent, logs
        self.servers: List[RunningServer] = []
        self.status_ports: Dict[str, int] = {}
        self.url = ""

    def _start(self, name: str, server: RunningServer) -> RunningServer:
        self.servers.append(server)
        self.status_ports[name] = server.status_port
        server.start()
        return server

    def _server(self, kind: str, env: Dict[str, str], **options: Any) -> RunningServer:
        env = dict(env, CHAIN_CAPTURE=self.capture_url)
        return RunningServer(
            kind, self.python, agent=self.agent, env=env, pythonpath=(str(APPS),), ready_path=None, **options
        )

    def __enter__(self) -> Chain:
        try:
            # C is a plain script told its port (CHAIN_PORT): one chosen beforehand.
            c = free_port()
            script = [self.python, str(APPS / "chain_c_grpc.py")]
            self._start("c", self._server("chain-c", {"CHAIN_PORT": str(c)}, port=c, argv=script))
            b = self._start(
                "b", self._server("uvicorn", {"CHAIN_NEXT": "127.0.0.1:%d" % c}, app="chain_b_fastapi:app")
            )
            a = self._start(
                "a",
                self._server(
                    "gunicorn-gthread",
                    {"CHAIN_NEXT": "http://127.0.0.1:%d" % b.port},
                    app="chain_a_flask:app",
                    workers=1,
                ),
            )
        except BaseException:
            self.__exit__()
            raise
        self.url = "http://127.0.0.1:%d" % a.port
        return self

    def __exit__(self, *exc: object) -> None:
        for server in reversed(self.servers):
            server.stop()

    def get(self, rid: str, headers: Optional[Dict[str, str]] = None) -> str:
        request = urllib.request.Request("%s/a?id=%s" % (self.url, rid), headers=headers or {})
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.read().decode()


def captured_by_id(raws: List[bytes]) -> Dict[str, Dict[str, bytes]]:
    """{request id: {hop path: raw request}} from the capture server's log."""
    out: Dict[str, Dict[str, bytes]] = {}
    for raw in raws:
        target = raw.split(b" ")[1].decode()
        path, _, query = target.partition("?")
        rid = dict(p.split("=", 1) for p in query.split("&"))["id"]
        assert path not in out.setdefault(rid, {}), "hop %s called twice for %s" % (path, rid)
        out[rid][path] = raw
    return out


@pytest.fixture(scope="module", params=matrix_versions())
def chain(request, tmp_path_factory) -> Iterator[tuple]:
    python = require_app_python(request.param)
    logs = tmp_path_factory.mktemp("chain-%s" % request.param)
    with CaptureServer() as capture, Chain(python, capture.url, True, logs) as running:
        # An untagged first request: the pools' worker threads start now, untagged, so a
        # tagged request can only arrive tagged if the tag really crosses into the pool.
        assert running.get("warm-up") == "a>b>c"
        capture.take()
        yield running, capture, python, logs


@pytest.mark.matrix
def test_an_untagged_request_reaches_the_last_hop_with_no_added_bytes(chain) -> None:
    running, capture, python, logs = chain
    capture.take()
    ids = ["u1", "u2"]
    for rid in ids:
        assert running.get(rid) == "a>b>c"
    with_agent = captured_by_id(capture.take())
    with Chain(python, capture.url, False, logs) as alone:
        for rid in ids:
            assert alone.get(rid) == "a>b>c"
    without_agent = captured_by_id(capture.take())
    for rid in ids:
        assert sorted(without_agent[rid]) == sorted(HOPS)
        assert with_agent[rid] == without_agent[rid]


@pytest.mark.matrix
def test_a_request_tagged_at_the_entry_arrives_tagged_at_every_hop(chain) -> None:
    running, capture, _, _ = chain
    capture.take()
    assert running.get("t1", {"x-pilotfish-tag": "gray"}) == "a>b>c"
    hops = captured_by_id(capture.take())["t1"]
    assert sorted(hops) == sorted(HOPS)
    for path, raw in hops.items():
        assert header(raw, "x-pilotfish-tag") == "gray", path
        assert header(raw, "baggage") == "pilotfish-tag=gray", path


@pytest.mark.matrix
def test_a_tag_that_arrives_in_baggage_travels_the_same_way(chain) -> None:
    running, capture, _, _ = chain
    capture.take()
    assert running.get("t2", {"baggage": "user=7,pilotfish-tag=blue"}) == "a>b>c"
    for path, raw in captured_by_id(capture.take())["t2"].items():
        assert header(raw, "x-pilotfish-tag") == "blue", path
        assert header(raw, "baggage") == "pilotfish-tag=blue", path


@pytest.mark.matrix
def test_concurrent_requests_with_different_tags_never_cross(chain) -> None:
    running, capture, _, _ = chain
    capture.take()
    tags = ["gray", "blue", None, "green"] * 6
    requests = {"c%d" % i: tag for i, tag in enumerate(tags)}

    def send(rid: str) -> str:
        tag = requests[rid]
        return running.get(rid, {"x-pilotfish-tag": tag} if tag else None)

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(send, requests)) == ["a>b>c"] * len(requests)
    seen = captured_by_id(capture.take())
    assert sorted(seen) == sorted(requests)
    for rid, hops in seen.items():
        assert sorted(hops) == sorted(HOPS)
        for path, raw in hops.items():
            assert header(raw, "x-pilotfish-tag") == requests[rid], (rid, path)


@pytest.mark.matrix
def test_the_entrys_status_shows_how_it_reads_tags(chain) -> None:
    running = chain[0]
    status = http_get(running.status_ports["a"], "/status", timeout=10).json()
    assert status["tags"]["tag_headers"] == ["x-pilotfish-tag"]
    assert status["tags"]["baggage_key"] == "pilotfish-tag"
