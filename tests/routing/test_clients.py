"""Every client library routes by lane, per request, through keep-alive pools shared by threads and tasks.

A Service ``stock`` with two baseline instances and one gray instance, each a
real server on its own loopback address (127.0.0.2-4) behind the name
``stock`` — a name no DNS resolves, so a call only succeeds when the agent
routed it. The registry is the real config service (embedded mode). The caller
is a separate process under the agent, as in a pod; each of its threads or
tasks shares one client and alternates gray and untagged calls.

Spec: zero cross-lane requests for every library, sync and async; Host stays the
Service's; routed requests carry ``X-Pilotfish-Consumer``; a tag with no instance
falls back to baseline (permissive) or fails with the library's own connection
error naming lane and Service (strict); an unreachable instance costs no failed
request; an instance that answers ``X-Pilotfish-Offline: 1`` gets no further
request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from routing.fleet import PYTHON, Instance, client_env, free_port_on, register, registry, run_client

SYNC = ["http.client", "urllib", "urllib3", "requests", "httpx"]
ASYNC = ["httpx-async", "aiohttp"]
ALL = SYNC + ASYNC
# What each library raises when it cannot connect (strict mode's "no instance in this lane").
CONNECTION_ERROR = {
    "http.client": "NoInstanceInLane",  # a ConnectionError, like a refused connect
    "urllib": "URLError",
    "urllib3": "NewConnectionError",  # retries=False; with retries, MaxRetryError around it
    "requests": "ConnectionError",
    "httpx": "ConnectError",
    "httpx-async": "ConnectError",
    "aiohttp": "ClientConnectorError",
}
BASE = {"stock-base-1", "stock-base-2"}
GRAY = "stock-gray-1"


class Stock:
    def __init__(self, server: Any, instances: Dict[str, Instance], port: int, tmp: Path) -> None:
        self.server, self.instances, self.port, self.tmp = server, instances, port, tmp

    @property
    def url(self) -> str:
        return "http://stock:%d" % self.port

    def env(self, **extra: str) -> Dict[str, str]:
        return client_env(self.server, self.tmp, **extra)

    def take(self) -> Dict[str, List[Dict[str, Any]]]:
        return {name: instance.take() for name, instance in self.instances.items()}


@pytest.fixture(scope="module")
def stock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stock]:
    tmp = tmp_path_factory.mktemp("stock")
    ips = {"stock-base-1": "127.0.0.2", "stock-base-2": "127.0.0.3", GRAY: "127.0.0.4"}
    port = free_port_on(*ips.values())
    instances = {pod: Instance(pod, ip, port, tag="gray" if pod == GRAY else "") for pod, ip in ips.items()}
    for instance in instances.values():
        instance.__enter__()
    try:
        with registry(tmp, "stock", port) as server:
            for instance in instances.values():
                register(server, instance, "stock")
            yield Stock(server, instances, port, tmp)
    finally:
        for instance in instances.values():
            instance.stop()


def lanes_of(results: List[Dict[str, Any]]) -> List[Any]:
    return [(r["tag"], r.get("pod") or r["error"]) for r in results]


@pytest.mark.parametrize("library", ALL)
def test_gray_and_untagged_calls_never_cross_lanes_through_a_shared_keep_alive_client(
    stock: Stock, library: str
) -> None:
    stock.take()
    report = run_client(
        PYTHON,
        stock.env(),
        {
            "url": stock.url,
            "libraries": [library],
            "tags": ["gray", None],
            "threads": 4,
            "calls": 20,
            "wait_for_instances": 3,
        },
    )
    results = report["results"][library]
    assert len(results) == 80
    errors = [r for r in results if "error" in r]
    assert errors == []
    wrong = [r for r in results if (r["pod"] == GRAY) != (r["tag"] == "gray")]
    assert wrong == [], lanes_of(wrong)
    assert {r["pod"] for r in results if r["tag"] is None} == BASE  # both baseline instances share the load
    seen = stock.take()
    assert {r["tag"] for r in seen[GRAY]} == {"gray"}
    assert {r["tag"] for pod in BASE for r in seen[pod]} == {None}
    every = [r for rows in seen.values() for r in rows]
    assert {r["host"] for r in every} == {"stock:%d" % stock.port}  # the Service's name, not an IP
    assert {r["consumer"] for r in every} == {"caller"}


@pytest.mark.parametrize("library", ALL)
def test_a_lane_without_instances_falls_back_to_baseline_or_fails_clearly_when_strict(
    stock: Stock, library: str
) -> None:
    scenario = {
        "url": stock.url,
        "libraries": [library],
        "tags": ["blue"],
        "threads": 1,
        "calls": 4,
        "wait_for_instances": 3,
    }
    permissive = run_client(PYTHON, stock.env(), scenario)["results"][library]
    assert {r.get("pod") for r in permissive} <= BASE and all("pod" in r for r in permissive)
    strict = run_client(PYTHON, stock.env(PILOTFISH_LANE_MODE="strict"), scenario)["results"][library]
    errors = {r.get("error", "") for r in strict}
    assert {e.split(":")[0] for e in errors} == {CONNECTION_ERROR[library]}, errors
    assert all("'blue'" in e and "stock.shop" in e for e in errors), errors


@pytest.mark.parametrize(
    "when, library",
    [("after", lib) for lib in ALL]
    + [("before", lib) for lib in ["http.client", "urllib", "urllib3", "requests", "httpx"]],
)
def test_routing_survives_another_instrumentation_wrapping_the_same_methods(
    stock: Stock, when: str, library: str
) -> None:
    """Like OpenTelemetry or ddtrace: wrappers of the very class attributes the hooks patch,
    applied after the agent (at app start-up) or before it (the agent patching on top, twice)."""
    report = run_client(
        PYTHON,
        stock.env(),
        {
            "url": stock.url,
            "libraries": [library],
            "tags": ["gray", None],
            "threads": 2,
            "calls": 10,
            "wait_for_instances": 3,
            "foreign": when,
        },
    )
    results = report["results"][library]
    assert [r for r in results if "error" in r] == []
    assert [r for r in results if (r["pod"] == GRAY) != (r["tag"] == "gray")] == []
    assert sum(report["foreign_calls"].values()) > 0  # the other wrappers ran too


URLLIB3_1_26 = Path(__file__).resolve().parents[2] / ".venvs" / "urllib3-1.26"


@pytest.mark.parametrize("library", ["urllib3", "requests"])
def test_urllib3_1_26_and_requests_on_it_keep_lanes_apart_and_fail_clearly_when_strict(
    stock: Stock, library: str
) -> None:
    """urllib3 1.26 is still what many apps pin (requests supports it): its connection classes
    and pool keys differ from 2.x, so the hooks are exercised on it too."""
    if not (URLLIB3_1_26 / "urllib3").is_dir():
        pytest.skip("no .venvs/urllib3-1.26: run `make matrix` (urllib3 1.26 tests skipped)")
    stock.take()
    mixed = {"url": stock.url, "libraries": [library], "tags": ["gray", None], "threads": 4, "calls": 20}
    report = run_client(
        PYTHON, stock.env(), dict(mixed, wait_for_instances=3), pythonpath=[str(URLLIB3_1_26)]
    )
    assert report["urllib3"].startswith("1.26."), report["urllib3"]
    results = report["results"][library]
    assert len(results) == 80 and [r for r in results if "error" in r] == []
    assert [r for r in results if (r["pod"] == GRAY) != (r["tag"] == "gray")] == []
    assert {r["pod"] for r in results if r["tag"] is None} == BASE
    strict = run_client(
        PYTHON,
        stock.env(PILOTFISH_LANE_MODE="strict"),
        {
            "url": stock.url,
            "libraries": [library],
            "tags": ["blue"],
            "threads": 1,
            "calls": 2,
            "wait_for_instances": 3,
        },
        pythonpath=[str(URLLIB3_1_26)],
    )["results"][library]
    errors = {r.get("error", "") for r in strict}
    assert {e.split(":")[0] for e in errors} == {CONNECTION_ERROR[library]}, errors
    assert all("'blue'" in e and "stock.shop" in e for e in errors), errors
