"""gRPC channels to a Service become a per-call choice over per-instance sub-channels.

Spec: a channel built once (before any call, as apps do) to ``stock:PORT`` sends
each call, sync and ``grpc.aio``, to an instance of the call's lane (the Python
server API does not show ``:authority``, so that it stays the Service's is not
checked here); a refused instance costs a unary call nothing; strict mode
fails with ``UNAVAILABLE`` naming lane and Service.
"""

from __future__ import annotations

from concurrent import futures
from pathlib import Path
from typing import Any, Dict, Iterator, List

import grpc
import pytest

from routing.fleet import PYTHON, Instance, client_env, free_port_on, register, registry, run_client
from routing.test_clients import BASE, GRAY

IPS = {"stock-base-1": "127.0.0.2", "stock-base-2": "127.0.0.3", GRAY: "127.0.0.4"}


class GrpcInstance:
    def __init__(self, pod: str, ip: str, port: int, tag: str = "") -> None:
        self.pod, self.ip, self.port, self.tag = pod, ip, port, tag
        self.seen: List[Dict[str, Any]] = []

        def call(request: bytes, context: Any) -> bytes:
            metadata = dict(context.invocation_metadata())
            self.seen.append({"tag": metadata.get("x-pilotfish-tag")})
            return b'{"pod": "%s"}' % pod.encode()

        handler = grpc.method_handlers_generic_handler(
            "stock.Stock", {"Call": grpc.unary_unary_rpc_method_handler(call)}
        )
        self.server = grpc.server(futures.ThreadPoolExecutor(8))
        self.server.add_generic_rpc_handlers((handler,))
        self.server.add_insecure_port("%s:%d" % (ip, port))
        self.server.start()


@pytest.fixture(scope="module")
def grpc_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("grpc")
    port = free_port_on(*IPS.values(), "127.0.0.5")
    instances = {pod: GrpcInstance(pod, ip, port, "gray" if pod == GRAY else "") for pod, ip in IPS.items()}
    try:
        with registry(tmp, "stock", port) as server:
            for instance in instances.values():
                register(server, instance, "stock")  # type: ignore[arg-type]
            dead = Instance("stock-dead", "127.0.0.5", port)  # registered, never listening: refused
            register(server, dead, "stock")
            dead.stop()
            yield server, instances, port, tmp
    finally:
        for instance in instances.values():
            instance.server.stop(None)


@pytest.mark.parametrize("library", ["grpc", "grpc-aio"])
def test_each_grpc_call_goes_to_an_instance_of_its_lane(grpc_fleet: Any, library: str) -> None:
    server, instances, port, tmp = grpc_fleet
    for instance in instances.values():
        instance.seen.clear()
    report = run(server, tmp, port, library, ["gray", None], threads=4, calls=20)
    results = report["results"][library]
    assert [r for r in results if "error" in r] == []
    assert [r for r in results if (r["pod"] == GRAY) != (r["tag"] == "gray")] == []
    assert {r["pod"] for r in results if r["tag"] is None} == BASE  # one channel, calls spread per call
    assert {s["tag"] for s in instances[GRAY].seen} == {"gray"}
    assert {s["tag"] for pod in BASE for s in instances[pod].seen} == {None}


def run(server: Any, tmp: Path, port: int, library: str, tags: List[Any], **shape: Any) -> Dict[str, Any]:
    scenario = dict({"url": "grpc://stock:%d" % port, "libraries": [library], "tags": tags}, **shape)
    scenario["wait_for_instances"] = 4
    return run_client(PYTHON, client_env(server, tmp), scenario)


def test_strict_mode_fails_grpc_calls_with_unavailable_naming_lane_and_service(grpc_fleet: Any) -> None:
    server, _instances, port, tmp = grpc_fleet
    scenario = {
        "url": "grpc://stock:%d" % port,
        "libraries": ["grpc"],
        "tags": ["blue"],
        "threads": 1,
        "calls": 2,
    }
    scenario["wait_for_instances"] = 4
    report = run_client(PYTHON, client_env(server, tmp, PILOTFISH_LANE_MODE="strict"), scenario)
    (error,) = {r.get("error", "") for r in report["results"]["grpc"]}
    assert "StatusCode.UNAVAILABLE" in error and "'blue'" in error and "stock.shop" in error, error


@pytest.mark.parametrize("library", ["grpc", "grpc-aio"])
def test_a_killed_instance_costs_a_unary_grpc_call_nothing(grpc_fleet: Any, library: str) -> None:
    server, _instances, port, tmp = grpc_fleet
    report = run(server, tmp, port, library, [None], threads=2, calls=20)
    assert [r for r in report["results"][library] if "error" in r] == []
    (dead,) = [i for i in report["routing"]["services"]["stock"]["instances"] if i["pod"] == "stock-dead"]
    # 40 random picks among three baseline instances: the dead one was tried
    assert dead["ejections"] >= 1
