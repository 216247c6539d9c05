"""The local cluster's kubelet: containers as real processes in per-pod namespaces.

Init containers, env and the downward API, volumes, probe timing and thresholds, restarts with
back-off, preStop then SIGTERM then SIGKILL at the grace period, status and events. Root only
(skipped with the reason otherwise); all traffic stays on addresses of the pods created here.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from nodekit import ECHO, POD_NAME_ENV, Node, echo_container, http_get, is_ready, pod_ip, status_of
from support.wait import eventually

from hack.cluster.images import REPO_ROOT, ImageMap
from hack.cluster.kubelet import DEFAULT_IMAGES

Obj = Dict[str, Any]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path / "state", backoff_base=0.2)
    try:
        yield n
    finally:
        n.stop()


def sh(script: str, name: str = "app", image: str = "busybox", **extra: Any) -> Obj:
    container: Obj = {"name": name, "image": image, "command": ["sh", "-c", script]}
    container.update(extra)
    return container


def py(code: str, name: str = "app", **extra: Any) -> Obj:
    container: Obj = {"name": name, "image": "python:3.11", "command": ["python3", "-c", code]}
    container.update(extra)
    return container


def test_env_has_the_downward_api_and_expands_var_references_by_kubernetes_rules(node: Node) -> None:
    node.store.create(
        "secrets",
        {
            "metadata": {"name": "creds", "namespace": "default"},
            "data": {"token": base64.b64encode(b"s3cret").decode()},
        },
    )
    node.store.create(
        "configmaps", {"metadata": {"name": "conf", "namespace": "default"}, "data": {"LEVEL": "debug"}}
    )
    env = [
        POD_NAME_ENV,
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "TEAM", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['team']"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "URL", "value": "http://$(POD_NAME).$(NS):$(PORT)/$(LATER)$$(POD_NAME)"},
        {"name": "LATER", "value": "late"},
    ]
    dump = "import json, os; print(json.dumps(dict(os.environ)), flush=True)"
    node.pod(
        "envy",
        [py(dump, env=env, envFrom=[{"configMapRef": {"name": "conf"}, "prefix": "APP_"}], args=[])],
        labels={"team": "fish"},
        restartPolicy="Never",
    )
    pod = node.wait_pod("envy", lambda p: (p.get("status") or {}).get("phase") == "Succeeded")
    got = json.loads(node.log("envy").strip().splitlines()[-1])
    assert got["POD_NAME"] == "envy" and got["NS"] == "default" and got["TEAM"] == "fish"
    assert got["IP"] == pod_ip(pod) and got["NODE"] == "local" and got["SA"] == "default"
    assert got["TOKEN"] == "s3cret" and got["APP_LEVEL"] == "debug"
    # Defined earlier: expanded; PORT unknown and LATER defined later: left as written; $$ escapes.
    assert got["URL"] == "http://envy.default:$(PORT)/$(LATER)$(POD_NAME)"
    assert got["KUBERNETES_SERVICE_HOST"] == node.network.host_address


def test_init_containers_run_in_order_to_completion_and_share_an_empty_dir_with_the_app(node: Node) -> None:
    mount = [{"name": "work", "mountPath": "/work-dir"}]
    node.pod(
        "inited",
        [sh("cat /work-dir/steps; sleep 60", volumeMounts=mount)],
        initContainers=[
            sh("sleep 0.3; echo first >> /work-dir/steps", name="one", volumeMounts=mount),
            sh("echo second >> /work-dir/steps", name="two", volumeMounts=mount),
        ],
        volumes=[{"name": "work", "emptyDir": {}}],
    )
    assert node.wait_log("inited", "second") .startswith("first\nsecond")  # fmt: skip
    pod = node.store.get("pods", "default", "inited")
    assert pod is not None
    inits = pod["status"]["initContainerStatuses"]
    assert [s["state"]["terminated"]["reason"] for s in inits] == ["Completed", "Completed"]
    assert inits[0]["state"]["terminated"]["finishedAt"] <= inits[1]["state"]["terminated"]["startedAt"]
    assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Initialized"] == "True"


def test_a_failing_init_container_is_retried_and_the_app_waits_for_it(node: Node, tmp_path: Path) -> None:
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    node.pod(
        "gated",
        [sh("echo app started; sleep 60")],
        initContainers=[
            sh("test -e /ctl/go", name="wait-for-go", volumeMounts=[{"name": "ctl", "mountPath": "/ctl"}])
        ],
        volumes=[{"name": "ctl", "hostPath": {"path": str(ctl)}}],
    )
    node.wait_pod("gated", lambda p: status_of_init(p).get("restartCount", 0) >= 2, what="init retried")
    assert node.log("gated") == ""
    pod = node.store.get("pods", "default", "gated")
    assert pod is not None and pod["status"]["phase"] == "Pending"
    (ctl / "go").touch()
    node.wait_log("gated", "app started")


def status_of_init(pod: Obj) -> Obj:
    statuses = (pod.get("status") or {}).get("initContainerStatuses") or [{}]
    return dict(statuses[0])


def test_volumes_secret_config_map_projected_token_and_default_service_account_dir(node: Node) -> None:
    cert = base64.b64encode(b"CERT").decode()
    node.store.create(
        "secrets", {"metadata": {"name": "tls", "namespace": "default"}, "data": {"tls.crt": cert}}
    )
    node.store.create(
        "configmaps", {"metadata": {"name": "conf", "namespace": "default"}, "data": {"a.yaml": "x: 1"}}
    )
    volumes = [
        {"name": "tls", "secret": {"secretName": "tls"}},
        {"name": "conf", "configMap": {"name": "conf", "items": [{"key": "a.yaml", "path": "sub/app.yaml"}]}},
        {
            "name": "tok",
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "audience": "pilotfish",
                            "expirationSeconds": 600,
                            "path": "token",
                        }
                    },
                    {
                        "downwardAPI": {
                            "items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]
                        }
                    },
                ]
            },
        },
        {"name": "mem", "emptyDir": {"medium": "Memory"}},
    ]
    mounts = [
        {"name": "tls", "mountPath": "/certs", "readOnly": True},
        {"name": "conf", "mountPath": "/etc/app"},
        {"name": "tok", "mountPath": "/var/run/secrets/pilotfish"},
        {"name": "mem", "mountPath": "/scratch"},
    ]
    node.pod("vols", [sh("sleep 60", volumeMounts=mounts, workingDir="/etc/app")], volumes=volumes)
    node.wait_ready("vols")
    read = node.exec(
        "vols",
        ["sh", "-c", "cat /certs/tls.crt sub/app.yaml /var/run/secrets/pilotfish/name; echo;"
         " cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo; pwd;"
         " touch /certs/x 2>/dev/null || echo read-only; stat -f -c %T /scratch"],
    )  # fmt: skip
    assert read.stdout.split() == ["CERTx:", "1vols", "default", "/etc/app", "read-only", "tmpfs"], read
    token = node.exec("vols", ["cat", "/var/run/secrets/pilotfish/token"]).stdout
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["aud"] == ["pilotfish"] and claims["exp"] - claims["iat"] == 600
    assert claims["kubernetes.io"]["pod"]["name"] == "vols"
    assert node.store.review_token(token, ["pilotfish"])["authenticated"] is True


def test_no_service_account_dir_when_automount_is_off(node: Node) -> None:
    node.pod("noauto", [sh("sleep 60")], automountServiceAccountToken=False)
    node.wait_ready("noauto")
    out = node.exec(
        "noauto", ["sh", "-c", "test -e /var/run/secrets/kubernetes.io/serviceaccount/token || echo absent"]
    )
    assert out.stdout == "absent\n"


def transition_times(node: Node, name: str, seconds: float, toggle: Any) -> List[float]:
    """Call toggle() now, then record when Ready changes (seconds after the toggle)."""
    changes: List[float] = []
    before = is_ready(node.store.get("pods", "default", name) or {})
    start = time.monotonic()
    toggle()
    while time.monotonic() - start < seconds and not changes:
        now = is_ready(node.store.get("pods", "default", name) or {})
        if now != before:
            changes.append(time.monotonic() - start)
        time.sleep(0.01)
    return changes


def test_readiness_flips_after_failure_threshold_and_back_after_success_threshold(
    node: Node, tmp_path: Path
) -> None:
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    (ctl / "healthy").touch()
    probe = {"httpGet": {"path": "/healthz", "port": 8000}, "periodSeconds": 1, "failureThreshold": 3,
             "successThreshold": 2}  # fmt: skip
    node.pod(
        "flappy",
        [echo_container(readinessProbe=probe, volumeMounts=[{"name": "ctl", "mountPath": "/ctl"}])],
        volumes=[{"name": "ctl", "hostPath": {"path": str(ctl)}}],
    )
    node.wait_ready("flappy")
    time.sleep(0.3)
    # Unready needs 3 failed probes in a row, one per second: the third comes 2-3 s after the flip.
    down = transition_times(node, "flappy", 10, (ctl / "healthy").unlink)
    assert down and 2.0 <= down[0] <= 4.0, down
    assert node.events("flappy", "Unhealthy")
    # Ready again needs 2 successes: 1-2 s after the file is back.
    up = transition_times(node, "flappy", 10, (ctl / "healthy").touch)
    assert up and 1.0 <= up[0] <= 3.0, up
    assert status_of(node.store.get("pods", "default", "flappy") or {})["restartCount"] == 0


def test_liveness_failure_restarts_the_container_and_keeps_the_previous_log(
    node: Node, tmp_path: Path
) -> None:
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    (ctl / "healthy").touch()
    probe = {"exec": {"command": ["test", "-e", "/ctl/healthy"]}, "periodSeconds": 1, "failureThreshold": 2}
    node.pod(
        "lively",
        [echo_container(livenessProbe=probe, volumeMounts=[{"name": "ctl", "mountPath": "/ctl"}])],
        volumes=[{"name": "ctl", "hostPath": {"path": str(ctl)}}],
        terminationGracePeriodSeconds=5,
    )
    first = node.wait_ready("lively")
    (ctl / "healthy").unlink()
    killed_at = time.monotonic()
    pod = node.wait_pod(
        "lively",
        lambda p: status_of(p).get("restartCount") == 1 and "running" in status_of(p)["state"],
        what="restarted",
    )
    assert time.monotonic() - killed_at < 8
    status = status_of(pod)
    assert status["lastState"]["terminated"]["exitCode"] == 128 + 15  # SIGTERM ended the server
    assert status["containerID"] != status_of(first)["containerID"]
    assert any("failed liveness probe" in e["message"] for e in node.events("lively", "Killing"))
    assert any(e["message"].startswith("Liveness probe failed") for e in node.events("lively", "Unhealthy"))
    assert "listening" in node.log("lively", previous=True)
    (ctl / "healthy").touch()
    node.wait_ready("lively")


def test_a_process_that_ignores_sigterm_is_killed_at_the_grace_period(node: Node) -> None:
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: print('TERM ignored', flush=True))\n"
        "print('up', flush=True)\n"
        "while True: time.sleep(0.1)\n"
    )
    node.pod("stubborn", [py(code)], terminationGracePeriodSeconds=2)
    node.wait_log("stubborn", "up", container="app")
    start = time.monotonic()
    node.store.delete("pods", "default", "stubborn")
    took = node.wait_gone("stubborn")
    assert 2.0 <= took < 4.0, took
    assert (
        "TERM ignored"
        in (node.kubelet.log_path("default", "stubborn", "app") or Path("/dev/null")).read_text()
    )
    assert time.monotonic() - start >= 2.0


def test_prestop_runs_before_sigterm_and_counts_against_the_grace_period(node: Node, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    code = (
        "import signal, sys, time\n"
        "def term(*a):\n"
        "    open('/out/order', 'a').write('term %f\\n' % time.time()); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, term)\n"
        "print('up', flush=True)\n"
        "while True: time.sleep(0.1)\n"
    )
    prestop = {"exec": {"command": ["sh", "-c", "echo prestop $(date +%s.%N) >> /out/order; sleep 1"]}}
    node.pod(
        "polite",
        [py(code, lifecycle={"preStop": prestop}, volumeMounts=[{"name": "out", "mountPath": "/out"}])],
        volumes=[{"name": "out", "hostPath": {"path": str(out)}}],
        terminationGracePeriodSeconds=10,
    )
    node.wait_log("polite", "up")
    node.store.delete("pods", "default", "polite")
    took = node.wait_gone("polite")
    lines = (out / "order").read_text().split("\n")
    assert [line.split()[0] for line in lines if line] == ["prestop", "term"]
    assert float(lines[1].split()[1]) - float(lines[0].split()[1]) >= 1.0  # the hook finished first
    assert 1.0 <= took < 4.0, took

    # A preStop longer than the grace period: SIGTERM when the hook gives up, SIGKILL 2 s later.
    node.pod(
        "slowstop",
        [py(code.replace("sys.exit(0)", "pass"), lifecycle={"preStop": {"sleep": {"seconds": 30}}},
            volumeMounts=[{"name": "out", "mountPath": "/out"}])],
        volumes=[{"name": "out", "hostPath": {"path": str(out)}}],
        terminationGracePeriodSeconds=1,
    )  # fmt: skip
    node.wait_log("slowstop", "up")
    node.store.delete("pods", "default", "slowstop")
    took = node.wait_gone("slowstop")
    assert 3.0 <= took < 5.0, took


def test_restart_policies(node: Node) -> None:
    node.pod("crashy", [sh("echo run; exit 3")], restartPolicy="OnFailure")
    node.pod("once", [sh("exit 3")], restartPolicy="Never")
    node.pod("done", [sh("exit 0")], restartPolicy="OnFailure")
    pod = node.wait_pod("crashy", lambda p: status_of(p).get("restartCount", 0) >= 2, what="2 restarts")
    assert status_of(pod)["lastState"]["terminated"]["exitCode"] == 3
    assert len(node.events("crashy", "BackOff")) >= 2
    once = node.wait_pod("once", lambda p: p["status"].get("phase") == "Failed")
    assert status_of(once)["state"]["terminated"]["exitCode"] == 3 and status_of(once)["restartCount"] == 0
    done = node.wait_pod("done", lambda p: p["status"].get("phase") == "Succeeded")
    assert status_of(done)["state"]["terminated"]["reason"] == "Completed"


def test_restarts_back_off_exponentially(node: Node, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    node.pod(
        "crashloop",
        [sh("date +%s.%N >> /out/starts; exit 1", volumeMounts=[{"name": "out", "mountPath": "/out"}])],
        volumes=[{"name": "out", "hostPath": {"path": str(out)}}],
    )
    pod = node.wait_pod("crashloop", lambda p: status_of(p).get("restartCount", 0) >= 4, what="4 restarts")
    starts = [float(x) for x in (out / "starts").read_text().split()][:5]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    # Base 0.2 s (the fixture's), doubling: each gap is at least its back-off.
    for i, gap in enumerate(gaps):
        assert gap >= 0.2 * 2**i, gaps
    assert gaps[0] < 1.0, gaps
    assert (
        any(
            "waiting" in status_of(p).get("state", {})
            for p in [pod, node.store.get("pods", "default", "crashloop") or {}]
        )
        or status_of(pod)["restartCount"] >= 4
    )


def test_startup_probe_holds_liveness_and_readiness_until_it_succeeds(node: Node, tmp_path: Path) -> None:
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    startup = {
        "exec": {"command": ["test", "-e", "/ctl/healthy"]},
        "periodSeconds": 1,
        "failureThreshold": 30,
    }
    liveness = {
        "exec": {"command": ["test", "-e", "/ctl/healthy"]},
        "periodSeconds": 1,
        "failureThreshold": 1,
    }
    node.pod(
        "slowstart",
        [echo_container(startupProbe=startup, livenessProbe=liveness,
                        volumeMounts=[{"name": "ctl", "mountPath": "/ctl"}])],
        volumes=[{"name": "ctl", "hostPath": {"path": str(ctl)}}],
    )  # fmt: skip
    node.wait_log("slowstart", "listening")
    time.sleep(2.5)  # liveness (threshold 1) would have killed it by now if it ran
    pod = node.store.get("pods", "default", "slowstart") or {}
    assert status_of(pod)["started"] is False and status_of(pod)["restartCount"] == 0 and not is_ready(pod)
    (ctl / "healthy").touch()
    pod = node.wait_ready("slowstart")
    assert status_of(pod)["started"] is True


GRPC_HEALTH = r"""
import grpc, os, time
from concurrent import futures
def check(request, context):
    return b"\x08\x01" if os.path.exists("/ctl/serving") else b"\x08\x02"
