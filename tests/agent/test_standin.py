"""Where the agent does not run, the pod still becomes Ready: the bootstrap's readiness stand-in.

The webhook points readiness at the status port and preStop at ``/offline``. When sitecustomize
runs but the agent cannot (an interpreter it does not support, the kill switch the webhook could
not see, a start-up failure), the stand-in answers ``/readiness`` from the app's own probe
(``PILOTFISH_APP_PROBE``) and ``/offline`` with 200 at once. Pods go through the real mutation
and run as the kubelet would run them (tests/support/kubelet.py).
"""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Optional

import pytest
from pilotfish_webhook.admission.mutate import InjectionConfig
from support.agent import AGENT_TREE, run_python
from support.interpreters import require_interpreter
from support.kubelet import RunningContainer
from support.pods import check_mutation
from support.servers import free_port, http_get
from support.wait import eventually

APP = Path(__file__).resolve().parent.parent / "apps" / "probe_app.py"


def pod_running(
    python: str, ready_file: Optional[Path] = None, env: Optional[Dict[str, str]] = None, probe: bool = True
) -> Dict[str, Any]:
    """A Deployment-made pod whose one container runs tests/apps/probe_app.py with ``python``."""
    port, status_port = free_port(), free_port()
    container: Dict[str, Any] = {
        "name": "shop",
        "image": "shop:1",
        "command": [python, str(APP), str(port)] + ([str(ready_file)] if ready_file else []),
        "ports": [{"name": "http", "containerPort": port}],
        # A literal status port keeps parallel tests apart; the webhook moves probe and preStop to it.
        "env": [{"name": "PILOTFISH_STATUS_PORT", "value": str(status_port)}]
        + [{"name": k, "value": v} for k, v in (env or {}).items()],
    }
    if probe:
        container["readinessProbe"] = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "shop-1", "namespace": "shop", "labels": {"app": "shop"}},
        "spec": {"containers": [container]},
    }


def mutated_container(pod: Dict[str, Any]) -> Dict[str, Any]:
    return check_mutation(pod, InjectionConfig()).pod["spec"]["containers"][0]


def wait_status(running: RunningContainer, ok: bool, timeout: float = 60) -> str:
    """Poll the kubelet's readiness probe until it answers over HTTP with pass (ok) or fail."""

    def answered() -> str:
        passed, last = running.readiness()
        assert passed == ok and last.startswith("HTTP"), last
        return last

    # A probe may run a command: every 0.2 s, not the default 0.02 s.
    return eventually(answered, timeout, "readiness %s" % ok, interval=0.2, context=running.output)


# --------------------------------------------------------------------------- the kill switch


def test_a_kill_switch_pod_keeps_its_own_probe_and_becomes_ready() -> None:
    pod = pod_running(sys.executable, env={"PILOTFISH_ENABLED": "false"})
    container = mutated_container(pod)
    assert container == pod["spec"]["containers"][0], "the webhook leaves the container alone"
    with RunningContainer(container) as running:
        assert "HTTP 200" in running.wait_ready()


def test_a_kill_switch_the_webhook_cannot_see_is_answered_by_the_stand_in(tmp_path: Path) -> None:
    """PILOTFISH_ENABLED=false from a ConfigMap (envFrom): readiness was rewritten, the agent is
    off, and the stand-in answers from the app's own probe; preStop returns at once."""
    ready = tmp_path / "ready"
    pod = pod_running(sys.executable, ready_file=ready)
    pod["spec"]["containers"][0]["envFrom"] = [{"configMapRef": {"name": "pilotfish-off"}}]
    container = mutated_container(pod)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readiness"
    with RunningContainer(container, env_from={"PILOTFISH_ENABLED": "false"}) as running:
        assert "app probe" in wait_status(running, ok=False), "the app's probe fails: not ready"
        ready.touch()
        assert "PILOTFISH_ENABLED turns the agent off" in wait_status(running, ok=True)
        status, seconds = running.pre_stop()
        assert status == 200 and seconds < 5
        log = running.output()
    assert "Traceback" not in log


# --------------------------------------------------------------------------- unsupported interpreters


@pytest.mark.parametrize("minor", ["2.7", "3.6", "3.7"])
def test_an_unsupported_interpreter_answers_readiness_from_the_apps_probe(minor: str, tmp_path: Path) -> None:
    python = require_interpreter(minor)
    ready = tmp_path / "ready"
    container = mutated_container(pod_running(python, ready_file=ready))
    with RunningContainer(container) as running:
        assert "HTTP 503" in wait_status(running, ok=False)
        ready.touch()
        assert "is not supported by the agent" in wait_status(running, ok=True)
        ready.unlink()
        wait_status(running, ok=False)  # the app's own verdict, every time
        status, seconds = running.pre_stop()
        assert status == 200 and seconds < 5
        log = running.output()
    assert "Traceback" not in log


