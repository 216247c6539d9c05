#!/usr/bin/env python3
"""Stopping a pod under load: time from preStop to exit, and requests lost, three ways.

The pod that stops ("old") is gunicorn with 2 gthread workers; a second gunicorn
("new", the replacement pod) keeps serving throughout. A loopback load generator
plays kube-proxy plus keep-alive clients:

- ``--clients`` threads (8), each with one HTTP/1.1 keep-alive connection, send
  requests back to back (a few ms apart). A connection stays on the instance it
  opened to until the server closes it (``Connection: close`` or a closed
  socket); ``--fresh-clients`` threads (4) open a new connection per request.
  A new connection goes round-robin to the endpoints currently listed;
- ``--removal-delay`` seconds (default 1.5) after the preStop hook starts, the
  old endpoint leaves the list, as endpoint removal propagates in a cluster
  (kube-proxy in iptables mode syncs its rules at most once a
  second by default, and there is no propagation SLA). Existing connections are not touched
  (conntrack keeps them), exactly as kube-proxy in iptables mode;
- nothing is retried: a request that fails (refused, reset, closed without an
  answer, non-2xx) is lost.

The three ways to stop "old":
- ``pilotfish``: the agent is injected (PYTHONPATH bootstrap only); preStop is
  ``GET :55199/offline`` (blocks until drained), then SIGTERM;
- ``sleep``: no agent; preStop ``sleep 30`` (MSE's injected default), then SIGTERM;
- ``none``: no agent, no preStop: SIGTERM at once;
- ``pilotfish-sigterm``: the agent, but no preStop of ours (the user kept their own, or
  none): SIGTERM at once, which the agent holds back until drained.

Measured per run: preStop start -> old process exit (seconds), requests lost, total.
Scenarios run interleaved (A B C A B C ...) so machine noise hits each alike.

Reproduce: ``.venv/bin/python -m hack.bench_rollout_drain --repeat 5``
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .cluster.wait import wait_for

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "tests" / "apps"
BOOTSTRAP = ROOT / "build" / "agent-tree" / "bootstrap"
TOKEN = "bench-token"
SCENARIOS = ("pilotfish", "pilotfish-sigterm", "sleep", "none")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Instance:
    """One gunicorn (2 gthread workers), with or without the agent."""

    def __init__(self, agent: bool, python: str) -> None:
        self.agent = agent
        self.port = free_port()
        self.status_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PILOTFISH_", "PYTHON"))}
        paths = ([str(BOOTSTRAP)] if agent else []) + [str(APPS)]
        env.update(
            {
                "PYTHONPATH": os.pathsep.join(paths),
                "PILOTFISH_STATUS_HOST": "127.0.0.1",
                "PILOTFISH_STATUS_PORT": str(self.status_port),
                "PILOTFISH_OFFLINE_TOKEN": TOKEN,
            }
        )
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process
        argv = [python, "-m", "gunicorn", "-w", "2", "-k", "gthread", "--threads", "4", "--keep-alive", "5"]
        if (
            "--no-control-socket"
            in subprocess.run(
                [python, "-m", "gunicorn", "--help"], capture_output=True, text=True, env=env
            ).stdout
        ):
            argv.append("--no-control-socket")
        argv += ["-b", "127.0.0.1:%d" % self.port, "lifecycle_wsgi:app"]
        self.proc = subprocess.Popen(
            argv, cwd=str(APPS), env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_serving(self, timeout: float = 30) -> None:
        def serving() -> bool:
            return _get(self.port, "/") == 200 and (
                not self.agent or _get(self.status_port, "/readiness") == 200
            )

        wait_for(
            serving, timeout, "the instance serving", interval=0.1, retry=(OSError,), context=self.output
        )

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _get(port: int, path: str, headers: Optional[Dict[str, str]] = None, timeout: float = 5) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


class Endpoints:
    """The kube-proxy view: which instances new connections may go to."""

    def __init__(self, ports: List[int]) -> None:
        self.ports = list(ports)
        self._next = 0
        self._lock = threading.Lock()

    def pick(self) -> int:
        with self._lock:
            port = self.ports[self._next % len(self.ports)]
            self._next += 1
            return port

    def remove(self, port: int) -> None:
        with self._lock:
            self.ports = [p for p in self.ports if p != port]


class LoadGenerator:
    def __init__(self, endpoints: Endpoints, clients: int, path: str, pause: float, fresh: int = 0) -> None:
        self.endpoints = endpoints
        self.clients = clients
        self.path = path
        self.pause = pause
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.total = 0
        self.lost: List[Tuple[float, int, str]] = []
        self.served_by: Dict[int, int] = {}
        self.last_served: Dict[int, float] = {}
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]
        self.threads += [
            threading.Thread(target=self._client, args=(True,), daemon=True) for _ in range(fresh)
        ]

    def _client(self, fresh: bool = False) -> None:
        conn: Optional[http.client.HTTPConnection] = None
        port = 0
        while not self.stop.is_set():
            if conn is None:
                port = self.endpoints.pick()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", self.path)
                response = conn.getresponse()
                response.read()
                ok = 200 <= response.status < 300
                with self.lock:
                    self.total += 1
                    if ok:
                        self.served_by[port] = self.served_by.get(port, 0) + 1
                        self.last_served[port] = time.monotonic()
                    else:
                        self.lost.append((time.monotonic(), port, "HTTP %d" % response.status))
                if response.will_close or fresh:
                    conn.close()
                    conn = None
            except Exception as problem:
                with self.lock:
                    self.total += 1
                    self.lost.append((time.monotonic(), port, type(problem).__name__))
                if conn is not None:
                    conn.close()
                conn = None
            self.stop.wait(self.pause)
        if conn is not None:
            conn.close()

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)


def run_once(scenario: str, python: str, args: argparse.Namespace) -> Dict[str, Any]:
    old = Instance(agent=scenario.startswith("pilotfish"), python=python)
    new = Instance(agent=False, python=python)
    try:
        old.wait_serving()
        new.wait_serving()
        endpoints = Endpoints([old.port, new.port])
        load = LoadGenerator(endpoints, args.clients, args.path, args.pause, args.fresh_clients)
        load.start()
        time.sleep(args.steady)
        prestop_at = time.monotonic()
        remover = threading.Timer(args.removal_delay, endpoints.remove, (old.port,))
        remover.start()
        if scenario == "pilotfish":
            offline = http.client.HTTPConnection("127.0.0.1", old.status_port, timeout=args.grace)
            offline.request("GET", "/offline", headers={"X-Pilotfish-Token": TOKEN})
            drain = json.loads(offline.getresponse().read())
            offline.close()
            if args.verbose:
                print("  /offline answered %s" % drain)
        elif scenario == "sleep":
            time.sleep(args.sleep)
        sigterm_at = time.monotonic()
        old.proc.send_signal(signal.SIGTERM)
        try:
            code = old.proc.wait(max(1.0, args.grace - (sigterm_at - prestop_at)))
        except subprocess.TimeoutExpired:  # the kubelet's SIGKILL at the end of the grace period
            os.killpg(old.proc.pid, signal.SIGKILL)
            code = old.proc.wait()
        exited_at = time.monotonic()
        remover.join()
        time.sleep(0.5)
        load.finish()
        lost_kinds: Dict[str, int] = {}
        for _, _, kind in load.lost:
            lost_kinds[kind] = lost_kinds.get(kind, 0) + 1
        return {
            "scenario": scenario,
            "prestop_to_exit": exited_at - prestop_at,
            "prestop_seconds": sigterm_at - prestop_at,
            "lost": len(load.lost),
            "lost_kinds": lost_kinds,
            "total": load.total,
            "served_by_old": load.served_by.get(old.port, 0),
            "last_served_by_old": load.last_served.get(old.port, prestop_at) - prestop_at,
            "exit_code": code,
        }
    finally:
        old.kill()
        new.kill()


def spread(values: List[float], fmt: str) -> str:
    return (fmt + " (" + fmt + "–" + fmt + ")") % (statistics.median(values), min(values), max(values))


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hack.bench_rollout_drain", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scenarios", default="pilotfish,sleep,none", help="any of " + ",".join(SCENARIOS))
    parser.add_argument("--clients", type=int, default=8, help="keep-alive client threads")
    parser.add_argument(
        "--fresh-clients", type=int, default=4, help="client threads opening a new connection per request"
    )
    parser.add_argument("--pause", type=float, default=0.005, help="seconds between a client's requests")
    parser.add_argument("--path", default="/slow?seconds=0.005", help="request path (app work per request)")
    parser.add_argument("--steady", type=float, default=2.0, help="seconds of load before preStop")
    parser.add_argument("--removal-delay", type=float, default=1.5, help="endpoint removal lag after preStop")
    parser.add_argument(
        "--sleep", type=float, default=30.0, help="the fixed preStop sleep of scenario 'sleep'"
    )
    parser.add_argument("--grace", type=float, default=60.0, help="terminationGracePeriodSeconds")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--json", help="also write every run here")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    if not (BOOTSTRAP / "sitecustomize.py").exists():
        subprocess.run([sys.executable, str(ROOT / "hack" / "build_agent_tree.py")], check=True)
    scenarios = [s for s in args.scenarios.split(",") if s]
    runs: List[Dict[str, Any]] = []
    for round_number in range(args.repeat):
        for scenario in scenarios:
            result = run_once(scenario, args.python, args)
            runs.append(result)
            print(
                "round %d %-9s preStop->exit %6.2fs  lost %4d of %6d  (%s) "
                "served by old %d (last at +%.2fs), exit %s"
                % (
                    round_number + 1,
                    scenario,
                    result["prestop_to_exit"],
                    result["lost"],
                    result["total"],
                    ", ".join("%s %d" % kv for kv in sorted(result["lost_kinds"].items())) or "-",
                    result["served_by_old"],
                    result["last_served_by_old"],
                    result["exit_code"],
                ),
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))
    print()
    print("| stop | preStop → exit, s | requests lost | lost per 1000 | requests in run |")
    print("|---|---|---|---|---|")
    labels = {
        "pilotfish": "pilotfish (`/offline` preStop, then SIGTERM)",
        "sleep": "fixed `sleep %g` preStop, then SIGTERM" % args.sleep,
        "none": "no preStop (SIGTERM at once)",
        "pilotfish-sigterm": "pilotfish, no preStop (SIGTERM at once, drained by the agent)",
    }
    for scenario in scenarios:
        mine = [r for r in runs if r["scenario"] == scenario]
        print(
            "| %s | %s | %s | %s | %s |"
            % (
                labels[scenario],
                spread([r["prestop_to_exit"] for r in mine], "%.2f"),
                spread([float(r["lost"]) for r in mine], "%.0f"),
                spread([1000.0 * r["lost"] / max(1, r["total"]) for r in mine], "%.2f"),
                spread([float(r["total"]) for r in mine], "%.0f"),
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