handler = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
    "Check": grpc.unary_unary_rpc_method_handler(check, request_deserializer=None, response_serializer=None)})
server = grpc.server(futures.ThreadPoolExecutor(2), handlers=[handler])
server.add_insecure_port("0.0.0.0:9000")
server.start()
print("grpc up", flush=True)
server.wait_for_termination()
"""


def test_grpc_and_tcp_readiness_probes(node: Node, tmp_path: Path) -> None:
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    probe = {"grpc": {"port": 9000}, "periodSeconds": 1, "failureThreshold": 1}
    node.pod(
        "rpc",
        [py(GRPC_HEALTH, readinessProbe=probe, volumeMounts=[{"name": "ctl", "mountPath": "/ctl"}])],
        volumes=[{"name": "ctl", "hostPath": {"path": str(ctl)}}],
    )
    node.wait_log("rpc", "grpc up")
    eventually(
        lambda: any("NOT_SERVING" in e["message"] for e in node.events("rpc", "Unhealthy")),
        10,
        "a NOT_SERVING probe event",
    )
    pod = node.store.get("pods", "default", "rpc") or {}
    assert not is_ready(pod)
    (ctl / "serving").touch()
    node.wait_ready("rpc", timeout=10)


def test_the_agent_image_copies_the_agent_tree_like_the_injected_init_container(node: Node) -> None:
    from pilotfish_webhook.admission.objects import init_container

    init = init_container("ghcr.io/pilotfish/agent:0.1.0")
    app = sh(
        "ls /pilotfish/bootstrap; sleep 60",
        volumeMounts=[{"name": "pilotfish-agent", "mountPath": "/pilotfish"}],
    )
    init["volumeMounts"] = [{"name": "pilotfish-agent", "mountPath": "/pilotfish"}]
    node.pod("injected", [app], initContainers=[init], volumes=[{"name": "pilotfish-agent", "emptyDir": {}}])
    assert "sitecustomize.py" in node.wait_log("injected", "sitecustomize.py")


def test_image_map_resolves_the_project_images() -> None:
    images = ImageMap(DEFAULT_IMAGES, Path("/tmp"))
    webhook = images.resolve("ghcr.io/pilotfish/webhook:0.1.0")
    assert webhook.entrypoint == ["pilotfish-webhook"] and "/.venv/bin:" in webhook.env["PATH"]
    agent = images.resolve("ghcr.io/pilotfish/agent:0.1.0")
    assert str(agent.mounts["/pilotfish-agent"]).endswith("build/agent-tree")
    with pytest.raises(LookupError, match="not in the local cluster's image map"):
        images.resolve("nginx:1.27")


def test_an_unmapped_image_waits_with_the_reason(node: Node) -> None:
    node.pod("nginx", [{"name": "app", "image": "nginx:1.27"}])
    pod = node.wait_pod("nginx", lambda p: "waiting" in status_of(p).get("state", {})
                        and status_of(p)["state"]["waiting"]["reason"] == "ErrImagePull")  # fmt: skip
    assert "images are mapped, not pulled" in status_of(pod)["state"]["waiting"]["message"]


def test_pods_start_fast(node: Node) -> None:
    start = time.monotonic()
    node.pod("quick", [sh("sleep 60")])
    node.wait_ready("quick")
    assert time.monotonic() - start < 3.0
    assert ECHO  # the echo server is the other tests' app


def test_a_command_that_cannot_start_is_a_start_error_with_the_reason(node: Node) -> None:
    node.pod(
        "typo", [{"name": "app", "image": "busybox", "command": ["no-such-command"]}], restartPolicy="Never"
    )
    pod = node.wait_pod("typo", lambda p: p["status"].get("phase") == "Failed")
    terminated = status_of(pod)["state"]["terminated"]
    assert terminated["reason"] == "StartError" and terminated["exitCode"] == 127
    assert 'exec: "no-such-command": executable file not found in $PATH' in terminated["message"]
    assert not node.events("typo", "Started") and node.events("typo", "Failed")


def test_a_volume_over_tmp_does_not_hide_the_sources_of_later_mounts(node: Node) -> None:
    # The node's own files (hosts file, volumes) may live under /tmp, as in these tests.
    mounts = [{"name": "t", "mountPath": "/tmp"}]
    node.pod(
        "tmpvol",
        [sh("ls /tmp; cat /etc/hosts; sleep 60", volumeMounts=mounts)],
        volumes=[{"name": "t", "emptyDir": {}}],
    )
    log = node.wait_log("tmpvol", "localhost")
    assert "\ttmpvol" in log and "state" not in log.split("#")[0]  # an empty /tmp, the pod's hosts file


def test_a_host_network_pod_runs_on_the_host_address_and_is_probed_there(node: Node) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = [POD_NAME_ENV, {"name": "PORT", "value": str(port)}]
    probe = {"httpGet": {"path": "/healthz", "port": port}, "periodSeconds": 1}
    liveness = {"exec": {"command": ["true"]}, "periodSeconds": 1}
    node.pod(
        "hostnet", [echo_container(env=env, readinessProbe=probe, livenessProbe=liveness)], hostNetwork=True
    )
    pod = node.wait_ready("hostnet")
    assert pod_ip(pod) == pod["status"]["hostIP"] == node.network.host_address
    assert http_get("127.0.0.1", port)[1].split()[0] == "hostnet"  # it listens in the host's network
    time.sleep(1.5)  # a window: no liveness failure in it
    assert not [e for e in node.events("hostnet", "Unhealthy") if e["message"].startswith("Liveness")]


def test_a_volume_over_a_parent_of_the_checkout_does_not_hide_the_program(node: Node) -> None:
    """Why: with the checkout under /tmp, an emptyDir at /tmp (deploy/base has one) hid the
    venv's pilotfish-webhook: "executable file not found". The image here is the host's own
    files, so they are put back on top of such a volume, which stays empty otherwise."""
    here = Path(__file__).resolve()
    parent = str(here.parents[len(here.parents) - 2])  # the first directory under /, e.g. /tmp
    mounts = [{"name": "v", "mountPath": parent}]
    node.pod(
        "hidden",
        [
            py(
                "import os, sys; print('ran', sys.executable, flush=True); import time; time.sleep(60)",
                volumeMounts=mounts,
            )
        ],
        volumes=[{"name": "v", "emptyDir": {}}],
    )
    assert "ran %s/.venv/bin/python3" % REPO_ROOT in node.wait_log("hidden", "ran ")  # not /usr/bin's
