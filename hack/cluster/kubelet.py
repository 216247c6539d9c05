"""The local cluster's kubelet: runs the store's pods as host processes in per-pod namespaces.

For every pod (one node: all of them) a :class:`PodWorker` thread attaches the pod to the
network, makes its volumes, runs the init containers in order to completion, then one
:class:`ContainerRunner` thread per app container: start (``launch.py`` in the pod's network
namespace and a private mount namespace), probes (a thread per probe), restarts with
exponential back-off per ``restartPolicy``. Deletion runs preStop, then SIGTERM, then SIGKILL
when ``terminationGracePeriodSeconds`` (counted from the start of termination, preStop
included) runs out, then removes the pod from the store. Status and events go back through
the store, so ``kubectl get`` / ``describe`` and the EndpointSlice controller see them.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import secrets as _secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from .images import REPO_ROOT, Image, ImageMap, ImageNotMapped
from .network import Attachment, Network, processes_in_netns, register_mountpoint
from .podenv import ConfigError, container_env, expand
from .probes import ProbeTarget, nsenter_argv, run_handler, timing
from .proxy import ServiceProxy
from .volumes import SA_DIR, SA_VOLUME, PodVolumes, Volume

__all__ = ["DEFAULT_IMAGES", "NODE_NAME", "ContainerRunner", "Kubelet", "PodWorker"]

log = logging.getLogger("pilotfish.cluster.kubelet")

Obj = Dict[str, Any]
NODE_NAME = "local"
DEFAULT_IMAGES = REPO_ROOT / "hack" / "cluster" / "images.yaml"
LAUNCH = Path(__file__).resolve().with_name("launch.py")
DEFAULT_GRACE = 30
MIN_GRACE_AFTER_PRESTOP = 2.0  # the kubelet's minimum after a preStop hook that used up the grace
# How often mounted Secrets and ConfigMaps are re-read (the real kubelet's sync takes up to about a
# minute; shorter here so tests and the demo need not wait that long)
OBJECT_SYNC_SECONDS = 5.0
BACKOFF_RESET = 600.0  # a container that ran this long starts its back-off from the beginning


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(pod: Obj) -> Obj:
    return pod.get("metadata") or {}


def _spec(pod: Obj) -> Obj:
    return pod.get("spec") or {}


class ContainerRunner:
    """One container of a pod: its process, its probes, its status, its restarts."""

    def __init__(self, worker: PodWorker, spec: Obj, init: bool) -> None:
        self.worker = worker
        self.spec = spec
        self.name = str(spec.get("name", ""))
        self.init = init
        self.image_ref = str(spec.get("image", ""))
        self.restart_count = 0
        self.state: Obj = {"waiting": {"reason": "PodInitializing" if not init else "ContainerCreating"}}
        self.last_state: Obj = {}
        self.ready = False
        self.started = False
        self.container_id = ""
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.exited = threading.Event()
        self.instance = 0
        self.started_mono = 0.0
        self.env: Dict[str, str] = {}
        self.cwd = "/"
        self.done = False  # will not run again
        self.kill_reason: Optional[str] = None  # set by a failing liveness/startup probe
        self.kill_grace: float = DEFAULT_GRACE
        self.thread: Optional[threading.Thread] = None
        self._backoff_n = 0
        self.start_error = ""  # why the launcher could not start the command (StartError)

    # -- status ----------------------------------------------------------------------------
    def status(self) -> Obj:
        out: Obj = {
            "name": self.name,
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
            "image": self.image_ref,
            "imageID": "local-cluster://" + self.image_ref,
        }
        if self.container_id:
            out["containerID"] = self.container_id
        return out

    @property
    def running(self) -> bool:
        return "running" in self.state

    def target(self) -> ProbeTarget:
        pid = self.proc.pid if self.proc is not None and self.proc.poll() is None else None
        return ProbeTarget(
            ip=self.worker.pod_ip,
            pid=pid,
            env=dict(self.env),
            cwd=self.cwd,
            ports=list(self.spec.get("ports") or []),
            own_netns=not self.worker.host_network,
        )

    # -- starting --------------------------------------------------------------------------
    def start(self) -> bool:
        """Start the process (False: it could not be configured; state says why)."""
        w = self.worker
        kubelet = w.kubelet
        try:
            image = kubelet.image_map.resolve(self.image_ref)
        except ImageNotMapped as e:
            with w.lock:
                self.state = {"waiting": {"reason": "ErrImagePull", "message": str(e)}}
            w.event("Failed", 'Failed to pull image "%s": %s' % (self.image_ref, e), "Warning")
            w.publish()
            return False
        try:
            self.env = container_env(
                kubelet.store,
                w.pod,
                self.spec,
                image.env,
                w.pod_ip,
                kubelet.network.host_address,
                kubelet.node_name,
                kubelet.api_endpoint,
            )
            argv = self._argv(image)
            mounts = self._mounts(image)
        except ConfigError as e:
            with w.lock:
                self.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}}
            w.event("Failed", "Error: %s" % e, "Warning")
            w.publish()
            return False
        self.cwd = str(self.spec.get("workingDir") or image.workdir or "/")
        if self.instance == 0:
            w.event("Pulled", 'Container image "%s" already present on machine' % self.image_ref)
        self.instance += 1
        spec_path = w.dir / ("%s.launch.json" % self.name)
        spec_path.write_text(
            json.dumps(
                {
                    "netns": w.attachment.netns if w.attachment else None,
                    "mounts": mounts,
                    "image_paths": image.host_dirs,
                    "cwd": self.cwd,
                    "argv": argv,
                    "env": self.env,
                }
            )
        )
        log_path = w.dir / ("%s.log" % self.name)
        if log_path.exists() and self.restart_count > 0:
            os.replace(log_path, w.dir / ("%s.previous.log" % self.name))
        self.container_id = "local-cluster://" + _secrets.token_hex(16)
        w.event("Created", "Created container: %s" % self.name)
        ready_r, ready_w = os.pipe()
        try:
            with open(log_path, "ab") as logf:
                self.proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", str(LAUNCH), str(spec_path), str(ready_w)],
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                    close_fds=True,
                    pass_fds=(ready_w,),
                )
        finally:
            os.close(ready_w)
        # EOF once the launcher exec'd the command (or gave up): namespaces and mounts are set.
        with os.fdopen(ready_r, "rb") as ready:
            self.start_error = ready.read().decode("utf-8", "replace")
        self.exited = threading.Event()
        proc, exited = self.proc, self.exited

        def reap() -> None:
            proc.wait()
            exited.set()
            with w.lock:
                w.cond.notify_all()

        threading.Thread(target=reap, name="pf-reap-%s" % self.name, daemon=True).start()
        self.started_mono = time.monotonic()
        self.kill_reason = None
        with w.lock:
            self.state = {"running": {"startedAt": now_rfc3339()}}
            self.started = not self.init and "startupProbe" not in self.spec
            self.ready = False
        if self.start_error:
            w.event(
                "Failed", "Error: failed to start container %s: %s" % (self.name, self.start_error), "Warning"
            )
        else:
            w.event("Started", "Started container %s" % self.name)
        if not self.init:
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                if self.spec.get(kind):
                    ProbeWorker(self, self.instance, kind, self.spec[kind]).start()
            if not self.spec.get("readinessProbe"):
                with w.lock:
                    self.ready = self.started
        w.publish()
        return True

    def _argv(self, image: Image) -> List[str]:
        command = self.spec.get("command")
        args = self.spec.get("args")
        if command:
            argv = [str(c) for c in command] + [str(a) for a in args or []]
        else:
            argv = list(image.entrypoint) + ([str(a) for a in args] if args is not None else list(image.cmd))
        argv = [expand(a, self.env.get) for a in argv]
        if not argv:
            raise ConfigError("no command specified (the image map gives %s none)" % self.image_ref)
        return argv

    def _mounts(self, image: Image) -> List[Obj]:
        w = self.worker
        mounts: List[Obj] = []
        for target, host in image.mounts.items():
            mounts.append({"source": str(host), "target": target, "read_only": True})
        targets = set()
        for vm in self.spec.get("volumeMounts") or []:
            vol: Optional[Volume] = w.volumes.get(vm.get("name", ""))
            if vol is None:
                raise ConfigError("volumeMount %r: the pod has no volume of that name" % vm.get("name"))
            source = vol.path
            sub = vm.get("subPath") or (
                expand(vm["subPathExpr"], self.env.get) if vm.get("subPathExpr") else ""
            )
            if sub:
                if sub.strip("/") in vol.sub_paths:
                    source = vol.sub_paths[sub.strip("/")]
                else:
                    source = vol.path / sub
                    if not source.exists():
                        source.mkdir(parents=True, exist_ok=True)
            elif vol.sub_paths:
                raise ConfigError("image volume %r is only mounted with a subPath here" % vol.name)
            target = str(vm.get("mountPath", "")).rstrip("/") or "/"
            targets.add(target)
            mounts.append(
                {
                    "source": str(source),
                    "target": target,
                    "read_only": bool(vm.get("readOnly")) or vol.read_only,
                }
            )
        sa = w.volumes.get(SA_VOLUME)
        if sa is not None and SA_DIR not in targets:
            mounts.append({"source": str(sa.path), "target": SA_DIR, "read_only": True})
        if w.attachment is not None:
            if "/etc/hosts" not in targets:
                mounts.append(
                    {"source": str(w.attachment.hosts_path), "target": "/etc/hosts", "read_only": False}
                )
            if "/etc/resolv.conf" not in targets:
                mounts.append(
                    {
                        "source": str(w.attachment.resolv_path),
                        "target": "/etc/resolv.conf",
                        "read_only": False,
                    }
                )
        mounts.sort(key=lambda m: m["target"].rstrip("/").count("/"))
        all_targets = [m["target"] for m in mounts]
        for m in mounts:
            nested = any(
                m["target"] != t and m["target"].startswith(t.rstrip("/") + "/") for t in all_targets
            )
            if not nested:
                w.kubelet.ensure_mountpoint(m["target"], Path(m["source"]).is_dir())
        return mounts

    # -- running ---------------------------------------------------------------------------
    def wait(self) -> Tuple[int, str]:
        """Until the process exits; terminates it when the pod or a probe asks. (exit code, reason)."""
        w = self.worker
        while True:
            with w.lock:
                while not self.exited.is_set() and not w.terminating and self.kill_reason is None:
                    w.cond.wait(1.0)
                    if not self.exited.is_set() and not w.terminating and self.kill_reason is None:
                        w.maybe_refresh()
            if self.exited.is_set():
                break
            if w.terminating:
                self.kill(w.term_started, w.deadline)
            elif self.kill_reason is not None:
                self.kill(time.monotonic(), _fixed(time.monotonic() + self.kill_grace))
        assert self.proc is not None
        code = self.proc.returncode
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # what the main process left behind
        except OSError:
            pass
        exit_code = code if code >= 0 else 128 - code
        reason = "Completed" if exit_code == 0 else "StartError" if self.start_error else "Error"
        with w.lock:
            self.last_state = {}
            self.state = {
                "terminated": {
                    "exitCode": exit_code,
                    "reason": reason,
                    **({"message": self.start_error} if self.start_error else {}),
                    "startedAt": self.state.get("running", {}).get("startedAt", now_rfc3339()),
                    "finishedAt": now_rfc3339(),
                    "containerID": self.container_id,
                }
            }
            self.ready = False
            self.started = False
        w.publish()
        return exit_code, reason

    def kill(self, started: float, deadline: Callable[[], float]) -> None:
        """preStop, SIGTERM, and SIGKILL at the deadline (at least 2 s after SIGTERM if preStop overran)."""
        w = self.worker
        proc = self.proc
        if proc is None or self.exited.is_set():
            return
        w.event("Killing", "Stopping container %s" % self.name)
        prestop = ((self.spec.get("lifecycle") or {}).get("preStop")) if not self.init else None
        overran = False
        if prestop and deadline() > time.monotonic():
            ok, message = run_handler(prestop, self.target(), max(0.0, deadline() - time.monotonic()), "hook")
            if not ok:
                w.event("FailedPreStopHook", "PreStopHook failed: %s" % message, "Warning")
            overran = time.monotonic() >= deadline()
        term_at = time.monotonic()
        if deadline() > term_at or overran:
            try:
                proc.send_signal(signal.SIGTERM)
            except OSError:
                pass
        while not self.exited.is_set():
            end = max(deadline(), term_at + MIN_GRACE_AFTER_PRESTOP) if overran else deadline()
            left = end - time.monotonic()
            if left <= 0:
                break
            self.exited.wait(min(left, 0.2))
        if not self.exited.is_set():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            self.exited.wait(10)

    def next_backoff(self) -> float:
        """Exponential back-off (base doubling to the cap), reset after a long healthy run."""
        k = self.worker.kubelet
        if time.monotonic() - self.started_mono >= BACKOFF_RESET:
            self._backoff_n = 0
        delay: float = min(k.backoff_base * (2**self._backoff_n), k.backoff_cap)
        self._backoff_n += 1
        return delay

    def run_app(self) -> None:
        """The app container's life: start, wait, restart per restartPolicy with back-off."""
        w = self.worker
        policy = _spec(w.pod).get("restartPolicy") or "Always"
        while not w.terminating:
            if not self.start():
                if w.sleep_unless_terminating(2.0):
                    break
                continue
            code, _ = self.wait()
            killed_by_probe = self.kill_reason is not None
            if w.terminating:
                break
            restart = policy == "Always" or (policy == "OnFailure" and (code != 0 or killed_by_probe))
            if not restart:
                break
            delay = self.next_backoff()
            with w.lock:
                self.last_state = {"terminated": self.state.get("terminated", {})}
                self.restart_count += 1
                self.state = {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": "back-off %gs restarting failed container=%s pod=%s_%s(%s)"
                        % (delay, self.name, w.name, w.namespace, w.uid),
                    }
                }
            w.event("BackOff", "Back-off restarting failed container %s in pod %s_%s(%s)" % (
                self.name, w.name, w.namespace, w.uid), "Warning")  # fmt: skip
            w.publish()
            if w.sleep_unless_terminating(delay):
                break
        self.done = True
        w.publish()


