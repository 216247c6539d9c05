#!/usr/bin/env python3
"""Benchmark: how fast a policy change reaches N long-polling agents, and what it costs the server.

One ``pilotfish-webhook serve --policies FILE`` process (HTTPS, loopback) and N
simulated agents: asyncio (uvloop) streams, one keep-alive TLS connection each,
spread over two client processes. Every agent long-polls ``/v1/config`` exactly like
``pilotfish.central.config`` (version in, 200 with the new version or 304). The
agents belong to 20 apps in one namespace; each round edits the namespace-scope
policy in the file, so every agent's effective config changes.

Per round we measure, from the moment the file is written (``os.replace``) until
each agent has the new version (time taken when its answer arrives): p50, p99, max. The file watcher's
reaction (inotify: as the file is renamed over) is inside that number, as it is for real agents.
Server CPU: on-CPU time of the server process (all threads) during the round. Memory: the
server's RSS idle (no agent connected), with all agents parked on a long-poll,
and its peak (VmHWM).

Side by side in one run: N = 100 and N = 1000 against fresh servers, so the
ratio shows what the 10x fleet costs. Rounds are repeated; we report medians and
the min–max spread over rounds.

Usage: ``.venv/bin/python -m hack.bench_config_push [--agents 100 1000] [--rounds 7]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .cluster.wait import wait_for

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
APPS = 20
NAMESPACE = "bench"

POLICY = """\
apiVersion: pilotfish.io/v1alpha1
kind: GovernancePolicy
metadata: {name: defaults, namespace: pilotfish-system}
spec:
  lossless: {warmup: {curve: 2}}
---
apiVersion: pilotfish.io/v1alpha1
kind: GovernancePolicy
metadata: {name: bench-ns, namespace: bench}
spec:
  lossless: {warmup: {seconds: %d}}
