"""Registration with the config service, under real gunicorn: after the delay, deregistered offline.

The config service is a loopback stand-in that records the agent's ``/v1/register`` and
``/v1/deregister`` calls (the real service is tested on its own in tests/test_config_server.py); it
can also hang, to show readiness failing open after the bounded wait. Needs
``pilotfish.central`` in the agent build; skips, saying so, without it.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterator, List

import pytest
from support.agent import AGENT_TREE

from lifecycle.test_servers_lifecycle import make


class ConfigStub:
    def __init__(self, hang: bool = False) -> None:
        self.calls: List[Dict[str, Any]] = []
        self.hang = hang
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                stub.calls.append({"path": self.path, "at": time.time(), "body": body})
                if stub.hang:
                    time.sleep(30)
                    return
                self._answer(200, {"registered_at": time.time(), "lease_seconds": 60})

            def do_GET(self) -> None:
                self._answer(404, {"error": "not here"})

            def _answer(self, code: int, body: Dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def paths(self) -> List[str]:
        return [call["path"].split("?")[0] for call in self.calls]


@pytest.fixture(autouse=True)
def _needs_central_registration() -> None:
    if not (AGENT_TREE / "lib" / "pilotfish" / "central" / "registration.py").exists():
        pytest.skip("pilotfish.central.registration is not in this agent build")


@pytest.fixture
def stub() -> Iterator[ConfigStub]:
    service = ConfigStub()
    yield service
    service.server.shutdown()


def test_registration_waits_for_the_delay_and_offline_deregisters(stub: ConfigStub) -> None:
    with make(
        "gunicorn-sync",
        PILOTFISH_DELAY_REGISTER_SECONDS="1.5",
        PILOTFISH_CONFIG_URL=stub.url,
        PILOTFISH_APP="shop",
    ) as server:
        server.wait_ready()
        lifecycle = server.status()["lifecycle"]
        delaying = {t["state"]: t["at_epoch"] for t in lifecycle["transitions"]}["delaying"]
        registers = [c for c in stub.calls if c["path"].startswith("/v1/register")]
        assert registers, "%r\n%s\n%s" % (
            stub.calls,
            json.dumps(lifecycle, indent=1),
            server.output()[-3000:],
        )
        assert registers[0]["at"] >= delaying + 1.5 - 0.05, "never before listening + delay"
        assert registers[0]["body"]["port"] == server.port
        assert lifecycle["registration"] == "registered"
        reply = server.offline(wait=True)
        assert reply.status == 200
        deregisters = [c for c in stub.calls if c["path"].startswith("/v1/deregister")]
        assert deregisters and deregisters[0]["at"] <= reply.ended, stub.paths()


def test_a_config_service_that_never_answers_fails_open_after_a_bounded_wait() -> None:
    hanging = ConfigStub(hang=True)
    try:
        with make("gunicorn-sync", PILOTFISH_CONFIG_URL=hanging.url, PILOTFISH_APP="shop") as server:
            started = time.time()
            server.wait_ready(timeout=25)
            waited = time.time() - started
            lifecycle = server.status()["lifecycle"]
            assert lifecycle["registration"] == "fail-open", lifecycle
            assert waited <= 10 + 3, "bounded: at most REGISTER_WAIT_SECONDS, plus start-up"
            assert "failing open" in lifecycle["registration_detail"]
    finally:
        hanging.server.shutdown()
