"""A gray release across three real services: A -> B -> C, each under the agent, routed by lane.

    test --HTTP--> A: Flask under gunicorn (gthread), lanes in its policy   (127.0.0.1)
                     requests --> http://b:PORT   (a name only the agent resolves)
                   B: FastAPI under uvicorn, one baseline version only      (127.0.0.1)
                     httpx.AsyncClient (one keep-alive pool) --> http://c:PORT
                   C: WSGI under gunicorn, two instances on their own loopback addresses:
                     c-base (127.0.0.2, untagged) and c-gray (127.0.0.3, pilotfish.io/tag gray)

Every process runs with ``PYTHONPATH=build/agent-tree/bootstrap`` only, as in a
pod, and registers itself with the real config service (embedded mode), which
serves each caller the ``/v1/routing`` table. The apps have no pilotfish code.

Spec: a request matching A's lane goes A -> B (baseline, B has no gray version)
-> C-gray; a request that does not match never reaches C-gray; once C-gray goes
offline (``/offline``), no request from B reaches it after the marker was seen and
gray requests fall back to baseline (permissive); with ``laneMode: strict`` for B
they fail with httpx's own ConnectError naming the lane and the Service.
"""

from __future__ import annotations

import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest
from support.agent import agent_env
from support.config_server import ConfigServer, config_server
from support.servers import _gunicorn_flags, free_port, http_get
from support.wait import GiveUp, eventually

from routing.fleet import NAMESPACE, free_port_on

APPS = Path(__file__).resolve().parent / "apps"
PYTHON = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "python")
TOKEN = "offline-secret"
GRAY_HEADERS = {"X-User-Group": "testers"}

POLICIES = """\
apiVersion: pilotfish.io/v1alpha1
kind: GovernancePolicy
metadata: {name: a-lanes, namespace: shop}
spec:
  selector: {apps: [a]}
  lanes:
    - name: testers
      tag: gray
      match:
        - {header: x-user-group, op: in, values: [testers]}
---
apiVersion: v1
kind: Service
metadata: {name: b, namespace: shop}
spec:
  ports: [{name: http, port: %(b)d, targetPort: %(b)d}]
---
apiVersion: v1
kind: Service
metadata: {name: c, namespace: shop}
spec:
  ports: [{name: http, port: %(c)d, targetPort: %(c)d}]
"""

STRICT_B = """\
---
apiVersion: pilotfish.io/v1alpha1
kind: GovernancePolicy
metadata: {name: b-strict, namespace: shop}
spec:
  selector: {apps: [b]}
  routing: {laneMode: strict}
"""


class Service:
    """One instance of an app under the agent."""

    def __init__(
        self, name: str, app: str, argv: List[str], ip: str, server: ConfigServer, tmp: Path, **env: str
    ):
        self.name = name
        self.status_port = free_port()
        self.log = tmp / (name + ".log")
        cache = tmp / ("cache-" + name)
        cache.mkdir()
        full = {
            "PILOTFISH_CONFIG_URL": server.url,
            "PILOTFISH_CONFIG_CA": str(server.ca),
            "PILOTFISH_APP": app,
            "PILOTFISH_POD_NAME": name,
            "PILOTFISH_POD_NAMESPACE": NAMESPACE,
            "PILOTFISH_POD_IP": ip,
            "PILOTFISH_STATUS_HOST": "127.0.0.1",
            "PILOTFISH_STATUS_PORT": str(self.status_port),
            "PILOTFISH_CACHE_DIR": str(cache),
            "PILOTFISH_OFFLINE_TOKEN": TOKEN,
            "PILOTFISH_OFFLINE_QUIET_SECONDS": "1",
            "PILOTFISH_OFFLINE_MAX_WAIT_SECONDS": "5",
            "PYTHONUNBUFFERED": "1",
        }
        full.update(env)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv, env=agent_env(full, [str(APPS)]), cwd=str(APPS), stdout=out, stderr=subprocess.STDOUT
            )

    def status(self) -> Dict[str, Any]:
        return http_get(self.status_port, "/status", timeout=5).json()

    def wait(self, predicate: Callable[[], Any], what: str, timeout: float = 60) -> Any:
        def check() -> Any:
            if self.proc.poll() is not None:
                raise GiveUp("%s exited:\n%s" % (self.name, self.log.read_text(errors="replace")))
            return predicate()

        return eventually(
            check, timeout, "%s: %s" % (self.name, what), context=lambda: self.log.read_text(errors="replace")
        )

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def gunicorn(python: str, worker: str, app: str, bind: str) -> List[str]:
    argv = [python, "-m", "gunicorn", *_gunicorn_flags(python), "-k", worker, "-w", "1"]
    if worker == "gthread":
        argv += ["--threads", "8"]
    return argv + ["-b", bind, "--graceful-timeout", "5", app]


class Chain:
    def __init__(self, tmp: Path, server: ConfigServer, policies: Path, ports: Dict[str, int]) -> None:
        self.tmp, self.server, self.policies, self.ports = tmp, server, policies, ports
        self.services: Dict[str, Service] = {}

    def start(self, name: str, app: str, argv: List[str], ip: str, **env: str) -> Service:
        service = Service(name, app, argv, ip, self.server, self.tmp, **env)
        self.services[name] = service
        return service

    def seen(self, name: str) -> List[str]:
        port = self.ports["c"]
        ip = {"c-base": "127.0.0.2", "c-gray": "127.0.0.3"}[name]
        import http.client

        conn = http.client.HTTPConnection(ip, port, timeout=10)
        try:
            conn.request("GET", "/seen")
            body = conn.getresponse().read().decode()
        finally:
            conn.close()
        return [tag for tag in body.split(",") if tag]

    def order(self, rid: str, gray: bool) -> Any:
        return http_get(self.ports["a"], "/a?id=%s" % rid, GRAY_HEADERS if gray else None, timeout=30)