"""


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """Time the process has spent on a CPU, all its threads, in ns precision (schedstat).

    ``utime + stime`` from /proc/PID/stat counts 10 ms ticks: a whole change's cost.
    """
    total = 0
    for task in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, task)) as handle:
                total += int(handle.read().split()[0])
        except (OSError, ValueError, IndexError):  # a thread that just ended
            continue
    return total / 1e9


def rss_kib(pid: int) -> Dict[str, int]:
    out: Dict[str, int] = {}
    with open("/proc/%d/status" % pid) as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


# ---------------------------------------------------------------- client worker


async def run_agents(url: str, ca: str, first: int, count: int, out: Any, commands: Any) -> None:
    """``count`` agents on one event loop, each with its own keep-alive TLS connection.

    Plain asyncio streams speaking HTTP/1.1, not a client library: the fleet shares the
    two cores with the server, so every microsecond the simulation spends is one the
    server does not get. Each request is what ``pilotfish.central.config`` sends.
    """
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    context = ssl.create_default_context(cafile=ca)
    versions: Dict[int, str] = {}
    received: Dict[int, float] = {}
    target: List[Optional[str]] = [None]
    errors = [0]

    async def agent(index: int) -> None:
        app = "app-%d" % (index % APPS)
        version = ""
        while True:
            try:
                reader, writer = await asyncio.open_connection(host, port, ssl=context)
                while True:
                    query = "namespace=%s&app=%s&version=%s&timeout=30" % (NAMESPACE, app, version)
                    writer.write(("GET /v1/config?%s HTTP/1.1\r\nHost: %s\r\n\r\n" % (query, host)).encode())
                    head = await reader.readuntil(b"\r\n\r\n")
                    arrived = time.time()  # the answer is here
                    status = int(head[9:12])
                    length = 0
                    for line in head.split(b"\r\n"):
                        if line[:15].lower() == b"content-length:":
                            length = int(line[15:])
                    body = await reader.readexactly(length) if length else b""
                    if status == 200:
                        version = json.loads(body)["version"]
                        versions[index] = version
                        received[index] = arrived
                    # Real agents are separate processes; here hundreds share one loop. Yield
                    # once so the others' answers are taken before this one polls again.
                    await asyncio.sleep(0)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors[0] += 1
                await asyncio.sleep(0.5)

    tasks = [asyncio.create_task(agent(first + i)) for i in range(count)]
    while len(versions) < count:
        await asyncio.sleep(0.05)
    out.write(json.dumps({"event": "ready", "version": next(iter(versions.values()))}) + "\n")
    out.flush()
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, commands.readline)
        if not line:
            break
        command = json.loads(line)
        if command["cmd"] == "wait-for":
            target[0] = command["version"]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and sum(1 for v in versions.values() if v == target[0]) < count:
                await asyncio.sleep(0.01)
            times = [received[i] for i, v in versions.items() if v == target[0]]
            out.write(
                json.dumps(
                    {"event": "got", "times": times, "missing": count - len(times), "errors": errors[0]}
                )
                + "\n"
            )
            out.flush()
        elif command["cmd"] == "stop":
            break
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def worker_main(args: argparse.Namespace) -> int:
    raise_nofile()
    try:  # the simulated fleet should cost as little CPU as possible: it shares the cores
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(run_agents(args.url, args.ca, args.first, args.count, sys.stdout, sys.stdin))
    return 0


# ---------------------------------------------------------------- coordinator


def version_for(url: str, ca: str) -> str:
    context = ssl.create_default_context(cafile=ca)
    query = "/v1/config?namespace=%s&app=app-0" % NAMESPACE
    with urllib.request.urlopen(url + query, context=context, timeout=10) as response:
        return str(json.load(response)["version"])


def one_fleet(agents: int, rounds: int, processes: int, server_args: Sequence[str] = ()) -> Dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="pilotfish-bench-"))
    policies = tmp / "policies.yaml"
    policies.write_text(POLICY % 100)
    port = free_port()
    url = "https://127.0.0.1:%d" % port
    server = subprocess.Popen(
        [
            str(BIN / "pilotfish-webhook"),
            "serve",
            "--listen",
            "127.0.0.1:%d" % port,
            "--certs-dir",
            str(tmp / "certs"),
            "--policies",
            str(policies),
            *server_args,
        ],
    )
    ca = str(tmp / "certs" / "ca.crt")
    workers: List[subprocess.Popen[str]] = []
    try:
        wait_for(lambda: version_for(url, ca), 30, "the config service", interval=0.2, retry=(OSError,))
        idle = rss_kib(server.pid)
        per = agents // processes
        for p in range(processes):
            workers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "hack.bench_config_push",
                        "--worker",
                        "--url",
                        url,
                        "--ca",
                        ca,
                        "--first",
                        str(p * per),
                        "--count",
                        str(per if p < processes - 1 else agents - p * per),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    cwd=str(ROOT),  # `-m` finds the package from the repository root
                )
            )
        for worker in workers:
            assert worker.stdout is not None
            ready = json.loads(worker.stdout.readline())
            assert ready["event"] == "ready", ready
        time.sleep(1.0)  # let every agent park its long-poll
        parked = rss_kib(server.pid)
        latencies: List[List[float]] = []
        server_cpu: List[float] = []
        previous = version_for(url, ca)
        for round_no in range(rounds):
            policies_tmp = tmp / "policies.yaml.new"
            policies_tmp.write_text(POLICY % (101 + round_no))
            cpu_before = cpu_seconds(server.pid)
            written = time.time()
            os.replace(policies_tmp, policies)
            # What the agents should end up with (the coordinator's own polls carry no
            # version, so they never wake or delay an agent).
            new_version = previous
            while new_version == previous:
                time.sleep(0.02)
                new_version = version_for(url, ca)
            previous = new_version
            times: List[float] = []
            for worker in workers:
                assert worker.stdin is not None and worker.stdout is not None
                worker.stdin.write(json.dumps({"cmd": "wait-for", "version": new_version}) + "\n")
                worker.stdin.flush()
            for worker in workers:
                assert worker.stdout is not None
                got = json.loads(worker.stdout.readline())
                if got["missing"]:
                    print(
                        "round %d: %d agents never got the new version" % (round_no, got["missing"]),
                        file=sys.stderr,
                    )
                times.extend(t - written for t in got["times"])
            latencies.append(sorted(times))
            server_cpu.append(cpu_seconds(server.pid) - cpu_before)
            time.sleep(1.0)
        peak = rss_kib(server.pid)
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write(json.dumps({"cmd": "stop"}) + "\n")
            worker.stdin.flush()
        return {
            "agents": agents,
            "rounds": [{"p50": pct(t, 50), "p99": pct(t, 99), "max": t[-1], "n": len(t)} for t in latencies],
            "server_cpu_ms": statistics.median(server_cpu) * 1000,
            "server_cpu_ms_range": (min(server_cpu) * 1000, max(server_cpu) * 1000),
            "rss_idle_mib": idle["VmRSS"] / 1024,
            "rss_parked_mib": parked["VmRSS"] / 1024,
            "rss_peak_mib": peak["VmHWM"] / 1024,
        }
    finally:
        for worker in workers:
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


def pct(sorted_values: List[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, int(round(q / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[index]


def summarize(result: Dict[str, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key in ("p50", "p99", "max"):
        values = [r[key] * 1000 for r in result["rounds"]]
        out[key] = (statistics.median(values), min(values), max(values))
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hack.bench_config_push", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--agents", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--budget-ms", type=float, default=200.0, help="p99 budget (exit 1 when missed)")
    parser.add_argument("--json", type=Path, help="also write raw results here")
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for the server, repeatable (e.g. --server-arg=--policies-settle-seconds=0)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--ca", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args)
    nofile = raise_nofile()
    results = [one_fleet(n, args.rounds, args.processes, args.server_arg) for n in args.agents]
    print(
        "RLIMIT_NOFILE %d, %d rounds per fleet, %d client processes, %d cores, load average %.1f"
        % (nofile, args.rounds, args.processes, os.cpu_count() or 0, os.getloadavg()[0])
    )
    print(
        "| agents | p50 ms | p99 ms | max ms | server CPU ms per change "
        "| server RSS idle / parked / peak MiB |"
    )
    print("|---|---|---|---|---|---|")
    for result in results:
        s = summarize(result)
        print(
            "| %d | %.0f (%.0f–%.0f) | %.0f (%.0f–%.0f) | %.0f (%.0f–%.0f) | %.0f (%.0f–%.0f) "
            "| %.1f / %.1f / %.1f |"
            % (
                result["agents"],
                *s["p50"],
                *s["p99"],
                *s["max"],
                result["server_cpu_ms"],
                *result["server_cpu_ms_range"],
                result["rss_idle_mib"],
                result["rss_parked_mib"],
                result["rss_peak_mib"],
            )
        )
    for a, b in zip(results, results[1:]):
        sa, sb = summarize(a), summarize(b)
        print(
            "ratio %d / %d agents: p99 x%.2f, server CPU x%.2f, parked RSS x%.2f (%.0f KiB per extra agent)"
            % (
                b["agents"],
                a["agents"],
                sb["p99"][0] / sa["p99"][0],
                b["server_cpu_ms"] / max(a["server_cpu_ms"], 1e-9),
                b["rss_parked_mib"] / a["rss_parked_mib"],
                (b["rss_parked_mib"] - a["rss_parked_mib"]) * 1024 / (b["agents"] - a["agents"]),
            )
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    worst = max(summarize(r)["p99"][0] for r in results)
    print(
        "budget: median p99 %.0f ms %s %.0f ms"
        % (worst, "<=" if worst <= args.budget_ms else ">", args.budget_ms)
    )
    return 0 if worst <= args.budget_ms else 1


if __name__ == "__main__":
    sys.exit(main())