@pytest.mark.parametrize("minor", ["2.7", "3.6"])
def test_without_an_app_probe_the_stand_in_is_ready_while_the_app_accepts_connections(minor: str) -> None:
    python = require_interpreter(minor)
    container = mutated_container(pod_running(python, probe=False))
    assert "PILOTFISH_APP_PROBE" not in {e["name"] for e in container["env"]}
    with RunningContainer(container) as running:
        assert "app listens on 127.0.0.1" in running.wait_ready()


# --------------------------------------------------------------------------- start-up failure


def broken_tree(tmp_path: Path, module: str, code: str) -> Path:
    """A copy of the agent tree whose ``module`` raises on import (an injected fault)."""
    tree = tmp_path / "tree"
    shutil.copytree(AGENT_TREE, tree, ignore=shutil.ignore_patterns("__pycache__"))
    for path in [tree, *tree.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    (tree / "lib" / "pilotfish" / module).write_text(code)
    return tree


def test_a_bootstrap_failure_warns_once_and_the_stand_in_answers_readiness(tmp_path: Path) -> None:
    tree = broken_tree(tmp_path, "bootstrap.py", "raise RuntimeError('injected fault')\n")
    ready = tmp_path / "ready"
    container = mutated_container(pod_running(sys.executable, ready_file=ready))
    running = RunningContainer(container)
    running.env["PYTHONPATH"] = str(tree / "bootstrap")
    with running:
        wait_status(running, ok=False)
        ready.touch()
        assert "the agent failed to start (RuntimeError)" in wait_status(running, ok=True)
        log = running.output()
    assert log.count("pilotfish: warning: agent start-up failed; the app runs without it") == 1
    assert "injected fault" in log


# --------------------------------------------------------------------------- where it stays silent


@pytest.mark.parametrize("minor,env", [("3.6", {}), ("3.11", {"PILOTFISH_ENABLED": "false"})])
def test_a_process_that_never_listens_gets_no_stand_in(minor: str, env: Dict[str, str]) -> None:
    """pip, scripts, migrations: no thread, no port, even where the agent does not run."""
    python = require_interpreter(minor)
    status_port = free_port()
    code = (
        "import socket, threading\n"
        "s = socket.socket(); s.connect_ex(('127.0.0.1', %d)); s.close()\n"
        "print(sorted(t.name for t in threading.enumerate()))\n" % status_port
    )
    done = run_python(python, ["-c", code], env=dict(env, PILOTFISH_STATUS_PORT=str(status_port)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['MainThread']"
    with pytest.raises(OSError):
        http_get(status_port, "/readiness", timeout=2)


def test_a_second_listening_process_finds_the_port_taken_and_stays_silent(tmp_path: Path) -> None:
    python = require_interpreter("3.6")
    first = mutated_container(pod_running(python))
    second = dict(first, command=[python, str(APP), str(free_port())])
    with RunningContainer(first) as one:
        one.wait_ready()
        with RunningContainer(second) as two:
            two.wait_ready()
            assert two.proc is not None and two.proc.poll() is None
            log = two.output()
    assert "Traceback" not in log


@pytest.mark.parametrize("minor", ["2.7", "3.6", "3.7"])
def test_the_bootstrap_parses_on_interpreters_the_agent_does_not_support(minor: str) -> None:
    python = require_interpreter(minor)
    code = "import ast, sys; ast.parse(open(sys.argv[1]).read())"
    subprocess.run([python, "-c", code, str(AGENT_TREE / "bootstrap" / "sitecustomize.py")], check=True)


@pytest.mark.parametrize("minor,env", [("2.7", {}), ("3.7", {}), ("3.11", {"PILOTFISH_ENABLED": "false"})])
def test_arming_the_stand_in_imports_nothing_at_start_up(minor: str, env: Dict[str, str]) -> None:
    """`socket` costs more than the whole agent start-up: the stand-in waits for the app's import."""
    python = require_interpreter(minor)
    code = "import sys; print(sorted(m for m in ('socket', 'threading', 'json') if m in sys.modules))"
    ours = run_python(python, ["-c", code], env=dict(env, PYTHONDONTWRITEBYTECODE="1"))
    bare = run_python(python, ["-c", code], agent=False)
    assert (ours.returncode, ours.stdout, ours.stderr) == (0, bare.stdout, "")
