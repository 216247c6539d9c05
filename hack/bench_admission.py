#!/usr/bin/env python3
"""Admission throughput and latency through the real HTTPS server, pinned to one core.

Starts ``pilotfish-webhook serve`` as a subprocess pinned to CPU 0 (``os.sched_setaffinity``
in the child, like ``taskset -c 0``), with its generated CA; load comes from separate client
processes pinned to the other CPUs, over keep-alive TLS connections (what kube-apiserver
does). Three measurements per run, side by side:

- throughput: closed loop, ``--connections`` clients each sending back to back, plus the
  server's own CPU time (``/proc/PID/stat``), giving reviews per CPU-second: the capacity
  of one core whatever else shares it;
- latency at a fixed offered rate (``--rate``, default 500/s, the budget), open loop with
  latency measured from each request's *scheduled* send time, so a stalled server is not
  hidden by the client waiting for it (no coordinated omission); also from the actual send;
- the same paced load with reviews of a non-Pod kind: identical path, size, TLS and HTTP
  stack, no mutation. Its latency is the floor the machine and stack impose; the ratio
  shows what the mutation itself adds.

The request bodies are AdmissionReviews of real pod templates (the Istio corpus when
present, else built-in samples), sent round-robin. Each run is repeated ``--runs`` times;
the report gives medians with min-max spread.

Usage: ``.venv/bin/python -m hack.bench_admission [--runs 5] [--seconds 5] [--rate 500]``
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Tuple

from .cluster.wait import wait_for

ROOT = Path(__file__).resolve().parent.parent
# The tests' helpers, imported as the tests import them (tests/ is on pytest's pythonpath and mypy's
# mypy_path): `support.<module>`, never a second copy as `tests.support.<module>`.
sys.path.insert(0, str(ROOT / "tests"))

BUDGET_RPS = 500.0
BUDGET_P99_MS = 10.0


def review_bodies() -> List[bytes]:
    from support.pods import admission_review, corpus_pods

    pods = [pod for _, pod in corpus_pods() if not pod["spec"].get("hostNetwork")]
    if not pods:
        pods = [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "generateName": "shop-7d4b9c8f6-",
                    "namespace": "shop",
                    "labels": {"app": "shop"},
                },
                "spec": {
                    "containers": [
                        {
                            "name": "shop",
                            "image": "shop:1",
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                        }
                    ]
                },
            }
        ]
    return [json.dumps(admission_review(pod, uid=str(uuid.uuid4()))).encode() for pod in pods]


def baseline_bodies(bodies: List[bytes]) -> List[bytes]:
    """The same reviews, but for a kind the webhook does not mutate (the stack's floor)."""
    out = []
    for body in bodies:
        doc = json.loads(body)
        doc["request"]["kind"] = {"group": "example.com", "version": "v1", "kind": "NotAPod"}
        doc["request"]["resource"] = {"group": "example.com", "version": "v1", "resource": "notapods"}
        out.append(json.dumps(doc).encode())
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(certs: Path, cpu: int, nice: int = 0) -> Tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    exe = Path(sys.executable).parent / "pilotfish-webhook"

    def pin() -> None:
        if cpu >= 0:
            os.sched_setaffinity(0, {cpu})
        if nice:
            os.nice(nice)

    proc = subprocess.Popen(
        [str(exe), "serve", "--listen", "127.0.0.1:%d" % port, "--certs-dir", str(certs)],
        preexec_fn=pin,
        stdout=subprocess.DEVNULL,
    )

    def healthy() -> bool:
        if not (certs / "ca.crt").exists():
            return False
        context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=2)
        conn.request("GET", "/healthz")
        if conn.getresponse().status != 200:
            return False
        conn.close()
        return True

    try:
        wait_for(healthy, 30, "the server's /healthz on port %d" % port, interval=0.1, retry=(OSError,))
    except RuntimeError as problem:
        proc.kill()
        raise SystemExit(str(problem))
    return proc, port