def routed(service: Service, name: str, instances: int) -> Optional[Dict[str, Any]]:
    view = service.status().get("routing") or {}
    found = (view.get("services") or {}).get(name)
    ready = [i for i in (found or {}).get("instances", []) if i["ready"]]
    return view if len(ready) >= instances else None


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    tmp = tmp_path_factory.mktemp("chain")
    ports = {"a": free_port(), "b": free_port(), "c": free_port_on("127.0.0.2", "127.0.0.3")}
    policies = tmp / "policies.yaml"
    policies.write_text(POLICIES % ports)
    with config_server(tmp, policies, ["--lease-seconds", "600"]) as server:
        chain = Chain(tmp, server, policies, ports)
        try:
            c_port = ports["c"]
            chain.start(
                "c-base", "c", gunicorn(PYTHON, "sync", "lane_c:app", "127.0.0.2:%d" % c_port), "127.0.0.2"
            )
            chain.start(
                "c-gray",
                "c",
                gunicorn(PYTHON, "sync", "lane_c:app", "127.0.0.3:%d" % c_port),
                "127.0.0.3",
                PILOTFISH_TAG="gray",
            )
            b_argv = [PYTHON, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(ports["b"]), "lane_b:app"]
            b = chain.start("b", "b", b_argv, "127.0.0.1", LANE_C="http://c:%d" % c_port)
            a = chain.start(
                "a",
                "a",
                gunicorn(PYTHON, "gthread", "lane_a:app", "127.0.0.1:%d" % ports["a"]),
                "127.0.0.1",
                LANE_B="http://b:%d" % ports["b"],
            )
            b.wait(lambda: routed(b, "c", 2), "B's routing table with both instances of C")
            a.wait(lambda: routed(a, "b", 1), "A's routing table with B")
            a.wait(lambda: a.status()["config"].get("lanes"), "A's lanes")
            a.wait(lambda: http_get(ports["a"], "/lanes", timeout=5).body, "A's worker's lanes")
            yield chain
        finally:
            for service in chain.services.values():
                service.stop()


def test_lane_requests_reach_c_gray_through_baseline_b_and_the_rest_never_do(chain: Chain) -> None:
    orders = [("g%d" % i, True) for i in range(20)] + [("p%d" % i, False) for i in range(20)]
    orders = [orders[i // 2 + (20 if i % 2 else 0)] for i in range(40)]  # gray and plain interleaved
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda order: (order, chain.order(*order)), orders))
    for (rid, gray), response in answers:
        assert response.status == 200, response.body
        expected = b"a>b>c:c-gray:gray" if gray else b"a>b>c:c-base:-"
        assert response.body == expected, (rid, response.body)
    assert chain.seen("c-gray") == ["gray"] * 20
    assert chain.seen("c-base") == ["-"] * 20
    # B's view: requests by lane, and nothing fell back
    b_view = chain.services["b"].status()["routing"]["services"]["c"]
    assert b_view["requests_by_lane"] == {"gray": 20, "baseline": 20}
    assert b_view["fallbacks"] == 0
    metrics = http_get(chain.services["b"].status_port, "/metrics", timeout=5).body.decode()
    assert (
        'pilotfish_routed_requests_total{service="c",lane="gray",instance_tag="gray",outcome="lane"} 20'
        in metrics
    )
    # A calls from its gunicorn worker; the owner's /status adds up what the worker reports
    a = chain.services["a"]

    def a_counts() -> Optional[Dict[str, Any]]:
        view = a.status()["routing"]["services"]["b"]
        return view if view["requests_by_lane"] == {"gray": 20, "baseline": 20} else None

    a_view = a.wait(a_counts, "A's worker's routing counts in the owner's /status", timeout=20)
    assert a_view["fallbacks"] == 20  # B has no gray version: gray requests went to baseline B


def test_after_offline_no_request_reaches_c_gray_and_gray_falls_back_then_fails_when_strict(
    chain: Chain,
) -> None:
    gray = chain.services["c-gray"]
    before = len(chain.seen("c-gray"))
    offline = threading.Thread(
        target=lambda: http_get(gray.status_port, "/offline", {"X-Pilotfish-Token": TOKEN}, timeout=30)
    )
    offline.start()
    try:
        gray.wait(lambda: gray.status()["lifecycle"]["state"] in ("offline", "drained"), "c-gray offline")
        answers = [chain.order("after-offline-%d" % i, True) for i in range(10)]
    finally:
        offline.join(30)
    assert all(a.status == 200 for a in answers), [a.body for a in answers]
    # at most the one request whose answer carried the marker; then baseline (permissive fallback)
    assert len(chain.seen("c-gray")) - before <= 1
    assert answers[-1].body == b"a>b>c:c-base:gray"
    plain = chain.order("plain-after-offline", False)
    assert plain.body == b"a>b>c:c-base:-"

    chain.policies.write_text(chain.policies.read_text() + STRICT_B)
    b = chain.services["b"]
    b.wait(lambda: b.status()["routing"]["lane_mode"] == "strict", "B in strict lane mode")
    failed = chain.order("strict", True)
    assert failed.status == 502
    assert failed.body.startswith(b"a>b!ConnectError: pilotfish: no instance of lane 'gray'")
    assert b"Service c.shop" in failed.body
    assert chain.order("strict-plain", False).body == b"a>b>c:c-base:-"