class ProbeWorker(threading.Thread):
    """One probe of one container instance, on the kubelet's schedule and thresholds."""

    def __init__(self, runner: ContainerRunner, instance: int, kind: str, probe: Obj) -> None:
        super().__init__(name="pf-probe-%s-%s" % (runner.name, kind), daemon=True)
        self.runner = runner
        self.instance = instance
        self.kind = kind
        self.probe = probe
        self.label = {"startupProbe": "Startup", "livenessProbe": "Liveness", "readinessProbe": "Readiness"}[
            kind
        ]

    def active(self) -> bool:
        r = self.runner
        return r.instance == self.instance and not r.exited.is_set() and r.kill_reason is None

    def run(self) -> None:
        r = self.runner
        w = r.worker
        t = timing(self.probe)
        next_at = r.started_mono + t.initial_delay
        successes = failures = 0
        while True:
            with w.lock:
                while (
                    self.active()
                    and time.monotonic() < next_at
                    and not (w.terminating and self.kind != "readinessProbe")
                ):
                    w.cond.wait(min(0.5, max(0.0, next_at - time.monotonic())))
            if not self.active() or (w.terminating and self.kind != "readinessProbe"):
                return
            if self.kind != "startupProbe" and not r.started:
                next_at = time.monotonic() + min(t.period, 0.5)
                continue
            if self.kind == "startupProbe" and r.started:
                return
            began = time.monotonic()
            ok, message = run_handler(self.probe, r.target(), t.timeout)
            if not self.active():
                return
            if ok:
                successes, failures = successes + 1, 0
            else:
                successes, failures = 0, failures + 1
                w.event("Unhealthy", "%s probe failed: %s" % (self.label, message), "Warning")
            if self.handle(ok, successes, failures, t.success_threshold, t.failure_threshold):
                return
            next_at = max(began + t.period, time.monotonic())

    def handle(self, ok: bool, successes: int, failures: int, need_ok: int, need_fail: int) -> bool:
        """Apply one result; True when this worker is done."""
        r = self.runner
        w = r.worker
        if self.kind == "readinessProbe":
            changed = False
            with w.lock:
                if ok and successes >= need_ok and not r.ready:
                    r.ready, changed = True, True
                elif not ok and failures >= need_fail and r.ready:
                    r.ready, changed = False, True
            if changed:
                w.publish()
            return False
        if self.kind == "startupProbe" and ok:
            with w.lock:
                r.started = True
                if not r.spec.get("readinessProbe"):
                    r.ready = True
                w.cond.notify_all()
            w.publish()
            return True
        if not ok and failures >= need_fail:
            what = "liveness" if self.kind == "livenessProbe" else "startup"
            w.event("Killing", "Container %s failed %s probe, will be restarted" % (r.name, what))
            grace = self.probe.get("terminationGracePeriodSeconds")
            with w.lock:
                r.kill_grace = float(grace if grace is not None else w.grace_seconds())
                r.kill_reason = what
                w.cond.notify_all()
            return True
        return False


