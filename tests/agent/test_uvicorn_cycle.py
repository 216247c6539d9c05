"""Requests counted inside uvicorn's request cycle (``pilotfish.inbound.uvicorn_cycle``).

Spec: under uvicorn's httptools and h11 protocols the agent counts a request where
uvicorn builds its request cycle and where the cycle's ``run_asgi`` finishes, with no
ASGI layer around the app; everything the generic wrapper guarantees still holds
(probes apart, in flight until the app's coroutine returned, so through streamed
bodies and background tasks); a request queued behind another on a pipelining
connection that is lost before it runs is counted out; where the server's internals
are not as expected, or ``--limit-concurrency`` is set, the app is wrapped instead.
"""

from __future__ import annotations

import http.client
import socket
from typing import Callable, List

import pytest
from pilotfish.inbound import uvicorn_cycle
from support.interpreters import matrix_versions, require_app_python
from support.servers import SERVERS, RunningServer, http_get, stream_holds_in_flight

PROBE = {"User-Agent": "kube-probe/1.31"}


def _uvicorn(*flags: str) -> Callable[[str, int], List[str]]:
    def argv(python: str, port: int) -> List[str]:
        return [
            python,
            "-m",
            "uvicorn",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *flags,
            "inbound_asgi_app:app",
        ]

    return argv


# Server kinds of these tests only: registered for each test (the shared table stays as it is for
# the test modules that parametrize over it). httptools is in the dev venv only.
KINDS = {
    "uvicorn-cycle-httptools": _uvicorn("--http", "httptools"),
    "uvicorn-cycle-h11": _uvicorn("--http", "h11"),
    "uvicorn-cycle-limited": _uvicorn("--limit-concurrency", "1"),
    "uvicorn-own-protocol": lambda python, port: [
        python,
        "-c",
        "import uvicorn, inbound_asgi_app as a\n"
        "uvicorn.run(a.app, host='127.0.0.1', port=%d, http=a.OwnProtocol)" % port,
    ],
}


@pytest.fixture(autouse=True)
def _kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, argv in KINDS.items():
        monkeypatch.setitem(SERVERS, name, argv)


CASES = [("uvicorn-cycle-httptools", "3.11")] + [("uvicorn-cycle-h11", minor) for minor in matrix_versions()]


def _started(server: RunningServer) -> dict:
    """Ready and counting: the first request claims the process's slot (it runs the wrapper)."""
    server.wait_status(lambda s: s["ready"], timeout=20)
    assert server.get("/").status == 200
    return server.wait_status(lambda s: s["requests_total"] >= 1 and s["in_flight"] == 0)


@pytest.mark.parametrize("kind,minor", CASES)
def test_requests_are_counted_in_the_cycle_with_no_wrapper_around_the_app(kind: str, minor: str) -> None:
    with RunningServer(kind, require_app_python(minor)) as server:
        before = _started(server)
        frames = server.get("/frames").json()["frames"]
        assert "pilotfish_asgi" not in frames and "run_asgi" in frames
        for _ in range(5):
            assert server.get("/").status == 200
        for _ in range(2):
            assert server.get("/", headers=PROBE).status == 200
        after = server.wait_status(
            lambda s: s["requests_total"] >= before["requests_total"] + 6 and s["in_flight"] == 0
        )
        assert after["requests_total"] == before["requests_total"] + 6
        assert after["probes_total"] == before["probes_total"] + 2
        assert after["in_flight"] == 0


@pytest.mark.parametrize("kind,minor", CASES)
def test_in_flight_holds_through_background_tasks_and_streamed_bodies(kind: str, minor: str) -> None:
    with RunningServer(kind, require_app_python(minor)) as server:
        _started(server)
        response = server.get("/background?seconds=1.5")
        assert response.status == 200
        # The response is complete; the background task runs on, and the request with it.
        assert server.status()["in_flight"] == 1
        server.wait_status(lambda s: s["in_flight"] == 0, timeout=10)
        assert server.get("/done").json()["background"] == 1

        stream_holds_in_flight(server)


