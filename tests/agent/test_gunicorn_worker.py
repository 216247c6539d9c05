"""Requests counted inside gunicorn's worker loop (``pilotfish.inbound.gunicorn_worker``).

Spec: under gunicorn's sync and gthread workers the agent counts a request in the
worker's ``handle_request`` (just before the app call, and out once the response
is written and its iterable closed, or the request failed), with no WSGI layer
around the app; probes are counted apart; streamed bodies hold in-flight to their
last chunk; ``wsgi.file_wrapper`` responses are served as they are. Where
``handle_request`` does not look as expected, the app is wrapped instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, List

import pytest
from pilotfish.inbound import gunicorn_worker
from support.interpreters import matrix_versions, require_app_python
from support.servers import SERVERS, RunningServer, _gunicorn_flags, stream_holds_in_flight

PROBE = {"User-Agent": "kube-probe/1.31"}


def _gunicorn(worker: str) -> Callable[[str, int], List[str]]:
    def argv(python: str, port: int) -> List[str]:
        extra = ["--threads", "4"] if worker == "gthread" else []
        return [
            python,
            "-m",
            "gunicorn",
            *_gunicorn_flags(python),
            "-w",
            "1",
            "-k",
            worker,
            *extra,
            "-b",
            "127.0.0.1:%d" % port,
            "inbound_wsgi_app:app",
        ]

    return argv


# Registered for each test only (other test modules parametrize over the shared table).
_ARGV = {"gunicorn-worker-sync": _gunicorn("sync"), "gunicorn-worker-gthread": _gunicorn("gthread")}
KINDS = sorted(_ARGV)


@pytest.fixture(autouse=True)
def _kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, argv in _ARGV.items():
        monkeypatch.setitem(SERVERS, name, argv)


def _started(server: RunningServer) -> dict:
    return server.wait_status(lambda s: s["ready"] and len(s["workers"]) >= 1, timeout=20)


@pytest.mark.parametrize("minor", matrix_versions())
@pytest.mark.parametrize("kind", KINDS)
def test_requests_are_counted_in_the_worker_with_no_wrapper_around_the_app(kind: str, minor: str) -> None:
    with RunningServer(kind, require_app_python(minor)) as server:
        before = _started(server)
        frames = server.get("/frames").json()["frames"]
        assert "pilotfish_wsgi" not in frames and "handle_request" in frames
        for _ in range(4):
            assert server.get("/").status == 200
        file_response = server.get("/file")
        assert file_response.status == 200 and file_response.body == b"from a file\n" * 100
        assert server.get("/fail").status == 500
        for _ in range(2):
            assert server.get("/", headers=PROBE).status == 200
        after = server.wait_status(
            lambda s: s["requests_total"] >= before["requests_total"] + 7 and s["in_flight"] == 0
        )
        assert after["requests_total"] == before["requests_total"] + 7
        assert after["probes_total"] == before["probes_total"] + 2
        assert after["in_flight"] == 0


@pytest.mark.parametrize("kind", KINDS)
def test_the_worker_class_is_recompiled_in_the_arbiter_before_any_worker_is_forked(
    kind: str, tmp_path: Path
) -> None:
    # Recompiled in each worker after its fork instead, the allocations made the collector
    # unshare ~0.6 MiB of the heap every worker shares with the arbiter.
    report = tmp_path / "post_fork.jsonl"
    config = Path(__file__).resolve().parents[1] / "apps" / "gunicorn_post_fork_probe.py"
    env = {"POST_FORK_REPORT": str(report)}
    with RunningServer(kind, require_app_python("3.11"), env=env, extra_args=["-c", str(config)]) as server:
        _started(server)
        assert server.get("/").status == 200
        lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert lines and all(line["recompiled"] for line in lines), lines


@pytest.mark.parametrize("kind", KINDS)
def test_in_flight_holds_until_a_streamed_response_has_sent_its_last_chunk(kind: str) -> None:
    with RunningServer(kind, require_app_python("3.11")) as server:
        _started(server)
        stream_holds_in_flight(server)


@pytest.mark.parametrize("kind", KINDS)
def test_a_tag_probe_or_consumer_mark_after_plain_requests_still_takes_the_full_path(kind: str) -> None:
    """The short path (no tag, probe or consumer header) must not swallow the requests that have one."""
    with RunningServer(kind, require_app_python("3.11")) as server:
        before = _started(server)
        for _ in range(5):
            assert server.get("/tag").json() == {"tag": None}
        assert server.get("/tag", headers={"X-Pilotfish-Tag": "blue"}).json() == {"tag": "blue"}
        assert server.get("/tag", headers={"baggage": "pilotfish-tag=green"}).json() == {"tag": "green"}
        # A tag never leaks into the next plain request served by the same thread.
        for _ in range(5):
            assert server.get("/tag").json() == {"tag": None}
        assert server.get("/", headers=PROBE).status == 200
        assert server.get("/", headers={"X-Pilotfish-Consumer": "1"}).status == 200
        assert server.get("/tag").json() == {"tag": None}
        after = server.wait_status(
            lambda s: s["requests_total"] >= before["requests_total"] + 14 and s["in_flight"] == 0
        )
        assert after["requests_total"] == before["requests_total"] + 14
        assert after["probes_total"] == before["probes_total"] + 1
        assert after["in_flight"] == 0
        by_tag = after["requests_by_tag"]
        assert by_tag.get("blue", 0) - before["requests_by_tag"].get("blue", 0) == 1
        assert by_tag.get("green", 0) - before["requests_by_tag"].get("green", 0) == 1


def test_the_short_path_notices_what_the_settings_ask_for(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from pilotfish.inbound import request as rq

    gunicorn_worker.refresh()
    assert {
        "HTTP_X_PILOTFISH_TAG",
        "HTTP_BAGGAGE",
        "HTTP_X_PILOTFISH_CONSUMER",
    } <= gunicorn_worker.noticed_keys
    assert gunicorn_worker.always_full is False
    monkeypatch.setattr(rq, "ignore_paths_set", True)
    gunicorn_worker.refresh()
    assert gunicorn_worker.always_full is True
    monkeypatch.undo()
    gunicorn_worker.refresh()
    assert gunicorn_worker.always_full is False


# -- the recompiled handle_request, in process ------------------------------------------------------


class Worker:
    def __init__(self, app):  # type: ignore[no-untyped-def]
        self.wsgi = app
        self.closed = []

    def handle_request(self, req):  # type: ignore[no-untyped-def]
        environ = {}
        resp = None
        try:
            environ, resp = {"PATH_INFO": req}, self
            respiter = self.wsgi(environ, resp.start_response)
            self.closed.append(list(respiter))
        finally:
            self.closed.append("post_request")

    def start_response(self, status, headers, exc_info=None):  # type: ignore[no-untyped-def]
        return None


def test_only_a_handle_request_of_the_expected_shape_is_recompiled() -> None:
    assert gunicorn_worker.counting_handle_request(Worker.handle_request) is not None

    def handle_request(self, req):  # type: ignore[no-untyped-def]
        environ, resp = {}, None  # type: ignore[var-annotated]
        respiter = self.wsgi(environ, resp.start_response)  # type: ignore[attr-defined]  # no try/finally around it
        return respiter

    def two_calls(self, req):  # type: ignore[no-untyped-def]
        environ, resp = {}, None  # type: ignore[var-annotated]
        try:
            respiter = self.wsgi(environ, resp.start_response)  # type: ignore[attr-defined]
            respiter = self.wsgi(environ, resp.start_response)  # type: ignore[attr-defined]
        finally:
            pass
        return respiter

    two_calls.__name__ = "handle_request"
    for function in (handle_request, two_calls):
        assert gunicorn_worker.counting_handle_request(function) is None
    once = gunicorn_worker.counting_handle_request(Worker.handle_request)
    assert gunicorn_worker.counting_handle_request(once) is None


def test_the_recompiled_handle_request_runs_the_same_body_when_counting_fails(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    counting = gunicorn_worker.counting_handle_request(Worker.handle_request)
    assert (
        counting is not None and counting.__code__.co_filename == Worker.handle_request.__code__.co_filename
    )

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        start_response("200 OK", [])
        return [b"hello"]

    def broken(*args):  # type: ignore[no-untyped-def]
        raise RuntimeError("classification failed")

    monkeypatch.setattr(gunicorn_worker, "_classify", broken)
    worker = Worker(app)
    counting(worker, "/")
    assert worker.closed == [[b"hello"], "post_request"]
