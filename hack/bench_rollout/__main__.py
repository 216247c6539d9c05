"""Rollout benchmark on the local cluster: rolling updates under open-loop load, three setups.

Per setup (namespace ``bench-<setup>``): a Flask provider under gunicorn (``--replicas``,
maxSurge 1, maxUnavailable 0, readiness probe every second), its Service, and a consumer pod
that loads the Service by name at ``--rate`` with ``requests`` (under the agent when the
namespace is labelled). From the host, the same rate goes to the Service's ClusterIP.
Nothing is retried. ``--rollouts`` times: ``kubectl rollout restart``, then wait until every
new pod is Ready and every old pod is gone, then ``--gap`` seconds of steady state.

Setups: ``none`` (namespace not labelled, no preStop), ``sleep`` (a ``sleep --sleep`` preStop,
no agent: what Alibaba MSE injects by default), ``pilotfish`` (namespace labelled
``pilotfish.io/inject=enabled``).

Usage: ``.venv/bin/python -m hack.bench_rollout --rollouts 10 --out docs/bench-rollout``
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..cluster.wait import wait_for
from . import plots
from .loadgen import OpenLoop, requests_sender
from .stats import CAUSES, Record, per_second, share, summarize

ROOT = Path(__file__).resolve().parents[2]
SETUPS = ("none", "sleep", "pilotfish")
Obj = Dict[str, Any]


def manifests(setup: str, args: argparse.Namespace) -> Obj:
    ns = "bench-" + setup
    labels = {"pilotfish.io/inject": "enabled"} if setup == "pilotfish" else {}
    container: Obj = {
        "name": "provider",
        "image": "pilotfish-bench/provider:1",
        "command": ["python3", "-m", "gunicorn", "--worker-class", "gthread", "--workers", "1"],
        "args": ["--threads", "8", "--bind", "0.0.0.0:8000", "bench_rollout.provider:app"],
        "ports": [{"name": "http", "containerPort": 8000}],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "PILOTFISH_WARMUP_SECONDS", "value": str(args.warmup_seconds)},
        ],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
    }
    if setup == "sleep":
        container["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", str(args.sleep)]}}}
    provider = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "provider", "namespace": ns},
        "spec": {
            "replicas": args.replicas,
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "selector": {"matchLabels": {"app": "provider"}},
            "template": {
                "metadata": {"labels": {"app": "provider"}},
                "spec": {"terminationGracePeriodSeconds": args.grace, "containers": [container]},
            },
        },
    }
    consumer = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "consumer", "namespace": ns},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "consumer"}},
            "template": {
                "metadata": {"labels": {"app": "consumer"}},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [
                        {
                            "name": "consumer",
                            "image": "pilotfish-bench/consumer:1",
                            "command": ["python3", "-m", "bench_rollout.consumer"],
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "env": [
                                {"name": "TARGET_URL", "value": "http://provider/"},
                                {"name": "RATE", "value": str(args.rate)},
                                {"name": "TIMEOUT", "value": str(args.timeout)},
                            ],
                            "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1},
                        }
                    ],
                },
            },
        },
    }
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}},
            provider,
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "provider", "namespace": ns},
                "spec": {
                    "selector": {"app": "provider"},
                    "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
                },
            },
            consumer,
        ],
    }


class Bench:
    def __init__(self, cluster: Any, args: argparse.Namespace) -> None:
        self.cluster, self.store, self.args = cluster, cluster.store, args

    def kubectl(self, *argv: str, input: Optional[str] = None) -> str:
        done = subprocess.run(
            ["kubectl", "--kubeconfig", str(self.cluster.kubeconfig), *argv],
            capture_output=True,
            text=True,
            input=input,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError("kubectl %s: %s%s" % (" ".join(argv), done.stdout, done.stderr))
        return done.stdout

    def pods(self, ns: str, app: str) -> List[Obj]:
        return [
            p for p in self.store.list("pods", ns) if (p["metadata"].get("labels") or {}).get("app") == app
        ]

    @staticmethod
    def ready(pod: Obj) -> bool:
        if pod["metadata"].get("deletionTimestamp"):
            return False
        conditions = (pod.get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    def rollout(self, ns: str) -> Dict[str, Any]:
        """One ``rollout restart``; times (wall clock) of start, each new pod Ready, all old pods gone."""
        old = {p["metadata"]["name"] for p in self.pods(ns, "provider")}
        start = time.time()
        self.kubectl("-n", ns, "rollout", "restart", "deployment/provider")
        ready_at: Dict[str, float] = {}
        all_ready = 0.0

        def finished() -> Optional[Dict[str, Any]]:
            nonlocal all_ready
            now = time.time()
            current = self.pods(ns, "provider")
            for pod in current:
                name = pod["metadata"]["name"]
                if name not in old and name not in ready_at and self.ready(pod):
                    ready_at[name] = now
            if not all_ready and len(ready_at) >= self.args.replicas:
                all_ready = now
            if all_ready and not old & {p["metadata"]["name"] for p in current}:
                return {"start": start, "all_ready": all_ready, "done": now, "new_ready": ready_at}
            return None

        return wait_for(finished, 600, "the rollout in %s to finish" % ns)

    def consumer_records(self, ns: str) -> List[Record]:
        pod = [p for p in self.pods(ns, "consumer") if self.ready(p)][0]
        url = "http://%s:8080/records?since=0" % pod["status"]["podIP"]
        with urllib.request.urlopen(url, timeout=30) as answer:
            return [Record.from_json(r) for r in json.loads(answer.read())["records"]]

    def run_setup(self, setup: str) -> Dict[str, Any]:
        args, ns = self.args, "bench-" + setup
        print("== %s: deploying" % setup, flush=True)
        for item in manifests(setup, args)["items"]:
            self.kubectl("apply", "-f", "-", input=json.dumps(item))
        for name in ("provider", "consumer"):
            self.kubectl("-n", ns, "rollout", "status", "deployment/" + name, "--timeout=300s")
        service = wait_for(lambda: self.store.get("services", ns, "provider"), 180, "the Service")
        url = "http://%s/" % service["spec"]["clusterIP"]
        wait_for(lambda: _answers(url), 60, "the Service from the host")
        wait_for(
            lambda: any(r.outcome == "ok" for r in self.consumer_records(ns)),
            60,
            "the consumer's first answers",
        )
        outside = OpenLoop(requests_sender(url, args.timeout), rate=args.rate, workers=args.workers)
        outside.start()
        time.sleep(1.0)  # the load's own start-up is not part of the measurement
        t0 = time.time()
        time.sleep(args.steady)
        rollouts = []
        for index in range(args.rollouts):
            result = self.rollout(ns)
            rollouts.append(result)
            print(
                "   rollout %d/%d: all new Ready %.1f s, old gone %.1f s"
                % (
                    index + 1,
                    args.rollouts,
                    result["all_ready"] - result["start"],
                    result["done"] - result["start"],
                ),
                flush=True,
            )
            time.sleep(args.gap)
        scale_up: Dict[str, Any] = {}
        if args.scale_up:
            # One more replica while the others are warm: its share of the consumer's calls over
            # 1.2 x the warm-up time (the warm-up curve, where only one pod is warming).
            before = {p["metadata"]["name"] for p in self.pods(ns, "provider")}
            scale_up["start"] = time.time()
            self.kubectl("-n", ns, "scale", "deployment/provider", "--replicas=%d" % (args.replicas + 1))
            pod = wait_for(
                lambda: next(
                    (
                        p
                        for p in self.pods(ns, "provider")
                        if p["metadata"]["name"] not in before and self.ready(p)
                    ),
                    None,
                ),
                120,
                "the extra pod Ready",
            )
            scale_up.update(pod=pod["metadata"]["name"], ready=time.time())
            time.sleep(args.warmup_seconds * 1.2)
            scale_up["end"] = time.time()
            print(
                "   scale-up: %s Ready, watched %.0f s"
                % (scale_up["pod"], scale_up["end"] - scale_up["ready"])
            )
        time.sleep(max(0.0, args.steady - args.gap))
        t1 = time.time()
        outside.stop()
        time.sleep(args.timeout + 0.5)  # answers to the last requests (or their timeouts)
        sources = {
            "outside": [r for r in outside.snapshot() if t0 <= r.scheduled < t1],
            "consumer": [r for r in self.consumer_records(ns) if t0 <= r.scheduled < t1],
        }
        print("== %s: removing" % setup, flush=True)
        self.kubectl("delete", "namespace", ns, "--wait=false")
        wait_for(lambda: self.store.get("namespaces", None, ns) is None, 300, "namespace %s gone" % ns)
        return {"t0": t0, "t1": t1, "rollouts": rollouts, "sources": sources, "scale_up": scale_up}


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def analyse(setup: str, raw: Dict[str, Any], args: argparse.Namespace, out: Path) -> Dict[str, Any]:
    t0, t1 = raw["t0"], raw["t1"]
    windows = [(r["start"], r["done"]) for r in raw["rollouts"]]
    result: Dict[str, Any] = {"setup": setup, "sources": {}}
    for source, records in raw["sources"].items():
        result["sources"][source] = summarize(records, windows)
        examples = sorted({r.detail for r in records if r.outcome != "ok"})[:5]
        result["sources"][source]["examples"] = examples
    result["rollout_all_ready_s"] = [r["all_ready"] - r["start"] for r in raw["rollouts"]]
    result["rollout_done_s"] = [r["done"] - r["start"] for r in raw["rollouts"]]
    colors = {"outside": plots.BLUE, "consumer": plots.GREEN}
    series = [
        (
            "%s answers/s" % source,
            colors[source],
            per_second(records, t0, t0 + int(t1 - t0)),
        )  # whole seconds only
        for source, records in raw["sources"].items()
    ]
    rel = [(a - t0, b - t0) for a, b in windows]
    png = plots.timeline("%s: answers/s per source, failed in red" % setup, series, rel, t1 - t0)
    result["timeline_png"] = str(plots.write(out / ("timeline-%s.png" % setup), png))
    # The new pod's share of the consumer's answers from its Ready time: the scale-up pod (with
    # ``replicas`` warm pods) when measured, else each rollout's first new pod until the next is Ready.
    points: List[Tuple[float, float, int]] = []
    warm = args.replicas - 1
    scaled = raw.get("scale_up") or {}
    if scaled:
        warm = args.replicas
        for mid, value, count in share(
            raw["sources"]["consumer"], scaled["pod"], scaled["ready"], scaled["end"], args.share_step
        ):
            points.append((mid / args.warmup_seconds, value, count))
    else:
        for r in raw["rollouts"]:
            order = sorted(r["new_ready"].items(), key=lambda item: item[1])
            if len(order) < 2:
                continue
            (first, ready), (_, next_ready) = order[0], order[1]
            for mid, value, count in share(
                raw["sources"]["consumer"], first, ready, next_ready, args.share_step
            ):
                points.append((mid / args.warmup_seconds, value, count))
    result["share_points"] = points
    result["share_warm_pods"] = warm
    if points:
        top = max(p[0] for p in points) * 1.05
        chart = plots.share_chart(
            points, warm, args.warmup_curve, args.warmup_floor / 100.0, top, title=setup
        )
        result["share_png"] = str(plots.write(out / ("share-%s.png" % setup), chart))
    return result


def fmt(v: Optional[float]) -> str:
    return "-" if v is None else "%.1f" % v


def table(results: List[Dict[str, Any]]) -> str:
    lines = [
        "| setup | source | requests | failed | "
        + " | ".join(CAUSES)
        + " | p50 / p99 steady (ms) | p50 / p99 rollout (ms) |",
        "|---|---|---:|---:|" + "---:|" * len(CAUSES) + "---:|---:|",
    ]
    for result in results:
        for source, s in result["sources"].items():
            lat = s["latency_ms"]
            lines.append(
                "| %s | %s | %d | %d | %s | %s / %s | %s / %s |"
                % (
                    result["setup"],
                    source,
                    s["total"],
                    s["failed"],
                    " | ".join(str(s["causes"][c]) for c in CAUSES),
                    fmt(lat["steady"]["p50"]),
                    fmt(lat["steady"]["p99"]),
                    fmt(lat["rollout"]["p50"]),
                    fmt(lat["rollout"]["p99"]),
                )
            )
    lines += [
        "",
        "| setup | rollouts | all new pods Ready (s): mean / max | old pods gone (s): mean / max |",
        "|---|---:|---:|---:|",
    ]
    for result in results:
        ready, done = result["rollout_all_ready_s"], result["rollout_done_s"]
        if ready:
            lines.append(
                "| %s | %d | %.1f / %.1f | %.1f / %.1f |"
                % (
                    result["setup"],
                    len(ready),
                    statistics.mean(ready),
                    max(ready),
                    statistics.mean(done),
                    max(done),
                )
            )
    return "\n".join(lines)


def parse(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hack.bench_rollout", description=__doc__.split("\n")[0])
    p.add_argument("--setups", default=",".join(SETUPS), help="comma-separated, in this order (%(default)s)")
    p.add_argument("--rollouts", type=int, default=3, help="rolling updates per setup (%(default)s)")
    p.add_argument(
        "--rate", type=float, default=20.0, help="requests/s from outside and from the consumer (%(default)s)"
    )
    p.add_argument("--replicas", type=int, default=3, help="provider replicas (%(default)s)")
    p.add_argument("--sleep", type=int, default=30, help="the sleep setup's preStop seconds (%(default)s)")
    p.add_argument("--grace", type=int, default=40, help="terminationGracePeriodSeconds (%(default)s)")
    p.add_argument(
        "--propagation-delay",
        type=float,
        default=1.0,
        help="endpoint changes reach Service routing after this (%(default)s s)",
    )
    p.add_argument("--timeout", type=float, default=5.0, help="per-request timeout (%(default)s s)")
    p.add_argument("--workers", type=int, default=8, help="sender threads from outside (%(default)s)")
    p.add_argument(
        "--steady",
        type=float,
        default=10.0,
        help="steady seconds before the first rollout and after the last",
    )
    p.add_argument("--gap", type=float, default=5.0, help="steady seconds between rollouts (%(default)s)")
    p.add_argument(
        "--warmup-seconds", type=float, default=10.0, help="the provider's PILOTFISH_WARMUP_SECONDS"
    )
    p.add_argument(
        "--warmup-curve", type=float, default=2.0, help="the agent's default curve (for the chart)"
    )
    p.add_argument(
        "--warmup-floor", type=float, default=10.0, help="the agent's default min weight %% (for the chart)"
    )
    p.add_argument("--share-step", type=float, default=0.5, help="bin of the new pod's share (s)")
    p.add_argument("--out", type=Path, default=ROOT / "build" / "bench-rollout", help="PNGs and results.json")
    p.add_argument(
        "--no-scale-up",
        dest="scale_up",
        action="store_false",
        help="skip the last step (one extra replica watched for 1.2 x the warm-up: its share of calls)",
    )
    p.add_argument(
        "--reanalyse", action="store_true", help="no cluster: table and PNGs from --out's raw files"
    )
    return p.parse_args(argv)


def save_raw(path: Path, raw: Dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = dict(raw, sources={k: [r.to_json() for r in v] for k, v in raw["sources"].items()})
    path.write_text(json.dumps(data))


def load_raw(path: Path) -> Dict[str, Any]:
    data: Dict[str, Any] = json.loads(path.read_text())
    data["sources"] = {k: [Record.from_json(r) for r in v] for k, v in data["sources"].items()}
    return data


def main(argv: Optional[List[str]] = None) -> int:
    args = parse(argv)
    if args.reanalyse:  # the table and plots again from a run's raw-<setup>.json files
        results = [
            analyse(s, load_raw(args.out / ("raw-%s.json" % s)), args, args.out)
            for s in args.setups.split(",")
        ]
        print(table(results))
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    from ..cluster.cluster import Cluster
    from ..cluster.network import missing_requirements

    missing = missing_requirements()
    if missing:
        print("the local cluster's node cannot run here: " + "; ".join(missing), file=sys.stderr)
        return 2
    started = time.monotonic()
    cluster = Cluster(
        ROOT / "build" / "bench-rollout-cluster", node=True, propagation_delay=args.propagation_delay
    )
    cluster.start()
    results = []
    try:
        bench = Bench(cluster, args)
        bench.kubectl("apply", "-k", str(ROOT / "deploy" / "base"))
        bench.kubectl("-n", "pilotfish-system", "rollout", "status", "deployment/pilotfish", "--timeout=300s")
        for setup in args.setups.split(","):
            raw = bench.run_setup(setup)
            save_raw(args.out / ("raw-%s.json" % setup), raw)
            results.append(analyse(setup, raw, args, args.out))
    finally:
        cluster.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) for k, v in vars(args).items()}
    (args.out / "results.json").write_text(json.dumps({"args": settings, "results": results}, indent=1))
    print()
    print(table(results))
    print("\n%.0f s in all; PNGs and results.json in %s" % (time.monotonic() - started, args.out))
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