def _client(
    args: Tuple[int, str, List[bytes], float, float, int, int, Any],
) -> Tuple[List[float], List[float]]:
    """One connection. rate == 0: closed loop; else open loop at ``rate`` starting at ``t0``.

    The baseline bodies are the same reviews for a non-Pod kind: same path, size, TLS, HTTP
    stack and JSON parsing, but no mutation (the server answers "allowed" at once).
    Returns latencies from the scheduled send time (what a caller waits) and from the actual
    send (leaving out the time the client itself was late: on a shared machine the client
    processes are starved too, and their lateness is not the server's).
    """
    port, cafile, bodies, seconds, rate, offset, cpu, t0 = args
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        pass
    context = ssl.create_default_context(cafile=cafile)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    headers = {"Content-Type": "application/json"}
    conn.request("GET", "/healthz")
    conn.getresponse().read()
    from_schedule: List[float] = []
    from_send: List[float] = []
    i = offset
    while time.monotonic() < t0:
        time.sleep(0.001)
    end = t0 + seconds
    while True:
        if rate:
            scheduled = t0 + (i - offset) / rate
            if scheduled >= end:
                break
            delay = scheduled - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            start = scheduled
        else:
            start = time.monotonic()
            if start >= end:
                break
        sent = time.monotonic()
        conn.request("POST", "/mutate", body=bodies[i % len(bodies)], headers=headers)
        response = conn.getresponse()
        data = response.read()
        if response.status != 200 or b'"allowed":true' not in data:
            raise RuntimeError("bad answer %d: %r" % (response.status, data[:200]))
        done = time.monotonic()
        from_schedule.append(done - start)
        from_send.append(done - sent)
        i += 1
    conn.close()
    return from_schedule, from_send


class Load:
    """One load phase: throughput and both latency views, sorted."""

    def __init__(self, rps: float, from_schedule: List[float], from_send: List[float]) -> None:
        self.rps, self.from_schedule, self.from_send = rps, from_schedule, from_send


def run_load(
    port: int,
    cafile: str,
    bodies: List[bytes],
    connections: int,
    seconds: float,
    rate: float,
    cpus: List[int],
) -> Load:
    t0 = time.monotonic() + 1.0
    per_conn_rate = rate / connections if rate else 0.0
    jobs = [
        (port, cafile, bodies, seconds, per_conn_rate, n * 7919, cpus[n % len(cpus)], t0)
        for n in range(connections)
    ]
    with mp.get_context("fork").Pool(connections) as pool:
        results = pool.map(_client, jobs)
    from_schedule = sorted(x for r, _ in results for x in r)
    from_send = sorted(x for _, r in results for x in r)
    return Load(len(from_schedule) / seconds, from_schedule, from_send)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process: the server's cost, whatever else shares its core."""
    fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: List[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] * 1000.0


def summary(name: str, values: List[float], unit: str) -> str:
    return "%-34s median %8.1f %s  (min %.1f, max %.1f, n=%d)" % (
        name,
        statistics.median(values),
        unit,
        min(values),
        max(values),
        len(values),
    )


