"""Run one container of a (mutated) pod spec as a local process, and probe it like the kubelet.

Enough of the kubelet for rollout questions: the container's ``command`` + ``args`` run with its
literal env (``valueFrom`` entries get stand-in values, ``envFrom`` contents are passed in by the
test, as a ConfigMap would), the agent volume at ``/pilotfish`` is the built agent tree, the
state volume a temporary directory; ``readiness()`` runs the container's readinessProbe
(``httpGet``/``tcpSocket``) against loopback, and ``pre_stop()`` its ``httpGet`` preStop hook.
Nothing is routed off the machine: ``PILOTFISH_CONFIG_URL`` is dropped.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import tempfile
import time
from typing import Any, Dict, Mapping, Optional, Tuple

from support.agent import AGENT_TREE, clean_env, ensure_agent_tree
from support.wait import GiveUp, eventually

Obj = Dict[str, Any]


def container_env(container: Obj, env_from: Optional[Mapping[str, str]], state_dir: str) -> Dict[str, str]:
    """The process env the kubelet would build: envFrom first, then env (the last entry wins)."""
    ensure_agent_tree()
    env = clean_env()
    env.update(env_from or {})
    for entry in container.get("env") or []:
        if "valueFrom" in entry:
            field = (entry["valueFrom"].get("fieldRef") or {}).get("fieldPath", "")
            value = {
                "metadata.name": "shop-1",
                "metadata.namespace": "shop",
                "status.podIP": "127.0.0.1",
            }.get(field)
            if value is not None:
                env[entry["name"]] = value
            continue
        env[entry["name"]] = str(entry.get("value", ""))
    if "PYTHONPATH" in env:
        env["PYTHONPATH"] = env["PYTHONPATH"].replace("/pilotfish/", str(AGENT_TREE) + "/")
    if env.get("PILOTFISH_STATE_DIR", "").startswith("/pilotfish-state"):  # the state emptyDir
        env["PILOTFISH_STATE_DIR"] = state_dir + env["PILOTFISH_STATE_DIR"][len("/pilotfish-state") :]
    env.pop("PILOTFISH_CONFIG_URL", None)
    env["PYTHONUNBUFFERED"] = "1"
    # In a pod the agent mount is read-only; here tests run as root, so keep Python 2 from
    # writing sitecustomize.pyc into the shared agent tree.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


class RunningContainer:
    """A container's process; use as a context manager."""

    def __init__(
        self, container: Obj, env_from: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None
    ):
        self.container = container
        self._state = tempfile.TemporaryDirectory()
        self.env = container_env(container, env_from, self._state.name)
        self.cwd = cwd
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process
        self.proc: Optional[subprocess.Popen] = None

    def __enter__(self) -> RunningContainer:
        argv = list(self.container.get("command") or []) + list(self.container.get("args") or [])
        self.proc = subprocess.Popen(
            argv,
            env=self.env,
            cwd=self.cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._state.cleanup()

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def readiness(self) -> Tuple[bool, str]:
        """One readiness probe as the kubelet runs it: (passed, what happened)."""
        probe = self.container.get("readinessProbe")
        if probe is None:
            return True, "no readiness probe: ready once running"
        return _run_handler(self.container, probe, float(probe.get("timeoutSeconds", 1)))

    def wait_ready(self, timeout: float = 60) -> str:
        """Poll readiness until it passes; raise with the last result and the output if not."""

        def ready() -> str:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise GiveUp("container exited with %s:\n%s" % (self.proc.returncode, self.output()))
            ok, last = self.readiness()
            assert ok, "last probe: %s" % last
            return last

        # A probe may run a command: every 0.2 s, not the default 0.02 s.
        return eventually(ready, timeout, "readiness", interval=0.2, context=self.output)

    def pre_stop(self, timeout: float = 10) -> Tuple[int, float]:
        """Run the container's httpGet preStop: (status, seconds it took)."""
        handler = ((self.container.get("lifecycle") or {}).get("preStop") or {}).get("httpGet")
        assert handler, "the container has no httpGet preStop"
        started = time.monotonic()
        status, _ = _http(self.container, handler, timeout)
        return status, time.monotonic() - started


def _port(container: Obj, port: Any) -> int:
    """A probe's port, named ports looked up in the container as the kubelet does."""
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    return int(port)


def _run_handler(container: Obj, probe: Obj, timeout: float) -> Tuple[bool, str]:
    try:
        if "httpGet" in probe:
            status, body = _http(container, probe["httpGet"], timeout)
            return 200 <= status < 400, "HTTP %d %s" % (status, body.strip()[:200])
        if "tcpSocket" in probe:
            port = _port(container, probe["tcpSocket"]["port"])
            with socket.create_connection(("127.0.0.1", port), timeout=timeout):
                return True, "tcp open"
    except (OSError, http.client.HTTPException) as problem:
        return False, "%s: %s" % (type(problem).__name__, problem)
    raise AssertionError("unsupported probe in this test harness: %s" % probe)


def _http(container: Obj, handler: Obj, timeout: float) -> Tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", _port(container, handler["port"]), timeout=timeout)
    try:
        headers = {h["name"]: h["value"] for h in handler.get("httpHeaders") or []}
        headers.setdefault("User-Agent", "kube-probe/1.33")
        conn.request("GET", handler.get("path") or "/", headers=headers)
        response = conn.getresponse()
        return response.status, response.read(10240).decode("utf-8", "replace")
    finally:
        conn.close()
