#!/usr/bin/env python3
"""``make demo`` (``python -m hack.demo``): the user's story on the local cluster, step by step, with kubectl.

Starts the local cluster (hack/cluster), installs pilotfish with ``kubectl apply -k deploy/base``,
deploys the sample shop (hack/demo/shop.yaml: frontend -> checkout -> inventory, with a gray
inventory), then, under constant load from this machine to frontend's Service address:

1. labels the namespace and restarts the shop: every pod comes back with the agent; failed
   requests are counted;
2. gray release: testers' requests (``x-user-group: testers``) reach inventory-gray, others never;
   a table of requests per lane per pod from each pod's agent ``/status``;
3. warm-up: inventory scaled up by one; the new pod's share of requests over time beside the
   configured curve (a PNG);
4. toggles: ``kubectl set env`` on checkout (a rollout) and a GovernancePolicy changed live.

Then a summary, and the cluster stays up (``export KUBECONFIG=...``) until Ctrl-C or ``--seconds``.
Every number comes from real requests and the agents' ``/status``.
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

import requests

from .cluster import wait
from .routing_warmup_curve import draw, expected_share

ROOT = Path(__file__).resolve().parent.parent

STATE = ROOT / "build" / "demo"
SHOP = ROOT / "hack" / "demo" / "shop.yaml"
STATUS_PORT = 55199
DEPLOYMENTS = ["frontend", "checkout", "inventory", "inventory-gray"]
TESTERS = {"x-user-group": "testers"}
CURVE, MIN_PERCENT = 2.0, 10.0  # as in shop.yaml's inventory-warmup policy

Obj = Dict[str, Any]
T = TypeVar("T")


def say(text: str = "") -> None:
    print(text, flush=True)


class Demo:
    def __init__(self, kubeconfig: Path, warmup_seconds: float) -> None:
        self.kubeconfig = kubeconfig
        self.warmup_seconds = warmup_seconds
        self.load: Optional[Load] = None
        self.results: List[Tuple[str, int, int]] = []  # (step, requests, failed)
        self.shares: List[Tuple[float, float, float, int]] = []
        self.lane_table: Dict[str, Dict[str, int]] = {}
        self.plot: Optional[Path] = None
        self.restarted_at = 0.0

    # -- kubectl, shown as the user would type it --------------------------------------------
    def kubectl(self, *args: str, show: bool = True, input: Optional[str] = None, echo: bool = False) -> str:
        if show:
            say("$ kubectl " + " ".join(_quote(a) for a in args))
        done = subprocess.run(
            [KUBECTL, "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=300,
            cwd=str(ROOT),
        )
        if done.returncode != 0:
            raise RuntimeError("kubectl %s failed: %s%s" % (" ".join(args), done.stdout, done.stderr))
        if show and echo:
            for line in (done.stdout + done.stderr).strip().splitlines():
                say("  " + line)
        return done.stdout

    def pods(self, selector: str) -> List[Obj]:
        out = self.kubectl("-n", "shop", "get", "pods", "-l", selector, "-o", "json", show=False)
        return [p for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")]

    def all_pods(self) -> List[Obj]:
        out = self.kubectl("-n", "shop", "get", "pods", "-o", "json", show=False)
        pods: List[Obj] = json.loads(out)["items"]
        return pods

    def settled(self, total: int) -> bool:
        """Exactly ``total`` pods in shop, none terminating, all ready."""
        items = self.all_pods()
        return len(items) == total and all(
            not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
            for p in items
        )

    def rollout_status(self, *deployments: str) -> None:
        for name in deployments:
            self.kubectl("-n", "shop", "rollout", "status", "deployment/" + name, "--timeout=180s", echo=True)

    # -- set-up -------------------------------------------------------------------------------
    def install(self) -> None:
        say("\n== pilotfish on the cluster, and the shop (not injected yet)")
        self.kubectl("apply", "-k", "deploy/base", echo=True)
        self.kubectl("-n", "pilotfish-system", "rollout", "status", "deployment/pilotfish", "--timeout=180s")
        manifest = SHOP.read_text()
        manifest = manifest.replace("seconds: 60,", "seconds: %g," % self.warmup_seconds)
        say("$ kubectl apply -f hack/demo/shop.yaml   # warm-up T = %g s" % self.warmup_seconds)
        for line in self.kubectl("apply", "-f", "-", input=manifest, show=False).strip().splitlines():
            say("  " + line)
        self.rollout_status(*DEPLOYMENTS)
        # Injected pods read the config service's CA from ConfigMap pilotfish-ca, which pilotfish
        # publishes into new namespaces within a few seconds; pods created before it exists start
        # without it (the volume is optional) and cannot reach the config service until it shows up.
        say("$ kubectl -n shop get configmap pilotfish-ca   # wait until pilotfish has published its CA")
        wait_for(lambda: self._has_ca(), 60, "ConfigMap pilotfish-ca in shop")
        ip = self.kubectl("-n", "shop", "get", "service", "frontend", "-o", "jsonpath={.spec.clusterIP}")
        say("  frontend's Service address: %s (requests below go there from this machine)" % ip)
        self.load = Load("http://%s/" % ip)
        self.load.start()
        wait_for(lambda: self.load is not None and self.load.total("setup")[0] >= 10, 60, "first answers")

    def _has_ca(self) -> bool:
        done = subprocess.run(
            [KUBECTL, "--kubeconfig", str(self.kubeconfig), "-n", "shop", "get", "configmap", "pilotfish-ca"],
            capture_output=True,
        )
        return done.returncode == 0

    # -- steps --------------------------------------------------------------------------------
    def step1(self) -> None:
        say("\n== 1. inject the agent: label the namespace, restart under load")
        assert self.load is not None
        self.load.step = "1. label + rollout restart"
        before = {p["metadata"]["name"] for p in self.all_pods()}
        self.kubectl("label", "namespace", "shop", "pilotfish.io/inject=enabled", echo=True)
        self.kubectl("-n", "shop", "rollout", "restart", "deployment", echo=True)
        self.rollout_status(*DEPLOYMENTS)
        wait_for(
            lambda: (
                self.settled(len(before)) and not before & {p["metadata"]["name"] for p in self.all_pods()}
            ),
            180,
            "the old pods to finish draining",
        )
        injected = [
            p for p in self.all_pods() if "pilotfish.io/status" in p["metadata"].get("annotations", {})
        ]
        say("  %d/%d pods injected; every agent ready:" % (len(injected), len(before)))
        for pod in injected:
            status = wait_for(functools.partial(_ready_status, pod), 60, "agent ready")
            say(
                "    %-34s %-15s agent %s, tag %s"
                % (pod["metadata"]["name"], pod["status"]["podIP"], status["state"], status.get("tag") or "-")
            )
        self.restarted_at = time.time()
        self.record(self.load.step)

    def step2(self) -> None:
        say("\n== 2. gray release: x-user-group: testers -> inventory-gray, everyone else -> baseline")
        assert self.load is not None
        self.load.step = "2. gray release"
        inventory = self.pods("app=inventory")
        before = {p["metadata"]["name"]: _status(p)["requests_by_tag"] for p in inventory}
        start = self.load.mark()
        wait_for(
            lambda: self.load is not None and self.load.lanes_since(start, 30), 120, "30 requests per lane"
        )
        served = self.load.served_since(start)
        after = {p["metadata"]["name"]: _status(p)["requests_by_tag"] for p in inventory}
        lanes = ["baseline", "gray"]
        say("  inventory pods, requests per lane (their agents' /status requests_by_tag, this step):")
        say("    %-36s %-6s %9s %9s" % ("pod", "tag", "baseline", "gray"))
        for pod in inventory:
            name = pod["metadata"]["name"]
            tag = pod["metadata"]["labels"].get("pilotfish.io/tag", "-")
            delta = {lane: after[name].get(lane, 0) - before[name].get(lane, 0) for lane in lanes}
            self.lane_table[name] = delta
            say("    %-36s %-6s %9d %9d" % (name, tag, delta["baseline"], delta["gray"]))
        say("  seen by the client (last pod of each answer's chain):")
        for lane in lanes:
            counts = served.get(lane, {})
            say("    %-8s %s" % (lane, ", ".join("%s: %d" % kv for kv in sorted(counts.items())) or "none"))
        self.record(self.load.step)

    def step3(self) -> None:
        say("\n== 3. warm-up: a new inventory pod gets a growing share of requests")
        assert self.load is not None
        T = self.warmup_seconds
        wait = self.restarted_at + T - time.time()
        if wait > 0:
            say("  (waiting %.0f s until the pods restarted in step 1 are warm themselves)" % wait)
            time.sleep(wait)
        self.load.step = "3. scale up (warm-up)"
        old = {p["metadata"]["name"] for p in self.pods("app=inventory,track=stable")}
        self.kubectl(
            "-n", "shop", "scale", "deployment/inventory", "--replicas=%d" % (len(old) + 1), echo=True
        )
        new = wait_for(
            lambda: [
                p
                for p in self.pods("app=inventory,track=stable")
                if p["metadata"]["name"] not in old
                and "pilotfish.io/registration" in p["metadata"].get("annotations", {})
            ],
            120,
            "the new pod to register",
        )[0]
        name = new["metadata"]["name"]
        t0 = float(json.loads(new["metadata"]["annotations"]["pilotfish.io/registration"])["registeredAt"])
        warm = len(old)
        say(
            "  new pod %s registered; T = %g s, w = max(%g%%, (t/T)^%g), share = w/(%d+w)"
            % (name, T, MIN_PERCENT, CURVE, warm)
        )
        say("    t/T   expected  measured  requests")
        rows: List[Tuple[float, float, float, int]] = []
        for tenth in range(10):
            lo, hi = t0 + T * tenth / 10, t0 + T * (tenth + 1) / 10
            wait_for(functools.partial(_reached, hi), T + 60, "the tenth to pass")
            picks = [
                chain
                for at, lane, ok, chain in self.load.records
                if lo <= at < hi and ok and lane == "baseline"
            ]
            hits = sum(1 for chain in picks if chain[-1] == name)
            middle = (tenth + 0.5) / 10
            expected = expected_share(middle, warm, CURVE, MIN_PERCENT / 100)
            measured = hits / len(picks) if picks else 0.0
            rows.append((middle, expected, measured, len(picks)))
            say("    %.2f  %6.1f%%   %6.1f%%   %6d" % (middle, expected * 100, measured * 100, len(picks)))
        self.shares = rows
        self.plot = STATE / "warmup.png"
        self.plot.write_bytes(draw(rows, warm, CURVE, MIN_PERCENT, T))
        say("  wrote %s" % self.plot.relative_to(ROOT))
        self.record(self.load.step)

    def step4(self) -> None:
        say("\n== 4. toggles: an env change rolls out; a policy change applies live")
        assert self.load is not None
        self.load.step = "4a. set env (rollout)"
        self.kubectl(
            "-n", "shop", "set", "env", "deployment/checkout", "PILOTFISH_WARMUP_ENABLED=false", echo=True
        )
        self.rollout_status("checkout")
        total = sum(
            int(d["spec"]["replicas"])
            for d in json.loads(self.kubectl("-n", "shop", "get", "deployments", "-o", "json", show=False))[
                "items"
            ]
        )
        wait_for(lambda: self.settled(total), 180, "the old checkout pods to finish draining")
        for pod in self.pods("app=checkout"):
            status = wait_for(functools.partial(_ready_status, pod), 60, "agent ready")
            say(
                "  %s /status: config.warmup_enabled = %s"
                % (pod["metadata"]["name"], status["config"]["warmup_enabled"])
            )
        self.record(self.load.step)
        self.load.step = "4b. policy change (live)"
        pod = self.pods("app=inventory")[0]
        names = {p["metadata"]["name"] for p in self.all_pods()}
        before = _status(pod)
        new_seconds = self.warmup_seconds * 2
        patch = json.dumps({"spec": {"lossless": {"warmup": {"seconds": new_seconds}}}})
        self.kubectl(
            "-n",
            "shop",
            "patch",
            "governancepolicy",
            "inventory-warmup",
            "--type=merge",
            "-p",
            patch,
            echo=True,
        )
        after = wait_for(
            lambda: (lambda s: s if s["config"]["warmup_seconds"] == new_seconds else None)(_status(pod)),
            30,
            "the policy to reach the agent",
        )
        say(
            "  %s /status: warmup_seconds %g -> %g, config_version %s -> %s, no pod restarted: %s"
            % (
                pod["metadata"]["name"],
                before["config"]["warmup_seconds"],
                after["config"]["warmup_seconds"],
                before["config_version"],
                after["config_version"],
                names == {p["metadata"]["name"] for p in self.all_pods()},
            )
        )
        self.record(self.load.step)

    def record(self, step: str) -> None:
        assert self.load is not None
        sent, failed = self.load.total(step)
        self.results.append((step, sent, failed))
        say("  -> %d requests during this step, %d failed" % (sent, failed))
        for error, count in self.load.errors(step).items():
            say("     %d x %s" % (count, error))

    def summary(self) -> None:
        say("\n== summary")
        say("  %-30s %9s %7s" % ("step", "requests", "failed"))
        for step, sent, failed in self.results:
            say("  %-30s %9d %7d" % (step, sent, failed))
        if self.lane_table:
            say("  gray release, inventory requests per lane (from /status):")
            for pod, lanes in self.lane_table.items():
                say("    %-36s baseline %5d  gray %5d" % (pod, lanes["baseline"], lanes["gray"]))
        if self.shares:
            worst = max(abs(m - e) for _, e, m, _ in self.shares)
            say("  warm-up: largest gap between measured and configured share %.1f points" % (worst * 100))
        if self.plot is not None:
            say("  plot: %s" % self.plot.relative_to(ROOT))


class Load(threading.Thread):
    """Requests to frontend's Service from this machine, one in four as a tester, a new connection each."""

    def __init__(self, url: str) -> None:
        super().__init__(name="demo-load", daemon=True)
        self.url = url
        self.step = "setup"
        self.records: List[Tuple[float, str, bool, List[str]]] = []  # (time, lane, ok, chain or [error])
        self.steps: List[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            n += 1
            lane = "gray" if n % 4 == 0 else "baseline"
            step = self.step
            try:
                answer = requests.get(self.url, headers=TESTERS if lane == "gray" else {}, timeout=10)
                ok = answer.status_code == 200
                chain = answer.json()["chain"] if ok else ["HTTP %d" % answer.status_code]
            except Exception as exc:
                ok, chain = False, [type(exc).__name__]
            self.records.append((time.time(), lane, ok, chain))
            self.steps.append(step)
            time.sleep(0.01)

    def mark(self) -> int:
        return len(self.records)

    def total(self, step: str) -> Tuple[int, int]:
        picked = [r for r, s in zip(self.records, self.steps) if s == step]
        return len(picked), sum(1 for r in picked if not r[2])

    def errors(self, step: str) -> Dict[str, int]:
        out: Dict[str, int] = {}
        for r, s in zip(self.records, self.steps):
            if s == step and not r[2]:
                out[r[3][0]] = out.get(r[3][0], 0) + 1
        return out

    def lanes_since(self, start: int, each: int) -> bool:
        lanes = [r[1] for r in self.records[start:] if r[2]]
        return lanes.count("gray") >= each and lanes.count("baseline") >= each

    def served_since(self, start: int) -> Dict[str, Dict[str, int]]:
        out: Dict[str, Dict[str, int]] = {}
        for _at, lane, ok, chain in self.records[start:]:
            if ok:
                out.setdefault(lane, {})
                out[lane][chain[-1]] = out[lane].get(chain[-1], 0) + 1
        return out


def _status(pod: Obj) -> Obj:
    url = "http://%s:%d/status" % (pod["status"]["podIP"], STATUS_PORT)
    with urllib.request.urlopen(url, timeout=5) as answer:
        document: Obj = json.loads(answer.read())
    return document


def _ready_status(pod: Obj) -> Optional[Obj]:
    try:
        status = _status(pod)
    except OSError:
        return None
    return status if status.get("ready") else None


def _reached(at: float) -> bool:
    return time.time() >= at


def _quote(arg: str) -> str:
    return "'%s'" % arg if any(c in arg for c in ' {}"*') else arg


def wait_for(check: Callable[[], Optional[T]], timeout: float, what: str) -> T:
    """:func:`hack.cluster.wait.wait_for` at the demo's pace (its checks run kubectl)."""
    return wait.wait_for(check, timeout, what, interval=0.2)


KUBECTL = shutil.which("kubectl") or "kubectl"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hack.demo", description="pilotfish demo on the local cluster"
    )
    parser.add_argument(
        "--seconds", type=float, default=0, help="after the story, stop after N s (0 = Ctrl-C)"
    )
    parser.add_argument(
        "--step", type=int, choices=[1, 2, 3, 4], help="run this step only (after step 1 if needed)"
    )
    parser.add_argument("--warmup-seconds", type=float, default=60.0, help="warm-up duration T (default 60)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    from .cluster.network import missing_requirements

    missing = missing_requirements()
    if shutil.which("kubectl") is None:
        missing.append("kubectl is not installed")
    if missing:
        say("demo: the local cluster cannot run here: " + "; ".join(missing))
        say("demo: `make cluster-deps` installs what it can (needs root)")
        return 2
    from .cluster.cluster import Cluster

    STATE.mkdir(parents=True, exist_ok=True)
    lock = open(STATE / "demo.lock", "w")  # noqa: SIM115 (held, with its lock, until the process exits)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        say("demo: another `make demo` of this checkout is running (it holds %s)" % (STATE / "demo.lock"))
        return 2
    started = time.monotonic()
    # Not under /tmp: deploy/base mounts an emptyDir at /tmp in its pods.
    cluster = Cluster(STATE / "cluster", node=True)
    demo: Optional[Demo] = None
    try:
        cluster.start()
        say(
            "local cluster up in %.1f s (instance %d, API server %s)"
            % (time.monotonic() - started, cluster.network.ranges.instance, cluster.server_url)
        )
        demo = Demo(cluster.kubeconfig, args.warmup_seconds)
        demo.install()
        steps: List[Callable[[], None]] = [demo.step1, demo.step2, demo.step3, demo.step4]
        if args.step is None:
            chosen = steps
        elif args.step == 1:
            chosen = [demo.step1]
        else:
            say("(step %d needs the injected shop of step 1: running step 1 first)" % args.step)
            chosen = [demo.step1, steps[args.step - 1]]
        for step in chosen:
            step()
        if demo.load is not None:
            demo.load.stopping.set()
            demo.load.join(15)
        demo.summary()
        say("\nThe cluster keeps running; in another shell:")
        say("export KUBECONFIG=%s" % cluster.kubeconfig.resolve())
        say("kubectl -n shop get pods -o wide" + ("" if args.seconds else "      (Ctrl-C stops everything)"))
        if args.seconds:
            time.sleep(args.seconds)
        else:
            threading.Event().wait()
        return 0
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:
        say("demo: %s" % exc)
        return 1
    finally:
        if demo is not None and demo.load is not None:
            demo.load.stopping.set()
        say("stopping the local cluster...")
        cluster.stop()
        say("stopped")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