ROWS = (
    ("rps", "throughput, closed loop", "reviews/s"),
    ("per_cpu_second", "reviews per server CPU-second", "reviews"),
    ("p50_closed", "p50, closed loop", "ms"),
    ("p99_closed", "p99, closed loop", "ms"),
    ("p50_rate", "p50 at the offered rate", "ms"),
    ("p99_rate", "p99 at the offered rate", "ms"),
    ("p99_rate_send", "  same, from actual send", "ms"),
    ("p50_base", "baseline (no mutation) p50", "ms"),
    ("p99_base", "baseline (no mutation) p99", "ms"),
    ("p99_base_send", "  same, from actual send", "ms"),
)


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hack.bench_admission",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=BUDGET_RPS)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument(
        "--server-cpu",
        type=int,
        default=0,
        help="CPU to pin the server to; -1 leaves it unpinned (diagnosis only: not the one-core budget)",
    )
    parser.add_argument(
        "--server-nice",
        type=int,
        default=0,
        help="niceness of the server (negative needs root): on a core shared with other work,"
        " approximates a dedicated core by letting the server preempt on wake-up",
    )
    parser.add_argument("--json", type=Path, help="also write raw results here")
    args = parser.parse_args()

    cpus = sorted(os.sched_getaffinity(0))
    client_cpus = [c for c in cpus if c != args.server_cpu] or cpus
    if args.server_cpu < 0:
        client_cpus = cpus
    bodies = review_bodies()
    floor = baseline_bodies(bodies)
    results: Dict[str, List[float]] = {key: [] for key, _, _ in ROWS}
    loads: List[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_server(Path(tmp), args.server_cpu, args.server_nice)
        cafile = str(Path(tmp) / "ca.crt")
        try:
            run_load(port, cafile, bodies, args.connections, 1.0, 0, client_cpus)  # warm-up
            for run in range(args.runs):
                loads.append(os.getloadavg()[0])
                cpu_before = cpu_seconds(proc.pid)
                closed = run_load(port, cafile, bodies, args.connections, args.seconds, 0, client_cpus)
                used = max(1e-9, cpu_seconds(proc.pid) - cpu_before)
                # Alternate which paced phase goes first, so neither always follows the saturating one.
                order = (
                    [(bodies, "paced"), (floor, "base")]
                    if run % 2 == 0
                    else [(floor, "base"), (bodies, "paced")]
                )
                phases = {
                    name: run_load(port, cafile, load, args.connections, args.seconds, args.rate, client_cpus)
                    for load, name in order
                }
                paced, base = phases["paced"], phases["base"]
                row = {
                    "rps": closed.rps,
                    "per_cpu_second": closed.rps * args.seconds / used,
                    "p50_closed": pct(closed.from_schedule, 0.50),
                    "p99_closed": pct(closed.from_schedule, 0.99),
                    "p50_rate": pct(paced.from_schedule, 0.50),
                    "p99_rate": pct(paced.from_schedule, 0.99),
                    "p99_rate_send": pct(paced.from_send, 0.99),
                    "p50_base": pct(base.from_schedule, 0.50),
                    "p99_base": pct(base.from_schedule, 0.99),
                    "p99_base_send": pct(base.from_send, 0.99),
                }
                for key, value in row.items():
                    results[key].append(value)
                print(
                    "run %d: %.0f reviews/s (%.0f per CPU-second); at %.0f/s p99 %.2f ms"
                    " (%.2f from send), baseline p99 %.2f ms; load average %.2f"
                    % (
                        run + 1,
                        row["rps"],
                        row["per_cpu_second"],
                        args.rate,
                        row["p99_rate"],
                        row["p99_rate_send"],
                        row["p99_base"],
                        loads[-1],
                    ),
                    flush=True,
                )
        finally:
            proc.terminate()
            proc.wait(10)
    print()
    print(
        "server pinned to CPU %d (nice %d); %d client connections on CPUs %s; %d distinct pods;"
        " %d runs of %.0f s per phase; offered rate %.0f/s; 1-min load average %.2f-%.2f on %d CPUs"
        % (
            args.server_cpu,
            args.server_nice,
            args.connections,
            client_cpus,
            len(bodies),
            args.runs,
            args.seconds,
            args.rate,
            min(loads),
            max(loads),
            len(cpus),
        )
    )
    for key, label, unit in ROWS:
        print(summary(label, results[key], unit))
    ratios = [m / b for m, b in zip(results["p99_rate"], results["p99_base"]) if b]
    print(summary("p99 ratio mutation : baseline", ratios, "x"))
    ok = (
        statistics.median(results["rps"]) >= BUDGET_RPS
        and statistics.median(results["p99_rate"]) <= BUDGET_P99_MS
    )
    print(
        "budget (>= %.0f reviews/s, p99 <= %.0f ms at %.0f/s): %s"
        % (BUDGET_RPS, BUDGET_P99_MS, args.rate, "MET" if ok else "MISSED")
    )
    if args.json:
        args.json.write_text(
            json.dumps({"args": vars(args), "load": loads, **results}, indent=2, default=str)
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
