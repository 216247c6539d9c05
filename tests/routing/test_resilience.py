"""Routing is lossless and transparent on the caller's side.

Spec: an instance that cannot be reached (killed: connection refused) costs the
caller no failed request — the call goes once to another instance and the dead one
is ejected; after an answer carrying ``X-Pilotfish-Offline: 1`` no further request
goes to that instance; a host the registry does not know is sent byte for byte as
without the agent; TLS to a routed Service verifies the Service's certificate (SNI
and Host keep its name) while the TCP connection goes to the instance.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
from pilotfish_webhook import tls
from support.capture import CaptureServer

from routing.fleet import PYTHON, Instance, client_env, free_port_on, register, registry, run_client
from routing.test_clients import ALL

LIVE = {"stock-base-1": "127.0.0.2", "stock-base-2": "127.0.0.3"}
DEAD = ("stock-base-dead", "127.0.0.5")


class Fleet:
    def __init__(
        self,
        server: Any,
        instances: Dict[str, Instance],
        port: int,
        tmp: Path,
        dead: Optional[Instance] = None,
    ) -> None:
        self.server, self.instances, self.port, self.tmp = server, instances, port, tmp
        self.dead = dead

    def renew_dead(self) -> None:
        """Register the killed instance again: the registry drops a registration nobody renews,
        and a module's later tests must still find it in the caller's table."""
        assert self.dead is not None
        register(self.server, self.dead, "stock")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet")
    port = free_port_on(*LIVE.values(), DEAD[1])
    instances = {pod: Instance(pod, ip, port) for pod, ip in LIVE.items()}
    for instance in instances.values():
        instance.__enter__()
    try:
        with registry(tmp, "stock", port) as server:
            for instance in instances.values():
                register(server, instance, "stock")
            dead = Instance(DEAD[0], DEAD[1], port)  # registered, then killed: connections are refused
            register(server, dead, "stock")
            dead.stop()
            yield Fleet(server, instances, port, tmp, dead)
    finally:
        for instance in instances.values():
            instance.stop()


def scenario(url: str, library: str, **extra: Any) -> Dict[str, Any]:
    return dict({"url": url, "libraries": [library], "tags": [None], "threads": 2, "calls": 15}, **extra)


@pytest.mark.parametrize("library", ALL)
def test_a_killed_instance_costs_the_caller_no_failed_request(fleet: Fleet, library: str) -> None:
    # A raw http.client connection picks once per connection (kept alive while its lane fits):
    # enough threads that the dead instance is surely picked at least once ((2/3)^24 < 1e-4).
    shape = {"threads": 24, "calls": 2} if library == "http.client" else {}
    fleet.renew_dead()
    report = run_client(
        PYTHON,
        client_env(fleet.server, fleet.tmp),
        scenario("http://stock:%d" % fleet.port, library, wait_for_instances=3, **shape),
    )
    results = report["results"][library]
    assert [r for r in results if "error" in r] == []
    assert {r["pod"] for r in results} <= set(LIVE)
    (dead,) = [i for i in report["routing"]["services"]["stock"]["instances"] if i["pod"] == DEAD[0]]
    assert dead["ejections"] >= 1  # tried (30 random picks among three), refused, ejected


@pytest.mark.parametrize("library", ALL)
def test_no_request_follows_an_offline_answer(fleet: Fleet, library: str) -> None:
    leaving = fleet.instances["stock-base-2"]
    leaving.take()
    leaving.offline = True
    try:
        report = run_client(
            PYTHON,
            client_env(fleet.server, fleet.tmp),
            scenario("http://stock:%d" % fleet.port, library, threads=1, calls=30, wait_for_instances=3),
        )
    finally:
        leaving.offline = False
    results = report["results"][library]
    assert [r for r in results if "error" in r] == []
    # the first answer from it carried the marker; nothing was sent there after that
    assert len(leaving.take()) <= 1
    (evicted,) = [
        i for i in report["routing"]["services"]["stock"]["instances"] if i["pod"] == "stock-base-2"
    ]
    assert evicted["sent"] <= 1


@pytest.mark.parametrize("library", ALL)
def test_a_host_the_registry_does_not_know_is_sent_byte_for_byte_as_without_the_agent(
    fleet: Fleet, library: str
) -> None:
    env = client_env(fleet.server, fleet.tmp)
    raw: List[List[bytes]] = []
    with CaptureServer() as capture:
        for agent in (False, True):
            plan = scenario(capture.url, library, threads=1, calls=3, wait_host="stock", agent=agent)
            report = run_client(PYTHON, env, plan, agent=agent)
            assert [r for r in report["results"][library] if "error" in r] == []
            raw.append(sorted(capture.take()))
    assert len(raw[0]) == 3
    assert raw[1] == raw[0]


@pytest.fixture(scope="module")
def tls_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("tls")
    ca_cert, ca_key = tls.make_ca("routing-test-ca")
    cert, key = tls.make_serving_cert(ca_cert, ca_key, ["stock", "stock.shop", "stock.shop.svc"])
    (tmp / "ca.crt").write_bytes(ca_cert)
    (tmp / "tls.crt").write_bytes(cert)
    (tmp / "tls.key").write_bytes(key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(tmp / "tls.crt"), str(tmp / "tls.key"))
    ips = {"stock-base-1": "127.0.0.2", "stock-gray-1": "127.0.0.4"}
    port = free_port_on(*ips.values())
    instances = {
        pod: Instance(pod, ip, port, tag="gray" if "gray" in pod else "", tls=context)
        for pod, ip in ips.items()
    }
    for instance in instances.values():
        instance.__enter__()
    try:
        with registry(tmp, "stock", port) as server:
            for instance in instances.values():
                register(server, instance, "stock")
            yield Fleet(server, instances, port, tmp)
    finally:
        for instance in instances.values():
            instance.stop()


@pytest.mark.parametrize("library", ALL)
def test_tls_to_a_routed_service_verifies_the_services_certificate(tls_fleet: Fleet, library: str) -> None:
    for instance in tls_fleet.instances.values():
        instance.take()
    report = run_client(
        PYTHON,
        client_env(tls_fleet.server, tls_fleet.tmp),
        {
            "url": "https://stock:%d" % tls_fleet.port,
            "libraries": [library],
            "tags": ["gray", None],
            "threads": 2,
            "calls": 6,
            "ca": str(tls_fleet.tmp / "ca.crt"),
            "wait_for_instances": 2,
        },
    )
    results = report["results"][library]
    assert [r for r in results if "error" in r] == []
    assert all((r["pod"] == "stock-gray-1") == (r["tag"] == "gray") for r in results)
    seen = [r for instance in tls_fleet.instances.values() for r in instance.take()]
    assert {r["host"] for r in seen} == {"stock:%d" % tls_fleet.port}