def test_pipelined_requests_are_counted_each_when_it_runs() -> None:
    with RunningServer("uvicorn-cycle-httptools", require_app_python("3.11")) as server:
        before = _started(server)
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(
                b"GET /slow?seconds=0.5 HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"
            )
            received = b""
            while received.count(b"HTTP/1.1 200") < 2:
                chunk = sock.recv(65536)
                assert chunk
                received += chunk
        after = server.wait_status(
            lambda s: s["requests_total"] >= before["requests_total"] + 2 and s["in_flight"] == 0
        )
        assert after["requests_total"] == before["requests_total"] + 2
        assert after["in_flight"] == 0

        # A request queued behind a slow one on a connection that is then lost never runs: never counted.
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(b"GET /slow?seconds=0.5 HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
        server.wait_status(lambda s: s["in_flight"] == 1)
        sock.close()
        settled = server.wait_status(
            lambda s: s["in_flight"] == 0 and s["requests_total"] == after["requests_total"] + 1
        )
        assert settled["in_flight"] == 0


class _AnsweringAnything(RunningServer):
    """Started once it answers at all (the limited server answers only 503)."""

    def _answers(self) -> bool:
        try:
            return http_get(self.port, "/", timeout=2).status > 0
        except (OSError, http.client.HTTPException):
            return False


def test_answers_of_limit_concurrency_are_not_counted_as_without_a_cycle_hook() -> None:
    # --limit-concurrency 1: the connection itself reaches the limit, so uvicorn answers every
    # request with its own 503 app; the generic wrapper never saw those, nor does the cycle.
    with _AnsweringAnything("uvicorn-cycle-limited", require_app_python("3.11")) as server:
        server.wait_status(lambda s: s["ready"], timeout=20)
        for _ in range(3):
            assert server.get("/").status == 503
        status = server.status()
        assert status["requests_total"] == 0 and status["in_flight"] == 0


@pytest.mark.parametrize("minor", matrix_versions())
def test_a_protocol_class_of_the_apps_own_gets_the_wrapper_and_counts_once(minor: str) -> None:
    with RunningServer("uvicorn-own-protocol", require_app_python(minor)) as server:
        before = _started(server)
        assert "pilotfish_asgi" in server.get("/frames").json()["frames"]
        for _ in range(3):
            assert server.get("/").status == 200
        assert server.get("/", headers=PROBE).status == 200
        after = server.wait_status(
            lambda s: s["requests_total"] >= before["requests_total"] + 4 and s["in_flight"] == 0
        )
        assert after["requests_total"] == before["requests_total"] + 4
        assert after["probes_total"] == before["probes_total"] + 1
        assert after["in_flight"] == 0


# -- the recompiled run_asgi, in process ------------------------------------------------------------


async def run_asgi(self, app):  # type: ignore[no-untyped-def]
    """A run_asgi as uvicorn writes it."""
    try:
        await app(self.scope, None, None)
    finally:
        self.done = True


def test_only_a_run_asgi_of_the_expected_shape_is_recompiled() -> None:
    assert uvicorn_cycle.counting_run_asgi(run_asgi) is not None

    async def other_name(self, app):  # type: ignore[no-untyped-def]
        await app()

    def run_asgi_sync(self, app):  # type: ignore[no-untyped-def]
        return app()

    run_asgi_sync.__name__ = "run_asgi"

    async def run_asgi_more(self, app, extra):  # type: ignore[no-untyped-def]
        await app()

    run_asgi_more.__name__ = "run_asgi"
    for function in (other_name, run_asgi_sync, run_asgi_more):
        assert uvicorn_cycle.counting_run_asgi(function) is None
    # Already recompiled: not again.
    once = uvicorn_cycle.counting_run_asgi(run_asgi)
    assert uvicorn_cycle.counting_run_asgi(once) is None


def test_the_recompiled_run_asgi_runs_the_same_body_and_survives_a_failing_count() -> None:
    import asyncio

    counting = uvicorn_cycle.counting_run_asgi(run_asgi)
    assert counting is not None and counting.__qualname__ == run_asgi.__qualname__
    assert counting.__code__.co_filename == run_asgi.__code__.co_filename

    class Cycle:
        scope = {"headers": None}  # not iterable: counting it in fails
        done = False

    seen = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        seen.append(scope)

    uvicorn_cycle.count_app(app)
    try:
        cycle = Cycle()
        asyncio.run(counting(cycle, app))
        assert seen == [Cycle.scope] and cycle.done
    finally:
        uvicorn_cycle.forget_apps()


def test_the_usual_request_is_counted_from_the_cache_which_goes_when_its_inputs_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first usual request fills the cache; later ones of the same server are counted by
    the added lines alone; a probe, a tag header, another server (on another thread) or the
    server's new default headers (its tick, every second) still go the ordinary way; a slot
    change, a header-name change or offline drops the cache, and in-flight is right
    throughout."""
    import asyncio
    import os
    import threading
    import uuid

    from pilotfish import shared
    from pilotfish.inbound import asgi

    segment = shared.Segment.create("test-" + uuid.uuid4().hex[:8])
    index = segment.claim_slot(os.getpid())
    assert index is not None
    slot = shared.Slot(segment, index, private=True)
    monkeypatch.setattr(shared, "process_slot", slot)
    monkeypatch.setattr(asgi, "always_full", False)
    inside: List[int] = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        inside.append(in_flight())

    def in_flight() -> int:
        [(_index, values, _tags)] = segment.read_slots()
        return int(values[1])

    # uvicorn's ServerState.default_headers: one list per server, replaced by its tick
    servers = {"main": [(b"server", b"uvicorn")], "other": [(b"server", b"uvicorn")]}

    class Cycle:
        def __init__(self, *headers: tuple, server: str = "main") -> None:
            self.scope = {"type": "http", "path": "/", "headers": [(b"host", b"x"), *headers]}
            self.default_headers = servers[server]
            self.done = False

        async def send(self, message: dict) -> None:
            pass

    calls: List[str] = []
    ordinary = uvicorn_cycle.begin

    def counted_begin(cycle, app):  # type: ignore[no-untyped-def]
        calls.append("begin")
        return ordinary(cycle, app)

    loop = asyncio.new_event_loop()
    run = loop.run_until_complete
    uvicorn_cycle.count_app(app)
    try:
        # rebuild with the spy bound as the ordinary path
        monkeypatch.setattr(uvicorn_cycle, "begin", counted_begin)
        counting = uvicorn_cycle.counting_run_asgi(run_asgi)
        assert counting is not None
        for _ in range(3):  # the first claims the thread's cell, the second fills the cache
            run(counting(Cycle(), app))
        assert calls == ["begin", "begin"] and isinstance(uvicorn_cycle._cache[0], uvicorn_cycle.Fast)
        run(counting(Cycle((b"user-agent", b"curl/8")), app))
        assert calls == ["begin", "begin"], "a User-Agent that is not a probe's is usual"
        run(counting(Cycle((b"user-agent", b"kube-probe/1.32")), app))
        run(counting(Cycle((b"x-pilotfish-tag", b"gray")), app))
        assert calls == ["begin"] * 4
        servers["main"] = [(b"server", b"uvicorn")]  # the tick: a new list, once a second
        run(counting(Cycle(), app))
        run(counting(Cycle(), app))
        assert calls == ["begin"] * 5

        def other_server() -> None:
            for _ in range(2):  # the first claims this thread's cell, the second fills the cache
                asyncio.run(counting(Cycle(server="other"), app))

        other = threading.Thread(target=other_server)
        other.start()
        other.join()
        assert calls == ["begin"] * 7, "another server on another thread: its own cell and cache"
        run(counting(Cycle(), app))
        run(counting(Cycle(), app))
        assert calls == ["begin"] * 8, "the cache another server filled is not this server's"
        assert inside == [1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1] and in_flight() == 0

        shared.changed()  # e.g. a new slot after fork, or a dead thread's cell handed back
        assert uvicorn_cycle._cache[0] is uvicorn_cycle.EMPTY
        run(counting(Cycle(), app))
        assert isinstance(uvicorn_cycle._cache[0], uvicorn_cycle.Fast)
        asgi.refresh()  # the header names to notice may have changed
        assert uvicorn_cycle._cache[0] is uvicorn_cycle.EMPTY

        def shapeless() -> Cycle:  # a cycle with no server's default headers: never cached
            cycle = Cycle()
            del cycle.default_headers
            return cycle

        before = len(calls)
        for _ in range(3):
            run(counting(shapeless(), app))
        assert uvicorn_cycle._cache[0] is uvicorn_cycle.EMPTY and len(calls) == before + 3
        assert inside[-3:] == [1, 1, 1] and in_flight() == 0

        slot.words[shared.OFFLINE_WORD] = 1  # offline: every request the ordinary way
        run(counting(Cycle(), app))
        run(counting(Cycle(), app))
        assert uvicorn_cycle._cache[0] is uvicorn_cycle.EMPTY and calls[-2:] == ["begin", "begin"]
        assert in_flight() == 0
    finally:
        uvicorn_cycle.forget_apps()
        loop.close()
        segment.close()
