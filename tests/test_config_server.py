"""The config API of a real ``pilotfish-webhook serve --policies FILE``, over HTTPS on loopback.

Spec (docs/policies.md): long-poll for an app's effective config (version in, new version or
timeout out) answering within 1 s of the file changing; invalid policies rejected,
logged, shown in ``/v1/status``, last good kept; register / deregister; long-poll
for a Service's instances; embedded leases expire when an agent stops renewing.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator

import httpx
import pytest
from support.config_server import ConfigServer, example_config_server
from support.wait import eventually


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ConfigServer]:
    with example_config_server(tmp_path, ["--lease-seconds", "1"]) as running:
        yield running


@pytest.fixture
def http(server: ConfigServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, verify=server.context(), timeout=30) as client:
        yield client


def get_config(
    http: httpx.Client, version: str = "", timeout: float = 0, app: str = "shop"
) -> httpx.Response:
    return http.get(
        "/v1/config", params={"namespace": "demo", "app": app, "version": version, "timeout": timeout}
    )


def test_the_first_poll_answers_at_once_with_the_merged_config_and_its_sources(http: httpx.Client) -> None:
    answer = get_config(http).json()
    assert answer["config"]["warmup_seconds"] == 60  # namespace scope over cluster's 120
    assert answer["config"]["lane_mode"] == "strict"  # app scope
    assert answer["config"]["tag_headers"] == ["x-pilotfish-tag", "x-mse-tag"]  # cluster scope
    assert [lane["name"] for lane in answer["config"]["lanes"]] == ["testers", "gray-5-percent"]
    assert answer["sources"] == [
        "pilotfish-system/cluster-defaults",
        "demo/demo-namespace",
        "demo/shop-lanes",
    ]


def test_a_poll_with_the_current_version_waits_for_the_timeout_then_answers_304(http: httpx.Client) -> None:
    version = get_config(http).json()["version"]
    started = time.monotonic()
    answer = get_config(http, version, timeout=1.0)
    elapsed = time.monotonic() - started
    assert answer.status_code == 304 and answer.content == b""
    assert 0.9 <= elapsed < 3


def test_a_waiting_poll_gets_the_new_version_within_a_second_of_the_file_changing(
    server: ConfigServer, http: httpx.Client
) -> None:
    version = get_config(http).json()["version"]
    result: Dict[str, Any] = {}

    def poll() -> None:
        response = get_config(http, version, timeout=20)
        result["at"] = time.monotonic()
        result["response"] = response

    waiter = threading.Thread(target=poll)
    waiter.start()
    time.sleep(0.5)  # nothing outside shows the poll parked: time to park (unparked passes too)
    assert server.policies is not None
    written = time.monotonic()
    server.policies.write_text(server.policies.read_text().replace("seconds: 60", "seconds: 45"))
    waiter.join(10)
    assert result["response"].status_code == 200
    assert result["response"].json()["config"]["warmup_seconds"] == 45
    assert result["response"].json()["version"] != version
    assert result["at"] - written < 1.0


def test_an_invalid_edit_is_rejected_named_logged_and_shown_while_the_last_good_policy_stays(
    server: ConfigServer, http: httpx.Client
) -> None:
    good = get_config(http).json()
    assert server.policies is not None
    server.policies.write_text(server.policies.read_text().replace("curve: 2 ", "curve: 50 "))
    errors = eventually(lambda: http.get("/v1/status").json()["errors"], 5, "the rejected edit in /v1/status")
    assert [e["object"] for e in errors] == ["pilotfish-system/cluster-defaults"]
    assert (
        "GovernancePolicy pilotfish-system/cluster-defaults (policies.yaml document 1): "
        "spec.lossless.warmup.curve: must be <= 10 (got 50)" in errors[0]["message"]
    )
    assert get_config(http, good["version"], timeout=0.5).status_code == 304  # nothing changed
    assert "spec.lossless.warmup.curve" in server.output()


def test_bad_requests_are_answered_400_naming_the_field(http: httpx.Client) -> None:
    assert "timeout" in http.get("/v1/config", params={"timeout": "soon"}).json()["error"]
    assert "pod: required" in http.post("/v1/register", json={"app": "shop"}).json()["error"]
    assert "state" in http.post("/v1/register", json={"pod": "p", "app": "a", "state": "up"}).json()["error"]
    assert http.post("/v1/register", content=b"[1,").status_code == 400
    assert "service: required" in http.get("/v1/instances").json()["error"]


def register(http: httpx.Client, pod: str, **extra: Any) -> Dict[str, Any]:
    body = {"namespace": "demo", "pod": pod, "app": "shop", "ip": "10.0.0.7", "port": 8080, "tag": "gray"}
    body.update(extra)
    response = http.post("/v1/register", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def instances(http: httpx.Client, version: str = "", timeout: float = 0) -> httpx.Response:
    return http.get(
        "/v1/instances",
        params={"namespace": "demo", "service": "shop", "version": version, "timeout": timeout},
    )


def test_registration_wakes_an_instances_long_poll_and_keeps_its_registration_time(
    http: httpx.Client,
) -> None:
    empty = instances(http).json()
    assert empty["instances"] == []
    result: Dict[str, Any] = {}
    waiter = threading.Thread(target=lambda: result.update(r=instances(http, empty["version"], timeout=10)))
    waiter.start()
    time.sleep(0.3)  # nothing outside shows the poll parked: time to park (unparked passes too)
    first = register(http, "shop-1")
    waiter.join(10)
    listed = result["r"].json()["instances"]
    assert listed == [
        {
            "pod": "shop-1",
            "ip": "10.0.0.7",
            "port": 8080,
            "app": "shop",
            "tag": "gray",
            "registered_at": first["registered_at"],
            "state": "registered",
        }
    ]
    again = register(http, "shop-1", state="offline")
    assert again["registered_at"] == first["registered_at"]
    assert instances(http).json()["instances"][0]["state"] == "offline"
    assert http.post("/v1/deregister", json={"namespace": "demo", "pod": "shop-1"}).json() == {
        "deregistered": True
    }
    assert instances(http).json()["instances"] == []


def test_an_instance_that_stops_renewing_its_lease_drops_out(http: httpx.Client) -> None:
    answer = register(http, "shop-2")
    assert answer["lease_seconds"] == 1.0
    version = instances(http).json()["version"]
    for _ in range(4):  # renewing keeps it
        time.sleep(0.4)  # a renewer's pace: the behaviour under test
        register(http, "shop-2")
    assert [i["pod"] for i in instances(http).json()["instances"]] == ["shop-2"]
    started = time.monotonic()
    gone = instances(http, version, timeout=10)  # wakes when the lease expires
    assert gone.status_code == 200 and gone.json()["instances"] == []
    assert time.monotonic() - started < 3


def test_sigterm_answers_parked_polls_at_once_so_shutdown_is_not_held(
    server: ConfigServer, http: httpx.Client
) -> None:
    version = get_config(http).json()["version"]
    result: Dict[str, Any] = {}
    waiter = threading.Thread(target=lambda: result.update(r=get_config(http, version, timeout=50)))
    waiter.start()
    time.sleep(0.5)  # nothing outside shows the poll parked: give it time to be
    started = time.monotonic()
    server.proc.terminate()
    waiter.join(10)
    assert result["r"].status_code == 304  # "nothing new": the agent simply polls again elsewhere
    server.proc.wait(10)
    assert time.monotonic() - started < 5