class PodWorker:
    """One pod on this node, from attach to finalize_delete."""

    def __init__(self, kubelet: Kubelet, pod: Obj) -> None:
        self.kubelet = kubelet
        self.pod = pod
        meta = _meta(pod)
        self.namespace = str(meta.get("namespace") or "default")
        self.name = str(meta.get("name") or "")
        self.uid = str(meta.get("uid") or "")
        self.key = "%s/%s/%s" % (self.namespace, self.name, self.uid)
        self.dir = kubelet.pods_dir / ("%s_%s_%s" % (self.namespace, self.name, self.uid))
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.terminating = False
        self.term_started = 0.0
        self._deadline = 0.0
        self.deleted = False  # gone from the store or deletion requested: finalize at the end
        self.stopping = False  # the kubelet stops: leave the pod in the store
        self.host_network = bool(_spec(pod).get("hostNetwork"))
        self.attachment: Optional[Attachment] = None
        self.pod_ip = ""
        self.volumes: Dict[str, Volume] = {}
        self.pod_volumes: Optional[PodVolumes] = None
        self.inits = [ContainerRunner(self, c, True) for c in _spec(pod).get("initContainers") or []]
        self.apps = [ContainerRunner(self, c, False) for c in _spec(pod).get("containers") or []]
        self.initialized = not self.inits
        self.init_failed = False
        self.start_time = now_rfc3339()
        self.transitions: Dict[str, Tuple[str, str]] = {}
        self._last_refresh = time.monotonic()
        self._last_objects = time.monotonic()
        self.thread = threading.Thread(target=self.run, name="pf-pod-%s" % self.name, daemon=True)

    # -- requests from the kubelet -----------------------------------------------------------
    def grace_seconds(self) -> float:
        g = _spec(self.pod).get("terminationGracePeriodSeconds")
        return float(DEFAULT_GRACE if g is None else g)

    def update(self, pod: Obj) -> None:
        with self.lock:
            if _meta(pod).get("uid") != self.uid:
                return
            self.pod = pod
            meta = _meta(pod)
            if meta.get("deletionTimestamp"):
                grace = meta.get("deletionGracePeriodSeconds")
                self.request_termination(float(self.grace_seconds() if grace is None else grace), delete=True)

    def request_termination(self, grace: float, delete: bool = False, stopping: bool = False) -> None:
        with self.lock:
            now = time.monotonic()
            if not self.terminating:
                self.terminating = True
                self.term_started = now
                self._deadline = now + max(0.0, grace)
            else:
                self._deadline = min(self._deadline, now + max(0.0, grace))
            self.deleted = self.deleted or delete
            self.stopping = self.stopping or stopping
            self.cond.notify_all()

    def deadline(self) -> float:
        with self.lock:
            return self._deadline

    def sleep_unless_terminating(self, seconds: float) -> bool:
        """Sleep; True if termination was requested (at once or meanwhile)."""
        end = time.monotonic() + seconds
        with self.lock:
            while not self.terminating and time.monotonic() < end:
                self.cond.wait(max(0.0, end - time.monotonic()))
            return self.terminating

    def maybe_refresh(self) -> None:
        if self.pod_volumes is not None and time.monotonic() - self._last_objects > OBJECT_SYNC_SECONDS:
            self._last_objects = time.monotonic()
            try:
                self.pod_volumes.refresh_objects()
            except Exception:
                log.exception("refreshing the Secrets and ConfigMaps of %s", self.key)
        if self.pod_volumes is not None and time.monotonic() - self._last_refresh > 30:
            self._last_refresh = time.monotonic()
            try:
                self.pod_volumes.refresh_tokens()
            except Exception:
                log.exception("refreshing the tokens of %s", self.key)

    # -- events and status -----------------------------------------------------------------
    def event(self, reason: str, message: str, type: str = "Normal") -> None:
        try:
            self.kubelet.store.record_event(self.pod, reason, message, type)
        except Exception:
            log.exception("recording event %s for %s", reason, self.key)

    def _condition(self, kind: str, ok: bool) -> Obj:
        value = "True" if ok else "False"
        old = self.transitions.get(kind)
        if old is None or old[0] != value:
            self.transitions[kind] = (value, now_rfc3339())
        return {
            "type": kind,
            "status": value,
            "lastProbeTime": None,
            "lastTransitionTime": self.transitions[kind][1],
        }

    def phase(self) -> str:
        if self.init_failed:
            return "Failed"
        if not self.initialized:
            return "Pending"
        if self.apps and all(r.done and "terminated" in r.state for r in self.apps):
            codes = [r.state["terminated"].get("exitCode", 1) for r in self.apps]
            return "Succeeded" if all(c == 0 for c in codes) else "Failed"
        if any(r.instance > 0 for r in self.apps):
            return "Running"
        return "Pending"

    def status(self) -> Obj:
        with self.lock:
            containers_ready = bool(self.apps) and all(r.ready for r in self.apps)
            current = self.pod.get("status") or {}
            gates = [g.get("conditionType") for g in _spec(self.pod).get("readinessGates") or []]
            foreign = [c for c in current.get("conditions") or [] if c.get("type") not in _OWN_CONDITIONS]
            gates_ok = all(
                any(c.get("type") == g and c.get("status") == "True" for c in foreign) for g in gates
            )
            conditions = [
                self._condition("PodScheduled", True),
                self._condition("Initialized", self.initialized),
                self._condition("ContainersReady", containers_ready),
                self._condition("Ready", containers_ready and gates_ok),
            ] + foreign
            status: Obj = {
                "phase": self.phase(),
                "conditions": conditions,
                "hostIP": self.kubelet.network.host_address,
                "hostIPs": [{"ip": self.kubelet.network.host_address}],
                "startTime": self.start_time,
                "containerStatuses": [r.status() for r in self.apps],
                "qosClass": "BestEffort",
            }
            if self.pod_ip:
                status["podIP"] = self.pod_ip
                status["podIPs"] = [{"ip": self.pod_ip}]
            if self.inits:
                status["initContainerStatuses"] = [r.status() for r in self.inits]
            return status

    def publish(self) -> None:
        with self.lock:
            if self.deleted and self.kubelet.store.get("pods", self.namespace, self.name) is None:
                return
            try:
                self.kubelet.store.update_status("pods", self.namespace, self.name, self.status())
            except Exception:
                log.exception("writing the status of %s", self.key)

    # -- the pod's life --------------------------------------------------------------------
    def run(self) -> None:
        try:
            if self._setup() and self._run_inits():
                for r in self.apps:
                    r.thread = threading.Thread(target=r.run_app, name="pf-ctr-%s" % r.name, daemon=True)
                    r.thread.start()
            with self.lock:
                while not self.terminating:
                    self.cond.wait(5.0)
                    if not self.terminating:
                        self.maybe_refresh()
            for r in self.apps:
                if r.thread is not None:
                    r.thread.join()
        except Exception as e:
            log.exception("pod %s failed", self.key)
            self.event("FailedSync", "error syncing pod: %s" % e, "Warning")
        finally:
            self._teardown()

    def _setup(self) -> bool:
        k = self.kubelet
        self.dir.mkdir(parents=True, exist_ok=True)
        self.event(
            "Scheduled", "Successfully assigned %s/%s to %s" % (self.namespace, self.name, k.node_name)
        )
        spec = _spec(self.pod)
        self.attachment = k.network.attach(
            self.key, self.namespace, str(spec.get("hostname") or self.name), host_network=self.host_network
        )
        self.pod_ip = self.attachment.ip
        self.publish()
        self.pod_volumes = PodVolumes(
            k.store,
            self.pod,
            self.dir,
            k.image_map,
            k.network.ranges.netns_prefix + self.uid[:8],
            k.ca_pem,
            lambda: self.pod_ip,
            k.network.host_address,
            k.node_name,
        )
        while not self.terminating:
            try:
                self.volumes = self.pod_volumes.prepare()
                return True
            except ConfigError as e:
                self.event("FailedMount", "MountVolume.SetUp failed: %s" % e, "Warning")
                if self.sleep_unless_terminating(2.0):
                    return False
        return False

    def _run_inits(self) -> bool:
        policy = _spec(self.pod).get("restartPolicy") or "Always"
        for r in self.inits:
            while not self.terminating:
                if not r.start():
                    if self.sleep_unless_terminating(2.0):
                        return False
                    continue
                code, _ = r.wait()
                if code == 0:
                    r.done = True
                    break
                if self.terminating:
                    return False
                if policy == "Never":
                    with self.lock:
                        self.init_failed = True
                    r.done = True
                    self.publish()
                    return False
                delay = r.next_backoff()
                with self.lock:
                    r.last_state = {"terminated": r.state.get("terminated", {})}
                    r.restart_count += 1
                    message = "back-off %gs restarting failed container=%s" % (delay, r.name)
                    r.state = {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
                self.event("BackOff", "Back-off restarting failed container %s" % r.name, "Warning")
                self.publish()
                if self.sleep_unless_terminating(delay):
                    return False
            if self.terminating:
                return False
        with self.lock:
            self.initialized = True
            for r in self.apps:
                r.state = {"waiting": {"reason": "ContainerCreating"}}
        self.publish()
        return True

    def _teardown(self) -> None:
        k = self.kubelet
        for r in self.inits + self.apps:
            if r.proc is not None and r.proc.poll() is None:
                r.kill(time.monotonic(), lambda: time.monotonic())
        if self.attachment is not None and self.attachment.netns:
            for pid in processes_in_netns([self.attachment.netns]):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        if self.pod_volumes is not None:
            self.pod_volumes.remove()
        k.network.detach(self.key)
        with self.lock:
            deleted, stopping = self.deleted, self.stopping
        if deleted and not stopping:
            try:
                k.store.finalize_delete("pods", self.namespace, self.name)
            except Exception:
                log.exception("finalizing the deletion of %s", self.key)
        elif not stopping:
            self.publish()
        k.forget(self)


_OWN_CONDITIONS = ("PodScheduled", "Initialized", "ContainersReady", "Ready")


class Kubelet:
    """Runs the store's pods on this machine (see the module docstring)."""

    def __init__(
        self,
        cluster: Any,
        network: Network,
        images: Path = DEFAULT_IMAGES,
        backoff_base: float = 10.0,
        backoff_cap: float = 300.0,
        node_name: str = NODE_NAME,
        stop_grace: float = 5.0,
    ) -> None:
        self.cluster = cluster
        self.store = cluster.store
        self.network = network
        self.state_dir = Path(cluster.state_dir)
        self.pods_dir = self.state_dir / "pods"
        self.image_map = ImageMap(images, self.state_dir)
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.node_name = node_name
        self.stop_grace = stop_grace
        self.ca_pem: bytes = getattr(cluster, "ca_pem", b"") or b""
        self.api_endpoint = _host_port(getattr(cluster, "api_url_for_pods", "") or "", network.host_address)
        self._lock = threading.Lock()
        self._workers: Dict[Tuple[str, str], PodWorker] = {}
        self._unsubscribe: Optional[Callable[[], None]] = None
        self._stopped = False
        # kube-proxy runs on the node: the kubelet owns it, so the cluster starts one thing.
        self.proxy = ServiceProxy(self.store, network, self.api_endpoint)

    def start(self) -> None:
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        self.proxy.start()
        self._unsubscribe = self.store.subscribe("pods", self._on_pod)

    def stop(self) -> None:
        """Stop every pod (grace honoured, bounded by ``stop_grace``), leave them in the store."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        with self._lock:
            self._stopped = True
            workers = list(self._workers.values())
        for w in workers:
            w.request_termination(min(w.grace_seconds(), self.stop_grace), stopping=True)
        for w in workers:
            w.thread.join(timeout=self.stop_grace + 15)
        self.proxy.stop()

    def _on_pod(self, event: str, pod: Obj) -> None:
        meta = _meta(pod)
        key = (str(meta.get("namespace") or "default"), str(meta.get("name") or ""))
        with self._lock:
            if self._stopped:
                return
            worker = self._workers.get(key)
            if worker is not None and worker.uid != meta.get("uid"):
                worker.request_termination(0.0, delete=False)  # an older pod of that name
                worker = None
            if event == "DELETED":
                if worker is not None:
                    worker.request_termination(0.0, delete=True)
                return
            if worker is None:
                if meta.get("deletionTimestamp"):
                    self.store.finalize_delete("pods", key[0], key[1])
                    return
                phase = (pod.get("status") or {}).get("phase")
                if phase in ("Succeeded", "Failed"):
                    return  # finished before this kubelet started: nothing to run
                worker = PodWorker(self, pod)
                self._workers[key] = worker
                worker.thread.start()
                return
        worker.update(pod)

    def forget(self, worker: PodWorker) -> None:
        with self._lock:
            key = (worker.namespace, worker.name)
            if self._workers.get(key) is worker:
                del self._workers[key]

    def worker(self, namespace: str, name: str) -> Optional[PodWorker]:
        with self._lock:
            return self._workers.get((namespace, name))

    def exec_in(
        self, namespace: str, pod: str, container: str, argv: List[str], timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside a running container (its namespaces and environment), like kubectl exec."""
        w = self.worker(namespace, pod)
        runner = next((r for r in (w.apps + w.inits if w else []) if r.name == container), None)
        target = runner.target() if runner is not None else None
        if target is None or target.pid is None:
            raise LookupError("container %s of pod %s/%s is not running" % (container, namespace, pod))
        return subprocess.run(
            nsenter_argv(target, argv),
            env=target.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def log_path(self, namespace: str, pod: str, container: str, previous: bool = False) -> Optional[Path]:
        """The container's log file (``kubectl logs``), the previous instance's with ``previous``."""
        w = self.worker(namespace, pod)
        dirs = (
            [w.dir] if w is not None else sorted(self.pods_dir.glob("%s_%s_*" % (namespace, pod)), key=_mtime)
        )
        for d in reversed(dirs):
            path = d / ("%s.%s" % (container, "previous.log" if previous else "log"))
            if path.exists():
                return path
        return None

    def ensure_mountpoint(self, target: str, is_dir: bool) -> None:
        """Create a missing mount point on the host (recorded, removed when the cluster stops)."""
        path = Path(target)
        if os.path.lexists(path):
            return
        top = path
        while not os.path.lexists(top.parent):
            top = top.parent
        register_mountpoint(top)
        if is_dir:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()


def _fixed(t: float) -> Callable[[], float]:
    return lambda: t


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


def _host_port(url: str, default_host: str) -> Tuple[str, int]:
    if not url:
        return default_host, 443
    rest = url.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = rest.rpartition(":")
    if not host:
        return rest, 443
    return host.strip("[]"), int(port)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
